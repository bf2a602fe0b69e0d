//! Framing: running a network on images that equal one uniform colour outside a region (a
//! stimulus seen through an aperture, a patch on a background) only where they differ. Each
//! stage says how its outputs read its input (`Op::locality`); outside the outputs that read
//! the region every map equals the background's own map, so a stage runs only on the input
//! those outputs read, framed by the background's values. `staged::Narrowed::framed` runs the
//! plan made here.

use tch::{Device, Kind, Tensor};

use super::ops::Locality;
use super::staged::Stage;
use crate::error::Result;

/// How `forward_to_channels` runs images that equal a uniform background outside a region
/// (`Narrowed::framed`).
pub(super) struct Framing {
    /// The background colour in pixel space, [1, 3, 1, 1].
    pub(super) colour: Tensor,
    /// Where the images differ from it.
    pub(super) region: Region,
    /// The first stages, each run on part of its input.
    pub(super) steps: Vec<Step>,
    /// What follows them.
    pub(super) end: End,
}

/// What follows the framed stages (`Framing::steps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// The images equal the background from the next stage on: the output is the background's.
    Background,
    /// The last stage's region is pasted into the background's output.
    Paste,
    /// The next stage reads all of its input map, so framing saves nothing from there on: the
    /// region is pasted into the background's map there, and whole maps run on. The background
    /// is needed only that far, which saves most of it for late layers.
    Whole,
}

impl Framing {
    /// How many stages the background's maps run through (`Narrowed::background`): their
    /// last map is the one `framed` pastes into.
    pub(super) fn background_stages(&self, stages: usize) -> usize {
        match self.end {
            End::Whole => self.steps.len(),
            End::Background | End::Paste => stages,
        }
    }
}

/// The framing of pixel-space images `x` through `stages`, when every stage says how it reads
/// its input and the images are worth framing (`surround`).
pub(super) fn framing(stages: &[Stage], x: &Tensor) -> Result<Option<Framing>> {
    let s = x.size();
    let reads = match s.len() {
        4 => localities(stages, s[2], s[3]),
        _ => None,
    };
    let Some(reads) = reads else {
        return Ok(None);
    };
    let Some((colour, region)) = surround(x)? else {
        return Ok(None);
    };
    let (steps, end) = plan(stages, &reads, region, s[2], s[3]);
    Ok(Some(Framing {
        colour,
        region,
        steps,
        end,
    }))
}

/// The steps of the stages that read part of their input map, from images `height` x `width`
/// that differ from their background on `region`, and what follows them.
pub(super) fn plan(
    stages: &[Stage],
    reads: &[[Locality; 2]],
    mut region: Region,
    mut height: i64,
    mut width: i64,
) -> (Vec<Step>, End) {
    let mut steps = Vec::new();
    for (stage, &[rows, cols]) in stages.iter().zip(reads) {
        let Some(step) = Step::new(region, [rows, cols], height, width) else {
            // no output reads the region
            return (steps, End::Background);
        };
        if step.run == Region::all(height, width) {
            return (steps, End::Whole);
        }
        debug_assert_eq!(
            [step.run.height(), step.run.width()].map(|n| stage.op.locality(n).map(|l| l.before)),
            [Some(rows.before), Some(cols.before)],
            "the stage pads the crop as the whole map"
        );
        (region, height, width) = (step.out, rows.outputs, cols.outputs);
        steps.push(step);
    }
    (steps, End::Paste)
}

/// How each stage reads its input, rows and columns, for `height` x `width` input; None when
/// some stage does not say (`Op::locality`).
pub(super) fn localities(stages: &[Stage], height: i64, width: i64) -> Option<Vec<[Locality; 2]>> {
    let mut size = (height, width);
    stages
        .iter()
        .map(|s| {
            let reads = [s.op.locality(size.0)?, s.op.locality(size.1)?];
            size = (reads[0].outputs, reads[1].outputs);
            Some(reads)
        })
        .collect()
}

/// One stage run on the part of its input that differs from the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Step {
    /// The part of the input the stage runs on.
    pub(super) run: Region,
    /// The part of the output that differs from the background's.
    pub(super) out: Region,
    /// `out` counted from the corner of the stage's output on `run`.
    pub(super) keep: Region,
}

