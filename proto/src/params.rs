//! The job contract: every parameter a job carries from a campaign spec (or the worker's command
//! line) to the computation, with its one default, its bounds and one validator. The campaign
//! spec's tables (`[synthesis]`, `[zoom]`, ...) are these structs; the coordinator writes
//! [`JobParams`] into each job and the worker reads the same type back; the worker's flags fill
//! the same structs. A problem names its field in the caller's terms: the spec's `zoom.factors`
//! or the command line's `--zoom-factors` ([`Field`]).
//!
//! Defaults are valid at every accepted image size: unless given, the grating frequencies are
//! the octaves below the Nyquist limit of the images the job shows.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The experiments a campaign can run on each unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Probe {
    /// Synthesizes the unit's max image; the other image probes start from it.
    Synthesis,
    Baseline,
    Zoom,
    Rotation,
    /// Runs its own single-colour syntheses, and shows the full-colour max image in grayscale.
    Color,
    Grating,
    Hue,
}

impl Probe {
    pub const ALL: [Probe; 7] = [
        Probe::Synthesis,
        Probe::Baseline,
        Probe::Zoom,
        Probe::Rotation,
        Probe::Color,
        Probe::Grating,
        Probe::Hue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Probe::Synthesis => "synthesis",
            Probe::Baseline => "baseline",
            Probe::Zoom => "zoom",
            Probe::Rotation => "rotation",
            Probe::Color => "color",
            Probe::Grating => "grating",
            Probe::Hue => "hue",
        }
    }

    /// Whether the probe's stimuli are built from the filter's max image, so its job must wait
    /// for the filter's synthesis job. Gratings and hue sweeps are parametric.
    pub fn needs_max_image(self) -> bool {
        matches!(
            self,
            Probe::Baseline | Probe::Zoom | Probe::Rotation | Probe::Color
        )
    }

    /// Whether the probe synthesizes (and so carries the synthesis parameters).
    pub fn synthesizes(self) -> bool {
        matches!(self, Probe::Synthesis | Probe::Color)
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Probe {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Probe::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!("unknown probe `{s}`; use one of synthesis, baseline, zoom, rotation, color, grating, hue")
            })
    }
}

// ---------------------------------------------------------------------------------------------
// Fields and their problems

/// A parameter, named by the spec field and the command-line flag that set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Steps,
    Lr,
    ImageSize,
    Decay,
    BlurSigma,
    BlurEvery,
    BatchSize,
    NoiseStd,
    ZoomFactors,
    Angles,
    Aperture,
    ColorSteps,
    Orientations,
    Frequencies,
    Phases,
    Hues,
    Precision,
}

impl Field {
    /// The campaign spec's name of the field.
    pub fn spec(self) -> &'static str {
        match self {
            Field::Steps => "synthesis.steps",
            Field::Lr => "synthesis.lr",
            Field::ImageSize => "synthesis.image_size",
            Field::Decay => "synthesis.decay",
            Field::BlurSigma => "synthesis.blur_sigma",
            Field::BlurEvery => "synthesis.blur_every",
            Field::BatchSize => "synthesis.batch_size",
            Field::NoiseStd => "baseline.noise_std",
            Field::ZoomFactors => "zoom.factors",
            Field::Angles => "rotation.angles",
            Field::Aperture => "rotation.aperture",
            Field::ColorSteps => "color.steps",
            Field::Orientations => "grating.orientations",
            Field::Frequencies => "grating.spatial_frequencies",
            Field::Phases => "grating.phases",
            Field::Hues => "hue.steps",
            Field::Precision => "synthesis.precision",
        }
    }

    /// The worker command line's flag for the field.
    pub fn flag(self) -> &'static str {
        match self {
            Field::Steps => "--steps",
            Field::Lr => "--lr",
            Field::ImageSize => "--size",
            Field::Decay => "--decay",
            Field::BlurSigma => "--blur-sigma",
            Field::BlurEvery => "--blur-every",
            Field::BatchSize => "--batch",
            Field::NoiseStd => "--noise-std",
            Field::ZoomFactors => "--zoom-factors",
            Field::Angles => "--angles",
            Field::Aperture => "--aperture",
            Field::ColorSteps => "--color-steps",
            Field::Orientations => "--orientations",
            Field::Frequencies => "--frequencies",
            Field::Phases => "--phases",
            Field::Hues => "--hues",
            Field::Precision => "--precision",
        }
    }
}

