//! The campaign spec: what a user asks the coordinator to run, as written in a TOML file.
//!
//! ```toml
//! name = "vgg19-block3"
//! model = "vgg19"
//! layers = ["block3_pool"]          # layer names or aliases
//! filters = "all"                   # or "0-15", [0, 5, "10..20"]: see `filters`
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

use crate::params::{MAX_LAYERS, MAX_NAME_LEN};

pub use crate::filters::{FilterItem, Filters};
pub use crate::params::{
    BaselineParams, ColorParams, GratingParams, HueParams, JobParams, ParamError, PrecisionChoice,
    Probe, RotationParams, SynthesisParams, ZoomParams,
};

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

impl From<ParamError> for SpecError {
    fn from(e: ParamError) -> Self {
        SpecError::new(e.field.spec(), e.reason)
    }
}

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
        check_name("name", &self.name)?;
        if self.model.trim().is_empty() {
            return Err(SpecError::new(
                "model",
                "must not be empty; name a registered model",
            ));
        }
        check_name("model", &self.model)?;
        if self.layers.is_empty() {
            return Err(SpecError::new(
                "layers",
                "no layers given; list at least one layer name",
            ));
        }
        if self.layers.len() > MAX_LAYERS {
            return Err(SpecError::new(
                "layers",
                format!(
                    "{} layers are more than the {MAX_LAYERS} a campaign may name; split the campaign",
                    self.layers.len()
                ),
            ));
        }
        for (i, layer) in self.layers.iter().enumerate() {
            check_name(&format!("layers[{i}]"), layer)?;
        }
        if self.probes.is_empty() {
            return Err(SpecError::new(
                "probes",
                "no probes given; use at least [\"synthesis\"]",
            ));
        }
        if self.probes.len() > 4 * Probe::ALL.len() {
            return Err(SpecError::new(
                "probes",
                format!(
                    "{} entries for {} probes; name each probe once",
                    self.probes.len(),
                    Probe::ALL.len()
                ),
            ));
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err(out_of("max_attempts", self.max_attempts, "1..=100"));
        }
        self.synthesis.check()?;
        self.baseline.check()?;
        self.zoom.check()?;
        self.rotation.check()?;
        self.color.check()?;
        self.grating.check()?;
        self.hue.check()?;
        self.filters
            .check()
            .map_err(|reason| SpecError::new("filters", reason))?;
        Ok(())
    }

    /// Checks what depends on the image side the jobs will use (the model's input size unless
    /// `synthesis.image_size` sets one): the blur must fit, gratings stay below Nyquist.
    pub fn check_image_size(&self, size: u32) -> Result<(), SpecError> {
        self.synthesis.check_size(size)?;
        if self.probes.contains(&Probe::Grating) {
            self.grating.check_size(size)?;
        }
        Ok(())
    }

    /// The parameters of this campaign's `probe` jobs on `image_size` px images.
    pub fn job_params(&self, probe: Probe, image_size: u32) -> JobParams {
        let synthesis = SynthesisParams {
            image_size,
            ..self.synthesis.clone()
        };
        let own = |p: Probe| probe == p;
        JobParams {
            probe,
            seed: self.seed,
            image_size,
            synthesis: (probe == Probe::Synthesis || probe.needs_max_image()).then_some(synthesis),
            baseline: own(Probe::Baseline).then(|| self.baseline.clone()),
            zoom: own(Probe::Zoom).then(|| self.zoom.clone()),
            rotation: own(Probe::Rotation).then(|| self.rotation.clone()),
            color: own(Probe::Color).then(|| self.color.clone()),
            grating: own(Probe::Grating).then(|| self.grating.clone()),
            hue: own(Probe::Hue).then(|| self.hue.clone()),
            precision: self.synthesis.precision,
        }
    }
}

