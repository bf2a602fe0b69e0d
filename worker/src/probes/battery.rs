//! The probe battery: one dispatch from a probe to its experiment, and each result's encoding
//! — tuning points, derived numbers, headline activity — that every caller stores or prints the
//! same way: the daemon, `vephys-worker probe` and `characterize`, and the benches.

use vephys_proto::derived::{
    self, BaselineNumbers, ColorNumbers, CurveNumbers, Derived, GratingNumbers, RotationNumbers,
};
use vephys_proto::params::Probe;
use vephys_proto::v1::TuningPoint;

use super::measure::{Both, Responses};
use super::{
    baseline, color, grating, hue, rotation, zoom, Curve, MaxImage, ProbeParams, ProbeResult,
};
use crate::error::{Result, WorkerError};
use crate::models::Network;

/// What a probe starts from, for each filter of a batch.
pub enum Input<'a> {
    /// Full-colour max images [3, S, S] (baseline, zoom, rotation).
    MaxImages(&'a [MaxImage]),
    /// R-only, G-only and B-only max images (color).
    SingleColour(&'a [[MaxImage; 3]]),
    /// Nothing per filter: every filter sees the same stimuli of this side (grating, hue).
    Size(i64),
}

/// What `probe` starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    MaxImage,
    SingleColourMaxImages,
    Nothing,
}

pub fn needs(probe: Probe) -> Needs {
    match probe {
        Probe::Baseline | Probe::Zoom | Probe::Rotation => Needs::MaxImage,
        Probe::Color => Needs::SingleColourMaxImages,
        Probe::Synthesis | Probe::Grating | Probe::Hue => Needs::Nothing,
    }
}

/// The probes that run on max images or parametric stimuli: all but synthesis (the first).
pub const PROBES: &[Probe] = Probe::ALL.split_at(1).1;

/// Runs `probe` for `filters` of `layer`, one result per filter in order.
pub fn run(
    net: &Network,
    layer: usize,
    probe: Probe,
    filters: &[i64],
    input: Input,
    params: &ProbeParams,
) -> Result<Vec<ProbeResult>> {
    let each = |v: Vec<ProbeResult>| Ok(v);
    match (probe, input) {
        (Probe::Baseline, Input::MaxImages(images)) => each(
            baseline::run(net, layer, filters, images, params)?
                .into_iter()
                .map(ProbeResult::Baseline)
                .collect(),
        ),
        (Probe::Zoom, Input::MaxImages(images)) => each(
            zoom::run(net, layer, filters, images, params)?
                .into_iter()
                .map(ProbeResult::Zoom)
                .collect(),
        ),
        (Probe::Rotation, Input::MaxImages(images)) => each(
            rotation::run(net, layer, filters, images, params)?
                .into_iter()
                .map(ProbeResult::Rotation)
                .collect(),
        ),
        (Probe::Color, Input::SingleColour(images)) => each(
            color::run(net, layer, filters, images, params)?
                .into_iter()
                .map(ProbeResult::Color)
                .collect(),
        ),
        (Probe::Grating, Input::Size(size)) => each(
            grating::run(net, layer, filters, size, params)?
                .into_iter()
                .map(|g| ProbeResult::Grating(Box::new(g)))
                .collect(),
        ),
        (Probe::Hue, Input::Size(size)) => each(
            hue::run(net, layer, filters, size, params)?
                .into_iter()
                .map(ProbeResult::Hue)
                .collect(),
        ),
        (probe, _) => Err(WorkerError::bad(
            "--probe",
            format!(
                "{probe} does not run on this input: it needs {:?}",
                needs(probe)
            ),
        )),
    }
}

impl ProbeResult {
    pub fn probe(&self) -> Probe {
        match self {
            ProbeResult::Baseline(_) => Probe::Baseline,
            ProbeResult::Zoom(_) => Probe::Zoom,
            ProbeResult::Rotation(_) => Probe::Rotation,
            ProbeResult::Color(_) => Probe::Color,
            ProbeResult::Grating(_) => Probe::Grating,
            ProbeResult::Hue(_) => Probe::Hue,
        }
    }

    /// One point per stimulus: the swept value (or the stimulus' index, with its label), and
    /// the unit's max and mean activity.
    pub fn points(&self) -> Vec<TuningPoint> {
        match self {
            ProbeResult::Baseline(b) => labelled(
                "baseline",
                &baseline::STIMULI.map(String::from),
                &b.responses,
            ),
            ProbeResult::Zoom(z) => points("zoom", &z.curve),
            ProbeResult::Rotation(r) => points("rotation", &r.curve),
            ProbeResult::Color(c) => labelled("color", &color::labels(), &c.responses),
            ProbeResult::Grating(g) => {
                let mut all = points("grating.orientation", &g.orientation);
                all.extend(points("grating.frequency", &g.frequency));
                all
            }
            ProbeResult::Hue(h) => points("hue", &h.curve),
        }
    }

