//! `vephys-worker serve`: the worker daemon's command line. The daemon itself is the library's
//! `vephys_worker::daemon` (register, lease loop, batch, upload, complete, shutdown); this
//! parses the flags into its `Config`, sets up logging and the async runtime, and turns
//! SIGTERM/SIGINT into its stop levels.
//!
//! SIGTERM/SIGINT: stop leasing, finish and report the batch in flight, exit. A second signal:
//! release the batch's leases (they go back to the queue at once) and exit. A third: exit now.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use tracing_subscriber::EnvFilter;
use vephys_proto::params::PrecisionChoice;
use vephys_worker::daemon::{self, Config, Stop};
use vephys_worker::device::parse_device;

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
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION). Weights are fetched from this
    /// store only: a model's weights_uri must name an object in it
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

    /// Number format of jobs whose parameters say auto (a job's fp32 or bf16 wins): fp32, bf16,
    /// or auto (bf16 where the device runs it natively, else fp32). Results record which ran
    #[arg(long, env = "VEPHYS_PRECISION", default_value_t = PrecisionChoice::Auto, value_parser = super::parse_precision)]
    precision: PrecisionChoice,

    /// Directory of <model>.safetensors files (built-in models) and <model>/ directories
    /// (exported models, from vephys-export); models found here and not yet in the registry
    /// are added to it at start (a registered model is never changed by a worker)
    #[arg(long, env = "VEPHYS_WEIGHTS_DIR", default_value_os_t = super::default_weights_dir())]
    weights_dir: PathBuf,

    /// An exported model's directory (model.json and its archive, from vephys-export) to serve
    /// and register at start; repeat it for several
    #[arg(long = "model-dir", env = "VEPHYS_MODEL_DIR", value_delimiter = ',')]
    model_dirs: Vec<PathBuf>,

    /// Where weights fetched from the store are kept (by sha256; hashed again once per process
    /// before use, and fetched again if damaged)
    #[arg(long, env = "VEPHYS_CACHE_DIR", default_value_os_t = default_cache_dir())]
    cache_dir: PathBuf,

    /// Completions not yet answered by the coordinator (default: <cache-dir>/spool); put it on
    /// a persistent volume to keep them across restarts of the machine. Leftovers of
    /// interrupted writes are removed at start
    #[arg(long, env = "VEPHYS_SPOOL_DIR")]
    spool_dir: Option<PathBuf>,

    /// Most jobs leased (and run) as one batch
    #[arg(long, env = "VEPHYS_MAX_JOBS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    max_jobs: u32,

    /// Written once the worker is registered with the coordinator (JSON: worker id, name,
    /// models), removed when it stops: a readiness signal for scripts and `vephys local`
    #[arg(long, env = "VEPHYS_READY_FILE")]
    ready_file: Option<PathBuf>,

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
    let name = args.name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let config = Config {
        coordinator: args.coordinator,
        token: args.token,
        ca_cert: args.ca_cert,
        store: args.store,
        s3_endpoint: args.s3_endpoint,
        name,
        device: parse_device(&args.device)?,
        precision: args.precision,
        weights_dir: args.weights_dir,
        model_dirs: args.model_dirs,
        spool_dir: args
            .spool_dir
            .unwrap_or_else(|| args.cache_dir.join("spool")),
        cache_dir: args.cache_dir,
        max_jobs: args.max_jobs,
        ready_file: args.ready_file,
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(async move {
            let stop = Stop::new();
            stop.on_signals()?;
            daemon::run(config, stop).await
        })
        .map_err(Into::into)
}
