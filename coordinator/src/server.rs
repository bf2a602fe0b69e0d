//! Assembles the gRPC server (the two services behind their tokens, health, reflection) and
//! the background reaper.

use crate::auth::{Role, Tokens};
use crate::grpc::campaigns::DEFAULT_MAX_STREAMS;
use crate::grpc::{CampaignsService, WorkersService};
use crate::metrics::Metrics;
use crate::store::Store;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Server, ServerTlsConfig};
use vephys_proto::v1::campaigns_server::CampaignsServer;
use vephys_proto::v1::workers_server::WorkersServer;

/// What the gRPC server needs besides the store.
#[derive(Clone)]
pub struct Settings {
    pub tokens: Tokens,
    pub watch_interval: Duration,
    pub tls: Option<ServerTlsConfig>,
}

/// How the gRPC server treats its connections and streams.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Most watch and result streams open at once; more are refused with RESOURCE_EXHAUSTED.
    pub max_streams: usize,
    /// HTTP/2 keepalive: a ping this often on every connection, so a client that vanished (a
    /// node gone, a cable cut) is noticed and its streams end instead of lingering.
    pub keepalive: Duration,
    /// How long a keepalive ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_streams: DEFAULT_MAX_STREAMS,
            keepalive: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves gRPC on `listener` until `shutdown` resolves, with readiness from a database check
/// every [`DbHealth::DEFAULT_INTERVAL`].
pub async fn serve_grpc(
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let health = DbHealth::spawn(
        store.clone(),
        DbHealth::DEFAULT_INTERVAL,
        DbHealth::DEFAULT_TIMEOUT,
    );
    serve_grpc_with_health(store, metrics, settings, health, listener, shutdown).await
}

/// [`serve_grpc`] with the database check given: gRPC health (`grpc.health.v1`) reports
/// `vephys.v1.Campaigns` and `vephys.v1.Workers` SERVING while `health` finds the database and
/// NOT_SERVING while it does not; the server itself (service `""`, what liveness asks) stays
/// SERVING, so an outage of the database makes pods unready, never restarts them.
pub async fn serve_grpc_with_health(
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    settings: Settings,
    health: DbHealth,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let options = ServeOptions::default();
    serve_grpc_with_options(
        store, metrics, settings, options, health, listener, shutdown,
    )
    .await
}

/// [`serve_grpc_with_health`] with the stream limit and keepalive given.
pub async fn serve_grpc_with_options(
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    settings: Settings,
    options: ServeOptions,
    health: DbHealth,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let mut ready = health.watch();
    let follow = tokio::spawn(async move {
        loop {
            let up = ready.borrow_and_update().is_ok();
            if up {
                reporter
                    .set_serving::<CampaignsServer<CampaignsService>>()
                    .await;
                reporter
                    .set_serving::<WorkersServer<WorkersService>>()
                    .await;
            } else {
                reporter
                    .set_not_serving::<CampaignsServer<CampaignsService>>()
                    .await;
                reporter
                    .set_not_serving::<WorkersServer<WorkersService>>()
                    .await;
            }
            if ready.changed().await.is_err() {
                return;
            }
        }
    });
    let _follow = AbortOnDrop(follow);
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(vephys_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor sets are valid");

    let campaigns = InterceptedService::new(
        CampaignsServer::new(CampaignsService::with_max_streams(
            store.clone(),
            settings.watch_interval,
            options.max_streams,
        )),
        settings.tokens.interceptor(Role::User),
    );
    let workers = InterceptedService::new(
        WorkersServer::new(WorkersService::new(store, metrics)),
        settings.tokens.interceptor(Role::Worker),
    );
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(options.keepalive))
        .http2_keepalive_timeout(Some(options.keepalive_timeout))
        .tcp_keepalive(Some(options.keepalive));
    if let Some(tls) = settings.tls {
        // tonic's TLS server asks rustls for the process default provider: without one it
        // panics at start (see install_crypto_provider).
        crate::store::install_crypto_provider();
        builder = builder.tls_config(tls)?;
    }
    builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(campaigns)
        .add_service(workers)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}

/// Whether the database answers, as one background task finds it: a `SELECT 1` every
/// `interval`, given `timeout` to answer. Probes read the last result; no request waits on it.
/// The task stops when the last clone is dropped.
#[derive(Clone)]
pub struct DbHealth {
    state: tokio::sync::watch::Receiver<Result<(), String>>,
    _task: Arc<AbortOnDrop>,
}

impl DbHealth {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

    /// Starts checking. The store has just been opened, so the database starts out reachable.
    pub fn spawn(store: Arc<Store>, interval: Duration, timeout: Duration) -> DbHealth {
        let (tx, rx) = tokio::sync::watch::channel(Ok(()));
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let now = store.ping(timeout).await;
                match (&*tx.borrow(), &now) {
                    (Ok(()), Err(error)) => {
                        tracing::warn!(%error, "database unreachable: not ready")
                    }
                    (Err(_), Ok(())) => tracing::info!("database reachable again: ready"),
                    _ => {}
                }
                tx.send_if_modified(|old| {
                    let changed = old.is_ok() != now.is_ok();
                    *old = now;
                    changed
                });
            }
        });
        DbHealth {
            state: rx,
            _task: Arc::new(AbortOnDrop(task)),
        }
    }

    /// `Ok` while the last check found the database, else why it did not.
    pub fn status(&self) -> Result<(), String> {
        self.state.borrow().clone()
    }

    /// Changes of [`DbHealth::status`] (between reachable and not).
    pub fn watch(&self) -> tokio::sync::watch::Receiver<Result<(), String>> {
        self.state.clone()
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reaps expired leases every `interval` until the task is dropped, on the database's clock.
///
/// Not at first: for one lease length after the coordinator starts, and after every pass that
/// found the database unreachable, nothing is reaped. Workers could not reach a coordinator
/// that was down, nor heartbeat through a database that was; the grace gives them one lease
/// length to extend the leases they still hold, so an outage longer than a lease does not
/// expire every lease in flight. Errors are logged and the loop goes on: a database blip must
/// not stop reaping for good.
pub fn spawn_reaper(
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    let grace = Duration::from_millis(store.policy.lease_ms.max(0) as u64);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut resume_at = Instant::now() + grace;
        // whether the database was unreachable at the last look
        let mut down = false;
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "reaping starts after one lease length"
        );
        loop {
            ticker.tick().await;
            if Instant::now() < resume_at {
                // the grace runs from when the database answers again, not from when it went
                if down && store.ping(DbHealth::DEFAULT_TIMEOUT).await.is_err() {
                    resume_at = Instant::now() + grace;
                } else {
                    down = false;
                }
                continue;
            }
            match store.reap(store.now_ms()).await {
                Ok(reaped) => {
                    let n = reaped.requeued.len() + reaped.failed.len();
                    metrics.leases_expired.inc_by(n as u64);
                }
                Err(error) => {
                    down = true;
                    resume_at = Instant::now() + grace;
                    tracing::warn!(%error, grace_ms = grace.as_millis() as u64,
                        "reaper pass failed; reaping resumes one lease length after the database answers again");
                }
            }
        }
    })
}
