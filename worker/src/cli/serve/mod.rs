//! `vephys-worker serve`: the worker daemon. Registers with the coordinator, then leases
//! batches of jobs of one (model, layer, probe), runs each batch as one on its device, writes
//! images and records to the object store under attempt-scoped keys, and completes the jobs
//! with their results. Heartbeats run beside the compute; completions are spooled to disk
//! before they are sent, so finished work survives an unreachable coordinator and a restart.
//!
//! SIGTERM/SIGINT: stop leasing, finish and report the batch in flight, exit. A second signal:
//! release the batch's leases (they go back to the queue at once) and exit. A third: exit now.

mod client;
mod compute;
mod heartbeat;
mod params;
mod results;
mod spool;
mod weights;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use tokio::sync::Notify;
use tonic::Code;
use tracing_subscriber::EnvFilter;
use vephys_objects::{sha256_hex, Objects, S3Options};
use vephys_proto::spec::Probe;
use vephys_proto::v1::{
    Artifact, CompleteRequest, FailRequest, JobCompletion, JobFailure, JobOutcome, Layer,
    LeaseRequest, LeasedJob, Model, Provenance, RegisterWorkerRequest,
};
use vephys_worker::device::{describe, parse_device};
use vephys_worker::models::{model_names, Network};
use vephys_worker::probes::Response;
use vephys_worker::provenance::VERSIONS;

use compute::{Batch, BatchError, BatchJob, Compute};
use heartbeat::Dropped;
use results::Finished;
use spool::Spool;
use weights::Weights;

/// The input side the built-in models were trained at; the registry records it.
const NATIVE_SIZE: i64 = 224;

#[derive(Args)]
pub struct ServeArgs {
    /// Coordinator gRPC address
    #[arg(
        long,
        env = "VEPHYS_COORDINATOR",
        default_value = "http://127.0.0.1:7070"
    )]
    coordinator: String,

    /// Worker bearer token: the coordinator's --worker-token
    #[arg(long, env = "VEPHYS_WORKER_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// CA certificate (PEM) to trust for an https:// coordinator with a private CA
    #[arg(long, env = "VEPHYS_CA_CERT")]
    ca_cert: Option<PathBuf>,

    /// Where images and records go: file:///abs/dir or s3://bucket/prefix (S3 credentials from
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION)
    #[arg(long, env = "VEPHYS_STORE")]
    store: String,

    /// S3 endpoint for S3-compatible servers (Garage, MinIO, Ceph), e.g. http://127.0.0.1:3900
    #[arg(long, env = "VEPHYS_S3_ENDPOINT")]
    s3_endpoint: Option<String>,

    /// Name shown in results and logs (default: host name and process id)
    #[arg(long, env = "VEPHYS_WORKER_NAME")]
    name: Option<String>,

    /// Compute device: auto (CUDA when present), cpu, cuda or cuda:N
    #[arg(long, env = "VEPHYS_DEVICE", default_value = "auto")]
    device: String,

    /// Directory of <model>.safetensors files; models found here are registered at start
    #[arg(long, env = "VEPHYS_WEIGHTS_DIR", default_value_os_t = super::default_weights_dir())]
    weights_dir: PathBuf,

    /// Where weights fetched from the store are kept (by sha256; hashed again once per process
    /// before use, and fetched again if damaged)
    #[arg(long, env = "VEPHYS_CACHE_DIR", default_value_os_t = default_cache_dir())]
    cache_dir: PathBuf,

    /// Completions not yet acknowledged by the coordinator (default: <cache-dir>/spool); put it on
    /// a persistent volume to keep them across restarts of the machine
    #[arg(long, env = "VEPHYS_SPOOL_DIR")]
    spool_dir: Option<PathBuf>,

    /// Most jobs leased (and run) as one batch
    #[arg(long, env = "VEPHYS_MAX_JOBS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    max_jobs: u32,

    /// Log filter (tracing EnvFilter syntax), e.g. info or vephys_worker=debug
    #[arg(long, env = "VEPHYS_LOG", default_value = "info")]
    log: String,
}

fn default_cache_dir() -> PathBuf {
    super::default_weights_dir()
        .parent()
        .map(|p| p.join("worker"))
        .unwrap_or_else(|| PathBuf::from("vephys-worker-cache"))
}

pub fn run(args: ServeArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&args.log).context("--log is not a valid filter")?)
        .with_writer(std::io::stderr)
        // colour codes only for a person watching, not in log files
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(args))
}