/// A parameter that is out of bounds or malformed.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamError {
    pub field: Field,
    pub reason: String,
}

impl ParamError {
    fn new(field: Field, reason: impl Into<String>) -> ParamError {
        ParamError {
            field,
            reason: reason.into(),
        }
    }

    /// "bad value for --zoom-factors: ..." for the command line.
    pub fn for_flag(&self) -> String {
        format!("bad value for {}: {}", self.field.flag(), self.reason)
    }
}

impl fmt::Display for ParamError {
    /// Named as in the campaign spec.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field `{}`: {}", self.field.spec(), self.reason)
    }
}

impl std::error::Error for ParamError {}

type Checked = Result<(), ParamError>;

fn within<T: PartialOrd + fmt::Display>(field: Field, value: T, lo: T, hi: T) -> Checked {
    match lo <= value && value <= hi {
        true => Ok(()),
        false => Err(ParamError::new(
            field,
            format!("{value} is out of bounds; use a value in {lo}..={hi}"),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Limits: what one job may ask for, so a spec cannot make a worker run out of memory or time.

/// Most stimuli one probe shows a filter (zoom factors, angles, orientations x frequencies x
/// phases, hues).
pub const MAX_STIMULI: usize = 4096;
/// Largest image side.
pub const MAX_IMAGE_SIZE: u32 = 4096;
/// Most gradient steps of one synthesis.
pub const MAX_STEPS: u32 = 100_000;
/// Most gratings one grating job shows (orientations x frequencies x phases).
pub const MAX_GRATINGS: usize = 4 * MAX_STIMULI;
/// Most channels (filters) of a layer; filter indices are below it.
pub const MAX_CHANNELS: i64 = 1 << 20;
/// Most layers a model describes, and a campaign names.
pub const MAX_LAYERS: usize = 4096;
/// Longest name (campaign, model, layer, alias) in characters.
pub const MAX_NAME_LEN: usize = 256;
/// Most items in a filter selection (`0-3,7,...` parts and list entries).
pub const MAX_FILTER_ITEMS: usize = 4096;

// ---------------------------------------------------------------------------------------------
// Value lists

/// Values along a stimulus axis as written: a list (`[0.5, 1, 2]`), the same as text
/// (`"0.5,1,2"`), or a range `"start:stop:step"` with the stop included (`"0:345:15"`). The
/// command line takes the two text forms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Values {
    List(Vec<f64>),
    Text(String),
}

impl Values {
    /// The values, strictly increasing and finite, for `field`.
    pub fn resolve(&self, field: Field) -> Result<Vec<f64>, ParamError> {
        let values = match self {
            Values::List(list) => list.clone(),
            Values::Text(text) => parse_values(field, text)?,
        };
        increasing(field, &values)?;
        Ok(values)
    }
}

/// start, start + step, ... up to stop inclusive (within a millionth of a step).
pub fn steps(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let n = ((stop - start) / step + 1e-6).floor() as usize;
    (0..=n).map(|i| start + i as f64 * step).collect()
}

/// Parses `a,b,c` or `start:stop:step` (stop inclusive) for `field`.
pub fn parse_values(field: Field, text: &str) -> Result<Vec<f64>, ParamError> {
    let bad = |reason: String| {
        ParamError::new(
            field,
            format!("`{text}`: {reason}; write a list such as `0.5,1,2` or a range start:stop:step such as `0:345:15`"),
        )
    };
    let number = |s: &str| -> Result<f64, ParamError> {
        match s.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(bad(format!("`{}` is not a number", s.trim()))),
        }
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(bad("it is empty".into()));
    }
    match trimmed.split(':').collect::<Vec<_>>()[..] {
        [one] => one.split(',').map(number).collect(),
        [start, stop, step] => {
            let (start, stop, step) = (number(start)?, number(stop)?, number(step)?);
            if step <= 0.0 {
                return Err(bad(format!("step {step} must be > 0")));
            }
            if stop < start {
                return Err(bad(format!("range {start}:{stop} is inverted")));
            }
            if (stop - start) / step >= MAX_STIMULI as f64 {
                return Err(bad(format!("it makes more than {MAX_STIMULI} values")));
            }
            Ok(steps(start, stop, step))
        }
        _ => Err(bad("a range has exactly three parts".into())),
    }
}

fn increasing(field: Field, values: &[f64]) -> Checked {
    if values.is_empty() {
        return Err(ParamError::new(
            field,
            "the list is empty; give at least one value",
        ));
    }
    if values.len() > MAX_STIMULI {
        return Err(ParamError::new(
            field,
            format!(
                "{} values are more than the {MAX_STIMULI} a probe shows",
                values.len()
            ),
        ));
    }
    if let Some(v) = values.iter().find(|v| !v.is_finite()) {
        return Err(ParamError::new(
            field,
            format!("{v} is not a finite number"),
        ));
    }
    match values.windows(2).find(|p| p[1] <= p[0]) {
        Some(p) => Err(ParamError::new(
            field,
            format!(
                "values must be strictly increasing, but {} follows {}",
                p[1], p[0]
            ),
        )),
        None => Ok(()),
    }
}

/// Circular values must fit in [first, first + period): the curve wraps around.
fn within_turn(field: Field, values: &[f64], period: f64) -> Checked {
    let (first, last) = (values[0], values[values.len() - 1]);
    match last - first >= period {
        true => Err(ParamError::new(
            field,
            format!("{first} to {last} spans a full turn of {period} degrees or more; leave out the repeat"),
        )),
        false => Ok(()),
    }
}

/// `count` equal steps over `period` degrees from 0.
fn turn(count: u32, period: f64) -> Vec<f64> {
    (0..count)
        .map(|i| f64::from(i) * period / f64::from(count))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Synthesis

/// What each image is optimised to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// Mean of the filter's activation map (the paper's choice).
    Channel,
    /// The filter's activation at one position (the map's centre unless given).
    Unit,
    /// Mean over every filter of the layer (the filter only seeds the start image).
    Layer,
}

impl std::str::FromStr for Objective {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "channel" => Ok(Objective::Channel),
            "unit" => Ok(Objective::Unit),
            "layer" => Ok(Objective::Layer),
            other => Err(format!(
                "unknown objective `{other}`; use channel, unit or layer"
            )),
        }
    }
}

