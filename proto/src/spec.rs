//! The campaign spec: what a user asks the coordinator to run, as written in a TOML file.
//!
//! ```toml
//! name = "vgg19-block3"
//! model = "vgg19"
//! layers = ["block3_pool"]          # layer names or aliases
//! filters = "all"                   # or [0, 5, "10..20"]; ranges are half-open
//! probes = ["synthesis", "baseline", "zoom", "rotation", "color"]
//!
//! [synthesis]
//! steps = 256
//! ```
//!
//! Every table is optional and defaults to the paper's settings. Checking the spec against the
//! model registry (layer exists, filter in range) is the coordinator's job; [`CampaignSpec::check`]
//! checks everything that needs no registry. Errors name the field at fault.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A spec problem, naming the field (e.g. `zoom.factors`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecError {
    pub field: String,
    pub reason: String,
}

impl SpecError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field `{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for SpecError {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignSpec {
    pub name: String,
    pub model: String,
    pub layers: Vec<String>,
    #[serde(default)]
    pub filters: Filters,
    #[serde(default = "default_probes")]
    pub probes: Vec<Probe>,
    /// Attempts per job before it ends `failed`.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub synthesis: SynthesisParams,
    #[serde(default)]
    pub baseline: BaselineParams,
    #[serde(default)]
    pub zoom: ZoomParams,
    #[serde(default)]
    pub rotation: RotationParams,
    #[serde(default)]
    pub color: ColorParams,
    #[serde(default)]
    pub grating: GratingParams,
    #[serde(default)]
    pub hue: HueParams,
}

fn default_probes() -> Vec<Probe> {
    vec![Probe::Synthesis]
}

fn default_max_attempts() -> u32 {
    3
}

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

/// Which filters (channels) of each layer to run: `"all"`, or a list of indices and half-open
/// ranges such as `[0, 3, "10..20"]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Filters {
    One(FilterItem),
    Many(Vec<FilterItem>),
}

