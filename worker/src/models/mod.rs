//! The model zoo: networks as a chain of named stages, run in pixel space.
//!
//! A network is a list of stages; stage i's output is layer i. Running "up to layer L" means
//! running stages 0..=L and nothing after, which is what synthesis and probes need. Each model
//! family lives in its own file as a short function of an `nn::Path`.

mod efficientnet_lite;
pub mod ops;
mod vgg;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;
use tch::{nn, Device, Kind, Tensor};

use crate::error::{Result, WorkerError};
use crate::weights;
use ops::{Locality, Op};

/// The models vephys can build, with the function that builds each.
type Builder = fn(&nn::Path) -> Vec<Stage>;

const ZOO: [(&str, Builder, InputNorm); 3] = [
    (
        "efficientnet_lite0",
        efficientnet_lite::efficientnet_lite0,
        efficientnet_lite::INPUT,
    ),
    ("vgg16", vgg::vgg16, vgg::INPUT),
    ("vgg19", vgg::vgg19, vgg::INPUT),
];

pub fn model_names() -> Vec<&'static str> {
    ZOO.iter().map(|(name, _, _)| *name).collect()
}

/// How a model turns pixel-space input into what its weights expect. Applied inside the
/// forward pass so that every caller, and every saved PNG, talks pixel space.
#[derive(Debug, Clone, Copy)]
pub enum InputNorm {
    MeanStd { mean: [f64; 3], std: [f64; 3] },
    Affine { scale: f64, shift: f64 },
}

/// One named layer: the op producing it and the names it answers to.
pub struct Stage {
    name: String,
    aliases: Vec<String>,
    op: Box<dyn Op>,
}

impl Stage {
    pub fn new(name: &str, aliases: &[&str], op: impl Op + 'static) -> Stage {
        Stage {
            name: name.to_string(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            op: Box::new(op),
        }
    }
}

/// A layer and its output shape at some input size.
#[derive(Debug, Clone, Serialize)]
pub struct LayerShape {
    pub name: String,
    pub aliases: Vec<String>,
    pub channels: i64,
    pub height: i64,
    pub width: i64,
}

pub struct Network {
    name: String,
    stages: Vec<Stage>,
    input: InputNorm,
    vs: nn::VarStore,
    weights_sha256: Option<String>,
    /// Layer shapes by input size: a shape probe runs the whole network once, and synthesis
    /// and probes ask for the same sizes again and again.
    shapes: Mutex<HashMap<i64, Vec<LayerShape>>>,
    /// The last framing background's maps (`Network::background`): every framed call of a
    /// probe, and of every filter after it, frames the same uniform colour at the same size.
    background: Mutex<Option<Background>>,
}

impl Network {
    /// Builds `model` on `device` with random weights; call `load_weights` for real ones.
    pub fn build(model: &str, device: Device) -> Result<Network> {
        let Some((name, build, input)) = ZOO.iter().find(|(name, _, _)| *name == model) else {
            return Err(WorkerError::UnknownModel {
                name: model.to_string(),
                known: model_names().join(", "),
            });
        };
        Ok(Network::custom(name, *input, device, build))
    }

    /// Builds a network from stages made in code, named `name`: tests and experiments give it
    /// known weights by editing the tensors of `parameters()`.
    pub fn custom(
        name: &str,
        input: InputNorm,
        device: Device,
        build: impl FnOnce(&nn::Path) -> Vec<Stage>,
    ) -> Network {
        let mut vs = nn::VarStore::new(device);
        let stages = build(&vs.root());
        // Weights are never trained here: no weight gradients, only gradients w.r.t. the image.
        vs.freeze();
        Network {
            name: name.to_string(),
            stages,
            input,
            vs,
            weights_sha256: None,
            shapes: Mutex::default(),
            background: Mutex::default(),
        }
    }

    /// Loads safetensors weights (every parameter must be present with the right shape, and
    /// nothing else may be in the file) and remembers the file's sha256.
    pub fn load_weights(&mut self, path: &Path) -> Result<()> {
        let sha = weights::load(&mut self.vs, path, &self.name)?;
        self.weights_sha256 = Some(sha);
        Ok(())
    }

