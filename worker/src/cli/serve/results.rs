//! What a finished job reports: its numbers, tuning points, derived values and files, in the
//! format docs/results.md specifies (the contract readers of `vephys results` rely on).

use image::ImageFormat;
use serde_json::{json, Value};
use tch::Tensor;
use vephys_proto::spec::Probe;
use vephys_proto::v1::TuningPoint;
use vephys_worker::image_io::{from_rgb8, png_bytes};
use vephys_worker::probes::{baseline, color, Both, Curve, ProbeResult, Responses};
use vephys_worker::provenance::Provenance;
use vephys_worker::synthesis::{Status, SynthOutcome};
use vephys_worker::WorkerError;

use super::params::Params;

/// A file a job produced, before it is uploaded.
pub struct File {
    /// Artifact kind (`max_image`, `record`, ...).
    pub kind: String,
    pub extension: &'static str,
    pub bytes: Vec<u8>,
}

/// One job's results.
pub struct Finished {
    pub job_id: i64,
    pub max_act: f64,
    pub mean_act: f64,
    pub status: &'static str,
    pub derived: Value,
    pub points: Vec<TuningPoint>,
    pub files: Vec<File>,
    /// Compute seconds charged to this job (its share of the batch).
    pub seconds: f64,
}

/// What every record shares.
pub struct Context<'a> {
    pub layer: &'a str,
    pub provenance: &'a Provenance,
    pub params: &'a Params,
}

impl Context<'_> {
    fn record(&self, filter: i64, probe: Probe, body: Value) -> Result<File, WorkerError> {
        let doc = json!({
            "model": self.provenance.model,
            "layer": self.layer,
            "filter": filter,
            "probe": probe.as_str(),
            "result": body,
            "params": {
                "synthesis": self.params.synthesis,
                "probe": self.params.probe,
                "color_steps": self.params.color_steps,
                "size": self.params.size,
            },
            "provenance": self.provenance,
        });
        Ok(File {
            kind: "record".into(),
            extension: "json",
            bytes: serde_json::to_vec_pretty(&doc)
                .map_err(|e| WorkerError::bad("record", e.to_string()))?,
        })
    }
}

pub fn png_file(kind: &str, image: &Tensor) -> Result<File, WorkerError> {
    Ok(File {
        kind: kind.to_string(),
        extension: "png",
        bytes: png_bytes(image)?,
    })
}

/// A max image from the store as [3, S, S]; it must have the campaign's size.
pub fn decode_png(bytes: &[u8], size: i64) -> Result<Tensor, WorkerError> {
    let bad = |reason: String| WorkerError::Image {
        path: "max_image".into(),
        reason,
    };
    let img = image::load_from_memory_with_format(bytes, ImageFormat::Png)
        .map_err(|e| bad(format!("not a PNG ({e})")))?
        .to_rgb8();
    if i64::from(img.width()) != size || i64::from(img.height()) != size {
        return Err(bad(format!(
            "{}x{} px, but the campaign's images are {size}x{size}",
            img.width(),
            img.height()
        )));
    }
    Ok(from_rgb8(&img))
}

pub fn synthesis(ctx: &Context, job_id: i64, o: &SynthOutcome) -> Result<Finished, WorkerError> {
    let mut files = Vec::with_capacity(2);
    if o.status == Status::Ok {
        files.push(png_file("max_image", &o.image)?);
    }
    files.push(ctx.record(
        o.filter,
        Probe::Synthesis,
        json!({
            "status": o.status,
            "max_activity": o.max_activity,
            "mean_activity": o.mean_activity,
            "objective_trajectory": o.trajectory,
        }),
    )?);
    Ok(Finished {
        job_id,
        max_act: o.max_activity,
        mean_act: o.mean_activity,
        status: match o.status {
            Status::Ok => "ok",
            Status::Dead => "dead_unit",
        },
        derived: json!({
            "steps": o.trajectory.len(),
            "objective_first": o.trajectory.first(),
            "objective_last": o.trajectory.last(),
        }),
        points: Vec::new(),
        files,
        seconds: 0.0,
    })
}

