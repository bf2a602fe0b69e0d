//! Reaping: leases whose worker stopped heartbeating go back to the queue (or end `failed` when
//! that was the last attempt), with an `expired` attempt recorded.

use super::fail::{end_failed, requeue};
use super::{Dialect, Store};
use crate::error::Result;

/// Most leases one reaper pass handles; the next pass takes the rest.
const REAP_BATCH: i64 = 1000;

#[derive(sqlx::FromRow)]
struct Expired {
    id: i64,
    attempt: i64,
    max_attempts: i64,
    worker_id: Option<i64>,
    leased_at: Option<i64>,
}

#[derive(Debug, Default, PartialEq)]
pub struct Reaped {
    pub requeued: Vec<i64>,
    pub failed: Vec<i64>,
}

impl Store {
    /// Returns expired leases to the queue. Safe with several coordinators reaping at once: on
    /// Postgres the expired rows are locked with SKIP LOCKED, so two reapers split the work
    /// instead of both handling a job; the expiry is re-checked under the lock, so a lease
    /// extended by a heartbeat in the meantime is left alone. SQLite has one writer at a time.
    pub async fn reap(&self, now: i64) -> Result<Reaped> {
        let lock = if self.dialect == Dialect::Postgres {
            "FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let sql = format!(
            "SELECT id, attempt, max_attempts, worker_id, leased_at FROM jobs
             WHERE state = 'leased' AND lease_expires_at < $1
             ORDER BY id LIMIT $2 {lock}"
        );
        let mut tx = self.begin_write().await?;
        let expired: Vec<Expired> = sqlx::query_as(&sql)
            .bind(now)
            .bind(REAP_BATCH)
            .fetch_all(&mut *tx)
            .await?;
        let mut reaped = Reaped::default();
        for job in expired {
            let error = match job.worker_id {
                Some(worker) => format!("lease expired: no heartbeat from worker {worker}"),
                None => "lease expired".to_string(),
            };
            sqlx::query(
                "INSERT INTO attempts (job_id, attempt, worker_id, started_at, finished_at, outcome, error)
                 VALUES ($1, $2, $3, $4, $5, 'expired', $6)",
            )
            .bind(job.id)
            .bind(job.attempt)
            .bind(job.worker_id)
            .bind(job.leased_at)
            .bind(now)
            .bind(&error)
            .execute(&mut *tx)
            .await?;
            if job.attempt >= job.max_attempts {
                end_failed(&mut tx, job.id, &error, now).await?;
                reaped.failed.push(job.id);
            } else {
                // No backoff: the job did nothing wrong that we know of, its worker went away.
                requeue(&mut tx, job.id, &error, now).await?;
                reaped.requeued.push(job.id);
            }
            tracing::warn!(
                job_id = job.id,
                attempt = job.attempt,
                worker_id = job.worker_id,
                "lease expired"
            );
        }
        tx.commit().await?;
        Ok(reaped)
    }
}