async fn serve(args: ServeArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let name = args.name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });

    // Every start-up check happens before anything is leased: a misconfigured worker must not
    // take jobs it cannot finish.
    let s3 = S3Options {
        endpoint: args.s3_endpoint.clone(),
    };
    let objects = Objects::open(&args.store, &s3).context("bad --store")?;
    objects.check_read_write(&name).await.with_context(|| match args.store.starts_with("s3://") {
        true => format!(
            "cannot write to the store {}; check --store, --s3-endpoint and the credentials in \
             AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
            objects.url()
        ),
        false => format!(
            "cannot write to the store {}; check that the directory exists and this user may write to it",
            objects.url()
        ),
    })?;
    let mut weights = Weights::new(&args.weights_dir, &args.cache_dir, objects.clone());
    let models = local_models(&mut weights)?;
    let spool = Spool::open(
        &args
            .spool_dir
            .clone()
            .unwrap_or_else(|| args.cache_dir.join("spool")),
    )?;

    let api = client::connect(
        &args.coordinator,
        args.token.as_deref(),
        args.ca_cert.as_deref(),
    )?;
    let request = RegisterWorkerRequest {
        name: name.clone(),
        device: describe(device),
        memory_bytes: 0,
        loaded_models: models.iter().map(|m| m.name.clone()).collect(),
        models: models.clone(),
    };
    let registered = client::retry("register", || {
        let (mut api, request) = (api.clone(), request.clone());
        async move { api.register_worker(request).await }
    })
    .await
    .map_err(|status| match status.code() {
        Code::Unauthenticated | Code::PermissionDenied => anyhow::anyhow!(
            "the coordinator at {} refused this worker's token ({}); pass its --worker-token value as --token or VEPHYS_WORKER_TOKEN",
            args.coordinator,
            status.message()
        ),
        _ => anyhow::anyhow!(
            "cannot register with the coordinator at {}: {}",
            args.coordinator,
            status.message()
        ),
    })?
    .into_inner();
    tracing::info!(
        worker_id = registered.worker_id,
        name = %name,
        device = %describe(device),
        store = %objects.url(),
        models = ?request.loaded_models,
        // `vephys local` waits for these words in the log (cli/src/local.rs)
        "worker registered"
    );

    let worker = Worker {
        api,
        id: registered.worker_id,
        name,
        device: describe(device),
        objects,
        weights,
        spool,
        compute: Compute::spawn(device),
        heartbeat: Duration::from_millis((registered.lease_ms.max(3000) / 3) as u64),
        max_jobs: args.max_jobs,
        stop: Stop::watch()?,
    };
    worker.run().await
}

/// The models this worker has weights for, described for the registry.
fn local_models(weights: &mut Weights) -> Result<Vec<Model>> {
    let mut models = Vec::new();
    for name in model_names() {
        let Some((_, sha)) = weights.local(name) else {
            continue;
        };
        let net = Network::build(name, tch::Device::Cpu)?;
        models.push(Model {
            name: name.to_string(),
            architecture: name.to_string(),
            input_size: NATIVE_SIZE,
            weights_sha256: sha,
            weights_uri: String::new(),
            layers: net
                .layer_shapes(NATIVE_SIZE)
                .into_iter()
                .map(|s| Layer {
                    name: s.name,
                    aliases: s.aliases,
                    channels: s.channels,
                    height: s.height,
                    width: s.width,
                })
                .collect(),
        });
    }
    Ok(models)
}

/// How far a shutdown has gone: 0 running, 1 draining (first signal), 2 releasing (second).
struct Stop {
    level: AtomicU8,
    changed: Notify,
}

impl Stop {
    fn watch() -> Result<Arc<Stop>> {
        use tokio::signal::unix::{signal, SignalKind};
        let stop = Arc::new(Stop {
            level: AtomicU8::new(0),
            changed: Notify::new(),
        });
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
        let s = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                let level = s.level.fetch_add(1, Ordering::SeqCst) + 1;
                match level {
                    1 => tracing::info!("signal: finishing the batch in flight, then exiting (signal again to release it now)"),
                    2 => tracing::info!("second signal: releasing the batch in flight (a third exits at once)"),
                    _ => {
                        // what is not reported yet is in the spool or expires with its lease
                        tracing::warn!("third signal: exiting now");
                        std::process::exit(130);
                    }
                }
                s.changed.notify_waiters();
            }
        });
        Ok(stop)
    }

    fn level(&self) -> u8 {
        self.level.load(Ordering::SeqCst)
    }

    /// Resolves once the level reaches `level`.
    async fn reached(&self, level: u8) {
        loop {
            let notified = self.changed.notified();
            if self.level() >= level {
                return;
            }
            notified.await;
        }
    }
}