impl Step {
    /// The step of a stage reading its `height` x `width` input as `reads` says, where the
    /// images differ from the background on `region` of it; None when no output reads `region`.
    fn new(region: Region, [rows, cols]: [Locality; 2], height: i64, width: i64) -> Option<Step> {
        let [ry, oy, ky] = reach(rows, height, (region.y0, region.y1))?;
        let [rx, ox, kx] = reach(cols, width, (region.x0, region.x1))?;
        Some(Step {
            run: Region::from_spans(ry, rx),
            out: Region::from_spans(oy, ox),
            keep: Region::from_spans(ky, kx),
        })
    }
}

/// Along one axis of an op's input, `size` rows read as `l` says, where rows [lo, hi) differ
/// from the background: the input rows [start, stop) to run the op on, the output rows
/// [first, end) that differ (those that read a row of [lo, hi); the others read only
/// background), and those counted from the first output on [start, stop). None when no output
/// reads [lo, hi). Each output of [first, end) reads only rows of [start, stop) or rows beyond
/// the map's edge, which the op pads on the crop as on the whole map:
/// - `start` is a multiple of the stride, so the crop's output j is the map's start / stride + j;
/// - stop - start has `size`'s remainder modulo the stride, so the op pads the crop's start as
///   the map's (`Locality`), and its end too where stop = size.
///
/// Outputs near a crop edge that is not the map's read zero padding instead of the map's rows;
/// they lie outside [first, end) and are dropped.
pub(super) fn reach(l: Locality, size: i64, (lo, hi): (i64, i64)) -> Option<[(i64, i64); 3]> {
    let first = ceil_div(lo + l.before - l.kernel + 1, l.stride).max(0);
    let end = ceil_div(hi + l.before, l.stride).min(l.outputs);
    if first >= end {
        return None;
    }
    let start = (first * l.stride - l.before).max(0) / l.stride * l.stride;
    let needed = ((end - 1) * l.stride - l.before + l.kernel).min(size);
    let stop = size - (size - needed) / l.stride * l.stride;
    let origin = start / l.stride;
    Some([(start, stop), (first, end), (first - origin, end - origin)])
}

pub(super) fn ceil_div(a: i64, b: i64) -> i64 {
    -(-a).div_euclid(b)
}

/// Smallest batch worth framing: a first call (a new colour, size or layer) pays one image's
/// forward pass for the background's maps, which later calls reuse (`Network::background`).
pub(super) const FRAMED_MIN_BATCH: i64 = 4;
/// Largest region, as a fraction of the image, worth framing: the region grows with every
/// stage, and framing costs copies.
pub(super) const FRAMED_MAX_AREA: f64 = 0.6;

/// Rows [y0, y1) and columns [x0, x1) of a map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Region {
    pub(super) y0: i64,
    pub(super) y1: i64,
    pub(super) x0: i64,
    pub(super) x1: i64,
}

impl Region {
    pub(super) fn height(self) -> i64 {
        self.y1 - self.y0
    }

    pub(super) fn width(self) -> i64 {
        self.x1 - self.x0
    }

    pub(super) fn is_empty(self) -> bool {
        self.height() <= 0 || self.width() <= 0
    }

    /// The whole of a `height` x `width` map.
    pub(super) fn all(height: i64, width: i64) -> Region {
        Region {
            y0: 0,
            y1: height,
            x0: 0,
            x1: width,
        }
    }

    /// Rows [y0, y1) and columns [x0, x1).
    pub(super) fn from_spans((y0, y1): (i64, i64), (x0, x1): (i64, i64)) -> Region {
        Region { y0, y1, x0, x1 }
    }

    pub(super) fn intersect(self, o: Region) -> Region {
        Region {
            y0: self.y0.max(o.y0),
            y1: self.y1.min(o.y1),
            x0: self.x0.max(o.x0),
            x1: self.x1.min(o.x1),
        }
    }

    /// The same rows and columns counted from `outer`'s corner.
    pub(super) fn within(self, outer: Region) -> Region {
        Region {
            y0: self.y0 - outer.y0,
            y1: self.y1 - outer.y0,
            x0: self.x0 - outer.x0,
            x1: self.x1 - outer.x0,
        }
    }
}