impl fmt::Display for Objective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Objective::Channel => "channel",
            Objective::Unit => "unit",
            Objective::Layer => "layer",
        })
    }
}

/// The number format a job computes in. `fp32` is exact single precision throughout; `bf16` is
/// mixed precision: convolutions and matrix products run in bfloat16 while the image being
/// optimised, the regularisers, the gradient normalisation, the objective's reduction and the
/// reported activity of the saved max image stay fp32; `auto` lets each worker choose bf16
/// where its device runs it natively (CUDA with bf16 support, CPUs with AVX-512 BF16 or AMX)
/// and fp32 elsewhere. Every result records the precision that computed it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrecisionChoice {
    Fp32,
    Bf16,
    #[default]
    Auto,
}

impl PrecisionChoice {
    pub const ALL: [PrecisionChoice; 3] = [
        PrecisionChoice::Fp32,
        PrecisionChoice::Bf16,
        PrecisionChoice::Auto,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PrecisionChoice::Fp32 => "fp32",
            PrecisionChoice::Bf16 => "bf16",
            PrecisionChoice::Auto => "auto",
        }
    }
}

impl fmt::Display for PrecisionChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for PrecisionChoice {
    type Err = ParamError;

    /// `fp32`, `bf16` or `auto`; anything else (`fp16` included: vephys has no fp16 path) is
    /// refused naming the field.
    fn from_str(s: &str) -> Result<Self, ParamError> {
        PrecisionChoice::ALL
            .into_iter()
            .find(|p| p.as_str() == s.trim())
            .ok_or_else(|| {
                ParamError::new(
                    Field::Precision,
                    format!("unknown precision `{s}`; use fp32, bf16 or auto"),
                )
            })
    }
}

/// Max-image synthesis: Erhan et al. 2009's gradient ascent with Yosinski et al. 2015's
/// regularisers (see docs/science.md for which default comes from where).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynthesisParams {
    /// Gradient-ascent steps.
    pub steps: u32,
    /// Step size η in pixel units on the RMS-normalised gradient.
    pub lr: f64,
    /// Image side in pixels; 0 means the model's input size.
    pub image_size: u32,
    pub objective: Objective,
    /// L2 decay θ_decay towards the dataset mean colour, per step.
    pub decay: f64,
    /// Gaussian blur σ in pixels; 0 turns blurring off.
    pub blur_sigma: f64,
    /// Blur every this many steps; 0 turns blurring off.
    pub blur_every: u32,
    /// Images synthesized in one forward/backward pass (on a GPU).
    pub batch_size: u32,
    /// The number format the job computes in (`PrecisionChoice`); every job of the campaign
    /// carries it, the probes' too.
    pub precision: PrecisionChoice,
}