    /// Every parameter and buffer by its safetensors name (tensors share storage with the
    /// network: editing one edits the model, which tests use to build units with known weights).
    pub fn parameters(&self) -> std::collections::HashMap<String, Tensor> {
        self.vs.variables()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    pub fn weights_sha256(&self) -> Option<&str> {
        self.weights_sha256.as_deref()
    }

    /// Index of the layer called `layer` (its name or any alias).
    pub fn layer_index(&self, layer: &str) -> Result<usize> {
        self.stages
            .iter()
            .position(|s| s.name == layer || s.aliases.iter().any(|a| a == layer))
            .ok_or_else(|| WorkerError::UnknownLayer {
                model: self.name.clone(),
                layer: layer.to_string(),
            })
    }

    pub fn layer_name(&self, index: usize) -> &str {
        &self.stages[index].name
    }

    /// The model's input normalisation as one pass, x * scale + shift with per-channel
    /// [1, 3, 1, 1] scale and shift (mean/std folded: scale = 1/std, shift = -mean/std), which
    /// costs half of a subtraction then a division.
    fn normalize(&self, x: &Tensor) -> Result<Tensor> {
        let (scale, shift) = match self.input {
            InputNorm::MeanStd { mean, std } => {
                (std.map(|s| 1.0 / s), [0, 1, 2].map(|c| -mean[c] / std[c]))
            }
            InputNorm::Affine { scale, shift } => ([scale; 3], [shift; 3]),
        };
        let channel = |v: [f64; 3]| -> Result<Tensor> {
            Ok(Tensor::from_slice(&v.map(|v| v as f32))
                .f_to_device(x.device())?
                .f_view([1, 3, 1, 1])?)
        };
        Ok(channel(shift)?.f_addcmul(x, &channel(scale)?)?)
    }

    /// `normalize` for `forward_to_channels`: on the CPU, stored channels-last (the layout
    /// oneDNN's convolutions run fastest in, kept from layer to layer).
    fn normalize_for_eval(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.normalize(x)?;
        Ok(match h.device() == Device::Cpu && h.dim() == 4 {
            true => channels_last(&h)?,
            false => h,
        })
    }

    /// Output of layer `index` for pixel-space images `x` ([B, 3, H, W] in [0, 1]), always 4-D
    /// ([B, C, h, w]; classifier outputs are [B, C, 1, 1]).
    pub fn forward_to(&self, x: &Tensor, index: usize) -> Result<Tensor> {
        let mut h = self.normalize(x)?;
        for stage in &self.stages[..=index] {
            h = stage.op.forward(&h)?;
        }
        Ok(as_map(h))
    }

    /// Channels `filters` of layer `index` for pixel-space images `x`: [B, F, h, w], the same
    /// values as `forward_to(x, index)` narrowed to those channels (in that order) up to float
    /// rounding. For evaluating stimuli: it runs without gradients and does less work than the
    /// full forward pass:
    /// - the last stage that mixes channels computes only `filters` (the stages after it,
    ///   activations and pooling, act on each channel alone);
    /// - images that all equal one colour outside a rectangle (a stimulus seen through an
    ///   aperture) are run only where they differ from that uniform background, the rest of
    ///   every map being the background's own (see `framed`);
    /// - activations overwrite their input instead of allocating; on the CPU maps are kept
    ///   channels-last, the layout oneDNN's convolutions run fastest in, and images go through
    ///   in sub-batches of `CPU_SUB_BATCH`.
    pub fn forward_to_channels(&self, x: &Tensor, index: usize, filters: &[i64]) -> Result<Tensor> {
        let _no_grad = tch::no_grad_guard();
        let channels = Tensor::from_slice(filters).to_device(x.device());
        let stages = &self.stages[..=index];
        // found on the pixel-space images: pixels equal there are equal once normalised, and
        // nothing the size of the batch is allocated for it
        let framing = framing(stages, x)?;
        let run = Narrowed {
            stages,
            // None: every stage acts on each channel alone; select at the end
            narrow: stages.iter().rposition(|s| !s.op.channelwise()),
            channels: &channels,
        };
        let background = match &framing {
            Some(f) => {
                let colour = self.normalize(&f.colour)?;
                Some(self.background(&run, &colour, x, f.background_stages(stages.len()))?)
            }
            None => None,
        };
        // on the CPU in small sub-batches, each normalised and made channels-last on its own:
        // their maps stay in cache and skip the page faults of fresh large allocations, which
        // saves more than larger batches would (normalising 24 images of 224 px at once and
        // copying them channels-last took 12 ms, 9 of them page faults)
        let (n, step) = (x.size()[0], sub_batch(x));
        let mut parts = Vec::with_capacity(((n + step - 1) / step) as usize);
        for start in (0..n).step_by(step as usize) {
            let part = self.normalize_for_eval(&x.f_narrow(0, start, step.min(n - start))?)?;
            parts.push(match (&framing, &background) {
                (Some(f), Some(maps)) => run.framed(part, maps, f)?,
                _ => run.whole(part)?,
            });
        }
        let out = as_map(match parts.len() {
            0 => run.whole(self.normalize_for_eval(x)?)?,
            1 => parts.remove(0),
            _ => Tensor::f_cat(&parts, 0)?,
        });
        Ok(match run.narrow {
            Some(_) => out,
            None => out.f_index_select(1, &channels)?,
        })
    }

    /// The maps of a uniform image of `colour` ([1, C, 1, 1]) the size of the images `like`
    /// through the first `stages` stages of `run`: the input of each, then the last one's
    /// output. They cost one image's forward pass, so the last ones are kept and serve every
    /// later call with the same colour, size and stages (the probes of every filter of a
    /// batch, and of later batches); they are kept with all channels, and the maps after the
    /// narrowed stage are cut to `run`'s channels on the way out.
    fn background(
        &self,
        run: &Narrowed,
        colour: &Tensor,
        like: &Tensor,
        stages: usize,
    ) -> Result<Vec<Tensor>> {
        let s = like.size();
        let key = BackgroundKey {
            colour: Vec::<f32>::try_from(colour.f_to_kind(Kind::Float)?.f_flatten(0, -1)?)?
                .into_iter()
                .map(f32::to_bits)
                .collect(),
            size: [s[2], s[3]],
            stages,
            device: like.device(),
        };
        let mut cache = self.background.lock().expect("background cache poisoned");
        if cache.as_ref().is_none_or(|b| b.key != key) {
            let mut u = layout_like(like, &colour.f_expand([1, s[1], s[2], s[3]], false)?)?;
            let mut maps = Vec::with_capacity(stages + 1);
            for stage in &run.stages[..stages] {
                let next = stage.op.forward(&u)?;
                maps.push(std::mem::replace(&mut u, next));
            }
            maps.push(u);
            *cache = Some(Background { key, maps });
        }
        let maps = &cache.as_ref().expect("just filled").maps;
        maps.iter()
            .enumerate()
            .map(|(i, m)| match run.narrow {
                // maps[i] is the input of stage i: the narrowed stage's output and those after
                Some(n) if i > n => Ok(m.f_index_select(1, run.channels)?),
                _ => Ok(m.shallow_clone()),
            })
            .collect()
    }

    /// Outputs of every layer, in order (for parity tests and inspection).
    pub fn forward_all(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let mut h = self.normalize(x)?;
        let mut outputs = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            h = stage.op.forward(&h)?;
            outputs.push(as_map(h.shallow_clone()));
        }
        Ok(outputs)
    }

