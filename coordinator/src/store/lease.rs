//! Leasing: a worker claims up to N queued jobs of one (campaign, model, layer, probe), so it
//! can run them as one GPU batch. Every lease bumps the job's attempt number, which is the
//! fencing token the worker must show on every later write.

use super::{placeholders, Dialect, Store};
use crate::error::{Error, Result};
use std::collections::HashMap;
use vephys_proto::v1::{Artifact, LeasedJob, MeasuredResponse};

/// Upper bound on one batch; bigger requests are clamped, not refused.
pub const MAX_BATCH: u32 = 1024;

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: i64,
    attempt: i64,
    campaign_id: i64,
    model: String,
    layer: String,
    filter: i64,
    probe: String,
    params: String,
    seed: i64,
    depends_on: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct InputRow {
    job_id: i64,
    kind: String,
    uri: String,
    sha256: String,
    bytes: i64,
}

#[derive(sqlx::FromRow)]
struct ResponseRow {
    job_id: i64,
    max_act: f64,
    mean_act: f64,
    weights_sha256: String,
}

/// A granted lease.
#[derive(Debug, Default)]
pub struct Lease {
    pub jobs: Vec<LeasedJob>,
    pub expires_at_ms: i64,
}

impl Store {
    /// Leases up to `max_jobs` jobs to `worker_id`, preferring the models it has loaded
    /// (`loaded_models`, or those it registered with when empty).
    pub async fn lease(
        &self,
        worker_id: i64,
        max_jobs: u32,
        loaded_models: &[String],
        now: i64,
    ) -> Result<Lease> {
        if max_jobs == 0 {
            return Err(Error::invalid(
                "lease request",
                "max_jobs",
                "is 0; ask for at least one job",
            ));
        }
        let max_jobs = max_jobs.min(MAX_BATCH);
        let registered = self.check_worker(worker_id).await?;
        let preferred = if loaded_models.is_empty() {
            registered
        } else {
            loaded_models.to_vec()
        };
        let expires_at_ms = now + self.policy.lease_ms;

        // Two tries rather than one "ORDER BY preferred DESC": the preference filter keeps each
        // claim an index walk in id order instead of a sort of the whole queue.
        let mut claimed = Vec::new();
        if !preferred.is_empty() {
            claimed = self
                .claim(worker_id, max_jobs, Some(&preferred), now, expires_at_ms)
                .await?;
        }
        if claimed.is_empty() {
            claimed = self
                .claim(worker_id, max_jobs, None, now, expires_at_ms)
                .await?;
        }
        if claimed.is_empty() {
            return Ok(Lease {
                jobs: Vec::new(),
                expires_at_ms,
            });
        }
        claimed.sort_by_key(|row| row.id);
        let jobs = self.attach_inputs(claimed).await?;
        Ok(Lease {
            jobs,
            expires_at_ms,
        })
    }

