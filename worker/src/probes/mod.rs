//! The probes of docs/science.md: each puts filters of a layer through one experiment and
//! returns, per stimulus, the filter's max and mean activity plus the numbers derived from the
//! curve (`tuning`). Stimuli are made on the network's device (`stimuli`) and evaluated in
//! batches without gradients (`measure`).
//!
//! The paper's probes (`baseline`, `zoom`, `rotation`, `color`) start from each filter's max
//! image(s); `grating` and `hue` show every filter the same stimuli and need none. `battery`
//! runs any of them and encodes its results; every caller goes through it.

pub mod baseline;
pub mod battery;
pub mod color;
pub mod grating;
pub mod hue;
mod measure;
pub mod params;
pub mod rotation;
pub mod stimuli;
pub mod tuning;
pub mod zoom;

use serde::Serialize;
use tch::Tensor;

pub use battery::{needs, run, Input, Needs, PROBES};
pub use measure::{measure, measure_stimuli, Both, Eval, Response, Responses, Stimulus};
pub use params::{parse_values, ProbeParams, ZoomFill};
use tuning::{Axis, Tuning};
pub use vephys_proto::params::Probe;

use crate::device::Precision;
use crate::synthesis::SynthOutcome;

/// One probe's result for one filter, tagged with the probe's name when serialised.
#[derive(Debug, Serialize)]
#[serde(tag = "probe", rename_all = "lowercase")]
pub enum ProbeResult {
    Baseline(baseline::Baseline),
    Zoom(zoom::Zoom),
    Rotation(rotation::Rotation),
    Color(color::Color),
    Grating(Box<grating::Grating>),
    Hue(hue::Hue),
}

/// A tuning curve: responses along one stimulus axis and the numbers derived from them.
#[derive(Debug, Clone, Serialize)]
pub struct Curve {
    /// What the values are, with their unit (`rotation_deg`, `zoom_factor`, ...).
    pub axis: &'static str,
    pub values: Vec<f64>,
    pub responses: Responses,
    pub tuning: Both<Tuning>,
}

impl Curve {
    pub fn new(name: &'static str, values: Vec<f64>, responses: Responses, axis: Axis) -> Curve {
        let tuning = Both::of(&responses, |r| tuning::of(&values, r, axis));
        Curve {
            axis: name,
            values,
            responses,
            tuning,
        }
    }
}

/// A filter's max image [3, S, S], and the filter's response to it when that is known.
#[derive(Debug)]
pub struct MaxImage {
    pub image: Tensor,
    /// Measured by the synthesis that made the image, on the very same 8-bit image with the
    /// same weights, in fp32: the stimuli that show the image unchanged (the baseline's
    /// `max_image`, zoom 1, the color probe's "as is") take it instead of running the network
    /// again when they run in fp32 too (`known`). None: they measure it.
    pub response: Option<Response>,
}

impl MaxImage {
    /// An image whose response is not known (read from a file, say).
    pub fn new(image: Tensor) -> MaxImage {
        MaxImage {
            image,
            response: None,
        }
    }

    /// The image a synthesis made, with the response the synthesis measured on it.
    pub fn synthesized(outcome: &SynthOutcome) -> MaxImage {
        MaxImage {
            image: outcome.image.shallow_clone(),
            response: Some(Response {
                max: outcome.max_activity,
                mean: outcome.mean_activity,
            }),
        }
    }

    /// The known response for a probe evaluating in `precision`: synthesis measures its
    /// image in fp32, so a bf16 probe measures it again with its other stimuli, and each of
    /// its curves is computed in one precision.
    pub fn known(&self, precision: Precision) -> Option<Response> {
        self.response.filter(|_| precision == Precision::Fp32)
    }

    /// The image as a stimulus of a probe evaluating in `precision`: its known response, or
    /// `on_device` (the image, already on the network's device) to run.
    fn as_stimulus(&self, on_device: &Tensor, precision: Precision) -> Stimulus {
        match self.known(precision) {
            Some(r) => Stimulus::Known(r),
            None => Stimulus::Image(on_device.shallow_clone()),
        }
    }
}
