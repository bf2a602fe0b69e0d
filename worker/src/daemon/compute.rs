//! The compute thread: owns the loaded networks (libtorch modules stay on one thread, and a
//! model is loaded once however many batches use it) and runs one batch of one (model, layer,
//! probe) at a time. The async side sends it work and awaits the answer, so heartbeats and
//! uploads never wait behind a forward pass.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use crate::device::{resolve_precision, Precision};
use crate::models::Network;
use crate::probes::{self, color, Input, MaxImage, Response};
use crate::provenance::Provenance;
use crate::synthesis::{synthesize, ColorMode, Status, SynthParams};
use crate::WorkerError;
use tch::Device;
use vephys_proto::manifest::Manifest;
use vephys_proto::params::{PrecisionChoice, Probe};

use super::params::Params;
use super::results::{self, Finished};

/// One batch: jobs of one (model, layer, probe) with the same parameters.
pub struct Batch {
    pub model: String,
    /// An exported model's manifest (the registry's); None for a built-in model.
    pub manifest: Option<Manifest>,
    /// A local weights file (safetensors, or an exported model's archive) whose sha256 the
    /// caller has checked.
    pub weights: PathBuf,
    pub weights_sha256: String,
    pub layer: String,
    pub probe: Probe,
    pub params: Params,
    pub jobs: Vec<BatchJob>,
    /// Fraction done, in millionths, for heartbeats.
    pub progress: Arc<AtomicU32>,
}

pub struct BatchJob {
    pub job_id: i64,
    pub filter: i64,
    /// PNG bytes of the filter's max image (probes that start from it); None for a dead unit.
    pub max_image: Option<Vec<u8>>,
    /// The synthesis job's response to that image, when measured with this batch's weights.
    pub max_image_response: Option<Response>,
}

/// Why a batch could not be done, and whether trying again could help.
#[derive(Debug)]
pub struct BatchError {
    pub permanent: bool,
    pub message: String,
}

impl From<WorkerError> for BatchError {
    fn from(e: WorkerError) -> Self {
        // The job itself is wrong (names, ranges, parameters): no other worker would do better.
        let permanent = matches!(
            e,
            WorkerError::UnknownModel { .. }
                | WorkerError::UnknownLayer { .. }
                | WorkerError::FilterOutOfRange { .. }
                | WorkerError::BadFilterSpec { .. }
                | WorkerError::ImageTooSmall { .. }
                | WorkerError::BadParameter { .. }
                | WorkerError::InputSize { .. }
        );
        BatchError {
            permanent,
            message: e.to_string(),
        }
    }
}

type Reply = tokio::sync::oneshot::Sender<Result<Vec<Finished>, BatchError>>;

/// Handle to the compute thread.
pub struct Compute {
    work: mpsc::Sender<(Batch, Reply)>,
}

impl Compute {
    /// `precision`: the worker's --precision, for jobs whose parameters say auto.
    pub fn spawn(device: Device, precision: PrecisionChoice) -> Compute {
        let (work, queue) = mpsc::channel::<(Batch, Reply)>();
        std::thread::Builder::new()
            .name("compute".into())
            .spawn(move || {
                let mut models = Models::new(device, precision);
                for (batch, reply) in queue {
                    // A libtorch error that tch turns into a panic (out of memory, say) fails
                    // this batch, not the thread: later batches would otherwise all fail.
                    let run = std::panic::AssertUnwindSafe(|| models.run(&batch));
                    let result = std::panic::catch_unwind(run).unwrap_or_else(|panic| {
                        models.loaded.clear(); // a network may be half-updated
                        Err(retryable(format!(
                            "libtorch failed: {}",
                            panic_text(&*panic)
                        )))
                    });
                    let _ = reply.send(result);
                }
            })
            .expect("spawn the compute thread");
        Compute { work }
    }

    pub async fn run(&self, batch: Batch) -> Result<Vec<Finished>, BatchError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.work
            .send((batch, reply))
            .map_err(|_| retryable("the compute thread stopped"))?;
        answer
            .await
            .map_err(|_| retryable("the compute thread stopped (a libtorch panic?)"))?
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    match (panic.downcast_ref::<String>(), panic.downcast_ref::<&str>()) {
        (Some(s), _) => s,
        (_, Some(s)) => s,
        _ => "a panic without a message",
    }
}

/// A batch error that another try (here or on another worker) may not meet.
pub fn retryable(message: impl Into<String>) -> BatchError {
    BatchError {
        permanent: false,
        message: message.into(),
    }
}

