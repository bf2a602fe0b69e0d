//! What a finished job reports: its numbers, tuning points, derived values and files, in the
//! format docs/results.md specifies (the contract readers of `vephys results` rely on).

use crate::image_io::{from_rgb8, png_bytes};
use crate::probes::ProbeResult;
use crate::provenance::Provenance;
use crate::synthesis::{Status, SynthOutcome};
use crate::WorkerError;
use image::ImageFormat;
use serde_json::{json, Value};
use tch::Tensor;
use vephys_proto::derived::{Derived, SynthesisDerived};
use vephys_proto::params::Probe;
use vephys_proto::v1::TuningPoint;

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
    pub derived: Derived,
    pub points: Vec<TuningPoint>,
    pub files: Vec<File>,
    /// Compute seconds charged to this job (its share of the batch).
    pub seconds: f64,
    /// The job's parameters as computed, with the precision that ran (None: as leased).
    pub params_json: Option<String>,
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
            "params": self.params.job,
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
    let img = read_png(bytes, size).map_err(|reason| WorkerError::Image {
        path: "max_image".into(),
        reason,
    })?;
    Ok(from_rgb8(&img))
}

/// Decodes a max image and checks it is `size` px square. The decoder is bounded: a PNG that
/// claims more pixels than the largest image a job may show is refused before it is allocated.
pub fn read_png(bytes: &[u8], size: i64) -> Result<image::RgbImage, String> {
    let side = vephys_proto::params::MAX_IMAGE_SIZE;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(side);
    limits.max_image_height = Some(side);
    limits.max_alloc = Some(u64::from(side) * u64::from(side) * 8);
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), ImageFormat::Png);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| format!("not a PNG of at most {side}x{side} px ({e})"))?
        .to_rgb8();
    if i64::from(img.width()) != size || i64::from(img.height()) != size {
        return Err(format!(
            "{}x{} px, but the campaign's images are {size}x{size}",
            img.width(),
            img.height()
        ));
    }
    Ok(img)
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
        derived: Derived::Synthesis(SynthesisDerived {
            steps: o.trajectory.len() as u32,
            objective_first: o.trajectory.first().map(|v| f64::from(*v)),
            objective_last: o.trajectory.last().map(|v| f64::from(*v)),
            starts: o.starts,
        }),
        points: Vec::new(),
        files,
        seconds: 0.0,
        params_json: Some(ctx.params.job.to_json()),
    })
}

/// A probe job of a unit synthesis found dead: there is no max image to show it.
pub fn dead_unit(job_id: i64) -> Finished {
    Finished {
        job_id,
        max_act: 0.0,
        mean_act: 0.0,
        status: "dead_unit",
        derived: Derived::Nothing {},
        points: Vec::new(),
        files: Vec::new(),
        seconds: 0.0,
        params_json: None,
    }
}

/// A probe job's results: its tuning points, derived numbers and record, as the probe battery
/// encodes them.
pub fn probe(
    ctx: &Context,
    job_id: i64,
    filter: i64,
    result: &ProbeResult,
    mut files: Vec<File>,
) -> Result<Finished, WorkerError> {
    let body =
        serde_json::to_value(result).map_err(|e| WorkerError::bad("record", e.to_string()))?;
    files.push(ctx.record(filter, result.probe(), body)?);
    let (max_act, mean_act) = result.peak();
    Ok(Finished {
        job_id,
        max_act,
        mean_act,
        status: "ok",
        derived: result.derived(),
        points: result.points(),
        files,
        seconds: 0.0,
        params_json: Some(ctx.params.job.to_json()),
    })
}
