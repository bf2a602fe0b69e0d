//! Failure: a job that could not be done goes back to the queue after a backoff, or, when the
//! error is permanent or the attempts are used up, ends `failed` with every attempt's error kept
//! in `attempts`. A released job (its worker was stopped) goes back at once, and its attempt is
//! not charged: the job's allowance grows by one, since the attempt number is also the fencing
//! token and must keep rising.

use super::complete::{lock_jobs, unique_ids, Verdict};
use super::limits::{check_count, truncate, MAX_BATCH};
use super::{Store, Tx};
use crate::error::{Error, Result};
use vephys_proto::v1::JobFailure;

#[derive(Debug, Default, PartialEq)]
pub struct Failed {
    /// Jobs queued again for another attempt.
    pub retrying: Vec<i64>,
    /// Jobs that ended `failed`.
    pub failed: Vec<i64>,
    /// Jobs whose campaign was cancelled meanwhile (nothing recorded).
    pub cancelled: Vec<i64>,
}

impl Store {
    pub async fn fail(&self, worker_id: i64, jobs: &[JobFailure], now: i64) -> Result<Failed> {
        if jobs.is_empty() {
            return Err(Error::invalid(
                "failure report",
                "jobs",
                "is empty; send at least one failed job",
            ));
        }
        check_count("failure report", "jobs", jobs, MAX_BATCH)?;
        let ids: Vec<i64> = jobs.iter().map(|j| j.job_id).collect();
        unique_ids("failure report", &ids)?;
        self.check_worker(worker_id).await?;

        let mut tx = self.begin_write().await?;
        let fences = lock_jobs(&mut tx, self.dialect, &ids).await?;
        let mut out = Failed::default();
        for job in jobs {
            let fence = &fences[&job.job_id];
            match fence.check(job.token, worker_id)? {
                Verdict::Current => {}
                Verdict::Cancelled => {
                    out.cancelled.push(job.job_id);
                    continue;
                }
                Verdict::AlreadyDone => {
                    return Err(Error::invalid(
                        "failure report",
                        "jobs",
                        format!(
                            "job {} already completed with token {}; a finished job cannot fail",
                            job.job_id, job.token
                        ),
                    ));
                }
            }
            let error = if job.error.trim().is_empty() {
                "worker gave no error message"
            } else {
                truncate(&job.error)
            };
            sqlx::query(
                "INSERT INTO attempts (job_id, attempt, worker_id, started_at, finished_at, outcome, error, permanent, released)
                 VALUES ($1, $2, $3, $4, $5, 'failed', $6, $7, $8)",
            )
            .bind(job.job_id)
            .bind(job.token)
            .bind(worker_id)
            .bind(fence.leased_at)
            .bind(now)
            .bind(error)
            .bind(job.permanent && !job.released)
            .bind(job.released)
            .execute(&mut *tx)
            .await?;
            if job.released {
                release(&mut tx, job.job_id, error, now).await?;
                out.retrying.push(job.job_id);
            } else if job.permanent || fence.attempt >= fence.max_attempts {
                end_failed(&mut tx, job.job_id, error, now).await?;
                out.failed.push(job.job_id);
            } else {
                let not_before = now + self.policy.retry_delay_ms(fence.attempt);
                requeue(&mut tx, job.job_id, error, not_before).await?;
                out.retrying.push(job.job_id);
            }
            tracing::info!(
                job_id = job.job_id,
                attempt = job.token,
                permanent = job.permanent,
                released = job.released,
                error,
                "job attempt failed"
            );
        }
        tx.commit().await?;
        Ok(out)
    }
}

/// Puts a released job back in the queue at once, with one more attempt allowed.
async fn release(tx: &mut Tx, job_id: i64, error: &str, now: i64) -> Result<()> {
    sqlx::query("UPDATE jobs SET max_attempts = max_attempts + 1 WHERE id = $1")
        .bind(job_id)
        .execute(&mut **tx)
        .await?;
    requeue(tx, job_id, error, now).await
}

/// Puts a job back in the queue, runnable from `not_before`.
pub(crate) async fn requeue(tx: &mut Tx, job_id: i64, error: &str, not_before: i64) -> Result<()> {
    sqlx::query(
        "UPDATE jobs SET state = 'queued', not_before = $1, last_error = $2, lease_expires_at = NULL
         WHERE id = $3",
    )
    .bind(not_before)
    .bind(error)
    .bind(job_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Ends a job `failed`, and with it the probe jobs waiting for its max image: they can never run.
pub(crate) async fn end_failed(tx: &mut Tx, job_id: i64, error: &str, now: i64) -> Result<()> {
    sqlx::query(
        "UPDATE jobs SET state = 'failed', last_error = $1, finished_at = $2, lease_expires_at = NULL
         WHERE id = $3",
    )
    .bind(error)
    .bind(now)
    .bind(job_id)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE jobs SET state = 'failed', finished_at = $1,
             last_error = 'job ' || CAST($2 AS TEXT) || ' it depends on failed: ' || $3
         WHERE state = 'waiting' AND depends_on = $2",
    )
    .bind(now)
    .bind(job_id)
    .bind(error)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
