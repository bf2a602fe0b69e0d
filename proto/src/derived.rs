//! The numbers derived from a job's responses (a result's `derived_json`), typed per probe.
//! Workers write them, the coordinator's views and readers read them. Every probe records a
//! unit's max and mean activity per stimulus; each derived number is computed from the
//! max-activity curve, and the same number from the mean-activity curve sits under `mean`
//! ([`Both`]), so a name means one thing everywhere. docs/science.md defines each.

use serde::{Deserialize, Serialize};

/// A number from the max-activity responses, and under `mean` the same from the mean-activity
/// ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Both<T> {
    #[serde(flatten)]
    pub max: T,
    pub mean: T,
}

/// The shape of a tuning curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tuning {
    /// Stimulus value of the highest response.
    pub preferred: f64,
    /// The highest response.
    pub peak: f64,
    /// Peak over the curve's mean; None when the mean is not positive.
    pub peak_to_mean: Option<f64>,
    /// Full width at half height between the curve's max and min, in the axis' unit (octaves
    /// for zoom and spatial frequency; circular axes wrap); None where undefined.
    pub bandwidth: Option<f64>,
    /// True when the curve does not vary (every response equal).
    pub flat: bool,
}

/// `synthesis`: how the gradient ascent went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthesisDerived {
    pub steps: u32,
    pub objective_first: Option<f64>,
    pub objective_last: Option<f64>,
    /// Seeded start images tried before one gave the unit a gradient (a unit is `dead` only
    /// when every start leaves it silent).
    pub starts: u32,
}

/// `baseline`: the paper's colour selectivity index, of the full-colour max image against its
/// grayscale (luma): (A_colour - A_gray) / (A_colour + A_gray).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineNumbers {
    pub csi: Option<f64>,
}

/// `zoom` and `hue`: the curve's tuning; hue adds its circular variance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurveNumbers {
    #[serde(flatten)]
    pub tuning: Tuning,
    /// Circular variance of the curve on its circle (hue); absent on linear axes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circular_variance: Option<f64>,
}

/// `rotation`: the tuning over angle, orientation selectivity and rotational symmetry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RotationNumbers {
    #[serde(flatten)]
    pub tuning: Tuning,
    /// Circular variance over 2θ (0: sharply oriented, 1: untuned); blind to 4-fold patterns.
    pub circular_variance: Option<f64>,
    /// The rotation that maps the curve onto itself best (360 / the strongest harmonic), in
    /// degrees; None for a flat curve.
    pub symmetry_period_deg: Option<f64>,
    /// How strong that symmetry is: the resultant length of the curve at its harmonic, 0 (none)
    /// to 1 (a pure n-fold pattern); 1 - the circular variance at that harmonic.
    pub symmetry_strength: Option<f64>,
}

/// `color`: the paper's colour protocol on single-colour max images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColorNumbers {
    /// The channel whose single-colour max image drives the unit hardest: `r`, `g` or `b`.
    pub preferred_channel: String,
    /// Per channel r, g, b: (A_c - A_gray) / (A_c + A_gray), the single-colour image against
    /// its luma grayscale. The luma weights (0.299, 0.587, 0.114) bias it: a colour-blind unit
    /// reads about +0.05 red, -0.28 green, +0.49 blue.
    pub channel_selectivity: [Option<f64>; 3],
    /// The control without that bias: the single-colour image against the same values copied
    /// into all three channels; about 0 for a colour-blind unit.
    pub channel_selectivity_equal: [Option<f64>; 3],
    /// `channel_selectivity_equal` of the preferred channel.
    pub preferred_channel_selectivity: Option<f64>,
}

/// `grating`: tuning over orientation and spatial frequency (averaged over phases and the
/// other axis' values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GratingNumbers {
    pub orientation: Tuning,
    pub frequency: Tuning,
    /// Orientation's circular variance over 2θ.
    pub circular_variance: Option<f64>,
}

/// Every probe's derived numbers, as one job's `derived_json` holds them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Derived {
    Synthesis(SynthesisDerived),
    Baseline(Both<BaselineNumbers>),
    Rotation(Both<RotationNumbers>),
    Color(Both<ColorNumbers>),
    Grating(Both<GratingNumbers>),
    /// Zoom and hue.
    Curve(Both<CurveNumbers>),
    /// A probe job of a dead unit: nothing to derive.
    Nothing {},
}

impl Derived {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("derived numbers serialize")
    }
}
