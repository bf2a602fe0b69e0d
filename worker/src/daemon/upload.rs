//! A finished job's files go to the store under attempt-scoped keys
//! (`campaigns/<campaign>/<layer>/filter_<NNNN>/<probe>/attempt_<A>/<kind>.<ext>`), so a late
//! write of a worker that lost its lease never overwrites the winner's; then its completion is
//! assembled.
//!
//! A store that fails is waited for: each write is tried again with backoff for as long as the
//! job's lease holds (its heartbeats go on meanwhile), up to [`PATIENCE`], so a store's bad
//! minutes cost no computation. Only then is the job given back.

use std::time::{Duration, Instant};

use vephys_objects::sha256_hex;
use vephys_proto::v1::{Artifact, JobCompletion, JobOutcome, LeasedJob, Provenance};

use super::client::Backoff;
use super::heartbeat::Dropped;
use super::results::Finished;
use super::Worker;
use crate::provenance::VERSIONS;

/// How long a job's uploads are retried before it is given back.
pub const PATIENCE: Duration = Duration::from_secs(15 * 60);

/// What became of a job's upload.
pub(super) enum Uploaded {
    /// Stored: the completion to send (boxed: it dwarfs the other outcomes).
    Done(Box<JobCompletion>),
    /// The job was lost or cancelled meanwhile (or the worker told to release its batch):
    /// nothing to send.
    Dropped,
    /// The store kept failing for [`PATIENCE`]: give the job back.
    StoreFailing(String),
}

impl Worker {
    /// Writes a job's files and assembles its completion.
    pub(super) async fn upload(
        &self,
        job: &LeasedJob,
        weights_sha: &str,
        f: Finished,
        dropped: &Dropped,
    ) -> Uploaded {
        let started = Instant::now();
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
            let mut backoff = Backoff::new();
            let stored = loop {
                if dropped.contains(job.job_id) || self.stop.level() >= 2 {
                    return Uploaded::Dropped;
                }
                let error = match self.objects.put(&key, file.bytes.clone()).await {
                    Ok(stored) => break stored,
                    Err(error) => error,
                };
                if started.elapsed() > PATIENCE {
                    return Uploaded::StoreFailing(format!(
                        "the store failed for {} minutes: {error}",
                        PATIENCE.as_secs() / 60
                    ));
                }
                let pause = backoff.next_delay();
                tracing::warn!(key, %error, retry_in_ms = pause.as_millis() as u64, "upload failed; retrying while the lease holds");
                tokio::time::sleep(pause).await;
            };
            artifacts.push(Artifact {
                kind: file.kind,
                uri: stored.uri,
                sha256: stored.sha256,
                bytes: stored.bytes,
            });
        }
        // the job's parameters with the precision that ran (an `auto` job says which)
        let params_json = f
            .params_json
            .clone()
            .unwrap_or_else(|| job.params_json.clone());
        let provenance = Provenance {
            weights_sha256: weights_sha.to_string(),
            params_hash: sha256_hex(params_json.as_bytes()),
            params_json,
            seed: job.seed,
            device: self.device.clone(),
            library_versions_json: serde_json::to_string(&VERSIONS)
                .expect("library versions serialize"),
            worker: self.name.clone(),
            duration_ms: (f.seconds * 1000.0).round() as i64,
        };
        Uploaded::Done(Box::new(JobCompletion {
            job_id: job.job_id,
            token: job.token,
            result: Some(JobOutcome {
                max_act: f.max_act,
                mean_act: f.mean_act,
                status: f.status.to_string(),
                derived_json: f.derived.to_json(),
                provenance: Some(provenance),
            }),
            points: f.points,
            artifacts,
        }))
    }
}