/// A probe job of a unit synthesis found dead: there is no max image to show it.
pub fn dead_unit(job_id: i64) -> Finished {
    Finished {
        job_id,
        max_act: 0.0,
        mean_act: 0.0,
        status: "dead_unit",
        derived: json!({}),
        points: Vec::new(),
        files: Vec::new(),
        seconds: 0.0,
    }
}

pub fn probe(
    ctx: &Context,
    job_id: i64,
    filter: i64,
    result: &ProbeResult,
    mut files: Vec<File>,
) -> Result<Finished, WorkerError> {
    let (probe, points, derived) = match result {
        ProbeResult::Baseline(b) => (
            Probe::Baseline,
            labelled(
                "baseline",
                &baseline::STIMULI.map(String::from),
                &b.responses,
            ),
            json!({ "csi": b.colour_selectivity_index.max }),
        ),
        ProbeResult::Zoom(z) => {
            let mut d = tuning(&z.curve);
            d["fill"] = json!(z.fill);
            (Probe::Zoom, curve("zoom", &z.curve), d)
        }
        ProbeResult::Rotation(r) => {
            let mut d = tuning(&r.curve);
            d["circular_variance"] = json!(r.orientation_circular_variance.max);
            d["symmetry_period_deg"] = json!(r.symmetry_period_deg.max);
            (Probe::Rotation, curve("rotation", &r.curve), d)
        }
        ProbeResult::Color(c) => (
            Probe::Color,
            labelled("color", &color::labels(), &c.responses),
            json!({
                "csi": c.colour_selectivity_index.max,
                "preferred_channel": c.preferred_channel.max,
                "channel_selectivity": c.channel_selectivity_index.max,
            }),
        ),
        ProbeResult::Grating(g) => {
            let mut points = curve("grating.orientation", &g.orientation);
            points.extend(curve("grating.frequency", &g.frequency));
            (
                Probe::Grating,
                points,
                json!({
                    "orientation": tuning(&g.orientation),
                    "frequency": tuning(&g.frequency),
                    "circular_variance": g.orientation_circular_variance.max,
                }),
            )
        }
        ProbeResult::Hue(h) => {
            let mut d = tuning(&h.curve);
            d["circular_variance"] = json!(h.hue_circular_variance.max);
            (Probe::Hue, curve("hue", &h.curve), d)
        }
    };
    let body =
        serde_json::to_value(result).map_err(|e| WorkerError::bad("record", e.to_string()))?;
    files.push(ctx.record(filter, probe, body)?);
    let max_act = points
        .iter()
        .map(|p| p.max_act)
        .fold(f64::NEG_INFINITY, f64::max);
    let mean_act = points
        .iter()
        .map(|p| p.mean_act)
        .fold(f64::NEG_INFINITY, f64::max);
    Ok(Finished {
        job_id,
        max_act,
        mean_act,
        status: "ok",
        derived,
        points,
        files,
        seconds: 0.0,
    })
}

/// The tuning numbers of the max-activity curve, with the mean-activity ones under "mean".
fn tuning(c: &Curve) -> Value {
    let Both { max, mean } = &c.tuning;
    let mut v = json!(max);
    v["mean"] = json!(mean);
    v
}

fn curve(probe: &str, c: &Curve) -> Vec<TuningPoint> {
    c.values
        .iter()
        .enumerate()
        .map(|(i, x)| TuningPoint {
            probe: probe.to_string(),
            x: *x,
            label: None,
            max_act: c.responses.max[i],
            mean_act: c.responses.mean[i],
        })
        .collect()
}

fn labelled(probe: &str, labels: &[String], r: &Responses) -> Vec<TuningPoint> {
    labels
        .iter()
        .enumerate()
        .map(|(i, label)| TuningPoint {
            probe: probe.to_string(),
            x: i as f64,
            label: Some(label.clone()),
            max_act: r.max[i],
            mean_act: r.mean[i],
        })
        .collect()
}