/// A name that fits in [`MAX_NAME_LEN`] characters.
fn check_name(field: &str, name: &str) -> Result<(), SpecError> {
    match name.chars().count() <= MAX_NAME_LEN {
        true => Ok(()),
        false => Err(SpecError::new(
            field,
            format!("is longer than {MAX_NAME_LEN} characters; use a shorter name"),
        )),
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
        let parse = |t| Filters::parse(t).unwrap();
        assert_eq!(parse("1,3..5").resolve(8).unwrap(), vec![1, 3, 4]);
        assert_eq!(parse("1,3-5").resolve(8).unwrap(), vec![1, 3, 4, 5]);
        assert_eq!(parse("all").resolve(2).unwrap(), vec![0, 1]);
        let inclusive: CampaignSpec =
            toml::from_str(&format!("{}filters = \"0-2\"\n", minimal())).unwrap();
        assert_eq!(inclusive.filters.resolve(10).unwrap(), vec![0, 1, 2]);
    }

    #[test]
    fn filter_out_of_range_says_the_valid_range() {
        let err = Filters::parse("0..600").unwrap().resolve(512).unwrap_err();
        assert!(err.contains("0..512") && err.contains("0-511"), "{err}");
        let err = Filters::parse("x").unwrap_err();
        assert!(err.contains("`x`"), "{err}");
        let bad: CampaignSpec =
            toml::from_str(&format!("{}filters = \"3-1\"\n", minimal())).unwrap();
        assert_eq!(bad.check().unwrap_err().field, "filters");
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
    fn gratings_above_nyquist_are_refused_but_the_default_adapts() {
        let mut spec = CampaignSpec::from_toml(minimal()).unwrap();
        spec.probes = vec![Probe::Grating];
        spec.check().unwrap();
        for size in [32, 64, 96, 224, 512] {
            spec.check_image_size(size).unwrap();
        }
        spec.grating.spatial_frequencies = Some(vec![2.0, 4.0, 64.0]);
        spec.check_image_size(224).unwrap();
        let err = spec.check_image_size(64).unwrap_err();
        assert_eq!(err.field, "grating.spatial_frequencies", "{err}");
        assert!(err.reason.contains("Nyquist"), "{err}");
    }

    #[test]
    fn spec_round_trips_through_toml() {
        let spec = CampaignSpec::from_toml(minimal()).unwrap();
        assert_eq!(CampaignSpec::from_toml(&spec.to_toml()).unwrap(), spec);
        let old = CampaignSpec::from_toml(&format!(
            "{}[rotation]\nstep_degrees = 30.0\n[grating]\norientations = 6\n",
            minimal()
        ))
        .unwrap();
        assert_eq!(old.rotation.angles.len(), 12);
        assert_eq!(CampaignSpec::from_toml(&old.to_toml()).unwrap(), old);
    }

    #[test]
    fn a_spec_and_its_jobs_carry_the_same_typed_parameters() {
        let spec = CampaignSpec::from_toml(&format!(
            "{}probes = [\"zoom\", \"grating\"]\n[zoom]\nfactors = [0.5, 1.0]\nfill = \"mean\"\n",
            minimal()
        ))
        .unwrap();
        let zoom = spec.job_params(Probe::Zoom, 64);
        assert_eq!(zoom.zoom.as_ref(), Some(&spec.zoom));
        assert_eq!(zoom.synthesis.as_ref().map(|s| s.image_size), Some(64));
        assert!(zoom.grating.is_none());
        let read = JobParams::parse(&zoom.to_json()).unwrap();
        assert_eq!(read, zoom);
        let grating = spec.job_params(Probe::Grating, 64);
        assert!(grating.synthesis.is_none());
        assert_eq!(
            grating.grating.unwrap().frequencies(64).unwrap(),
            vec![2.0, 4.0, 8.0, 16.0]
        );
    }

    #[test]
    fn precision_is_a_synthesis_field_that_every_job_carries() {
        let spec = CampaignSpec::from_toml(minimal()).unwrap();
        assert_eq!(
            spec.synthesis.precision,
            crate::params::PrecisionChoice::Auto
        );
        let spec = CampaignSpec::from_toml(&format!(
            "{}probes = [\"synthesis\", \"hue\"]\n[synthesis]\nprecision = \"fp32\"\n",
            minimal()
        ))
        .unwrap();
        for probe in [Probe::Synthesis, Probe::Hue, Probe::Zoom] {
            let job = spec.job_params(probe, 64);
            assert_eq!(
                job.precision,
                crate::params::PrecisionChoice::Fp32,
                "{probe}"
            );
            assert!(job.to_json().contains("\"precision\":\"fp32\""), "{probe}");
            JobParams::parse(&job.to_json()).unwrap();
        }
        // jobs of different precisions differ in their JSON, which their content key hashes
        let bf16 =
            CampaignSpec::from_toml(&format!("{}[synthesis]\nprecision = \"bf16\"\n", minimal()))
                .unwrap();
        assert_ne!(
            bf16.job_params(Probe::Synthesis, 64).to_json(),
            spec.job_params(Probe::Synthesis, 64).to_json()
        );
        let err =
            CampaignSpec::from_toml(&format!("{}[synthesis]\nprecision = \"fp16\"\n", minimal()))
                .unwrap_err();
        assert_eq!(err.field, "precision", "{err}");
        assert!(err.reason.contains("fp16"), "{err}");
    }
}
