//! Reporting to the coordinator: completions are spooled to disk first and sent until the
//! coordinator gives a definitive answer; jobs that were not done are failed or given back.
//!
//! Definitive answers are: accepted (or a replay of an accepted completion), and refusals of
//! the request itself (a stale or foreign lease, an unknown job, a result the coordinator
//! cannot accept). Only then does the spool file go. A transient error is retried with
//! backoff; any other error keeps the file, which is sent again later (and at the next start),
//! so no finished result is lost to a coordinator that is down or misbehaving.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tonic::Code;
use vephys_proto::v1::{CompleteRequest, FailRequest, JobCompletion, JobFailure, LeasedJob};

use super::client;
use super::error::Result;
use super::{Failure, JobError, Worker};

/// What came of sending a completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// The coordinator answered every job definitively: the spool file can go.
    Answered,
    /// It did not (an error that is not a refusal, or the worker was told to release): the
    /// spool file stays, to be sent again.
    Kept,
}

impl Worker {
    /// Spools, then sends, the completions of one batch.
    pub(super) async fn complete(&self, jobs: Vec<JobCompletion>) -> Result<()> {
        let request = CompleteRequest {
            worker_id: self.id,
            jobs,
        };
        // A spool that cannot be written (disk full) only costs the crash safety of this one
        // completion; the results are still sent.
        let spooled = self
            .spool
            .save(&request)
            .await
            .inspect_err(|e| tracing::error!(error = %e, "cannot spool the completion; sending it unspooled"))
            .ok();
        let sent = self.send(request).await;
        match (sent, spooled) {
            (Sent::Answered, Some(path)) => self.spool.remove(&path).await,
            (Sent::Kept, Some(path)) => tracing::warn!(path = %path.display(),
                "completion not answered; kept in the spool to be sent again"),
            (_, None) => {}
        }
        Ok(())
    }

    /// Sends the completions the spool holds (left by an earlier run, or kept earlier in this
    /// one), each with the worker id that leased its jobs.
    pub(super) async fn resend_spool(&self) -> Result<()> {
        for (path, request) in self.spool.pending().await? {
            tracing::info!(path = %path.display(), jobs = request.jobs.len(), "sending a spooled completion");
            match self.send(request).await {
                Sent::Answered => self.spool.remove(&path).await,
                Sent::Kept => break, // the coordinator is not answering; later
            }
        }
        Ok(())
    }

    /// Sends a completion until the coordinator answers it. One stale or unacceptable job
    /// refuses the whole request, so on refusal the jobs are sent one by one and only those
    /// drop (see `refused`).
    async fn send(&self, request: CompleteRequest) -> Sent {
        match self.call_complete(request.clone()).await {
            Ok(()) => Sent::Answered,
            Err(status) if !refusal(&status) => self.not_answered(&status),
            Err(_) if request.jobs.len() > 1 => {
                let mut sent = Sent::Answered;
                for job in request.jobs {
                    let one = CompleteRequest {
                        worker_id: request.worker_id,
                        jobs: vec![job],
                    };
                    match self.call_complete(one.clone()).await {
                        Ok(()) => {}
                        Err(status) if refusal(&status) => {
                            self.refused(request.worker_id, &one.jobs[0], &status).await
                        }
                        Err(status) => sent = self.not_answered(&status),
                    }
                }
                sent
            }
            Err(status) => {
                if let Some(job) = request.jobs.first() {
                    self.refused(request.worker_id, job, &status).await;
                }
                Sent::Answered
            }
        }
    }

    fn not_answered(&self, status: &tonic::Status) -> Sent {
        tracing::error!(error = %status.message(), code = ?status.code(),
            "the coordinator did not answer the completion; it stays in the spool");
        Sent::Kept
    }

    /// A completion the coordinator refused. A stale or foreign lease needs nothing more: the
    /// worker that holds the job now reports it. A result it cannot accept (say, a NaN
    /// activity) fails the job for good instead of leaving it to wait for its lease to expire.
    async fn refused(&self, worker_id: i64, job: &JobCompletion, status: &tonic::Status) {
        tracing::warn!(job = job.job_id, error = %status.message(), code = ?status.code(),
            "completion refused; the result is dropped");
        if status.code() == Code::InvalidArgument {
            let failure = JobFailure {
                job_id: job.job_id,
                token: job.token,
                error: format!("the coordinator refused the result: {}", status.message()),
                permanent: true,
                released: false,
            };
            self.send_failures(worker_id, vec![failure]).await;
        }
    }

    /// Sends one completion, retrying transient errors; gives up (the spool keeps it) when the
    /// worker is told to release its batch.
    async fn call_complete(&self, request: CompleteRequest) -> Result<(), tonic::Status> {
        let call = client::retry("complete", || {
            let (mut api, request) = (self.api.clone(), request.clone());
            async move { api.complete(request).await }
        });
        let response = tokio::select! {
            r = call => r?.into_inner(),
            () = self.stop.reached(2) => {
                return Err(tonic::Status::cancelled("the worker was told to stop; the completion stays in the spool"))
            }
        };
        tracing::info!(accepted = ?response.accepted, duplicate = ?response.duplicate, cancelled = ?response.cancelled, "jobs completed");
        Ok(())
    }

    /// Reports jobs that were not done: failed (permanently or for another attempt) or given
    /// back. Given-back jobs make the worker pause before it leases again.
    pub(super) async fn report(&self, jobs: &[(&LeasedJob, JobError)]) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        for (job, e) in jobs {
            tracing::error!(job = job.job_id, how = ?e.how, error = %e.message, "job not done");
        }
        if jobs.iter().any(|(_, e)| e.how == Failure::Released) {
            self.released.store(true, Ordering::Relaxed);
        }
        let failures = jobs
            .iter()
            .map(|(job, e)| JobFailure {
                job_id: job.job_id,
                token: job.token,
                error: e.message.clone(),
                permanent: e.how == Failure::Permanent,
                released: e.how == Failure::Released,
            })
            .collect();
        // a second stop while the coordinator does not answer: the leases expire instead
        tokio::select! {
            () = self.send_failures(self.id, failures) => {}
            () = self.stop.reached(2) => {}
        }
        Ok(())
    }

    /// Gives `jobs` back at once, waiting at most a few seconds: a coordinator that cannot be
    /// reached lets the leases expire instead.
    pub(super) async fn release_now(&self, jobs: &[&LeasedJob]) {
        let failures = jobs
            .iter()
            .map(|job| JobFailure {
                job_id: job.job_id,
                token: job.token,
                error: "the worker was stopped before finishing; released for another worker"
                    .into(),
                permanent: false,
                released: true,
            })
            .collect();
        let send = self.send_failures(self.id, failures);
        if tokio::time::timeout(Duration::from_secs(10), send)
            .await
            .is_err()
        {
            tracing::warn!("coordinator unreachable; the leases will expire instead");
        }
    }

    async fn send_failures(&self, worker_id: i64, jobs: Vec<JobFailure>) {
        let request = FailRequest { worker_id, jobs };
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

/// Whether the coordinator refused the request itself, for good: resending it changes nothing.
fn refusal(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::FailedPrecondition | Code::NotFound | Code::InvalidArgument
    )
}