    /// Every layer with its output shape for `size` x `size` input. Layers the image is too
    /// small to reach are left out, so the result is empty for a uselessly small size.
    pub fn layer_shapes(&self, size: i64) -> Vec<LayerShape> {
        let mut cache = self.shapes.lock().expect("shape cache poisoned");
        cache
            .entry(size)
            .or_insert_with(|| self.probe_shapes(size))
            .clone()
    }

    fn probe_shapes(&self, size: i64) -> Vec<LayerShape> {
        let _guard = tch::no_grad_guard();
        let mut shapes = Vec::new();
        let Ok(mut h) = Tensor::f_zeros([1, 3, size, size], (Kind::Float, self.device())) else {
            return shapes;
        };
        for stage in &self.stages {
            match stage.op.forward(&h) {
                Ok(out) if out.numel() > 0 => h = out,
                _ => break,
            }
            let map = as_map(h.shallow_clone());
            let s = map.size();
            shapes.push(LayerShape {
                name: stage.name.clone(),
                aliases: stage.aliases.clone(),
                channels: s[1],
                height: s[2],
                width: s[3],
            });
        }
        shapes
    }

    /// Shape (C, h, w) of layer `index` at input `size`, or `ImageTooSmall` naming the smallest
    /// size that works.
    pub fn check_size(&self, index: usize, size: i64) -> Result<LayerShape> {
        if let Some(shape) = self.layer_shapes(size).into_iter().nth(index) {
            return Ok(shape);
        }
        let reaches = |s: i64| self.layer_shapes(s).len() > index;
        // Output size grows with input size, so bisect for the smallest size that reaches.
        let (mut lo, mut hi) = (size.max(1), size.max(1) * 2);
        while !reaches(hi) && hi < 8192 {
            lo = hi;
            hi *= 2;
        }
        while lo + 1 < hi {
            let mid = (lo + hi) / 2;
            if reaches(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Err(WorkerError::ImageTooSmall {
            model: self.name.clone(),
            layer: self.stages[index].name.clone(),
            size,
            min: hi,
        })
    }
}

/// Stages run for some channels only: `narrow`, the last stage that mixes channels, computes
/// just `channels`.
struct Narrowed<'a> {
    stages: &'a [Stage],
    narrow: Option<usize>,
    channels: &'a Tensor,
}

impl Narrowed<'_> {
    /// Stage `i` (only `channels` where it is the narrowed one) on an input nothing else holds
    /// (it may be overwritten).
    fn stage_owned(&self, i: usize, x: Tensor) -> Result<Tensor> {
        let op = &self.stages[i].op;
        Ok(if self.narrow == Some(i) {
            op.forward_channels(&x, self.channels)?
        } else {
            op.forward_owned(x)?
        })
    }

    /// Whole maps, every intermediate result overwritten by the next stage where it can.
    fn whole(&self, mut h: Tensor) -> Result<Tensor> {
        for i in 0..self.stages.len() {
            h = self.stage_owned(i, h)?;
        }
        Ok(h)
    }

