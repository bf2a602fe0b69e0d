//! The probes' parameters: the job contract's tables (`vephys_proto::params`, where every
//! default and bound lives, shared with campaign specs) and how stimuli are batched.

use serde::{Deserialize, Serialize};

use super::measure::Eval;
use crate::device::Precision;
pub use vephys_proto::params::{
    parse_values, BaselineParams, ColorParams, Field, GratingParams, HueParams, ParamError,
    RotationParams, ZoomFill, ZoomParams,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeParams {
    pub baseline: BaselineParams,
    pub zoom: ZoomParams,
    pub rotation: RotationParams,
    pub color: ColorParams,
    pub grating: GratingParams,
    pub hue: HueParams,
    /// Seed of the baseline's noise image (a job's seed).
    pub seed: u64,
    /// Stimuli per forward pass.
    pub batch: usize,
    /// The precision stimuli are evaluated in (resolved for the device; see
    /// `Network::forward_to_channels_in`).
    #[serde(default)]
    pub precision: Precision,
}

impl Default for ProbeParams {
    fn default() -> Self {
        ProbeParams {
            baseline: BaselineParams::default(),
            zoom: ZoomParams::default(),
            rotation: RotationParams::default(),
            color: ColorParams::default(),
            grating: GratingParams::default(),
            hue: HueParams::default(),
            seed: 0,
            batch: 32,
            precision: Precision::Fp32,
        }
    }
}

impl ProbeParams {
    /// How the probes evaluate their stimuli.
    pub fn eval(&self) -> Eval {
        Eval {
            batch: self.batch,
            precision: self.precision,
        }
    }

    /// Every bound that does not depend on the image size.
    pub fn check(&self) -> Result<(), ParamError> {
        self.baseline.check()?;
        self.zoom.check()?;
        self.rotation.check()?;
        self.color.check()?;
        self.grating.check()?;
        self.hue.check()
    }
}