impl Default for SynthesisParams {
    fn default() -> Self {
        SynthesisParams {
            steps: 256,
            lr: 0.05,
            image_size: 0,
            objective: Objective::Channel,
            decay: 1e-4,
            blur_sigma: 1.0,
            blur_every: 4,
            batch_size: 32,
            precision: PrecisionChoice::Auto,
        }
    }
}

impl SynthesisParams {
    pub fn check(&self) -> Checked {
        within(Field::Steps, self.steps, 1, MAX_STEPS)?;
        if !(self.lr.is_finite() && self.lr > 0.0 && self.lr <= 100.0) {
            return Err(ParamError::new(
                Field::Lr,
                format!("{} is out of bounds; use a value in (0, 100]", self.lr),
            ));
        }
        if self.image_size != 0 {
            within(Field::ImageSize, self.image_size, 8, MAX_IMAGE_SIZE)?;
        }
        if !(0.0..1.0).contains(&self.decay) {
            return Err(ParamError::new(
                Field::Decay,
                format!("{} is out of bounds; use a value in [0, 1)", self.decay),
            ));
        }
        if !(self.blur_sigma.is_finite() && (0.0..=64.0).contains(&self.blur_sigma)) {
            return Err(ParamError::new(
                Field::BlurSigma,
                format!(
                    "{} is out of bounds; use a value in [0, 64] (0 turns blurring off)",
                    self.blur_sigma
                ),
            ));
        }
        within(Field::BlurEvery, self.blur_every, 0, MAX_STEPS)?;
        within(Field::BatchSize, self.batch_size, 1, 4096)?;
        Ok(())
    }

    /// What depends on the image side: the blur must fit in the image.
    pub fn check_size(&self, size: u32) -> Checked {
        within(Field::ImageSize, size, 8, MAX_IMAGE_SIZE)?;
        let radius = (3.0 * self.blur_sigma).ceil().max(1.0);
        if self.blur_sigma > 0.0 && radius >= f64::from(size) {
            return Err(ParamError::new(
                Field::BlurSigma,
                format!(
                    "a {} px blur is wider than the {size} px image",
                    self.blur_sigma
                ),
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The probes

/// `baseline`: the max image beside reference stimuli.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineParams {
    /// Standard deviation of the gaussian noise image around the mean colour (its seed is the
    /// job's).
    pub noise_std: f64,
}

impl Default for BaselineParams {
    fn default() -> Self {
        BaselineParams { noise_std: 0.2 }
    }
}

impl BaselineParams {
    pub fn check(&self) -> Checked {
        match self.noise_std.is_finite() && (0.0..=1.0).contains(&self.noise_std) {
            true => Ok(()),
            false => Err(ParamError::new(
                Field::NoiseStd,
                format!("{} is out of bounds; use a value in [0, 1]", self.noise_std),
            )),
        }
    }
}

/// What fills the border when a zoom factor below 1 shrinks the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZoomFill {
    /// Copies of the shrunk image (suits max images that tessellate, as channel objectives
    /// make).
    Tile,
    /// The dataset's mean colour (`pad` is the same).
    #[serde(alias = "pad")]
    Mean,
}

impl std::str::FromStr for ZoomFill {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tile" => Ok(ZoomFill::Tile),
            "mean" | "pad" => Ok(ZoomFill::Mean),
            other => Err(format!("unknown fill `{other}`; use tile or mean")),
        }
    }
}

impl fmt::Display for ZoomFill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ZoomFill::Tile => "tile",
            ZoomFill::Mean => "mean",
        })
    }
}

/// `zoom`: the max image at zoom factors, the image size kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZoomParams {
    /// Zoom factors (> 0, increasing); 1 is the max image itself.
    pub factors: Vec<f64>,
    pub fill: ZoomFill,
}

impl Default for ZoomParams {
    fn default() -> Self {
        ZoomParams {
            factors: vec![0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0],
            fill: ZoomFill::Tile,
        }
    }
}

impl ZoomParams {
    pub fn check(&self) -> Checked {
        increasing(Field::ZoomFactors, &self.factors)?;
        match self.factors.iter().find(|z| !(**z > 0.0 && **z <= 64.0)) {
            Some(z) => Err(ParamError::new(
                Field::ZoomFactors,
                format!("zoom factor {z} is out of bounds; use values in (0, 64]"),
            )),
            None => Ok(()),
        }
    }
}