    /// Images `h` that equal a uniform background outside `framing.region`, whose maps are
    /// `background` (see `background`). Outside the outputs that read the region (`reach`),
    /// every map of every image equals the background's map (same values, same zero padding at
    /// the edges), so each stage of `framing.steps` runs only on the input those outputs read,
    /// framed by the background's values, and keeps those outputs: the region of its output.
    /// Then (`End`) the region is pasted into the background's map, and whole maps run from
    /// there on where the next stage would read all of its input anyway.
    fn framed(&self, h: Tensor, background: &[Tensor], framing: &Framing) -> Result<Tensor> {
        let mut region = framing.region;
        let mut x = crop(&h, region)?;
        for (i, step) in framing.steps.iter().enumerate() {
            x = self.framed_stage(i, &background[i], x, region, step)?;
            region = step.out;
        }
        let u = background.last().expect("the background's last map");
        let all = Region::all(u.size()[2], u.size()[3]);
        Ok(match framing.end {
            End::Background => layout_like(u, &u.f_expand([h.size()[0], -1, -1, -1], false)?)?,
            End::Paste => frame(u, all, &x, region)?,
            End::Whole => (framing.steps.len()..self.stages.len())
                .try_fold(frame(u, all, &x, region)?, |map, i| {
                    self.stage_owned(i, map)
                })?,
        })
    }

    /// Stage `i` of `step` on images `x`, their values on `region` of its input, whose
    /// background is `u`: the images' values on `step.out`.
    fn framed_stage(
        &self,
        i: usize,
        u: &Tensor,
        x: Tensor,
        region: Region,
        step: &Step,
    ) -> Result<Tensor> {
        // rows and columns of the region that no output reads (left over by pooling) go
        let kept = region.intersect(step.run);
        let x = crop(&x, kept.within(region))?;
        // a frame only where the stage reads beyond the region; either way the input is the
        // stage's own to overwrite (activations in place save allocating their outputs)
        let input = match kept == step.run {
            true => x,
            false => frame(u, step.run, &x, kept)?,
        };
        crop(&self.stage_owned(i, input)?, step.keep)
    }
}

/// How `forward_to_channels` runs images that equal a uniform background outside a region
/// (`Narrowed::framed`).
struct Framing {
    /// The background colour in pixel space, [1, 3, 1, 1].
    colour: Tensor,
    /// Where the images differ from it.
    region: Region,
    /// The first stages, each run on part of its input.
    steps: Vec<Step>,
    /// What follows them.
    end: End,
}

/// What follows the framed stages (`Framing::steps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
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
    fn background_stages(&self, stages: usize) -> usize {
        match self.end {
            End::Whole => self.steps.len(),
            End::Background | End::Paste => stages,
        }
    }
}

/// A framing background's maps (`Network::background`) and what they were made for.
struct Background {
    key: BackgroundKey,
    maps: Vec<Tensor>,
}

#[derive(Debug, PartialEq)]
struct BackgroundKey {
    /// The colour's bits: a background is reused only for exactly the same colour.
    colour: Vec<u32>,
    size: [i64; 2],
    stages: usize,
    device: Device,
}

