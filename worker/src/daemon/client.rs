//! The worker's gRPC client: bearer token on every call, and patience with a coordinator that
//! is restarting. Transient failures are retried with capped exponential backoff and jitter;
//! anything else is the caller's to handle.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use rand::Rng;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};
use vephys_proto::bearer::BearerToken;
use vephys_proto::endpoint::endpoint;
use vephys_proto::v1::workers_client::WorkersClient;

use super::error::DaemonError;

pub type Api = WorkersClient<InterceptedService<Channel, BearerToken>>;

/// A client that connects on first use, so a coordinator that is not up yet is waited for.
/// `ca_cert` (PEM) is trusted besides the public roots for an https:// coordinator. HTTP/2
/// keepalive pings find a coordinator that vanished without closing the connection (a node
/// gone), so calls fail over to a reconnect instead of hanging until their deadline.
pub fn connect(url: &str, token: Option<&str>, ca_cert: Option<&Path>) -> Result<Api, DaemonError> {
    let endpoint = endpoint(url, ca_cert)
        .map_err(|e| DaemonError::Config(format!("--coordinator: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let token =
        BearerToken::new(token).map_err(|e| DaemonError::Config(format!("--token: {e}")))?;
    Ok(WorkersClient::with_interceptor(
        endpoint.connect_lazy(),
        token,
    ))
}

/// Whether waiting and sending the same request again can help: the coordinator or its
/// database is down, restarting or busy (the coordinator answers UNAVAILABLE or ABORTED then;
/// a connection that broke mid-call shows as UNKNOWN or CANCELLED).
pub fn transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Unknown
            | Code::Cancelled
    )
}

/// Exponential backoff with equal jitter (half the cap plus a random half), from 0.5 s up to
/// 30 s.
#[derive(Debug, Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff::default()
    }

    /// Back to the shortest delay, after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn next_delay(&mut self) -> Duration {
        let cap = (500u64 << self.attempt.min(6)).min(30_000);
        self.attempt += 1;
        Duration::from_millis(rand::thread_rng().gen_range(cap / 2..=cap))
    }
}

/// Runs `call` until it succeeds or fails for a reason other than a transient one. `what`
/// names the call in the log.
pub async fn retry<T, F, Fut>(what: &str, mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut backoff = Backoff::new();
    loop {
        match call().await {
            Err(status) if transient(&status) => {
                let delay = backoff.next_delay();
                tracing::warn!(call = what, error = %status.message(), code = ?status.code(),
                    retry_in_ms = delay.as_millis() as u64, "coordinator unreachable; retrying");
                tokio::time::sleep(delay).await;
            }
            other => return other,
        }
    }
}