/// `rotation`: the max image rotated about its centre, seen through a circular aperture at
/// every angle so that the square's corners cannot fake a tuning curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RotationToml")]
pub struct RotationParams {
    /// Angles in degrees, counterclockwise, increasing, within one turn.
    pub angles: Vec<f64>,
    /// Radius of the aperture as a fraction of half the image side. It must leave out the band
    /// along the borders where a max image is weaker (about half a receptive field wide), or
    /// the square borders come back as a 90-degree tuning.
    pub aperture: f64,
}

impl Default for RotationParams {
    fn default() -> Self {
        RotationParams {
            angles: steps(0.0, 345.0, 15.0),
            aperture: 0.7,
        }
    }
}

/// The rotation table as written: `angles` (a list or range), or `step_degrees` (angles 0,
/// step, 2 step, ... below 360: the first spelling of the spec).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotationToml {
    angles: Option<Values>,
    step_degrees: Option<f64>,
    aperture: Option<f64>,
}

impl TryFrom<RotationToml> for RotationParams {
    type Error = ParamError;

    fn try_from(t: RotationToml) -> Result<Self, ParamError> {
        let defaults = RotationParams::default();
        let angles = match (t.angles, t.step_degrees) {
            (Some(_), Some(_)) => {
                return Err(ParamError::new(
                    Field::Angles,
                    "give angles or step_degrees, not both",
                ))
            }
            (Some(values), None) => values.resolve(Field::Angles)?,
            (None, Some(step)) => {
                if !(step.is_finite() && step >= 360.0 / MAX_STIMULI as f64 && step <= 360.0) {
                    return Err(ParamError::new(
                        Field::Angles,
                        format!(
                            "step_degrees {step} is out of bounds; use a value in [{}, 360]",
                            360.0 / MAX_STIMULI as f64
                        ),
                    ));
                }
                let n = (360.0 / step - 1e-9).ceil() as usize;
                (0..n).map(|i| i as f64 * step).collect()
            }
            (None, None) => defaults.angles,
        };
        Ok(RotationParams {
            angles,
            aperture: t.aperture.unwrap_or(defaults.aperture),
        })
    }
}

impl RotationParams {
    pub fn check(&self) -> Checked {
        increasing(Field::Angles, &self.angles)?;
        within_turn(Field::Angles, &self.angles, 360.0)?;
        match self.aperture > 0.0 && self.aperture <= 1.0 {
            true => Ok(()),
            false => Err(ParamError::new(
                Field::Aperture,
                format!("{} is out of bounds; use a value in (0, 1]", self.aperture),
            )),
        }
    }
}

/// `color`: the paper's colour protocol on single-colour max images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ColorParams {
    /// Steps of each single-colour synthesis; 0 means the synthesis' steps.
    pub steps: u32,
}

impl ColorParams {
    pub fn check(&self) -> Checked {
        within(Field::ColorSteps, self.steps, 0, MAX_STEPS)
    }
}

/// `grating`: sinusoidal gratings, orientation x spatial frequency x phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "GratingToml")]
pub struct GratingParams {
    /// Orientations in degrees (direction of the wave vector, counterclockwise from the
    /// image's x axis), increasing, within half a turn.
    pub orientations: Vec<f64>,
    /// Cycles per image, increasing, below the Nyquist limit (size / 2); None: the octaves
    /// 2, 4, 8, ... below it, whatever the image size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spatial_frequencies: Option<Vec<f64>>,
    /// Phases per orientation and frequency, equally spaced; responses are averaged.
    pub phases: u32,
}

impl Default for GratingParams {
    fn default() -> Self {
        GratingParams {
            orientations: turn(12, 180.0),
            spatial_frequencies: None,
            phases: 4,
        }
    }
}

/// The grating table as written: `orientations` a count of equal steps over 180 degrees (12:
/// every 15 degrees) or the angles themselves (a list or range).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GratingToml {
    orientations: Option<Orientations>,
    spatial_frequencies: Option<Values>,
    phases: Option<u32>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Orientations {
    Count(u32),
    Values(Values),
}

impl TryFrom<GratingToml> for GratingParams {
    type Error = ParamError;

