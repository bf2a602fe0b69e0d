//! The worker daemon (`vephys-worker serve`) as a library: it registers with a coordinator,
//! then leases batches of jobs of one (model, layer, probe), runs each batch as one on its
//! device, writes images and records to the object store under attempt-scoped keys, and
//! completes the jobs with their results. The binary only parses flags into a [`Config`] and
//! connects signals to a [`Stop`]; tests run the same lifecycle in-process.
//!
//! The lifecycle, one file per step:
//!
//! 1. [`register`]: check the store and the precision, describe the models this worker holds,
//!    register with the coordinator, then say so in the ready file (`--ready-file`).
//! 2. [`lease`]: the loop. Resend completions left in the spool, lease a batch (idempotently:
//!    a retried lease returns what the first took), run it, and again; while the store fails,
//!    or after jobs were given back, stop leasing and back off.
//! 3. [`batch`]: one batch: its parameters, its weights, its inputs (one unreadable input fails
//!    that job only), compute beside heartbeats.
//! 4. [`upload`]: a job's files under attempt-scoped keys, retried while its lease holds.
//! 5. [`complete`]: spool, then send; failures and releases.
//! 6. [`shutdown`]: a first stop finishes the batch in flight, a second releases it.
//!
//! What is whose fault decides what a job costs ([`Failure`]): a job that is wrong fails for
//! good; a computation that may go better next time fails and uses an attempt; a failure of
//! the infrastructure (the store, the weights source, the coordinator) uses none: the job is
//! given back (released) and the worker backs off.
//!
//! Supporting pieces: [`client`] (gRPC with retries of transient errors), [`heartbeat`],
//! [`compute`] (the libtorch thread), [`params`], [`results`], [`spool`], [`weights`].

mod batch;
pub mod client;
mod complete;
pub mod compute;
pub mod error;
pub mod heartbeat;
mod lease;
pub mod params;
pub mod register;
pub mod results;
pub mod shutdown;
pub mod spool;
mod upload;
pub mod weights;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tch::Device;
use vephys_objects::Objects;
use vephys_proto::params::PrecisionChoice;
use vephys_proto::v1::RegisterWorkerRequest;

pub use error::{DaemonError, Result};
pub use shutdown::Stop;

use client::{Api, Backoff};
use compute::Compute;
use spool::Spool;
use weights::Weights;

/// Everything the daemon needs to know; `vephys-worker serve --help` documents each field.
#[derive(Debug, Clone)]
pub struct Config {
    /// The coordinator's gRPC address (`http://` or `https://`).
    pub coordinator: String,
    /// The coordinator's worker token.
    pub token: Option<String>,
    /// A private CA (PEM) for an `https://` coordinator.
    pub ca_cert: Option<PathBuf>,
    /// Where images and records go: `file:///dir` or `s3://bucket/prefix`.
    pub store: String,
    /// The endpoint of an S3-compatible server.
    pub s3_endpoint: Option<String>,
    /// Shown in results and logs.
    pub name: String,
    pub device: Device,
    /// Number format of jobs whose parameters say auto.
    pub precision: PrecisionChoice,
    /// `<model>.safetensors` files and exported models' directories.
    pub weights_dir: PathBuf,
    /// Exported models' directories to serve besides those in `weights_dir`.
    pub model_dirs: Vec<PathBuf>,
    /// Where fetched weights are kept.
    pub cache_dir: PathBuf,
    /// Completions not yet answered by the coordinator.
    pub spool_dir: PathBuf,
    /// Most jobs leased (and run) as one batch.
    pub max_jobs: u32,
    /// Written (JSON: worker id, name, models) once the worker is registered, removed when it
    /// stops: what `vephys local` waits for.
    pub ready_file: Option<PathBuf>,
}

/// Runs the daemon until `stop` says so (see [`Stop`]), or until a start-up check or a final
/// refusal of the coordinator stops it with an error that says what to do.
pub async fn run(config: Config, stop: Arc<Stop>) -> Result<()> {
    let worker = register::start(&config, stop).await?;
    let ran = worker.run().await;
    if let Some(path) = &config.ready_file {
        let _ = tokio::fs::remove_file(path).await;
    }
    ran
}

/// How a job that was not done is reported, by whose fault it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The computation failed and another attempt may succeed (after a backoff); it uses an
    /// attempt.
    Retryable,
    /// The job itself is wrong: no attempt can succeed, the job ends failed.
    Permanent,
    /// Given back untried to the end: the worker was told to stop, or its store, its weights
    /// source or the coordinator failed. Queued again at once; the attempt is not charged.
    Released,
}

/// Why one job (or a batch) was not done, and what that costs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    pub how: Failure,
    pub message: String,
}

impl From<compute::BatchError> for JobError {
    fn from(e: compute::BatchError) -> Self {
        JobError {
            how: match e.permanent {
                true => Failure::Permanent,
                false => Failure::Retryable,
            },
            message: e.message,
        }
    }
}

/// The registered daemon: what every step of the lifecycle works with.
struct Worker {
    api: Api,
    /// The coordinator's address, for error messages.
    coordinator: String,
    /// This worker's registration, sent again when the coordinator has forgotten it.
    registration: RegisterWorkerRequest,
    id: i64,
    name: String,
    /// The device as results record it.
    device: String,
    objects: Objects,
    weights: Weights,
    spool: Spool,
    compute: Compute,
    /// How often a running batch heartbeats: a third of the lease.
    heartbeat: Duration,
    max_jobs: u32,
    stop: Arc<Stop>,
    /// Set when the store (or the weights source) failed: leasing waits until it answers.
    store_failing: bool,
    /// Grows while jobs are given back, so a worker that cannot run what it leases does not
    /// lease it again at once; reset by a batch that completes.
    release_backoff: Backoff,
    /// Set when this worker gave jobs back since it last leased.
    released: AtomicBool,
}