    /// The numbers derived from the responses (docs/science.md), typed as the contract says.
    pub fn derived(&self) -> Derived {
        match self {
            ProbeResult::Baseline(b) => {
                Derived::Baseline(both(&b.colour_selectivity_index, |csi| BaselineNumbers {
                    csi: *csi,
                }))
            }
            ProbeResult::Zoom(z) => Derived::Curve(both(&z.curve.tuning, |t| CurveNumbers {
                tuning: t.clone(),
                circular_variance: None,
            })),
            ProbeResult::Rotation(r) => {
                let pick = |max: bool| {
                    let get = |b: &Both<Option<f64>>| if max { b.max } else { b.mean };
                    let tuning = if max {
                        &r.curve.tuning.max
                    } else {
                        &r.curve.tuning.mean
                    };
                    RotationNumbers {
                        tuning: tuning.clone(),
                        circular_variance: get(&r.orientation_circular_variance),
                        symmetry_period_deg: get(&r.symmetry_period_deg),
                        symmetry_strength: get(&r.symmetry_strength),
                    }
                };
                Derived::Rotation(derived::Both {
                    max: pick(true),
                    mean: pick(false),
                })
            }
            ProbeResult::Color(c) => {
                let pick = |max: bool| {
                    let side = |b: &Both<[Option<f64>; 3]>| if max { b.max } else { b.mean };
                    let preferred = if max {
                        c.preferred_channel.max
                    } else {
                        c.preferred_channel.mean
                    };
                    let equal = side(&c.channel_selectivity_equal);
                    let index = color::CHANNELS
                        .iter()
                        .position(|n| *n == preferred)
                        .unwrap_or(0);
                    ColorNumbers {
                        preferred_channel: preferred.to_string(),
                        channel_selectivity: side(&c.channel_selectivity),
                        channel_selectivity_equal: equal,
                        preferred_channel_selectivity: equal[index],
                    }
                };
                Derived::Color(derived::Both {
                    max: pick(true),
                    mean: pick(false),
                })
            }
            ProbeResult::Grating(g) => {
                let pick = |max: bool| {
                    let t = |c: &Curve| {
                        if max {
                            c.tuning.max.clone()
                        } else {
                            c.tuning.mean.clone()
                        }
                    };
                    let cv = &g.orientation_circular_variance;
                    GratingNumbers {
                        orientation: t(&g.orientation),
                        frequency: t(&g.frequency),
                        circular_variance: if max { cv.max } else { cv.mean },
                    }
                };
                Derived::Grating(derived::Both {
                    max: pick(true),
                    mean: pick(false),
                })
            }
            ProbeResult::Hue(h) => Derived::Curve(derived::Both {
                max: CurveNumbers {
                    tuning: h.curve.tuning.max.clone(),
                    circular_variance: h.hue_circular_variance.max,
                },
                mean: CurveNumbers {
                    tuning: h.curve.tuning.mean.clone(),
                    circular_variance: h.hue_circular_variance.mean,
                },
            }),
        }
    }

    /// The highest max and mean activity over the probe's stimuli: a job's headline numbers.
    pub fn peak(&self) -> (f64, f64) {
        let points = self.points();
        let top =
            |f: fn(&TuningPoint) -> f64| points.iter().map(f).fold(f64::NEG_INFINITY, f64::max);
        (top(|p| p.max_act), top(|p| p.mean_act))
    }
}

fn both<T, U>(b: &Both<T>, f: impl Fn(&T) -> U) -> derived::Both<U> {
    derived::Both {
        max: f(&b.max),
        mean: f(&b.mean),
    }
}

fn points(probe: &str, c: &Curve) -> Vec<TuningPoint> {
    c.values
        .iter()
        .enumerate()
        .map(|(i, x)| TuningPoint {
            probe: probe.to_string(),
            x: *x,
            label: None,
            max_act: c.responses.max[i],
            mean_act: c.responses.mean[i],
        })
        .collect()
}

fn labelled(probe: &str, labels: &[String], r: &Responses) -> Vec<TuningPoint> {
    labels
        .iter()
        .enumerate()
        .map(|(i, label)| TuningPoint {
            probe: probe.to_string(),
            x: i as f64,
            label: Some(label.clone()),
            max_act: r.max[i],
            mean_act: r.mean[i],
        })
        .collect()
}