    fn try_from(t: GratingToml) -> Result<Self, ParamError> {
        let defaults = GratingParams::default();
        let orientations = match t.orientations {
            None => defaults.orientations,
            Some(Orientations::Count(n)) => {
                within(Field::Orientations, n as usize, 1, MAX_STIMULI)?;
                turn(n, 180.0)
            }
            Some(Orientations::Values(v)) => v.resolve(Field::Orientations)?,
        };
        let spatial_frequencies = t
            .spatial_frequencies
            .map(|v| v.resolve(Field::Frequencies))
            .transpose()?;
        Ok(GratingParams {
            orientations,
            spatial_frequencies,
            phases: t.phases.unwrap_or(defaults.phases),
        })
    }
}

impl GratingParams {
    pub fn check(&self) -> Checked {
        increasing(Field::Orientations, &self.orientations)?;
        within_turn(Field::Orientations, &self.orientations, 180.0)?;
        within(Field::Phases, self.phases, 1, 64)?;
        if let Some(f) = &self.spatial_frequencies {
            increasing(Field::Frequencies, f)?;
            if let Some(f) = f.iter().find(|f| **f <= 0.0) {
                return Err(ParamError::new(
                    Field::Frequencies,
                    format!("{f} cycles per image must be > 0"),
                ));
            }
        }
        match &self.spatial_frequencies {
            Some(f) => self.check_count(f.len()),
            None => Ok(()),
        }
    }

    /// At most [`MAX_GRATINGS`] gratings: orientations x `frequencies` frequencies x phases.
    fn check_count(&self, frequencies: usize) -> Checked {
        let stimuli = self.orientations.len() * self.phases as usize * frequencies;
        match stimuli <= MAX_GRATINGS {
            true => Ok(()),
            false => Err(ParamError::new(
                Field::Orientations,
                format!("{stimuli} gratings (orientations x frequencies x phases) are too many; use at most {MAX_GRATINGS}"),
            )),
        }
    }

    /// What depends on the image side: the frequencies shown stay below the Nyquist limit and
    /// the gratings within [`MAX_GRATINGS`] (the default frequencies grow with the size).
    pub fn check_size(&self, size: u32) -> Checked {
        let frequencies = self.frequencies(size)?;
        self.check_count(frequencies.len())
    }

    /// The frequencies shown on `size` px images: the given ones, which must be below the
    /// Nyquist limit, or the octaves 2, 4, 8, ... below it.
    pub fn frequencies(&self, size: u32) -> Result<Vec<f64>, ParamError> {
        let nyquist = f64::from(size) / 2.0;
        let Some(given) = &self.spatial_frequencies else {
            let octaves: Vec<f64> = (1..)
                .map(|k| f64::from(1u32 << k))
                .take_while(|f| *f < nyquist)
                .collect();
            return match octaves.is_empty() {
                true => Err(ParamError::new(
                    Field::ImageSize,
                    format!("{size} px images are too small for gratings; use at least 5 px"),
                )),
                false => Ok(octaves),
            };
        };
        match given.iter().find(|f| **f >= nyquist) {
            Some(f) => Err(ParamError::new(
                Field::Frequencies,
                format!(
                    "{f} cycles per image is at or above the Nyquist limit of {size} px images \
                     ({nyquist}); use frequencies below {nyquist}, larger images, or leave them \
                     out (the octaves below the limit)"
                ),
            )),
            None => Ok(given.clone()),
        }
    }
}

/// `hue`: isoluminant colours around the hue circle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HueParams {
    /// Equally spaced hues.
    pub steps: u32,
}

impl Default for HueParams {
    fn default() -> Self {
        HueParams { steps: 12 }
    }
}

impl HueParams {
    pub fn check(&self) -> Checked {
        within(Field::Hues, self.steps, 2, 3600)
    }
}

// ---------------------------------------------------------------------------------------------
// A job's parameters

/// Everything a job computes with besides its model, layer and filter. The coordinator
/// writes it as the job's JSON; the worker reads it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobParams {
    pub probe: Probe,
    pub seed: u64,
    /// The side of every image the job shows (the max images', resolved from the model's
    /// input size unless the spec gave one).
    pub image_size: u32,
    /// The synthesis that made (or, for the colour probe, makes) the max images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthesis: Option<SynthesisParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zoom: Option<ZoomParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<ColorParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grating: Option<GratingParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hue: Option<HueParams>,
    /// The number format to compute in: the spec's `synthesis.precision`, on every job (the
    /// probes' jobs too, which carry no synthesis table). A job's content key hashes this JSON,
    /// so results of different precisions are never taken for one another.
    #[serde(default)]
    pub precision: PrecisionChoice,
}