struct Worker {
    api: client::Api,
    id: i64,
    name: String,
    device: String,
    objects: Objects,
    weights: Weights,
    spool: Spool,
    compute: Compute,
    heartbeat: Duration,
    max_jobs: u32,
    stop: Arc<Stop>,
}

impl Worker {
    async fn run(mut self) -> Result<()> {
        self.flush_spool().await?;
        let mut idle = Duration::from_millis(100);
        while self.stop.level() == 0 {
            let request = LeaseRequest {
                worker_id: self.id,
                max_jobs: self.max_jobs,
                loaded_models: Vec::new(),
            };
            let api = self.api.clone();
            let leased = tokio::select! {
                r = client::retry("lease", || {
                    let (mut api, request) = (api.clone(), request.clone());
                    async move { api.lease(request).await }
                }) => r,
                _ = self.stop.reached(1) => break,
            };
            let jobs = match leased {
                Ok(r) => r.into_inner().jobs,
                Err(status) => bail!(
                    "the coordinator refused to lease jobs: {} ({:?})",
                    status.message(),
                    status.code()
                ),
            };
            if jobs.is_empty() {
                tokio::select! {
                    _ = tokio::time::sleep(idle) => {}
                    _ = self.stop.reached(1) => break,
                }
                idle = (idle * 2).min(Duration::from_secs(2));
                continue;
            }
            idle = Duration::from_millis(100);
            let mut groups: BTreeMap<String, Vec<LeasedJob>> = BTreeMap::new();
            for job in jobs {
                groups.entry(job.params_json.clone()).or_default().push(job);
            }
            for group in groups.into_values() {
                self.run_group(group).await?;
            }
        }
        tracing::info!("stopped; no batch in flight");
        Ok(())
    }

    /// Sends the completions an earlier run could not.
    async fn flush_spool(&self) -> Result<()> {
        for (path, mut request) in self.spool.pending()? {
            tracing::info!(path = %path.display(), jobs = request.jobs.len(), "sending a completion left by an earlier run");
            request.worker_id = self.id;
            self.send(request).await;
            self.spool.remove(&path);
        }
        Ok(())
    }

    /// Runs one batch of jobs with equal parameters, start to finish.
    async fn run_group(&mut self, group: Vec<LeasedJob>) -> Result<()> {
        let first = &group[0];
        let probe: Probe = match first.probe.parse() {
            Ok(p) => p,
            Err(e) => return self.fail(&group, &e, true).await,
        };
        let params = match params::parse(&first.params_json, first.seed, NATIVE_SIZE) {
            Ok(p) => p,
            Err(e) => return self.fail(&group, &format!("{e:#}"), true).await,
        };
        let (weights, weights_sha) = match self
            .weights
            .resolve(&first.model, &first.weights_sha256, &first.weights_uri)
            .await
        {
            Ok(w) => w,
            Err(e) => return self.fail(&group, &e.message, e.permanent).await,
        };
        let mut jobs = Vec::with_capacity(group.len());
        for job in &group {
            let max_image = match job.inputs.iter().find(|a| a.kind == "max_image") {
                Some(a) if matches!(probe, Probe::Baseline | Probe::Zoom | Probe::Rotation) => {
                    match self.objects.get_verified(&a.uri, &a.sha256).await {
                        Ok(bytes) => Some(bytes),
                        Err(e) => {
                            return self
                                .fail(&group, &format!("cannot read the max image: {e}"), false)
                                .await
                        }
                    }
                }
                _ => None,
            };
            jobs.push(BatchJob {
                job_id: job.job_id,
                filter: job.filter,
                max_image,
                max_image_response: reusable_response(job, &weights_sha),
            });
        }
        let progress = Arc::new(AtomicU32::new(0));
        let batch = Batch {
            model: first.model.clone(),
            weights,
            weights_sha256: weights_sha.clone(),
            layer: first.layer.clone(),
            probe,
            params,
            jobs,
            progress: progress.clone(),
        };
        let dropped = Dropped::default();
        let tokens = group.iter().map(|j| (j.job_id, j.token)).collect();
        // Beats until the batch is reported (or released): uploads and a completion that waits
        // for the coordinator must not let the leases run out.
        let beat = heartbeat::spawn(
            self.api.clone(),
            self.id,
            tokens,
            progress,
            self.heartbeat,
            dropped.clone(),
        );
        tracing::info!(model = %first.model, layer = %first.layer, probe = %first.probe, jobs = group.len(), "batch started");
        let outcome = tokio::select! {
            r = self.compute.run(batch) => r,
            _ = self.stop.reached(2) => {
                drop(beat);
                // bounded: a coordinator that cannot be reached lets the leases expire instead
                let jobs: Vec<(i64, i64)> = group.iter().map(|j| (j.job_id, j.token)).collect();
                let release = self.report_failures(&jobs, "the worker was stopped before finishing; released for another worker", Failure::Released);
                if tokio::time::timeout(Duration::from_secs(10), release).await.is_err() {
                    tracing::warn!("coordinator unreachable; the leases will expire instead");
                }
                bail!("stopped by a second signal; released {} leased job(s)", group.len());
            }
        };
        let finished = match outcome {
            Ok(f) => f,
            Err(BatchError { permanent, message }) => {
                return self.fail(&group, &message, permanent).await
            }
        };
        let mut completions = Vec::with_capacity(finished.len());
        for f in finished {
            let job = group
                .iter()
                .find(|j| j.job_id == f.job_id)
                .expect("results are of leased jobs");
            if dropped.contains(job.job_id) {
                tracing::warn!(
                    job = job.job_id,
                    "lease lost or campaign cancelled during compute; result dropped"
                );
                continue;
            }
            match self.upload(job, &weights_sha, f).await {
                Ok(c) => completions.push(c),
                Err(e) => {
                    self.fail(std::slice::from_ref(job), &format!("{e:#}"), false)
                        .await?
                }
            }
        }
        if !completions.is_empty() {
            self.complete(completions).await?;
        }
        drop(beat);
        Ok(())
    }

