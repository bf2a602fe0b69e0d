//! A leased job's `params_json` (the campaign spec's tables, see docs/coordinator.md) turned
//! into the worker's own synthesis and probe parameters. The spec is checked at submission, so
//! anything refused here is a contract violation: a permanent error, never retried.

use anyhow::{anyhow, Context, Result};
use serde::Deserialize;
use vephys_proto::spec::{
    BaselineParams, ColorParams, GratingParams, HueParams, RotationParams, SynthesisParams,
    ZoomParams,
};
use vephys_worker::probes::{ProbeParams, ZoomFill};
use vephys_worker::synthesis::{ObjectiveKind, SynthParams};

#[derive(Debug, Default, Deserialize)]
struct JobParams {
    seed: u64,
    /// The campaign's image side (the model's input size unless the spec set one).
    image_size: Option<u32>,
    synthesis: Option<SynthesisParams>,
    baseline: Option<BaselineParams>,
    zoom: Option<ZoomParams>,
    rotation: Option<RotationParams>,
    color: Option<ColorParams>,
    grating: Option<GratingParams>,
    hue: Option<HueParams>,
}

/// Everything a batch of one (layer, probe) needs.
#[derive(Debug, Clone)]
pub struct Params {
    /// Present for synthesis and the probes that start from a max image.
    pub synthesis: Option<SynthParams>,
    /// Steps of the colour probe's single-colour syntheses.
    pub color_steps: Option<i64>,
    pub probe: ProbeParams,
    /// Image side of every stimulus.
    pub size: i64,
}

/// Parses `params_json`; `native_size` (the model's input size) fills a size the job leaves open.
pub fn parse(params_json: &str, seed: i64, native_size: i64) -> Result<Params> {
    let p: JobParams = serde_json::from_str(params_json).with_context(|| {
        format!("job parameters are not the coordinator's format: {params_json}")
    })?;
    let image_size = match p.image_size {
        Some(s) if s > 0 => i64::from(s),
        _ => native_size,
    };
    let seed = u64::try_from(seed).unwrap_or(p.seed);
    let synthesis = p
        .synthesis
        .as_ref()
        .map(|s| synth_params(s, seed, image_size))
        .transpose()?;
    let mut probe = ProbeParams {
        seed,
        ..ProbeParams::default()
    };
    if let Some(b) = &p.baseline {
        probe.noise_std = b.noise_std;
    }
    if let Some(z) = &p.zoom {
        probe.zoom_factors = z.factors.clone();
        probe.zoom_fill = match z.fill.as_str() {
            "tile" => ZoomFill::Tile,
            "mean" => ZoomFill::Pad,
            other => return Err(anyhow!("zoom.fill `{other}` is not tile or mean")),
        };
    }
    if let Some(r) = &p.rotation {
        probe.angles = turn(r.step_degrees, 360.0);
    }
    if let Some(g) = &p.grating {
        probe.orientations = turn(180.0 / f64::from(g.orientations.max(1)), 180.0);
        probe.frequencies = g.spatial_frequencies.clone();
        probe.phases = g.phases as usize;
    }
    if let Some(h) = &p.hue {
        probe.hues = h.steps as usize;
    }
    probe.validate()?;
    let size = synthesis.as_ref().map_or(image_size, |s| s.size);
    if p.grating.is_some() {
        probe.check_frequencies(size)?;
    }
    let color_steps = p.color.as_ref().map(|c| match (c.steps, &synthesis) {
        (0, Some(s)) => s.steps,
        (n, _) => i64::from(n),
    });
    Ok(Params {
        synthesis,
        color_steps,
        probe,
        size,
    })
}

fn synth_params(s: &SynthesisParams, seed: u64, image_size: i64) -> Result<SynthParams> {
    let objective = match s.objective.as_str() {
        "channel" => ObjectiveKind::Channel,
        "unit" => ObjectiveKind::Unit,
        "layer" => ObjectiveKind::Layer,
        other => return Err(anyhow!("synthesis.objective `{other}` is unknown")),
    };
    let params = SynthParams {
        steps: i64::from(s.steps),
        size: if s.image_size == 0 {
            image_size
        } else {
            i64::from(s.image_size)
        },
        lr: s.lr,
        decay: s.decay,
        blur_sigma: s.blur_sigma,
        blur_every: i64::from(s.blur_every),
        objective,
        seed,
        ..SynthParams::default()
    };
    params.validate()?;
    Ok(params)
}

/// 0, step, 2·step, … below `period`.
fn turn(step: f64, period: f64) -> Vec<f64> {
    let n = ((period / step) - 1e-9).ceil().max(1.0) as usize;
    (0..n)
        .map(|i| i as f64 * step)
        .filter(|a| *a < period)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_defaults_become_the_probe_protocol() {
        let json = r#"{"seed":7,"image_size":224,"synthesis":{"steps":10,"lr":0.05,"image_size":0,"objective":"channel","decay":0.0001,"blur_sigma":1.0,"blur_every":4,"batch_size":32},
            "rotation":{"step_degrees":15.0},"grating":{"orientations":12,"spatial_frequencies":[2.0,4.0],"phases":4},
            "zoom":{"factors":[0.5,1.0,2.0],"fill":"mean"},"color":{"steps":0},"hue":{"steps":12}}"#;
        let p = parse(json, 7, 224).unwrap();
        let s = p.synthesis.unwrap();
        assert_eq!((s.steps, s.size, s.seed), (10, 224, 7));
        assert_eq!(p.color_steps, Some(10));
        assert_eq!(p.probe.angles.len(), 24);
        assert_eq!(p.probe.angles[23], 345.0);
        assert_eq!(p.probe.orientations, ProbeParams::default().orientations);
        assert_eq!(p.probe.zoom_fill, ZoomFill::Pad);
        assert_eq!(p.probe.hues, 12);
        assert_eq!(p.size, 224);
        let small = parse(r#"{"seed":0,"image_size":64,"hue":{"steps":4}}"#, 0, 224).unwrap();
        assert_eq!(small.size, 64);
    }

    #[test]
    fn broken_parameters_are_errors() {
        assert!(parse("not json", 0, 224).is_err());
        let bad_zoom = r#"{"seed":0,"zoom":{"factors":[2.0,1.0],"fill":"tile"}}"#;
        assert!(parse(bad_zoom, 0, 224).is_err());
        let nyquist =
            r#"{"seed":0,"grating":{"orientations":4,"spatial_frequencies":[40.0],"phases":1}}"#;
        assert!(parse(nyquist, 0, 64).is_err());
    }
}
