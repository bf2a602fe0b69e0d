//! Synthesis parameters, their defaults (Yosinski et al. 2015, regulariser set 3) and bounds.

use serde::{Deserialize, Serialize};

use crate::error::{Result, WorkerError};

/// What each image is optimised to drive (DESIGN.md section 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ObjectiveKind {
    /// Mean of the filter's activation map (the paper's choice).
    Channel,
    /// The filter's activation at one position (`--unit-y`, `--unit-x`; centre by default).
    Unit,
    /// Mean over every filter of the layer (the filter only seeds the start image).
    Layer,
}

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
}

impl Default for SynthParams {
    fn default() -> Self {
        SynthParams {
            steps: 256,
            size: 224,
            lr: 0.05,
            decay: 1e-4,
            blur_sigma: 1.0,
            blur_every: 4,
            objective: ObjectiveKind::Channel,
            unit_y: None,
            unit_x: None,
            color: ColorMode::Rgb,
            seed: 0,
            init_std: 0.1,
        }
    }
}

impl SynthParams {
    /// Checks every bound; the first violation comes back naming its flag.
    pub fn validate(&self) -> Result<()> {
        let bad = WorkerError::bad;
        if self.steps <= 0 {
            return Err(bad(
                "--steps",
                format!("{} is not a positive number of steps", self.steps),
            ));
        }
        if self.size < 8 {
            return Err(bad(
                "--size",
                format!("{} px is too small; use at least 8", self.size),
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(bad(
                "--lr",
                format!("{} must be a positive number", self.lr),
            ));
        }
        if !(0.0..1.0).contains(&self.decay) {
            return Err(bad("--decay", format!("{} must be in [0, 1)", self.decay)));
        }
        if !(self.blur_sigma.is_finite() && self.blur_sigma >= 0.0) {
            return Err(bad(
                "--blur-sigma",
                format!("{} must be >= 0 (0 turns blurring off)", self.blur_sigma),
            ));
        }
        if self.blur_every < 0 {
            return Err(bad(
                "--blur-every",
                format!("{} must be >= 0 (0 turns blurring off)", self.blur_every),
            ));
        }
        if super::regularizers::blur_radius(self.blur_sigma) >= self.size {
            return Err(bad(
                "--blur-sigma",
                format!(
                    "{} px blur is wider than the {} px image",
                    self.blur_sigma, self.size
                ),
            ));
        }
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
