//! Heartbeats beside the compute: while a batch runs (and while its results upload and its
//! completion waits for the coordinator), extend its leases every third of the lease time and
//! carry its progress; remember the jobs the coordinator says this worker must drop (cancelled,
//! or lost to another worker after a pause), so their results are never sent. A heartbeat that
//! does not get through is tried again after a short backoff, not a whole interval later: the
//! lease must not run out while the coordinator restarts.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vephys_proto::v1::{HeartbeatRequest, JobProgress};

use super::client::{transient, Api, Backoff};

/// Jobs to drop, shared between the heartbeat task and the batch that owns them.
#[derive(Clone, Default)]
pub struct Dropped(Arc<Mutex<HashSet<i64>>>);

impl Dropped {
    pub fn add(&self, ids: impl IntoIterator<Item = i64>) {
        self.0.lock().expect("dropped set").extend(ids);
    }

    pub fn contains(&self, id: i64) -> bool {
        self.0.lock().expect("dropped set").contains(&id)
    }
}

/// A running heartbeat; it stops when this is dropped (a tokio `JoinHandle` alone would leave
/// the task running).
pub struct Beat(tokio::task::JoinHandle<()>);

impl Drop for Beat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts heartbeating `jobs` (id, token) until the returned `Beat` is dropped.
pub fn spawn(
    api: Api,
    worker_id: i64,
    jobs: Vec<(i64, i64)>,
    progress: Arc<AtomicU32>,
    interval: Duration,
    dropped: Dropped,
) -> Beat {
    Beat(tokio::spawn(async move {
        let mut api = api;
        let mut backoff = Backoff::new();
        // the lease was just granted: the first beat is one interval away
        let mut wait = interval;
        loop {
            tokio::time::sleep(wait).await;
            let fraction = progress.load(Ordering::Relaxed) as f32 / 1e6;
            let request = HeartbeatRequest {
                worker_id,
                jobs: jobs
                    .iter()
                    .filter(|(id, _)| !dropped.contains(*id))
                    .map(|&(job_id, token)| JobProgress {
                        job_id,
                        token,
                        progress: fraction,
                    })
                    .collect(),
            };
            if request.jobs.is_empty() {
                return;
            }
            wait = interval;
            match api.heartbeat(request).await {
                Ok(response) => {
                    backoff.reset();
                    let r = response.into_inner();
                    if !r.lost.is_empty() || !r.cancelled.is_empty() {
                        tracing::warn!(lost = ?r.lost, cancelled = ?r.cancelled,
                            "coordinator says to drop jobs; their results will not be sent");
                    }
                    dropped.add(r.lost.into_iter().chain(r.cancelled));
                }
                // Keep computing: the result is still worth sending if the lease survives.
                Err(status) if transient(&status) => {
                    wait = backoff.next_delay().min(interval);
                    tracing::warn!(error = %status.message(), retry_in_ms = wait.as_millis() as u64,
                        "heartbeat failed; coordinator unreachable")
                }
                Err(status) => {
                    tracing::error!(error = %status.message(), code = ?status.code(), "heartbeat refused")
                }
            }
        }
    }))
}