    async fn claim(
        &self,
        worker_id: i64,
        max_jobs: u32,
        models: Option<&[String]>,
        now: i64,
        expires_at_ms: i64,
    ) -> Result<Vec<ClaimedRow>> {
        // Parameters: $1 now, $2 batch size, $3 worker, $4 lease expiry, then the group or the
        // preferred models.
        let rows = match self.dialect {
            Dialect::Postgres => {
                let model_filter = match models {
                    Some(models) => format!("AND model IN ({})", placeholders(5, models.len())),
                    None => String::new(),
                };
                // One statement, so the claim is one short transaction. `head` picks the oldest
                // runnable job and thereby the batch's (campaign, model, layer, probe); `batch`
                // takes up to N jobs of that group. FOR UPDATE SKIP LOCKED lets concurrent
                // claimers pass over rows another claimer is taking instead of queueing behind
                // its locks; a row updated by a committed claimer since our snapshot is
                // re-checked against `state = 'queued'` under the lock, so no job is ever
                // leased twice.
                let sql = format!(
                    "WITH head AS (
                         SELECT campaign_id, model, layer, probe FROM jobs
                         WHERE state = 'queued' AND not_before <= $1 {model_filter}
                         ORDER BY id
                         LIMIT 1
                         FOR UPDATE SKIP LOCKED
                     ),
                     batch AS (
                         SELECT j.id FROM jobs j
                         JOIN head h ON j.campaign_id = h.campaign_id AND j.model = h.model
                                    AND j.layer = h.layer AND j.probe = h.probe
                         WHERE j.state = 'queued' AND j.not_before <= $1
                         ORDER BY j.id
                         LIMIT $2
                         FOR UPDATE OF j SKIP LOCKED
                     )
                     UPDATE jobs SET state = 'leased', attempt = attempt + 1, worker_id = $3,
                         leased_at = $1, lease_expires_at = $4, progress = 0
                     FROM batch WHERE jobs.id = batch.id
                     RETURNING jobs.id, jobs.attempt, jobs.campaign_id, jobs.model, jobs.layer,
                               jobs.filter, jobs.probe, jobs.params, jobs.seed, jobs.depends_on"
                );
                let mut query = sqlx::query_as::<_, ClaimedRow>(&sql)
                    .bind(now)
                    .bind(i64::from(max_jobs))
                    .bind(worker_id)
                    .bind(expires_at_ms);
                for model in models.unwrap_or_default() {
                    query = query.bind(model.as_str());
                }
                query.fetch_all(&self.pool).await?
            }
            Dialect::Sqlite => {
                // SQLite has one writer at a time: BEGIN IMMEDIATE takes the write lock before
                // the group is read, so the read and the update see the same queue and two
                // claimers simply take turns. The single UPDATE then marks the batch.
                let mut tx = self.begin_write().await?;
                let head_filter = match models {
                    Some(models) => format!("AND model IN ({})", placeholders(2, models.len())),
                    None => String::new(),
                };
                let head_sql = format!(
                    "SELECT campaign_id, model, layer, probe FROM jobs
                     WHERE state = 'queued' AND not_before <= $1 {head_filter}
                     ORDER BY id LIMIT 1"
                );
                let mut head =
                    sqlx::query_as::<_, (i64, String, String, String)>(&head_sql).bind(now);
                for model in models.unwrap_or_default() {
                    head = head.bind(model.as_str());
                }
                let Some((campaign_id, model, layer, probe)) =
                    head.fetch_optional(&mut *tx).await?
                else {
                    return Ok(Vec::new());
                };
                let sql =
                    "UPDATE jobs SET state = 'leased', attempt = attempt + 1, worker_id = $3,
                         leased_at = $1, lease_expires_at = $4, progress = 0
                     WHERE id IN (
                         SELECT id FROM jobs
                         WHERE state = 'queued' AND not_before <= $1 AND campaign_id = $5
                           AND model = $6 AND layer = $7 AND probe = $8
                         ORDER BY id LIMIT $2)
                     RETURNING id, attempt, campaign_id, model, layer, filter, probe, params, seed, depends_on";
                let rows = sqlx::query_as::<_, ClaimedRow>(sql)
                    .bind(now)
                    .bind(i64::from(max_jobs))
                    .bind(worker_id)
                    .bind(expires_at_ms)
                    .bind(campaign_id)
                    .bind(model)
                    .bind(layer)
                    .bind(probe)
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                rows
            }
        };
        Ok(rows)
    }

    /// Adds what each job needs besides its row: the artifacts of the job it depends on (the
    /// max image) and that job's response to it, and the weights hash of its model.
    async fn attach_inputs(&self, claimed: Vec<ClaimedRow>) -> Result<Vec<LeasedJob>> {
        let mut deps: Vec<i64> = claimed.iter().filter_map(|r| r.depends_on).collect();
        deps.sort_unstable();
        deps.dedup();
        let mut inputs: HashMap<i64, Vec<Artifact>> = HashMap::new();
        let mut responses: HashMap<i64, MeasuredResponse> = HashMap::new();
        if !deps.is_empty() {
            let sql = format!(
                "SELECT job_id, max_act, mean_act, weights_sha256 FROM results WHERE job_id IN ({})",
                placeholders(1, deps.len())
            );
            let mut query = sqlx::query_as::<_, ResponseRow>(&sql);
            for dep in &deps {
                query = query.bind(*dep);
            }
            for row in query.fetch_all(&self.pool).await? {
                responses.insert(
                    row.job_id,
                    MeasuredResponse {
                        max_act: row.max_act,
                        mean_act: row.mean_act,
                        weights_sha256: row.weights_sha256,
                    },
                );
            }
            let sql = format!(
                "SELECT job_id, kind, uri, sha256, bytes FROM artifacts WHERE job_id IN ({}) ORDER BY job_id, kind",
                placeholders(1, deps.len())
            );
            let mut query = sqlx::query_as::<_, InputRow>(&sql);
            for dep in &deps {
                query = query.bind(*dep);
            }
            for row in query.fetch_all(&self.pool).await? {
                inputs.entry(row.job_id).or_default().push(Artifact {
                    kind: row.kind,
                    uri: row.uri,
                    sha256: row.sha256,
                    bytes: row.bytes as u64,
                });
            }
        }
        // A batch is one model, so one lookup.
        let (weights_sha256, weights_uri): (String, String) =
            sqlx::query_as("SELECT weights_sha256, weights_uri FROM models WHERE name = $1")
                .bind(&claimed[0].model)
                .fetch_optional(&self.pool)
                .await?
                .unwrap_or_default();
        let jobs = claimed
            .into_iter()
            .map(|row| LeasedJob {
                job_id: row.id,
                token: row.attempt,
                campaign_id: row.campaign_id,
                inputs: row
                    .depends_on
                    .and_then(|d| inputs.get(&d).cloned())
                    .unwrap_or_default(),
                input_response: row.depends_on.and_then(|d| responses.get(&d).cloned()),
                model: row.model,
                layer: row.layer,
                filter: row.filter,
                probe: row.probe,
                params_json: row.params,
                seed: row.seed,
                weights_sha256: weights_sha256.clone(),
                weights_uri: weights_uri.clone(),
            })
            .collect();
        Ok(jobs)
    }
}
