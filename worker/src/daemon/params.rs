//! A leased job's parameters — the contract's `JobParams`, which the coordinator wrote from the
//! campaign spec — as the worker's engine takes them. The coordinator checked them at
//! submission, so anything refused here breaks the contract: a permanent error, never retried.

use crate::device::Precision;
use crate::probes::ProbeParams;
use crate::synthesis::SynthParams;
use vephys_proto::params::{JobParams, Probe};

/// Everything a batch of one (layer, probe) needs.
#[derive(Debug, Clone)]
pub struct Params {
    /// Present for synthesis and the probes that start from a max image.
    pub synthesis: Option<SynthParams>,
    /// Steps of the colour probe's single-colour syntheses.
    pub color_steps: Option<i64>,
    pub probes: ProbeParams,
    /// Image side of every stimulus.
    pub size: i64,
    /// The contract as the job carried it, for the records.
    pub job: JobParams,
}

/// Reads a job's parameters; `probe` is the job's probe, which they must be for.
pub fn parse(params_json: &str, probe: Probe) -> Result<Params, String> {
    let job = JobParams::parse(params_json)?;
    if job.probe != probe {
        return Err(format!(
            "a {probe} job carries the parameters of a {} job",
            job.probe
        ));
    }
    let size = i64::from(job.image_size);
    let synthesis = job
        .synthesis
        .as_ref()
        .map(|s| SynthParams::from_contract(s, size, job.seed));
    let defaults = ProbeParams::default();
    let probes = ProbeParams {
        baseline: job.baseline.clone().unwrap_or(defaults.baseline),
        zoom: job.zoom.clone().unwrap_or(defaults.zoom),
        rotation: job.rotation.clone().unwrap_or(defaults.rotation),
        color: job.color.clone().unwrap_or(defaults.color),
        grating: job.grating.clone().unwrap_or(defaults.grating),
        hue: job.hue.clone().unwrap_or(defaults.hue),
        seed: job.seed,
        batch: defaults.batch,
        precision: Precision::Fp32,
    };
    let color_steps = job.color.as_ref().map(|c| match (c.steps, &synthesis) {
        (0, Some(s)) => s.steps,
        (n, _) => i64::from(n),
    });
    Ok(Params {
        synthesis,
        color_steps,
        probes,
        size,
        job,
    })
}

impl Params {
    /// These parameters computed in `precision` (the job's choice resolved for the device):
    /// the engine's and the probes' precision, and the contract's as the records state it.
    pub fn in_precision(&self, precision: Precision) -> Params {
        let mut p = self.clone();
        if let Some(s) = &mut p.synthesis {
            s.precision = precision;
        }
        p.probes.precision = precision;
        p.job.precision = precision.into();
        if let Some(s) = &mut p.job.synthesis {
            s.precision = precision.into();
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vephys_proto::spec::CampaignSpec;

    /// What the coordinator writes is what the worker reads: the same types both sides.
    #[test]
    fn the_coordinators_jobs_become_the_engines_parameters() {
        let spec = CampaignSpec::from_toml(
            "name = \"t\"\nmodel = \"m\"\nlayers = [\"l\"]\nseed = 7\n\
             probes = [\"rotation\", \"color\", \"hue\", \"grating\"]\n\
             [synthesis]\nsteps = 10\n[zoom]\nfill = \"mean\"\n",
        )
        .unwrap();
        let rotation = parse(
            &spec.job_params(Probe::Rotation, 224).to_json(),
            Probe::Rotation,
        )
        .unwrap();
        let s = rotation.synthesis.unwrap();
        assert_eq!((s.steps, s.size, s.seed), (10, 224, 7));
        assert_eq!(rotation.probes.rotation, spec.rotation);
        assert_eq!(rotation.probes.rotation.angles.len(), 24);
        let color = parse(&spec.job_params(Probe::Color, 224).to_json(), Probe::Color).unwrap();
        assert_eq!(color.color_steps, Some(10));
        let grating = parse(
            &spec.job_params(Probe::Grating, 64).to_json(),
            Probe::Grating,
        )
        .unwrap();
        assert_eq!(grating.size, 64);
        assert_eq!(
            grating.probes.grating.frequencies(64).unwrap(),
            vec![2.0, 4.0, 8.0, 16.0]
        );
        assert_eq!(grating.probes.seed, 7);
    }

    #[test]
    fn broken_parameters_are_errors() {
        assert!(parse("not json", Probe::Zoom).is_err());
        let spec = CampaignSpec::new("t", "m", &["l"]);
        let zoom = spec.job_params(Probe::Zoom, 224).to_json();
        let err = parse(&zoom, Probe::Rotation).unwrap_err();
        assert!(err.contains("parameters of a zoom job"), "{err}");
        let bad = zoom.replace("[0.25,", "[2.0,0.25,");
        assert!(parse(&bad, Probe::Zoom).is_err());
    }
}