/// Loaded networks by model name, each with the sha256 of its weights.
struct Models {
    device: Device,
    /// For jobs whose parameters say auto.
    precision: PrecisionChoice,
    loaded: HashMap<String, Network>,
}

impl Models {
    fn new(device: Device, precision: PrecisionChoice) -> Models {
        Models {
            device,
            precision,
            loaded: HashMap::new(),
        }
    }

    /// The precision a batch computes in: its parameters' choice (the worker's when they say
    /// auto) resolved for the device. A bf16 job on a device without native bf16 is for
    /// another worker: retryable.
    fn precision(&self, batch: &Batch) -> Result<Precision, BatchError> {
        let choice = match batch.params.job.precision {
            PrecisionChoice::Auto => self.precision,
            asked => asked,
        };
        resolve_precision(choice, self.device)
            .map_err(|e| retryable(format!("the job's synthesis.precision is {choice}: {e}")))
    }

    fn network(&mut self, batch: &Batch) -> Result<&Network, BatchError> {
        let stale = self
            .loaded
            .get(&batch.model)
            .is_some_and(|n| n.weights_sha256() != Some(batch.weights_sha256.as_str()));
        if stale || !self.loaded.contains_key(&batch.model) {
            let net = match &batch.manifest {
                Some(manifest) => Network::exported(manifest.clone(), &batch.weights, self.device)
                    // the archive or this worker's libtorch is at fault, not the job
                    .map_err(|e| retryable(e.to_string()))?,
                None => {
                    let mut net = Network::build(&batch.model, self.device)?;
                    net.load_weights(&batch.weights)?;
                    net
                }
            };
            // the file may have changed since its sha256 was checked; results must name the
            // weights that made them
            if net.weights_sha256() != Some(batch.weights_sha256.as_str()) {
                // retryable: the job is fine, this worker's file is not. The hashes go to
                // this worker's log only: error texts reach users, file hashes must not.
                tracing::warn!(path = %batch.weights.display(), found = ?net.weights_sha256(),
                    expected = %batch.weights_sha256, "weights file changed after it was checked");
                return Err(retryable(format!(
                    "the weights file {} changed after it was checked; restore the file or \
                     restart the worker",
                    batch.weights.display(),
                )));
            }
            tracing::info!(model = %batch.model, weights = %batch.weights.display(), "model loaded");
            self.loaded.insert(batch.model.clone(), net);
        }
        Ok(&self.loaded[&batch.model])
    }

    fn run(&mut self, batch: &Batch) -> Result<Vec<Finished>, BatchError> {
        let started = Instant::now();
        let precision = self.precision(batch)?;
        let net = self.network(batch)?;
        let mut finished = run_batch(net, batch, precision)?;
        // Compute time is shared evenly: the batch ran as one.
        let per_job = started.elapsed().as_secs_f64() / batch.jobs.len().max(1) as f64;
        for f in &mut finished {
            f.seconds = per_job;
        }
        Ok(finished)
    }
}

/// Counts image-steps of synthesis into the shared progress fraction of a batch.
struct Progress<'a> {
    done: u64,
    total: u64,
    shared: &'a AtomicU32,
}

impl Progress<'_> {
    fn tick(&mut self, image_steps: u64) {
        self.done += image_steps;
        let fraction = (self.done as f64 / self.total.max(1) as f64).min(1.0);
        self.shared
            .store((fraction * 1e6) as u32, Ordering::Relaxed);
    }
}