    /// Writes a job's files under attempt-scoped keys and assembles its completion.
    async fn upload(
        &self,
        job: &LeasedJob,
        weights_sha: &str,
        f: Finished,
    ) -> Result<JobCompletion> {
        let mut artifacts = Vec::with_capacity(f.files.len());
        for file in f.files {
            let key = format!(
                "campaigns/{}/{}/filter_{:04}/{}/attempt_{}/{}.{}",
                job.campaign_id,
                job.layer,
                job.filter,
                job.probe,
                job.token,
                file.kind,
                file.extension
            );
            let mut backoff = client::Backoff::new();
            let mut tries = 0;
            let stored = loop {
                match self.objects.put(&key, file.bytes.clone()).await {
                    Ok(s) => break s,
                    Err(e) if tries < 5 => {
                        tries += 1;
                        tracing::warn!(key, error = %e, "upload failed; retrying");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                    Err(e) => return Err(e).context("upload failed 6 times"),
                }
            };
            artifacts.push(Artifact {
                kind: file.kind,
                uri: stored.uri,
                sha256: stored.sha256,
                bytes: stored.bytes,
            });
        }
        let provenance = Provenance {
            weights_sha256: weights_sha.to_string(),
            params_json: job.params_json.clone(),
            params_hash: sha256_hex(job.params_json.as_bytes()),
            seed: job.seed,
            device: self.device.clone(),
            library_versions_json: serde_json::to_string(&VERSIONS)?,
            worker: self.name.clone(),
            duration_ms: (f.seconds * 1000.0).round() as i64,
        };
        Ok(JobCompletion {
            job_id: job.job_id,
            token: job.token,
            result: Some(JobOutcome {
                max_act: f.max_act,
                mean_act: f.mean_act,
                status: f.status.to_string(),
                derived_json: f.derived.to_string(),
                provenance: Some(provenance),
            }),
            points: f.points,
            artifacts,
        })
    }

    /// Spools, then sends, the completions of one batch.
    async fn complete(&self, jobs: Vec<JobCompletion>) -> Result<()> {
        let request = CompleteRequest {
            worker_id: self.id,
            jobs,
        };
        // A spool that cannot be written (disk full) only costs the crash safety of this one
        // completion; the results are still sent.
        let spooled = self
            .spool
            .save(&request)
            .inspect_err(|e| tracing::error!(error = %format!("{e:#}"), "cannot spool the completion; sending it unspooled"))
            .ok();
        self.send(request).await;
        if let Some(path) = spooled {
            self.spool.remove(&path);
        }
        Ok(())
    }

    /// Sends a completion until the coordinator has answered it. One stale or unacceptable job
    /// refuses the whole request, so on refusal the jobs are sent one by one and only those
    /// drop (see `refused`).
    async fn send(&self, request: CompleteRequest) {
        match self.call_complete(request.clone()).await {
            Ok(()) => {}
            Err(_) if request.jobs.len() > 1 => {
                for job in request.jobs {
                    let one = CompleteRequest {
                        worker_id: request.worker_id,
                        jobs: vec![job],
                    };
                    if let Err(status) = self.call_complete(one.clone()).await {
                        self.refused(&one.jobs[0], &status).await;
                    }
                }
            }
            Err(status) => {
                if let Some(job) = request.jobs.first() {
                    self.refused(job, &status).await;
                }
            }
        }
    }

    /// A completion the coordinator refused. A stale lease needs nothing more: the worker that
    /// holds the job now reports it. A result it cannot accept (say, a NaN activity) fails the
    /// job for good instead of leaving it to wait for its lease to expire.
    async fn refused(&self, job: &JobCompletion, status: &tonic::Status) {
        tracing::warn!(job = job.job_id, error = %status.message(), code = ?status.code(),
            "completion refused; the result is dropped");
        if status.code() == Code::InvalidArgument {
            let error = format!("the coordinator refused the result: {}", status.message());
            self.report_failures(&[(job.job_id, job.token)], &error, Failure::Permanent)
                .await;
        }
    }

    async fn call_complete(&self, request: CompleteRequest) -> Result<(), tonic::Status> {
        let response = client::retry("complete", || {
            let (mut api, request) = (self.api.clone(), request.clone());
            async move { api.complete(request).await }
        })
        .await?
        .into_inner();
        tracing::info!(accepted = ?response.accepted, duplicate = ?response.duplicate, cancelled = ?response.cancelled, "jobs completed");
        Ok(())
    }

    /// Reports that `jobs` could not be done.
    async fn fail(&self, jobs: &[LeasedJob], error: &str, permanent: bool) -> Result<()> {
        let jobs: Vec<(i64, i64)> = jobs.iter().map(|j| (j.job_id, j.token)).collect();
        let how = match permanent {
            true => Failure::Permanent,
            false => Failure::Retryable,
        };
        self.report_failures(&jobs, error, how).await;
        Ok(())
    }

    /// Reports that `jobs` (id, lease token) could not be done, or were given back.
    async fn report_failures(&self, jobs: &[(i64, i64)], error: &str, how: Failure) {
        tracing::error!(jobs = ?jobs.iter().map(|j| j.0).collect::<Vec<_>>(), ?how, error, "jobs failed");
        let request = FailRequest {
            worker_id: self.id,
            jobs: jobs
                .iter()
                .map(|&(job_id, token)| JobFailure {
                    job_id,
                    token,
                    error: error.to_string(),
                    permanent: how == Failure::Permanent,
                    released: how == Failure::Released,
                })
                .collect(),
        };
        let answer = client::retry("fail", || {
            let (mut api, request) = (self.api.clone(), request.clone());
            async move { api.fail(request).await }
        })
        .await;
        if let Err(status) = answer {
            // A stale lease needs no failure report: another worker holds the job.
            tracing::warn!(error = %status.message(), code = ?status.code(), "failure report refused");
        }
    }
}

/// How a job that was not done is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Another attempt may succeed (after a backoff).
    Retryable,
    /// No attempt can succeed: the job ends failed.
    Permanent,
    /// Given back untried to the end (the worker was stopped): queued again at once, the
    /// attempt not charged.
    Released,
}

