//! One batch, start to finish: jobs of one (model, layer, probe) with equal parameters. Its
//! parameters and weights are resolved first (a failure there is the whole batch's), then each
//! job's input (a failure there is that job's alone), then the batch computes on the compute
//! thread while heartbeats keep its leases, and every result is uploaded and completed.

use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use vephys_proto::manifest::Manifest;
use vephys_proto::params::Probe;
use vephys_proto::v1::{LeasedJob, Model};

use super::compute::{Batch, BatchJob};
use super::error::{DaemonError, Result};
use super::heartbeat::{self, Dropped};
use super::params;
use super::results;
use super::upload::Uploaded;
use super::weights::Kind as WeightsKind;
use super::{Failure, JobError, Worker};
use crate::probes::Response;

/// Largest max image read from the store (a 4096 px PNG stays far below it).
const MAX_IMAGE_BYTES: u64 = 256 << 20;

/// A job and why it was not done.
type NotDone<'a> = (&'a LeasedJob, JobError);

impl Worker {
    /// Runs one batch of `model` (as its campaign pinned it). Errors are the daemon's own (a
    /// second stop); every job's fate is reported to the coordinator.
    pub(super) async fn run_batch(&mut self, group: Vec<LeasedJob>, model: &Model) -> Result<()> {
        let first = &group[0];
        let whole = |how, message: String| -> Vec<NotDone> {
            let error = JobError { how, message };
            group.iter().map(|j| (j, error.clone())).collect()
        };
        let probe: Probe = match first.probe.parse() {
            Ok(p) => p,
            Err(e) => return self.report(&whole(Failure::Permanent, e)).await,
        };
        let manifest = match model.manifest_json.is_empty() {
            true => None,
            false => match Manifest::parse(&model.manifest_json) {
                Ok(m) => Some(m),
                Err(e) => {
                    let error = format!("the registry's manifest of {} is broken: {e}", model.name);
                    return self.report(&whole(Failure::Permanent, error)).await;
                }
            },
        };
        let params = match params::parse(&first.params_json, probe) {
            Ok(p) => p,
            Err(e) => return self.report(&whole(Failure::Permanent, e)).await,
        };
        let kind = match &manifest {
            Some(m) => WeightsKind::Archive(&m.archive),
            None => WeightsKind::Safetensors,
        };
        let resolved = self
            .weights
            .resolve(
                &first.model,
                kind,
                &first.weights_sha256,
                &first.weights_uri,
            )
            .await;
        let (weights, weights_sha) = match resolved {
            Ok(w) => w,
            Err(e) => {
                // the weights source failed: back off before leasing more of the same
                self.store_failing |= e.how == Failure::Released && !first.weights_uri.is_empty();
                return self.report(&whole(e.how, e.message)).await;
            }
        };

        let mut jobs = Vec::with_capacity(group.len());
        let mut not_done: Vec<NotDone> = Vec::new();
        for job in &group {
            match self.input(job, probe, params.size).await {
                Ok(max_image) => jobs.push(BatchJob {
                    job_id: job.job_id,
                    filter: job.filter,
                    max_image,
                    max_image_response: reusable_response(job, &weights_sha),
                }),
                Err(e) if e.how == Failure::Released => {
                    // the store fails: every job goes back, none runs
                    self.store_failing = true;
                    return self.report(&whole(Failure::Released, e.message)).await;
                }
                Err(e) => not_done.push((job, e)),
            }
        }
        self.report(&not_done).await?;
        if jobs.is_empty() {
            return Ok(());
        }
        let running: Vec<&LeasedJob> = group
            .iter()
            .filter(|j| jobs.iter().any(|b| b.job_id == j.job_id))
            .collect();

        let progress = Arc::new(AtomicU32::new(0));
        let batch = Batch {
            model: first.model.clone(),
            manifest,
            weights,
            weights_sha256: weights_sha.clone(),
            layer: first.layer.clone(),
            probe,
            params,
            jobs,
            progress: progress.clone(),
        };
        let dropped = Dropped::default();
        let tokens = running.iter().map(|j| (j.job_id, j.token)).collect();
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
        tracing::info!(model = %first.model, layer = %first.layer, probe = %first.probe, jobs = running.len(), "batch started");
        let outcome = tokio::select! {
            r = self.compute.run(batch) => r,
            () = self.stop.reached(2) => {
                drop(beat);
                self.release_now(&running).await;
                return Err(DaemonError::Released(running.len()));
            }
        };
        let finished = match outcome {
            Ok(f) => f,
            Err(e) => {
                let error = JobError::from(e);
                let all: Vec<NotDone> = running.iter().map(|j| (*j, error.clone())).collect();
                return self.report(&all).await;
            }
        };

        let mut completions = Vec::with_capacity(finished.len());
        let mut not_done: Vec<NotDone> = Vec::new();
        for f in finished {
            let job = *running
                .iter()
                .find(|j| j.job_id == f.job_id)
                .expect("results are of leased jobs");
            match self.upload(job, &weights_sha, f, &dropped).await {
                Uploaded::Done(c) => completions.push(*c),
                Uploaded::Dropped => tracing::warn!(
                    job = job.job_id,
                    "lease lost or campaign cancelled; result dropped"
                ),
                Uploaded::StoreFailing(message) => {
                    self.store_failing = true;
                    not_done.push((
                        job,
                        JobError {
                            how: Failure::Released,
                            message,
                        },
                    ));
                }
            }
        }
        self.report(&not_done).await?;
        if !completions.is_empty() {
            self.complete(completions).await?;
            if not_done.is_empty() {
                self.release_backoff.reset();
            }
        }
        drop(beat);
        if self.stop.level() >= 2 {
            return Err(DaemonError::Released(not_done.len()));
        }
        Ok(())
    }

    /// The max image a job starts from, read and checked: `Ok(None)` for a job that needs
    /// none (or a dead unit's, which has none). A store that fails is the infrastructure's
    /// fault ([`Failure::Released`]); a missing, changed or undecodable image is this job's.
    async fn input(
        &self,
        job: &LeasedJob,
        probe: Probe,
        size: i64,
    ) -> Result<Option<Vec<u8>>, JobError> {
        let Some(a) = job.inputs.iter().find(|a| a.kind == "max_image") else {
            return Ok(None);
        };
        if !matches!(probe, Probe::Baseline | Probe::Zoom | Probe::Rotation) {
            return Ok(None);
        }
        let bytes = match self
            .objects
            .get_verified_bounded(&a.uri, &a.sha256, MAX_IMAGE_BYTES)
            .await
        {
            Ok(bytes) => bytes,
            Err(e) if e.is_unavailable() => {
                return Err(JobError {
                    how: Failure::Released,
                    message: format!("cannot read the max image: {e}"),
                })
            }
            Err(e) => {
                return Err(JobError {
                    how: Failure::Retryable,
                    message: format!("cannot read the max image: {e}"),
                })
            }
        };
        // decoded once here (bounded, off the async threads) so that a bad image fails its
        // job alone instead of the batch's compute
        let (checked, bytes) = tokio::task::spawn_blocking(move || {
            (results::read_png(&bytes, size).map(|_| ()), bytes)
        })
        .await
        .expect("decoding does not panic");
        match checked {
            Ok(()) => Ok(Some(bytes)),
            Err(reason) => Err(JobError {
                how: Failure::Retryable,
                message: format!("the max image {} cannot be used: {reason}", a.uri),
            }),
        }
    }
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