impl JobParams {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("job parameters serialize")
    }

    /// Reads and checks a job's parameters: anything wrong breaks the contract.
    pub fn parse(json: &str) -> Result<JobParams, String> {
        let params: JobParams = serde_json::from_str(json).map_err(|e| {
            format!("job parameters are not the coordinator's format ({e}): {json}")
        })?;
        params.check().map_err(|e| e.to_string())?;
        Ok(params)
    }

    /// Every bound, and the probe's own table present.
    pub fn check(&self) -> Checked {
        if let Some(s) = &self.synthesis {
            s.check()?;
            s.check_size(self.image_size)?;
            if s.precision != self.precision {
                return Err(ParamError::new(
                    Field::Precision,
                    format!(
                        "the job says {} but its synthesis table says {}",
                        self.precision, s.precision
                    ),
                ));
            }
        }
        within(Field::ImageSize, self.image_size, 8, MAX_IMAGE_SIZE)?;
        let missing = |field| {
            Err(ParamError::new(
                field,
                format!("a {} job without its parameters", self.probe),
            ))
        };
        match self.probe {
            Probe::Synthesis => match &self.synthesis {
                Some(_) => Ok(()),
                None => missing(Field::Steps),
            },
            Probe::Baseline => self
                .baseline
                .as_ref()
                .map_or(missing(Field::NoiseStd), BaselineParams::check),
            Probe::Zoom => self
                .zoom
                .as_ref()
                .map_or(missing(Field::ZoomFactors), ZoomParams::check),
            Probe::Rotation => self
                .rotation
                .as_ref()
                .map_or(missing(Field::Angles), RotationParams::check),
            Probe::Color => match (&self.color, &self.synthesis) {
                (Some(c), Some(_)) => c.check(),
                _ => missing(Field::ColorSteps),
            },
            Probe::Grating => match &self.grating {
                Some(g) => g.check().and_then(|()| g.check_size(self.image_size)),
                None => missing(Field::Orientations),
            },
            Probe::Hue => self
                .hue
                .as_ref()
                .map_or(missing(Field::Hues), HueParams::check),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_protocol_and_valid_at_every_size() {
        let r = RotationParams::default();
        assert_eq!((r.angles.len(), r.angles[23]), (24, 345.0));
        let g = GratingParams::default();
        assert_eq!(g.orientations.len(), 12);
        assert_eq!(g.orientations[1], 15.0);
        for size in [8u32, 32, 48, 64, 96, 128, 224, 331, 512] {
            let f = g.frequencies(size).unwrap();
            assert!(
                f.iter().all(|f| *f < f64::from(size) / 2.0),
                "{size}: {f:?}"
            );
            SynthesisParams::default().check_size(size).unwrap();
        }
        assert_eq!(
            g.frequencies(224).unwrap(),
            vec![2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
        );
        assert_eq!(g.frequencies(64).unwrap(), vec![2.0, 4.0, 8.0, 16.0]);
        for check in [
            SynthesisParams::default().check(),
            BaselineParams::default().check(),
            ZoomParams::default().check(),
            RotationParams::default().check(),
            ColorParams::default().check(),
            g.check(),
            HueParams::default().check(),
        ] {
            check.unwrap();
        }
    }

    #[test]
    fn the_first_spelling_of_the_spec_still_reads() {
        let r: RotationParams = toml::from_str("step_degrees = 90.0").unwrap();
        assert_eq!(r.angles, vec![0.0, 90.0, 180.0, 270.0]);
        let r: RotationParams = toml::from_str("angles = \"0:90:45\"\naperture = 0.5").unwrap();
        assert_eq!((r.angles, r.aperture), (vec![0.0, 45.0, 90.0], 0.5));
        let g: GratingParams =
            toml::from_str("orientations = 4\nspatial_frequencies = [2.0, 8.0]").unwrap();
        assert_eq!(g.orientations, vec![0.0, 45.0, 90.0, 135.0]);
        assert_eq!(g.spatial_frequencies, Some(vec![2.0, 8.0]));
        let g: GratingParams = toml::from_str("orientations = [0.0, 90.0]").unwrap();
        assert_eq!(g.orientations, vec![0.0, 90.0]);
        let z: ZoomParams = toml::from_str("fill = \"pad\"").unwrap();
        assert_eq!(z.fill, ZoomFill::Mean);
        // written back in one spelling, which reads the same
        let back: RotationParams = toml::from_str(&toml::to_string(&r_default()).unwrap()).unwrap();
        assert_eq!(back, r_default());
    }

    fn r_default() -> RotationParams {
        RotationParams::default()
    }

    #[test]
    fn bad_values_name_the_field_both_ways() {
        let err = toml::from_str::<RotationParams>("step_degrees = 1e-12").unwrap_err();
        assert!(
            err.to_string().contains("rotation.angles") || err.to_string().contains("step_degrees"),
            "{err}"
        );
        let err = parse_values(Field::ZoomFactors, "2,1")
            .and_then(|v| increasing(Field::ZoomFactors, &v))
            .unwrap_err();
        assert_eq!(err.field.spec(), "zoom.factors");
        assert!(
            err.for_flag().starts_with("bad value for --zoom-factors"),
            "{}",
            err.for_flag()
        );
        let g = GratingParams {
            spatial_frequencies: Some(vec![2.0, 64.0]),
            ..GratingParams::default()
        };
        let err = g.frequencies(96).unwrap_err();
        assert_eq!(err.field, Field::Frequencies);
        assert!(err.reason.contains("Nyquist"), "{err}");
        for bad in ["", "a", "1:0:1", "0:10:0", "1:2", "0:1e9:1e-3"] {
            assert!(parse_values(Field::Angles, bad).is_err(), "{bad:?}");
        }
        let huge = SynthesisParams {
            steps: MAX_STEPS + 1,
            ..SynthesisParams::default()
        };
        assert_eq!(huge.check().unwrap_err().field, Field::Steps);
    }

    #[test]
    fn job_parameters_round_trip_and_refuse_what_is_missing() {
        let job = JobParams {
            probe: Probe::Grating,
            seed: 3,
            image_size: 64,
            synthesis: None,
            baseline: None,
            zoom: None,
            rotation: None,
            color: None,
            grating: Some(GratingParams::default()),
            hue: None,
            precision: PrecisionChoice::Bf16,
        };
        assert_eq!(JobParams::parse(&job.to_json()).unwrap(), job);
        assert!(
            job.to_json().contains("\"precision\":\"bf16\""),
            "{}",
            job.to_json()
        );
        let no_table = JobParams {
            grating: None,
            ..job.clone()
        };
        assert!(JobParams::parse(&no_table.to_json()).is_err());
        let tiny = JobParams {
            image_size: 4,
            ..job
        };
        assert!(JobParams::parse(&tiny.to_json()).is_err());
        assert!(JobParams::parse("{\"probe\":\"zoom\"}").is_err());
    }

    #[test]
    fn precision_is_one_of_three_words_and_part_of_every_job() {
        assert_eq!(SynthesisParams::default().precision, PrecisionChoice::Auto);
        for (word, p) in [
            ("fp32", PrecisionChoice::Fp32),
            ("bf16", PrecisionChoice::Bf16),
            ("auto", PrecisionChoice::Auto),
        ] {
            assert_eq!(word.parse::<PrecisionChoice>().unwrap(), p);
            assert_eq!(p.to_string(), word);
        }
        for bad in ["fp16", "half", "", "BF16x"] {
            let err = bad.parse::<PrecisionChoice>().unwrap_err();
            assert_eq!(err.field, Field::Precision);
            assert!(
                err.for_flag()
                    .starts_with("bad value for --precision: unknown precision"),
                "{}",
                err.for_flag()
            );
            assert!(err.to_string().contains("synthesis.precision"), "{err}");
        }
        let s: SynthesisParams = toml::from_str("precision = \"bf16\"").unwrap();
        assert_eq!(s.precision, PrecisionChoice::Bf16);
        let err = toml::from_str::<SynthesisParams>("precision = \"fp16\"").unwrap_err();
        assert!(err.to_string().contains("fp16"), "{err}");
        // a job written before precision existed reads as auto
        let old = r#"{"probe":"hue","seed":0,"image_size":64,"hue":{"steps":12}}"#;
        assert_eq!(
            JobParams::parse(old).unwrap().precision,
            PrecisionChoice::Auto
        );
        // the job's precision and its synthesis table's must agree
        let job = JobParams {
            probe: Probe::Synthesis,
            seed: 0,
            image_size: 64,
            synthesis: Some(SynthesisParams::default()),
            baseline: None,
            zoom: None,
            rotation: None,
            color: None,
            grating: None,
            hue: None,
            precision: PrecisionChoice::Fp32,
        };
        let err = job.check().unwrap_err();
        assert_eq!(err.field, Field::Precision);
    }
}
