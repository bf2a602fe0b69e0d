//! Assembles the gRPC server (the two services behind their tokens, health, reflection) and
//! the background reaper.

use crate::auth::{Role, Tokens};
use crate::grpc::{CampaignsService, WorkersService};
use crate::metrics::Metrics;
use crate::store::{now_ms, Store};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
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

/// Serves gRPC on `listener` until `shutdown` resolves.
pub async fn serve_grpc(
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<CampaignsServer<CampaignsService>>()
        .await;
    health.set_serving::<WorkersServer<WorkersService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(vephys_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor sets are valid");

    let campaigns = InterceptedService::new(
        CampaignsServer::new(CampaignsService::new(
            store.clone(),
            settings.watch_interval,
        )),
        settings.tokens.interceptor(Role::User),
    );
    let workers = InterceptedService::new(
        WorkersServer::new(WorkersService::new(store, metrics)),
        settings.tokens.interceptor(Role::Worker),
    );
    let mut builder = Server::builder();
    if let Some(tls) = settings.tls {
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

/// Reaps expired leases every `interval` until the task is dropped. Errors are logged and the
/// loop goes on: a database blip must not stop reaping for good.
pub fn spawn_reaper(
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match store.reap(now_ms()).await {
                Ok(reaped) => {
                    let n = reaped.requeued.len() + reaped.failed.len();
                    metrics.leases_expired.inc_by(n as u64);
                }
                Err(error) => tracing::warn!(%error, "reaper pass failed"),
            }
        }
    })
}
