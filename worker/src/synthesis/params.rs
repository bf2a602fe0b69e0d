//! Synthesis parameters as the engine takes them: the job contract's synthesis table
//! (`vephys_proto::params::SynthesisParams`, where the defaults and bounds live) resolved for
//! one run (image size, seed, colour, unit position).

use serde::{Deserialize, Serialize};

use vephys_proto::params::{PrecisionChoice, SynthesisParams};

use crate::device::Precision;
use crate::error::{Result, WorkerError};
use crate::models::BUILTIN_INPUT_SIZE;

/// What each image is optimised to drive: the contract's objective.
pub use vephys_proto::params::Objective as ObjectiveKind;

/// Which colour channels synthesis may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ColorMode {
    Rgb,
    R,
    G,
    B,
}

impl ColorMode {
    /// 1 for the channels synthesis may use, 0 for those that must stay exactly 0.
    pub fn mask(self) -> [f32; 3] {
        match self {
            ColorMode::Rgb => [1.0, 1.0, 1.0],
            ColorMode::R => [1.0, 0.0, 0.0],
            ColorMode::G => [0.0, 1.0, 0.0],
            ColorMode::B => [0.0, 0.0, 1.0],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SynthParams {
    /// Gradient-ascent steps.
    pub steps: i64,
    /// Image side in pixels.
    pub size: i64,
    /// Step size in pixel units per step (the gradient is normalised to unit RMS per image).
    pub lr: f64,
    /// L2 decay toward the mean colour per step (theta_decay).
    pub decay: f64,
    /// Gaussian blur standard deviation in pixels (0 turns blurring off).
    pub blur_sigma: f64,
    /// Blur every this many steps (0 turns blurring off).
    pub blur_every: i64,
    pub objective: ObjectiveKind,
    /// Position for the `unit` objective; the map's centre when unset.
    pub unit_y: Option<i64>,
    pub unit_x: Option<i64>,
    pub color: ColorMode,
    pub seed: u64,
    /// Standard deviation of the Gaussian noise around the mean colour that synthesis starts from.
    pub init_std: f64,
    /// The precision of the gradient passes, resolved for the device from the contract's
    /// choice (`device::resolve_precision`); the final activity is measured in fp32 either way.
    /// Part of the hash: bf16 and fp32 images are not interchangeable.
    #[serde(default)]
    pub precision: Precision,
}

impl Default for SynthParams {
    fn default() -> Self {
        SynthParams::from_contract(&SynthesisParams::default(), BUILTIN_INPUT_SIZE, 0)
    }
}

/// Std of the start images' noise around the mean colour.
const INIT_STD: f64 = 0.1;

impl SynthParams {
    /// The engine's parameters for the contract's table `s` at `size` px with `seed`, in fp32:
    /// the caller resolves the table's precision for its device (`device::resolve_precision`)
    /// and sets `precision`.
    pub fn from_contract(s: &SynthesisParams, size: i64, seed: u64) -> SynthParams {
        SynthParams {
            steps: i64::from(s.steps),
            size,
            lr: s.lr,
            decay: s.decay,
            blur_sigma: s.blur_sigma,
            blur_every: i64::from(s.blur_every),
            objective: s.objective,
            unit_y: None,
            unit_x: None,
            color: ColorMode::Rgb,
            seed,
            init_std: INIT_STD,
            precision: Precision::Fp32,
        }
    }

    /// The contract's table these parameters come from (bounds are checked there).
    fn contract(&self) -> SynthesisParams {
        let clamp = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
        SynthesisParams {
            steps: clamp(self.steps),
            lr: self.lr,
            image_size: clamp(self.size),
            objective: self.objective,
            decay: self.decay,
            blur_sigma: self.blur_sigma,
            blur_every: clamp(self.blur_every),
            precision: PrecisionChoice::from(self.precision),
            ..SynthesisParams::default()
        }
    }

    /// Checks every bound; the first violation comes back naming its flag.
    pub fn validate(&self) -> Result<()> {
        let bad = WorkerError::bad;
        if self.steps <= 0 || self.size < 8 || self.blur_every < 0 {
            let (name, value) = match (self.steps <= 0, self.size < 8) {
                (true, _) => ("--steps", self.steps),
                (_, true) => ("--size", self.size),
                _ => ("--blur-every", self.blur_every),
            };
            return Err(bad(name, format!("{value} is out of bounds")));
        }
        let contract = self.contract();
        contract.check()?;
        contract.check_size(contract.image_size)?;
        if !(self.init_std.is_finite() && self.init_std >= 0.0) {
            return Err(bad("--init-std", format!("{} must be >= 0", self.init_std)));
        }
        if self.objective != ObjectiveKind::Unit && (self.unit_y.is_some() || self.unit_x.is_some())
        {
            return Err(bad(
                "--unit-y/--unit-x",
                "a position only makes sense with --objective unit".to_string(),
            ));
        }
        Ok(())
    }

    /// sha256 of the parameters' canonical JSON: results with equal hashes are comparable.
    pub fn hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let json = serde_json::to_vec(self).expect("params serialize");
        hex::encode(Sha256::digest(json))
    }
}