/// The synthesis job's response to the max image, when it was measured with the weights this
/// batch runs with: a worker with other weights must measure the image itself.
fn reusable_response(job: &LeasedJob, weights_sha256: &str) -> Option<Response> {
    job.input_response
        .as_ref()
        .filter(|r| r.weights_sha256 == weights_sha256)
        .filter(|r| r.max_act.is_finite() && r.mean_act.is_finite())
        .map(|r| Response {
            max: r.max_act,
            mean: r.mean_act,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vephys_proto::v1::MeasuredResponse;

    fn job(response: Option<(f64, &str)>) -> LeasedJob {
        LeasedJob {
            input_response: response.map(|(max, sha)| MeasuredResponse {
                max_act: max,
                mean_act: 0.5,
                weights_sha256: sha.into(),
            }),
            ..LeasedJob::default()
        }
    }

    #[test]
    fn a_response_is_reused_only_when_the_same_weights_measured_it() {
        let reused = reusable_response(&job(Some((2.0, "abc"))), "abc");
        assert_eq!(
            reused,
            Some(Response {
                max: 2.0,
                mean: 0.5
            })
        );
        assert_eq!(reusable_response(&job(Some((2.0, "abc"))), "def"), None);
        assert_eq!(
            reusable_response(&job(Some((f64::NAN, "abc"))), "abc"),
            None
        );
        assert_eq!(reusable_response(&job(None), "abc"), None);
    }
}