impl Default for Filters {
    fn default() -> Self {
        Filters::One(FilterItem::Text("all".into()))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FilterItem {
    Index(i64),
    /// `"all"`, `"7"` or a half-open range `"a..b"`.
    Text(String),
}

impl Filters {
    /// Parses a CLI-style selection: `all`, or comma-separated indices and ranges (`0,3,10..20`).
    pub fn parse(text: &str) -> Filters {
        let items: Vec<FilterItem> = text
            .split(',')
            .map(|part| FilterItem::Text(part.trim().to_string()))
            .collect();
        Filters::Many(items)
    }

    /// The sorted, deduplicated filter indices for a layer with `channels` channels.
    pub fn resolve(&self, channels: i64) -> Result<Vec<i64>, String> {
        let items: &[FilterItem] = match self {
            Filters::One(item) => std::slice::from_ref(item),
            Filters::Many(items) => items,
        };
        if items.is_empty() {
            return Err("no filters selected; use \"all\" or a list such as [0, \"4..8\"]".into());
        }
        let mut selected = Vec::new();
        for item in items {
            let (start, end) = item.bounds(channels)?;
            if start < 0 || end > channels {
                return Err(format!(
                    "filter {} is out of range for a layer with {channels} channels; use 0..{channels}",
                    if end - start == 1 { start.to_string() } else { format!("{start}..{end}") }
                ));
            }
            if start >= end {
                return Err(format!(
                    "range {start}..{end} is empty; write it as start..end with start < end"
                ));
            }
            selected.extend(start..end);
        }
        selected.sort_unstable();
        selected.dedup();
        Ok(selected)
    }
}

impl FilterItem {
    /// The half-open range this item stands for.
    fn bounds(&self, channels: i64) -> Result<(i64, i64), String> {
        let text = match self {
            FilterItem::Index(i) => return Ok((*i, i + 1)),
            FilterItem::Text(text) => text.trim(),
        };
        if text == "all" {
            return Ok((0, channels));
        }
        let parse = |s: &str| {
            s.trim().parse::<i64>().map_err(|_| {
                format!("`{text}` is not a filter index or range; use e.g. 7, \"0..64\" or \"all\"")
            })
        };
        match text.split_once("..") {
            Some((a, b)) => Ok((parse(a)?, parse(b)?)),
            None => {
                let i = parse(text)?;
                Ok((i, i + 1))
            }
        }
    }
}

/// Max-image synthesis (Erhan 2009 gradient ascent with Yosinski 2015 regularisers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynthesisParams {
    pub steps: u32,
    /// Step size η on the RMS-normalised gradient.
    pub lr: f64,
    /// Image side in pixels; 0 means the model's input size.
    pub image_size: u32,
    /// "channel" (mean of the map), "unit" (centre unit) or "layer".
    pub objective: String,
    /// L2 decay θ_decay towards the dataset mean colour.
    pub decay: f64,
    pub blur_sigma: f64,
    /// Blur every this many steps; 0 turns blurring off.
    pub blur_every: u32,
    /// Images synthesized in one forward/backward pass.
    pub batch_size: u32,
}

impl Default for SynthesisParams {
    fn default() -> Self {
        Self {
            steps: 256,
            lr: 0.05,
            image_size: 0,
            objective: "channel".into(),
            decay: 1e-4,
            blur_sigma: 1.0,
            blur_every: 4,
            batch_size: 32,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineParams {
    /// Standard deviation of the gaussian noise image around mid-gray.
    pub noise_std: f64,
}

impl Default for BaselineParams {
    fn default() -> Self {
        Self { noise_std: 0.2 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZoomParams {
    pub factors: Vec<f64>,
    /// How a zoomed-out (z < 1) image fills its border: "mean" colour or "tile".
    pub fill: String,
}

impl Default for ZoomParams {
    fn default() -> Self {
        Self {
            factors: vec![0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0],
            fill: "tile".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RotationParams {
    /// Angles run 0, step, 2·step, … below 360.
    pub step_degrees: f64,
}

impl Default for RotationParams {
    fn default() -> Self {
        Self { step_degrees: 15.0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ColorParams {
    /// Steps of each single-colour synthesis; 0 means `synthesis.steps`.
    pub steps: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GratingParams {
    pub orientations: u32,
    /// Cycles per image.
    pub spatial_frequencies: Vec<f64>,
    pub phases: u32,
}

impl Default for GratingParams {
    fn default() -> Self {
        Self {
            orientations: 12,
            spatial_frequencies: vec![2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
            phases: 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HueParams {
    pub steps: u32,
}

impl Default for HueParams {
    fn default() -> Self {
        Self { steps: 12 }
    }
}

impl CampaignSpec {
    /// A spec with every table at its default (the paper's settings).
    pub fn new(name: &str, model: &str, layers: &[&str]) -> Self {
        Self {
            name: name.to_string(),
            model: model.to_string(),
            layers: layers.iter().map(|l| l.to_string()).collect(),
            filters: Filters::default(),
            probes: default_probes(),
            max_attempts: default_max_attempts(),
            seed: 0,
            synthesis: SynthesisParams::default(),
            baseline: BaselineParams::default(),
            zoom: ZoomParams::default(),
            rotation: RotationParams::default(),
            color: ColorParams::default(),
            grating: GratingParams::default(),
            hue: HueParams::default(),
        }
    }

    pub fn from_toml(text: &str) -> Result<Self, SpecError> {
        toml::from_str(text).map_err(|e| {
            // toml reports the offending key in its message; keep it, minus the source excerpt.
            let message = e.message().to_string();
            let field = e
                .span()
                .map(|span| key_at(text, span.start))
                .unwrap_or_else(|| "spec".to_string());
            SpecError::new(field, message)
        })
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a campaign spec always serializes to toml")
    }

    /// Checks everything that does not need the model registry.
    pub fn check(&self) -> Result<(), SpecError> {
        if self.name.trim().is_empty() {
            return Err(SpecError::new(
                "name",
                "must not be empty; name the campaign",
            ));
        }
        if self.model.trim().is_empty() {
            return Err(SpecError::new(
                "model",
                "must not be empty; name a registered model",
            ));
        }
        if self.layers.is_empty() {
            return Err(SpecError::new(
                "layers",
                "no layers given; list at least one layer name",
            ));
        }
        if self.probes.is_empty() {
            return Err(SpecError::new(
                "probes",
                "no probes given; use at least [\"synthesis\"]",
            ));
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err(out_of("max_attempts", self.max_attempts, "1..=100"));
        }
        let s = &self.synthesis;
        if !(1..=100_000).contains(&s.steps) {
            return Err(out_of("synthesis.steps", s.steps, "1..=100000"));
        }
        if !(s.lr > 0.0 && s.lr <= 100.0) {
            return Err(out_of("synthesis.lr", s.lr, "(0, 100]"));
        }
        if s.image_size != 0 && !(8..=4096).contains(&s.image_size) {
            return Err(out_of(
                "synthesis.image_size",
                s.image_size,
                "8..=4096 (or 0 for the model's input size)",
            ));
        }
        if !["channel", "unit", "layer"].contains(&s.objective.as_str()) {
            return Err(SpecError::new(
                "synthesis.objective",
                format!(
                    "unknown objective `{}`; use channel, unit or layer",
                    s.objective
                ),
            ));
        }
        if !(0.0..1.0).contains(&s.decay) {
            return Err(out_of("synthesis.decay", s.decay, "[0, 1)"));
        }
        if !(0.0..=64.0).contains(&s.blur_sigma) {
            return Err(out_of("synthesis.blur_sigma", s.blur_sigma, "[0, 64]"));
        }
        if !(1..=4096).contains(&s.batch_size) {
            return Err(out_of("synthesis.batch_size", s.batch_size, "1..=4096"));
        }
        if !(0.0..=1.0).contains(&self.baseline.noise_std) {
            return Err(out_of(
                "baseline.noise_std",
                self.baseline.noise_std,
                "[0, 1]",
            ));
        }
        if self.zoom.factors.is_empty() {
            return Err(SpecError::new(
                "zoom.factors",
                "is empty; give at least one zoom factor",
            ));
        }
        if let Some(z) = self
            .zoom
            .factors
            .iter()
            .find(|z| !(**z > 0.0 && **z <= 64.0))
        {
            return Err(out_of("zoom.factors", z, "(0, 64]"));
        }
        increasing("zoom.factors", &self.zoom.factors)?;
        if !["mean", "tile"].contains(&self.zoom.fill.as_str()) {
            return Err(SpecError::new(
                "zoom.fill",
                format!("unknown fill `{}`; use mean or tile", self.zoom.fill),
            ));
        }
        let step = self.rotation.step_degrees;
        if !(step > 0.0 && step <= 360.0) {
            return Err(out_of("rotation.step_degrees", step, "(0, 360]"));
        }
        if self.color.steps > 100_000 {
            return Err(out_of("color.steps", self.color.steps, "0..=100000"));
        }
        let g = &self.grating;
        if !(1..=360).contains(&g.orientations) {
            return Err(out_of("grating.orientations", g.orientations, "1..=360"));
        }
        if !(1..=64).contains(&g.phases) {
            return Err(out_of("grating.phases", g.phases, "1..=64"));
        }
        if g.spatial_frequencies.is_empty() {
            return Err(SpecError::new(
                "grating.spatial_frequencies",
                "is empty; give at least one frequency in cycles per image",
            ));
        }
        if let Some(f) = g
            .spatial_frequencies
            .iter()
            .find(|f| !(**f > 0.0 && **f <= 1024.0))
        {
            return Err(out_of("grating.spatial_frequencies", f, "(0, 1024]"));
        }
        increasing("grating.spatial_frequencies", &g.spatial_frequencies)?;
        if !(2..=3600).contains(&self.hue.steps) {
            return Err(out_of("hue.steps", self.hue.steps, "2..=3600"));
        }
        Ok(())
    }

    /// Checks what depends on the image side the jobs will use (the model's input size unless
    /// `synthesis.image_size` sets one): gratings must stay below the Nyquist limit.
    pub fn check_image_size(&self, size: u32) -> Result<(), SpecError> {
        if !self.probes.contains(&Probe::Grating) {
            return Ok(());
        }
        let nyquist = f64::from(size) / 2.0;
        match self
            .grating
            .spatial_frequencies
            .iter()
            .find(|f| **f >= nyquist)
        {
            Some(f) => Err(SpecError::new(
                "grating.spatial_frequencies",
                format!(
                    "{f} cycles per image is at or above the Nyquist limit of {size} px images \
                     ({nyquist}); use frequencies below {nyquist} or a larger synthesis.image_size"
                ),
            )),
            None => Ok(()),
        }
    }
}

fn increasing(field: &str, values: &[f64]) -> Result<(), SpecError> {
    match values.windows(2).find(|w| w[0] >= w[1]) {
        Some(w) => Err(SpecError::new(
            field,
            format!(
                "{} then {}: list the values in strictly increasing order",
                w[0], w[1]
            ),
        )),
        None => Ok(()),
    }
}

fn out_of(field: &str, value: impl fmt::Display, range: &str) -> SpecError {
    SpecError::new(
        field,
        format!("{value} is out of bounds; use a value in {range}"),
    )
}

/// The key on the line where a TOML parse error starts, for naming the field at fault.
fn key_at(text: &str, offset: usize) -> String {
    let line_start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    match line.split_once('=') {
        Some((key, _)) => key.trim().to_string(),
        None => "spec".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> &'static str {
        "name = \"t\"\nmodel = \"m\"\nlayers = [\"l\"]\n"
    }

    #[test]
    fn minimal_spec_gets_paper_defaults() {
        let spec = CampaignSpec::from_toml(minimal()).unwrap();
        assert_eq!(spec, CampaignSpec::new("t", "m", &["l"]));
        assert_eq!(spec.probes, vec![Probe::Synthesis]);
        assert_eq!(spec.synthesis.blur_every, 4);
        assert_eq!(spec.filters.resolve(4).unwrap(), vec![0, 1, 2, 3]);
        spec.check().unwrap();
    }

    #[test]
    fn filters_accept_indices_ranges_and_all() {
        let spec: CampaignSpec =
            toml::from_str(&format!("{}filters = [5, \"0..3\", \"2\"]\n", minimal())).unwrap();
        assert_eq!(spec.filters.resolve(10).unwrap(), vec![0, 1, 2, 5]);
        assert_eq!(Filters::parse("1,3..5").resolve(8).unwrap(), vec![1, 3, 4]);
        assert_eq!(Filters::parse("all").resolve(2).unwrap(), vec![0, 1]);
    }

    #[test]
    fn filter_out_of_range_says_the_valid_range() {
        let err = Filters::parse("0..600").resolve(512).unwrap_err();
        assert!(err.contains("0..512"), "{err}");
        let err = Filters::parse("x").resolve(512).unwrap_err();
        assert!(err.contains("`x`"), "{err}");
    }

    #[test]
    fn unknown_field_is_named() {
        let err = CampaignSpec::from_toml(&format!("{}colour = 1\n", minimal())).unwrap_err();
        assert!(err.reason.contains("colour"), "{err}");
    }

    #[test]
    fn unknown_probe_is_named() {
        let err =
            CampaignSpec::from_toml(&format!("{}probes = [\"zom\"]\n", minimal())).unwrap_err();
        assert_eq!(err.field, "probes", "{err}");
    }

    #[test]
    fn out_of_bounds_parameter_names_its_field() {
        let mut spec = CampaignSpec::from_toml(minimal()).unwrap();
        spec.synthesis.steps = 0;
        assert_eq!(spec.check().unwrap_err().field, "synthesis.steps");
        spec.synthesis.steps = 10;
        spec.zoom.factors = vec![1.0, -2.0];
        assert_eq!(spec.check().unwrap_err().field, "zoom.factors");
        spec.zoom.factors = vec![2.0, 1.0];
        assert_eq!(spec.check().unwrap_err().field, "zoom.factors");
    }

    #[test]
    fn gratings_above_nyquist_are_refused() {
        let mut spec = CampaignSpec::from_toml(minimal()).unwrap();
        spec.probes = vec![Probe::Grating];
        spec.check().unwrap();
        spec.check_image_size(224).unwrap();
        let err = spec.check_image_size(64).unwrap_err();
        assert_eq!(err.field, "grating.spatial_frequencies", "{err}");
        assert!(err.reason.contains("Nyquist"), "{err}");
    }

    #[test]
    fn spec_round_trips_through_toml() {
        let spec = CampaignSpec::from_toml(minimal()).unwrap();
        assert_eq!(CampaignSpec::from_toml(&spec.to_toml()).unwrap(), spec);
    }
}