/// The framing of pixel-space images `x` through `stages`, when every stage says how it reads
/// its input and the images are worth framing (`surround`).
fn framing(stages: &[Stage], x: &Tensor) -> Result<Option<Framing>> {
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
fn plan(
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
fn localities(stages: &[Stage], height: i64, width: i64) -> Option<Vec<[Locality; 2]>> {
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
struct Step {
    /// The part of the input the stage runs on.
    run: Region,
    /// The part of the output that differs from the background's.
    out: Region,
    /// `out` counted from the corner of the stage's output on `run`.
    keep: Region,
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
fn reach(l: Locality, size: i64, (lo, hi): (i64, i64)) -> Option<[(i64, i64); 3]> {
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

fn ceil_div(a: i64, b: i64) -> i64 {
    -(-a).div_euclid(b)
}

/// Images per forward pass on the CPU (see `forward_to_channels`); other devices take the
/// whole batch at once. Measured on a 2-core CPU with a 32 MB cache: 24 stimuli through
/// VGG-19 to block3_pool and EfficientNet-Lite0 to blocks.4 took 2.8 s and 0.12 s at 2 per
/// pass (1 was as fast for VGG, 13% slower for EfficientNet), 3.6 s and 0.23 s at 8, 3.9 s and
/// 0.34 s all at once.
const CPU_SUB_BATCH: i64 = 2;

fn sub_batch(h: &Tensor) -> i64 {
    let n = h.size()[0].max(1);
    match h.device() {
        Device::Cpu => CPU_SUB_BATCH.min(n),
        _ => n,
    }
}

/// Smallest batch worth framing: a first call (a new colour, size or layer) pays one image's
/// forward pass for the background's maps, which later calls reuse (`Network::background`).
const FRAMED_MIN_BATCH: i64 = 4;
/// Largest region, as a fraction of the image, worth framing: the region grows with every
/// stage, and framing costs copies.
const FRAMED_MAX_AREA: f64 = 0.6;

/// Rows [y0, y1) and columns [x0, x1) of a map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Region {
    y0: i64,
    y1: i64,
    x0: i64,
    x1: i64,
}

impl Region {
    fn height(self) -> i64 {
        self.y1 - self.y0
    }

    fn width(self) -> i64 {
        self.x1 - self.x0
    }

    fn is_empty(self) -> bool {
        self.height() <= 0 || self.width() <= 0
    }

    /// The whole of a `height` x `width` map.
    fn all(height: i64, width: i64) -> Region {
        Region {
            y0: 0,
            y1: height,
            x0: 0,
            x1: width,
        }
    }

    /// Rows [y0, y1) and columns [x0, x1).
    fn from_spans((y0, y1): (i64, i64), (x0, x1): (i64, i64)) -> Region {
        Region { y0, y1, x0, x1 }
    }

    fn intersect(self, o: Region) -> Region {
        Region {
            y0: self.y0.max(o.y0),
            y1: self.y1.min(o.y1),
            x0: self.x0.max(o.x0),
            x1: self.x1.min(o.x1),
        }
    }

    /// The same rows and columns counted from `outer`'s corner.
    fn within(self, outer: Region) -> Region {
        Region {
            y0: self.y0 - outer.y0,
            y1: self.y1 - outer.y0,
            x0: self.x0 - outer.x0,
            x1: self.x1 - outer.x0,
        }
    }
}

fn crop(t: &Tensor, r: Region) -> Result<Tensor> {
    Ok(t.f_narrow(2, r.y0, r.height())?
        .f_narrow(3, r.x0, r.width())?)
}

/// The background of a batch of images, the first image's top-left pixel ([1, C, 1, 1]), and
/// the smallest region outside which every image equals it, when running only that region is
/// worth it.
fn surround(h: &Tensor) -> Result<Option<(Tensor, Region)>> {
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
fn frame(u: &Tensor, region: Region, x: &Tensor, inside: Region) -> Result<Tensor> {
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
fn empty_like_layout(like: &Tensor, shape: [i64; 4]) -> Result<Tensor> {
    let options = (like.kind(), like.device());
    Ok(if like.device() == Device::Cpu {
        let [b, c, h, w] = shape;
        Tensor::f_empty([b, h, w, c], options)?.f_permute([0, 3, 1, 2])?
    } else {
        Tensor::f_empty(shape, options)?
    })
}

/// `x` materialised in the layout `forward_to_channels` uses on `like`'s device.
fn layout_like(like: &Tensor, x: &Tensor) -> Result<Tensor> {
    let mut out = empty_like_layout(like, x.size().try_into().expect("4-d map"))?;
    out.f_copy_(x)?;
    Ok(out)
}

/// The same [N, C, H, W] tensor stored channels-last (NHWC strides), which libtorch's CPU
/// convolutions keep from layer to layer.
fn channels_last(x: &Tensor) -> Result<Tensor> {
    Ok(x.f_permute([0, 2, 3, 1])?
        .f_contiguous()?
        .f_permute([0, 3, 1, 2])?)
}

fn as_map(h: Tensor) -> Tensor {
    if h.dim() == 2 {
        h.unsqueeze(-1).unsqueeze(-1)
    } else {
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use efficientnet_lite::{conv_bn, MbConv};
    use ops::{Activation, Chain, Conv2d, ConvConfig, MaxPool, Padding};

    const VGG_NORM: InputNorm = InputNorm::MeanStd {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };

    /// A network of the kinds of stages framing handles, with random weights and biases.
    fn net(stages: fn(&nn::Path) -> Vec<Stage>) -> Network {
        let net = Network::custom("framed", VGG_NORM, Device::Cpu, stages);
        randomise(&net);
        net
    }

    /// Random parameters that keep activations finite and of order one through many layers:
    /// weights scaled by their fan-in, positive running variances (batch norms divide by their
    /// root).
    fn randomise(net: &Network) {
        tch::manual_seed(7);
        tch::no_grad(|| {
            for (name, mut t) in net.parameters() {
                let size = t.size();
                let r = Tensor::randn(&size, (Kind::Float, Device::Cpu));
                let r = match size.len() {
                    1 if name.ends_with("running_var") => r.abs() * 0.5 + 0.5,
                    1 => r * 0.3,
                    _ => r * (2.0 / size[1..].iter().product::<i64>() as f64).sqrt(),
                };
                t.copy_(&r);
            }
        });
    }

    fn conv(p: &nn::Path, name: &str, cin: i64, cout: i64, k: i64) -> Stage {
        let cfg = ConvConfig {
            stride: 1,
            padding: Padding::Fixed(k / 2),
            groups: 1,
            bias: true,
        };
        Stage::new(name, &[], Conv2d::new(&(p / name), cin, cout, k, cfg))
    }

    fn pool(name: &str) -> Stage {
        pool_by(name, 2, 2)
    }

    fn pool_by(name: &str, kernel: i64, stride: i64) -> Stage {
        Stage::new(name, &[], MaxPool { kernel, stride })
    }

    fn vgg_like(p: &nn::Path) -> Vec<Stage> {
        vec![
            conv(p, "c1", 3, 8, 3),
            Stage::new("r1", &[], Activation::Relu),
            pool("p1"),
            conv(p, "c2", 8, 8, 5),
            Stage::new("r2", &[], Activation::Relu),
            pool("p2"),
            conv(p, "c3", 8, 6, 3),
            Stage::new("r3", &[], Activation::Relu),
        ]
    }

    fn pool_first(p: &nn::Path) -> Vec<Stage> {
        vec![
            pool("p0"),
            conv(p, "c1", 3, 5, 3),
            Stage::new("r1", &[], Activation::Relu),
        ]
    }

    /// Pooling windows that overlap (kernel 3, stride 2), no padding.
    fn overlapping_pools(p: &nn::Path) -> Vec<Stage> {
        vec![
            pool_by("p0", 3, 2),
            conv(p, "c1", 3, 5, 3),
            pool_by("p1", 3, 2),
            Stage::new("r1", &[], Activation::Relu),
        ]
    }

    /// `n` images of `size` px: the mean colour everywhere but on `rows` x `cols`, random there.
    fn patched(n: i64, size: i64, rows: (i64, i64), cols: (i64, i64)) -> Tensor {
        let mean = Tensor::from_slice(&[0.485f32, 0.456, 0.406]).view([1, 3, 1, 1]);
        let x = mean.expand([n, 3, size, size], false).contiguous();
        let patch = Tensor::rand(
            [n, 3, rows.1 - rows.0, cols.1 - cols.0],
            (Kind::Float, Device::Cpu),
        );
        x.narrow(2, rows.0, rows.1 - rows.0)
            .narrow(3, cols.0, cols.1 - cols.0)
            .copy_(&patch);
        x
    }

    /// `assert_same`, having checked that `forward_to_channels` frames `x` (runs only where the
    /// images differ from their background) at every layer up to `last`: equal results from a
    /// silent fallback to whole maps would prove nothing.
    fn assert_framed(net: &Network, x: &Tensor, last: usize, filters: &[i64], what: &str) {
        for layer in 0..=last {
            let framed = framing(&net.stages[..=layer], x).unwrap();
            let steps = framed.map_or(0, |f| f.steps.len());
            assert!(steps > 0, "{what}: layer {layer} is not framed");
        }
        assert_same(net, x, filters, what);
    }

    /// How many stages `forward_to_channels` frames on images `x` through layer `last` of
    /// `net`, and what follows them.
    fn plan_of(net: &Network, x: &Tensor, last: usize) -> (usize, End) {
        let f = framing(&net.stages[..=last], x).unwrap().expect("framed");
        (f.steps.len(), f.end)
    }

    fn assert_same(net: &Network, x: &Tensor, filters: &[i64], what: &str) {
        for layer in 0..net.stages.len() {
            assert_same_at(net, x, layer, filters, what);
        }
    }

    fn assert_same_at(net: &Network, x: &Tensor, layer: usize, filters: &[i64], what: &str) {
        let index = Tensor::from_slice(filters);
        let full = tch::no_grad(|| net.forward_to(x, layer).unwrap().index_select(1, &index));
        let fast = net.forward_to_channels(x, layer, filters).unwrap();
        assert_eq!(fast.size(), full.size(), "{what}, layer {layer}");
        let err = (&fast - &full).abs().max().double_value(&[]);
        let scale = full.abs().max().double_value(&[]).max(1e-6);
        assert!(
            err <= 1e-5 * scale,
            "{what}, layer {layer}: {err} vs {scale}"
        );
    }

    /// Where the kept framing background's maps are (the same place: it was reused).
    fn kept_background(net: &Network) -> Vec<usize> {
        let kept = net.background.lock().unwrap();
        let maps = &kept.as_ref().expect("a background was kept").maps;
        maps.iter().map(|m| m.data_ptr() as usize).collect()
    }

    #[test]
    fn a_kept_background_serves_other_filters_and_patches_but_not_other_colours() {
        let vgg = net(vgg_like);
        // framed through the narrowed convolution and the pooling after it (the kept maps
        // after the narrowed stage have every channel; each call takes its own)
        let layer = 7;
        let x = patched(5, 30, (0, 6), (20, 30));
        assert_eq!(plan_of(&vgg, &x, layer), (8, End::Paste));
        assert_same_at(&vgg, &x, layer, &[4, 0, 5], "first call");
        let kept = kept_background(&vgg);
        let y = patched(4, 30, (1, 5), (18, 29));
        assert_eq!(plan_of(&vgg, &y, layer), (8, End::Paste));
        for (images, filters) in [(&x, &[1][..]), (&y, &[2, 3]), (&x, &[5, 4])] {
            assert_same_at(&vgg, images, layer, filters, &format!("kept, {filters:?}"));
            assert_eq!(kept_background(&vgg), kept, "reused for {filters:?}");
        }
        let darker = &x * 0.5;
        assert_same_at(&vgg, &darker, layer, &[4, 0, 5], "another colour");
        assert_ne!(kept_background(&vgg), kept, "made again for another colour");
    }

    #[test]
    fn narrowed_forward_in_sub_batches_equals_the_whole_forward() {
        let vgg = net(vgg_like);
        for n in [1, CPU_SUB_BATCH, 2 * CPU_SUB_BATCH + 1] {
            let x = Tensor::rand([n, 3, 30, 30], (Kind::Float, Device::Cpu));
            assert_same(&vgg, &x, &[1, 5], &format!("{n} random images"));
        }
    }

    #[test]
    fn surround_finds_where_images_leave_the_background() {
        let x = patched(4, 30, (9, 20), (12, 17));
        let (background, region) = surround(&x).unwrap().unwrap();
        assert_eq!(
            region,
            Region {
                y0: 9,
                y1: 20,
                x0: 12,
                x1: 17
            }
        );
        let mean = Tensor::from_slice(&[0.485f32, 0.456, 0.406]).view([1, 3, 1, 1]);
        assert_eq!(background, mean, "the images' mean-colour surround");
        // too few images, or too large a region: not worth framing
        assert!(surround(&x.narrow(0, 0, 3)).unwrap().is_none());
        let big = patched(4, 30, (0, 28), (2, 30));
        assert!(surround(&big).unwrap().is_none());
    }

    #[test]
    fn framed_forward_equals_the_whole_forward() {
        let vgg = net(vgg_like);
        // odd size: the second pooling drops a row and a column
        // more images than a CPU sub-batch in the first case
        // framed throughout and pasted into the background's output, or until a stage reads
        // its whole input
        for (n, rows, cols, plan) in [
            (CPU_SUB_BATCH + 3, (9, 20), (12, 17), (6, End::Whole)),
            (5, (0, 6), (20, 30), (8, End::Paste)),
            (5, (25, 30), (0, 30), (8, End::Paste)),
        ] {
            let x = patched(n, 30, rows, cols);
            assert_eq!(plan_of(&vgg, &x, 7), plan, "{rows:?} x {cols:?}");
            assert_same(&vgg, &x, &[4, 0, 5], &format!("patch {rows:?} x {cols:?}"));
        }
        // a patch that only the rows and columns pooling drops: gone after the first stage
        let pooled = net(pool_first);
        let x = patched(4, 31, (30, 31), (30, 31));
        assert_eq!(plan_of(&pooled, &x, 2), (0, End::Background));
        assert_same(&pooled, &x, &[2, 1], "patch pooled away");
        let x = patched(4, 31, (3, 9), (10, 30));
        assert_eq!(plan_of(&pooled, &x, 2), (3, End::Paste));
        assert_same(&pooled, &x, &[2], "pool first");
        // pooling windows that overlap, at odd and even sizes, patches at the edges
        let overlapping = net(overlapping_pools);
        for (size, rows, cols) in [
            (31, (3, 9), (10, 30)),
            (32, (30, 32), (1, 2)),
            (33, (20, 21), (0, 33)),
        ] {
            let x = patched(4, size, rows, cols);
            let what = format!("{size} px, patch {rows:?} x {cols:?}");
            assert_framed(&overlapping, &x, 3, &[2, 1], &what);
        }
    }

    fn relu6() -> Box<dyn Op> {
        Box::new(Activation::Relu6)
    }

    /// EfficientNet's kinds of stages, small: stride-2 SAME convolutions of kernel 3 and 5,
    /// depthwise ones, inverted residual blocks with and without the skip, and a stage of two
    /// strided convolutions (their localities compose), then global pooling.
    fn efficientnet_like(p: &nn::Path) -> Vec<Stage> {
        let block = |name: &str, k, stride, expand, cin, cout| {
            let op = MbConv::new(&(p / name), k, stride, expand, cin, cout);
            Stage::new(name, &[], op)
        };
        let conv = |name: &str, cin, cout, k, stride, groups| {
            conv_bn(p / name, p / name / "bn", cin, cout, k, stride, groups)
        };
        vec![
            Stage::new(
                "stem",
                &[],
                Chain(vec![conv("stem", 3, 8, 3, 2, 1), relu6()]),
            ),
            block("b0", 3, 1, 1, 8, 8),
            Stage::new(
                "pair",
                &[],
                Chain(vec![
                    conv("pair0", 8, 8, 3, 2, 8),
                    relu6(),
                    conv("pair1", 8, 12, 5, 2, 1),
                ]),
            ),
            block("b1", 5, 2, 4, 12, 16),
            block("b2", 5, 1, 2, 16, 16),
            block("b3", 3, 1, 3, 16, 16),
            Stage::new(
                "head",
                &[],
                Chain(vec![conv("head", 16, 24, 1, 1, 1), relu6()]),
            ),
            Stage::new(
                "logits",
                &[],
                ops::PoolLinear(ops::Linear::new(&(p / "fc"), 24, 10)),
            ),
        ]
    }

    #[test]
    fn strided_localities_compose() {
        let net = net(efficientnet_like);
        let stage = |name: &str| &net.stages[net.layer_index(name).unwrap()].op;
        // SAME, kernel 3, stride 2: padding (0, 1) on an even size, (1, 1) on an odd one
        let stem = |size| stage("stem").locality(size).unwrap();
        assert_eq!((stem(64).kernel, stem(64).stride), (3, 2));
        assert_eq!((stem(64).before, stem(64).outputs), (0, 32));
        assert_eq!((stem(61).before, stem(61).outputs), (1, 31));
        // kernel 3 stride 2, then kernel 5 stride 2 (padding (1, 2) on 16 rows, (2, 2) on 15):
        // kernel 4 * 2 + 3, stride 4, padding 2 * padding2 + padding1
        let pair = |size| stage("pair").locality(size).unwrap();
        assert_eq!((pair(32).kernel, pair(32).stride), (11, 4));
        assert_eq!((pair(32).before, pair(32).outputs), (2, 8));
        assert_eq!((pair(30).before, pair(30).outputs), (4, 8));
        assert_eq!((pair(29).before, pair(29).outputs), (5, 8));
        // the skip of a block adds nothing to its window
        let b2 = stage("b2").locality(16).unwrap();
        assert_eq!((b2.kernel, b2.stride, b2.before, b2.outputs), (5, 1, 2, 16));
        assert!(stage("logits").locality(4).is_none());
    }

    #[test]
    fn reach_runs_aligned_crops_padded_as_the_map() {
        // SAME, kernel 3, stride 2 on 8 rows (padding (0, 1)): row 3 feeds output 1 alone,
        // which reads rows 2..5; the crop 2..6 starts at a multiple of 2 and is even, as 8
        let l = Locality::strided(3, 2, (0, 1), 8).unwrap();
        assert_eq!(reach(l, 8, (3, 4)), Some([(2, 6), (1, 2), (0, 1)]));
        // the last row feeds the last output, which reads the padding beyond the edge
        assert_eq!(reach(l, 8, (7, 8)), Some([(6, 8), (3, 4), (0, 1)]));
        // 7 rows: padding (1, 1); row 1 feeds outputs 0 and 1 (rows -1..2 and 1..4); the crop
        // 0..5 is odd, as 7
        let l = Locality::strided(3, 2, (1, 1), 7).unwrap();
        assert_eq!(reach(l, 7, (1, 2)), Some([(0, 5), (0, 2), (0, 2)]));
        // pooling 2 x 2 drops the last of 7 rows
        let l = Locality::strided(2, 2, (0, 0), 7).unwrap();
        assert_eq!(reach(l, 7, (6, 7)), None);
        assert_eq!(reach(l, 7, (5, 7)), Some([(4, 7), (2, 3), (0, 1)]));
    }

    #[test]
    fn framed_strided_forward_equals_the_whole_forward() {
        let net = net(efficientnet_like);
        let head = net.layer_index("head").unwrap();
        // at 160 px every stage up to head is framed and pasted into the background's output;
        // on the smaller maps a late stage reads all of its input and whole maps run on
        for (size, end) in [(160, End::Paste), (61, End::Whole), (31, End::Whole)] {
            let s = size;
            // inside, at each edge and corner (but the top-left pixel, which gives the
            // background), single pixels at odd and even places, a column at the right edge,
            // rows at the bottom
            for (rows, cols) in [
                ((20, 29), (23, 30)),
                ((0, 5), (1, 7)),
                ((1, 6), (0, 4)),
                ((s - 6, s), (s - 3, s)),
                ((0, 3), (s - 9, s)),
                ((s - 1, s), (0, 4)),
                ((13, 14), (17, 18)),
                ((12, 13), (s - 1, s)),
                ((0, s), (s - 1, s)),
                ((s - 2, s), (0, s)),
            ] {
                let x = patched(5, size, rows, cols);
                let what = format!("{size} px, patch {rows:?} x {cols:?}");
                assert_eq!(plan_of(&net, &x, head).1, end, "{what}");
                assert_framed(&net, &x, head, &[3, 0, 7], &what);
            }
        }
    }

    #[test]
    fn framed_efficientnet_lite0_equals_the_whole_forward() {
        let net = Network::build("efficientnet_lite0", Device::Cpu).unwrap();
        randomise(&net);
        let head = net.layer_index("head").unwrap();
        let reads = localities(&net.stages[..=head], 224, 224).unwrap();
        assert_eq!(reads[head][0].outputs, 7);
        assert!(localities(&net.stages, 224, 224).is_none(), "logits pool");
        // the probes' aperture: stem ... blocks.3 framed; blocks.4 reads all of its input, so
        // the background's maps are needed only that far
        let aperture = patched(4, 224, (34, 191), (34, 191));
        assert_eq!(plan_of(&net, &aperture, head), (5, End::Whole));
        // the probes' aperture (radius 0.7 * 112), a corner, a small patch at odd places
        for (rows, cols) in [
            ((34, 191), (34, 191)),
            ((0, 61), (150, 224)),
            ((101, 104), (7, 8)),
        ] {
            let x = patched(4, 224, rows, cols);
            let h = tch::no_grad(|| net.forward_to(&x, head).unwrap());
            let scale = h.abs().max().double_value(&[]);
            assert!(
                scale.is_finite() && scale > 1e-3,
                "head's activations: {scale}"
            );
            let what = format!("patch {rows:?} x {cols:?}");
            assert_framed(&net, &x, head, &[5, 15, 1], &what);
        }
    }
}
