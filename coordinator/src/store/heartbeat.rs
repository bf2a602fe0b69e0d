//! Heartbeats: a worker extends the leases it still holds and learns which jobs to drop.

use super::limits::{check_count, MAX_BATCH};
use super::{placeholders, value_rows, Store};
use crate::error::Result;
use std::collections::HashMap;
use vephys_proto::v1::JobProgress;

#[derive(Debug, Default, PartialEq)]
pub struct Beat {
    /// Jobs whose lease now runs until `expires_at_ms`.
    pub extended: Vec<i64>,
    pub expires_at_ms: i64,
    /// Jobs whose campaign was cancelled; the worker should stop them.
    pub cancelled: Vec<i64>,
    /// Jobs the worker no longer holds (its lease expired, or the token is not the current one).
    pub lost: Vec<i64>,
}

impl Store {
    pub async fn heartbeat(&self, worker_id: i64, jobs: &[JobProgress], now: i64) -> Result<Beat> {
        check_count("heartbeat", "jobs", jobs, MAX_BATCH)?;
        self.touch_worker(worker_id, now).await?;
        let expires_at_ms = now + self.policy.lease_ms;
        let mut beat = Beat {
            expires_at_ms,
            ..Beat::default()
        };
        if jobs.is_empty() {
            return Ok(beat);
        }
        // One UPDATE for the whole batch, joined to a VALUES list of (job, token, progress).
        // The token, worker and state conditions are the fence: a lease that expired and was
        // taken by another worker has a higher attempt number and is not extended, and only
        // the worker holding a lease extends it.
        let sql = format!(
            "UPDATE jobs SET lease_expires_at = $1, progress = v.column3
             FROM (VALUES {}) AS v
             WHERE jobs.id = v.column1 AND jobs.attempt = v.column2 AND jobs.state = 'leased'
               AND jobs.worker_id = $2
             RETURNING id",
            value_rows(3, jobs.len(), 3)
        );
        let mut query = sqlx::query_scalar::<_, i64>(&sql)
            .bind(expires_at_ms)
            .bind(worker_id);
        for job in jobs {
            query = query
                .bind(job.job_id)
                .bind(job.token)
                .bind(f64::from(job.progress.clamp(0.0, 1.0)));
        }
        beat.extended = query.fetch_all(&self.pool).await?;
        beat.extended.sort_unstable();
        let missed: Vec<&JobProgress> = jobs
            .iter()
            .filter(|j| beat.extended.binary_search(&j.job_id).is_err())
            .collect();
        if missed.is_empty() {
            return Ok(beat);
        }
        // Tell "your campaign was cancelled" apart from "you lost this lease".
        let sql = format!(
            "SELECT id, state, attempt, worker_id FROM jobs WHERE id IN ({})",
            placeholders(1, missed.len())
        );
        let mut query = sqlx::query_as::<_, (i64, String, i64, Option<i64>)>(&sql);
        for job in &missed {
            query = query.bind(job.job_id);
        }
        let current: HashMap<i64, (String, i64, Option<i64>)> = query
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|(id, state, attempt, holder)| (id, (state, attempt, holder)))
            .collect();
        for job in missed {
            match current.get(&job.job_id) {
                Some((state, attempt, holder))
                    if state == "cancelled"
                        && *attempt == job.token
                        && *holder == Some(worker_id) =>
                {
                    beat.cancelled.push(job.job_id)
                }
                _ => beat.lost.push(job.job_id),
            }
        }
        Ok(beat)
    }
}