fn run_batch(
    net: &Network,
    batch: &Batch,
    precision: Precision,
) -> Result<Vec<Finished>, BatchError> {
    let layer = net.layer_index(&batch.layer)?;
    let shape = net.check_size(layer, batch.params.size)?;
    for job in &batch.jobs {
        if !(0..shape.channels).contains(&job.filter) {
            return Err(WorkerError::FilterOutOfRange {
                layer: shape.name.clone(),
                filter: job.filter,
                channels: shape.channels,
            }
            .into());
        }
    }
    let provenance = Provenance::of(net, precision);
    let p = &batch.params.in_precision(precision);
    let ctx = results::Context {
        layer: &shape.name,
        provenance: &provenance,
        params: p,
    };
    let filters: Vec<i64> = batch.jobs.iter().map(|j| j.filter).collect();
    let synth = || {
        p.synthesis.clone().ok_or_else(|| BatchError {
            permanent: true,
            message: format!("{} job without synthesis parameters", batch.probe),
        })
    };
    let steps = |s: &SynthParams| s.steps as u64;
    match batch.probe {
        Probe::Synthesis => {
            let s = synth()?;
            let mut progress = Progress {
                done: 0,
                total: steps(&s) * filters.len() as u64,
                shared: &batch.progress,
            };
            let outcomes = synthesize(net, layer, &filters, &s, &mut |n| progress.tick(n))?;
            let ids = batch.jobs.iter().map(|j| j.job_id);
            ids.zip(&outcomes)
                .map(|(id, o)| results::synthesis(&ctx, id, o))
                .collect::<Result<_, _>>()
                .map_err(Into::into)
        }
        Probe::Baseline | Probe::Zoom | Probe::Rotation => {
            let size = synth()?.size;
            let (live, images, mut finished) = max_images(batch, size)?;
            if live.is_empty() {
                return Ok(finished);
            }
            let lf: Vec<i64> = live.iter().map(|j| j.filter).collect();
            let input = Input::MaxImages(&images);
            let probed = probes::run(net, layer, batch.probe, &lf, input, &p.probes)?;
            batch.progress.store(1_000_000, Ordering::Relaxed);
            for (job, r) in live.iter().zip(&probed) {
                finished.push(results::probe(&ctx, job.job_id, job.filter, r, Vec::new())?);
            }
            Ok(finished)
        }
        Probe::Color => {
            let base = synth()?;
            let steps_each = p.color_steps.unwrap_or(base.steps);
            let mut progress = Progress {
                done: 0,
                total: 3 * steps_each as u64 * filters.len() as u64,
                shared: &batch.progress,
            };
            let mut runs = Vec::with_capacity(3);
            for mode in [ColorMode::R, ColorMode::G, ColorMode::B] {
                let s = SynthParams {
                    color: mode,
                    steps: steps_each,
                    ..base.clone()
                };
                runs.push(synthesize(net, layer, &filters, &s, &mut |n| {
                    progress.tick(n)
                })?);
            }
            let mut triples = Vec::with_capacity(filters.len());
            let mut files = Vec::with_capacity(filters.len());
            for i in 0..filters.len() {
                let mut images: Vec<MaxImage> = Vec::with_capacity(3);
                let mut pngs = Vec::with_capacity(3);
                for (c, run) in runs.iter().enumerate() {
                    let o = &run[i];
                    match o.status {
                        Status::Ok => {
                            pngs.push(results::png_file(
                                &format!("max_image_{}", color::CHANNELS[c]),
                                &o.image,
                            )?);
                            images.push(MaxImage::synthesized(o));
                        }
                        // A channel that cannot drive the unit shows it the mean colour there.
                        Status::Dead => images.push(MaxImage::new(color::dead_channel_image(
                            c,
                            base.size,
                            Device::Cpu,
                        )?)),
                    }
                }
                let [r, g, b]: [MaxImage; 3] = images.try_into().expect("three channels");
                triples.push([r, g, b]);
                files.push(pngs);
            }
            let input = Input::SingleColour(&triples);
            let probed = probes::run(net, layer, Probe::Color, &filters, input, &p.probes)?;
            batch
                .jobs
                .iter()
                .zip(probed)
                .zip(files)
                .map(|((job, r), pngs)| results::probe(&ctx, job.job_id, job.filter, &r, pngs))
                .collect::<Result<_, _>>()
                .map_err(Into::into)
        }
        Probe::Grating | Probe::Hue => {
            let input = Input::Size(p.size);
            let probed = probes::run(net, layer, batch.probe, &filters, input, &p.probes)?;
            batch.progress.store(1_000_000, Ordering::Relaxed);
            batch
                .jobs
                .iter()
                .zip(&probed)
                .map(|(job, r)| results::probe(&ctx, job.job_id, job.filter, r, Vec::new()))
                .collect::<Result<_, _>>()
                .map_err(Into::into)
        }
    }
}

/// The jobs of a batch whose max image exists, those images, and the finished results of
/// dead units (which have none).
type Split<'a> = (Vec<&'a BatchJob>, Vec<MaxImage>, Vec<Finished>);

/// Splits a batch into the jobs whose max image exists (decoded, checked for size) and the
/// already finished results of dead units, which have none.
fn max_images(batch: &Batch, size: i64) -> Result<Split<'_>, BatchError> {
    let mut live = Vec::new();
    let mut images = Vec::new();
    let mut dead = Vec::new();
    for job in &batch.jobs {
        match &job.max_image {
            Some(png) => {
                images.push(MaxImage {
                    image: results::decode_png(png, size)?,
                    response: job.max_image_response,
                });
                live.push(job);
            }
            None => dead.push(results::dead_unit(job.job_id)),
        }
    }
    Ok((live, images, dead))
}