pub(super) fn crop(t: &Tensor, r: Region) -> Result<Tensor> {
    Ok(t.f_narrow(2, r.y0, r.height())?
        .f_narrow(3, r.x0, r.width())?)
}

/// The background of a batch of images, the first image's top-left pixel ([1, C, 1, 1]), and
/// the smallest region outside which every image equals it, when running only that region is
/// worth it.
pub(super) fn surround(h: &Tensor) -> Result<Option<(Tensor, Region)>> {
    let s = h.size();
    if s.len() != 4 || s[0] < FRAMED_MIN_BATCH {
        return Ok(None);
    }
    let (height, width) = (s[2], s[3]);
    let background = h
        .f_narrow(0, 0, 1)?
        .f_narrow(2, 0, 1)?
        .f_narrow(3, 0, 1)?
        .copy();
    // a pixel equals the background in every image when its least and largest value over
    // the batch both do: two reductions over contiguous rows, a third of the time of
    // comparing every image and reducing the comparisons
    let (lo, hi) = (h.f_amin([0], false)?, h.f_amax([0], false)?);
    let colour = background.f_squeeze_dim(0)?;
    let differs = lo
        .f_ne_tensor(&colour)?
        .f_logical_or(&hi.f_ne_tensor(&colour)?)?
        .f_any_dim(0, false)?;
    let span = |t: Tensor| -> Result<Option<(i64, i64)>> {
        let v = Vec::<i64>::try_from(t.f_to_kind(Kind::Int64)?)?;
        let first = v.iter().position(|d| *d != 0);
        let last = v.iter().rposition(|d| *d != 0);
        Ok(first.zip(last).map(|(a, b)| (a as i64, b as i64 + 1)))
    };
    let rows = span(differs.f_any_dim(1, false)?)?;
    let cols = span(differs.f_any_dim(0, false)?)?;
    let (Some((y0, y1)), Some((x0, x1))) = (rows, cols) else {
        return Ok(None);
    };
    let region = Region { y0, y1, x0, x1 };
    let fraction = (region.height() * region.width()) as f64 / (height * width) as f64;
    Ok((fraction <= FRAMED_MAX_AREA).then_some((background, region)))
}

/// Map `region` of `u` ([1, C, H, W]) for every image of `x` ([B, C, ...], the images' values
/// on `inside`, which lies within `region`): the background around `inside`, the images in it.
pub(super) fn frame(u: &Tensor, region: Region, x: &Tensor, inside: Region) -> Result<Tensor> {
    let (b, c) = (x.size()[0], x.size()[1]);
    let out = empty_like_layout(u, [b, c, region.height(), region.width()])?;
    let bands = [
        Region {
            y1: inside.y0,
            ..region
        },
        Region {
            y0: inside.y1,
            ..region
        },
        Region {
            x0: region.x0,
            x1: inside.x0,
            ..inside
        },
        Region {
            x0: inside.x1,
            x1: region.x1,
            ..inside
        },
    ];
    for band in bands.into_iter().filter(|r| !r.is_empty()) {
        let u = crop(u, band)?.f_expand([b, -1, -1, -1], false)?;
        crop(&out, band.within(region))?.f_copy_(&u)?;
    }
    crop(&out, inside.within(region))?.f_copy_(x)?;
    Ok(out)
}

/// An uninitialised [B, C, H, W] map in the layout `forward_to_channels` uses on `like`'s
/// device (channels-last on the CPU).
pub(super) fn empty_like_layout(like: &Tensor, shape: [i64; 4]) -> Result<Tensor> {
    let options = (like.kind(), like.device());
    Ok(if like.device() == Device::Cpu {
        let [b, c, h, w] = shape;
        Tensor::f_empty([b, h, w, c], options)?.f_permute([0, 3, 1, 2])?
    } else {
        Tensor::f_empty(shape, options)?
    })
}

/// `x` materialised in the layout `forward_to_channels` uses on `like`'s device.
pub(super) fn layout_like(like: &Tensor, x: &Tensor) -> Result<Tensor> {
    let mut out = empty_like_layout(like, x.size().try_into().expect("4-d map"))?;
    out.f_copy_(x)?;
    Ok(out)
}
