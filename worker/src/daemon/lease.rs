//! The lease loop: resend what the spool holds, then lease a batch, run it, and again, until
//! told to stop.
//!
//! A lease names itself with a fresh random id, which its retries reuse: a lease whose answer
//! was lost (a timeout, a coordinator restarting) returns the jobs the first try took instead of
//! leaving them leased to nobody. Transient errors are retried with backoff, never fatal. A
//! coordinator that forgot this worker (a fresh database) gets a new registration. While the
//! store fails, and after jobs were given back, the worker leases nothing and backs off.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::Rng;
use tonic::Code;
use vephys_proto::v1::{LeaseRequest, LeasedJob, Model};

use super::client::{self, Backoff};
use super::error::{DaemonError, Result};
use super::register;
use super::Worker;

/// How often an idle worker sends the spool's leftovers again (completions whose answer was
/// not definitive, e.g. a coordinator error).
const RESEND_EVERY: Duration = Duration::from_secs(60);

impl Worker {
    pub(super) async fn run(mut self) -> Result<()> {
        self.resend_spool().await?;
        let mut last_resend = Instant::now();
        let mut idle = Duration::from_millis(100);
        while self.stop.level() == 0 {
            if !self.ready_to_lease().await {
                break;
            }
            let stop = self.stop.clone();
            let leased = tokio::select! {
                r = self.lease() => r?,
                () = stop.reached(1) => break,
            };
            let (jobs, model) = leased;
            if jobs.is_empty() {
                if last_resend.elapsed() > RESEND_EVERY {
                    self.resend_spool().await?;
                    last_resend = Instant::now();
                }
                tokio::select! {
                    () = tokio::time::sleep(idle) => {}
                    () = self.stop.reached(1) => break,
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
                self.run_batch(group, &model).await?;
            }
        }
        tracing::info!("stopped; no batch in flight");
        Ok(())
    }

    /// Waits while leasing would only lead to giving jobs back: after a release (a growing
    /// pause) and while the store fails (until it answers a write, read and delete). False
    /// when told to stop meanwhile.
    async fn ready_to_lease(&mut self) -> bool {
        if self
            .released
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            let pause = self.release_backoff.next_delay();
            tracing::info!(
                pause_ms = pause.as_millis() as u64,
                "jobs were given back; pausing before the next lease"
            );
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.stop.reached(1) => return false,
            }
        }
        let mut backoff = Backoff::new();
        while self.store_failing {
            match self.objects.check_read_write(&self.name).await {
                Ok(()) => {
                    tracing::info!(store = %self.objects.url(), "the store answers again; leasing");
                    self.store_failing = false;
                }
                Err(error) => {
                    let pause = backoff.next_delay();
                    tracing::warn!(store = %self.objects.url(), %error, retry_in_ms = pause.as_millis() as u64,
                        "the store is failing; leasing nothing until it answers");
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = self.stop.reached(1) => return false,
                    }
                }
            }
        }
        true
    }

    /// Leases one batch: its jobs (none when there is nothing to do) and their model.
    async fn lease(&mut self) -> Result<(Vec<LeasedJob>, Model)> {
        let mut refusals = Backoff::new();
        loop {
            let request = LeaseRequest {
                worker_id: self.id,
                max_jobs: self.max_jobs,
                loaded_models: Vec::new(),
                request_id: request_id(),
            };
            let api = self.api.clone();
            let answer = client::retry("lease", || {
                let (mut api, request) = (api.clone(), request.clone());
                async move { api.lease(request).await }
            })
            .await;
            let status = match answer {
                Ok(r) => {
                    let r = r.into_inner();
                    return Ok((r.jobs, r.model.unwrap_or_default()));
                }
                Err(status) => status,
            };
            match status.code() {
                Code::NotFound => {
                    tracing::warn!(worker_id = self.id, error = %status.message(),
                        "the coordinator does not know this worker; registering again");
                    let url = self.coordinator.clone();
                    self.id = register::register(&self.api, &self.registration, &url)
                        .await?
                        .worker_id;
                }
                Code::Unauthenticated | Code::PermissionDenied => {
                    return Err(DaemonError::Token {
                        url: self.coordinator.clone(),
                        message: status.message().to_string(),
                    })
                }
                // Not transient, yet not this worker's to mend (a coordinator bug, an
                // incompatible version): said loudly, tried again slowly, never fatal.
                code => {
                    let pause = refusals.next_delay();
                    tracing::error!(error = %status.message(), ?code, retry_in_ms = pause.as_millis() as u64,
                        "the coordinator refused to lease jobs; trying again");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

/// A fresh idempotency key for one lease and its retries.
fn request_id() -> String {
    format!("{:032x}", rand::thread_rng().gen::<u128>())
}
