//! Leasing: a worker claims up to N queued jobs of one (campaign, model, layer, probe), so it
//! can run them as one GPU batch. Every lease bumps the job's attempt number, which is the
//! fencing token the worker must show on every later write.
//!
//! A lease is idempotent when the worker names it (`request_id`): the claim records the id on
//! the jobs it takes, and a retry of the same request (its answer was lost, or it committed
//! after the client's deadline) finds them and returns them again instead of taking more, so no
//! job is left leased to a worker that never heard of it.

use super::limits::{check_len, MAX_BATCH, MAX_REQUEST_ID};
use super::{placeholders, Dialect, Store};
use crate::error::{Error, Result};
use std::collections::HashMap;
use vephys_proto::v1::{Artifact, LeasedJob, MeasuredResponse, Model};

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
struct TakenRow {
    #[sqlx(flatten)]
    job: ClaimedRow,
    lease_expires_at: Option<i64>,
}

/// One claim's parameters.
#[derive(Clone, Copy)]
struct Claim<'a> {
    worker_id: i64,
    max_jobs: u32,
    request: Option<&'a str>,
    now: i64,
    expires_at_ms: i64,
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
    /// The jobs' model as their campaign pinned it, without its layers (None when no jobs).
    pub model: Option<Model>,
}

/// What a worker asks for.
#[derive(Debug, Clone, Copy)]
pub struct LeaseAsk<'a> {
    pub worker_id: i64,
    pub max_jobs: u32,
    /// Models the worker has loaded (preferred); empty: those it registered with.
    pub loaded_models: &'a [String],
    /// Names the request, so that its retries return what it took; empty: no name.
    pub request_id: &'a str,
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
        let ask = LeaseAsk {
            worker_id,
            max_jobs,
            loaded_models,
            request_id: "",
        };
        self.lease_for(ask, now).await
    }

    /// [`Store::lease`], idempotent when `ask.request_id` is set: the jobs a request with the
    /// same worker and id took and still holds are returned again, and nothing more is taken.
    pub async fn lease_for(&self, ask: LeaseAsk<'_>, now: i64) -> Result<Lease> {
        if ask.max_jobs == 0 {
            return Err(Error::invalid(
                "lease request",
                "max_jobs",
                "is 0; ask for at least one job",
            ));
        }
        check_len(
            "lease request",
            "request_id",
            ask.request_id,
            MAX_REQUEST_ID,
        )?;
        let max_jobs = ask.max_jobs.min(MAX_BATCH as u32);
        let worker_id = ask.worker_id;
        let registered = self.check_worker(worker_id).await?;
        let request = (!ask.request_id.is_empty()).then_some(ask.request_id);
        if let Some(request) = request {
            let taken = self.taken_by(worker_id, request).await?;
            if !taken.is_empty() {
                tracing::info!(
                    worker_id,
                    request,
                    jobs = taken.len(),
                    "lease retried; returning what it took"
                );
                let expires_at_ms = taken.iter().map(|(_, expiry)| *expiry).min().unwrap_or(now);
                let rows = taken.into_iter().map(|(row, _)| row).collect();
                return self.granted(rows, expires_at_ms).await;
            }
        }
        let preferred = if ask.loaded_models.is_empty() {
            registered
        } else {
            ask.loaded_models.to_vec()
        };
        let expires_at_ms = now + self.policy.lease_ms;
        let claim = Claim {
            worker_id,
            max_jobs,
            request,
            now,
            expires_at_ms,
        };

        // Two tries rather than one "ORDER BY preferred DESC": the preference filter keeps each
        // claim an index walk in id order instead of a sort of the whole queue.
        let mut claimed = Vec::new();
        if !preferred.is_empty() {
            claimed = self.claim(&claim, Some(&preferred)).await?;
        }
        if claimed.is_empty() {
            claimed = self.claim(&claim, None).await?;
        }
        if claimed.is_empty() {
            return Ok(Lease {
                jobs: Vec::new(),
                expires_at_ms,
                model: None,
            });
        }
        self.granted(claimed, expires_at_ms).await
    }

    /// The jobs a lease request took that its worker still holds, with their lease expiry.
    async fn taken_by(&self, worker_id: i64, request: &str) -> Result<Vec<(ClaimedRow, i64)>> {
        let params = self.dialect.json_text("params");
        let sql = format!(
            "SELECT id, attempt, campaign_id, model, layer, filter, probe, {params} AS params, seed,
                    depends_on, lease_expires_at
             FROM jobs WHERE worker_id = $1 AND lease_request = $2 AND state = 'leased'"
        );
        let rows: Vec<TakenRow> = sqlx::query_as(&sql)
            .bind(worker_id)
            .bind(request)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.job, r.lease_expires_at.unwrap_or_default()))
            .collect())
    }

    /// A lease of `claimed` until `expires_at_ms`, with what each job needs besides its row.
    async fn granted(&self, mut claimed: Vec<ClaimedRow>, expires_at_ms: i64) -> Result<Lease> {
        claimed.sort_by_key(|row| row.id);
        let (jobs, model) = self.attach_inputs(claimed).await?;
        Ok(Lease {
            jobs,
            expires_at_ms,
            model: Some(model),
        })
    }

    async fn claim(&self, claim: &Claim<'_>, models: Option<&[String]>) -> Result<Vec<ClaimedRow>> {
        let Claim {
            worker_id,
            max_jobs,
            request,
            now,
            expires_at_ms,
        } = *claim;
        // Parameters: $1 now, $2 batch size, $3 worker, $4 lease expiry, $5 request id, then
        // the group or the preferred models.
        let rows = match self.dialect {
            Dialect::Postgres => {
                let model_filter = match models {
                    Some(models) => format!("AND model IN ({})", placeholders(6, models.len())),
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
                         leased_at = $1, lease_expires_at = $4, progress = 0, lease_request = $5
                     FROM batch WHERE jobs.id = batch.id
                     RETURNING jobs.id, jobs.attempt, jobs.campaign_id, jobs.model, jobs.layer,
                               jobs.filter, jobs.probe, jobs.params::text AS params, jobs.seed,
                               jobs.depends_on"
                );
                let mut query = sqlx::query_as::<_, ClaimedRow>(&sql)
                    .bind(now)
                    .bind(i64::from(max_jobs))
                    .bind(worker_id)
                    .bind(expires_at_ms)
                    .bind(request);
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
                         leased_at = $1, lease_expires_at = $4, progress = 0, lease_request = $9
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
                    .bind(request)
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                rows
            }
        };
        Ok(rows)
    }

    /// Adds what each job needs besides its row: the artifacts of the job it depends on (the
    /// max image) and that job's response to it, and the weights hash of its model; returns
    /// them with the model's registry entry (no layers).
    async fn attach_inputs(&self, claimed: Vec<ClaimedRow>) -> Result<(Vec<LeasedJob>, Model)> {
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
        let model = self.pinned_model(claimed[0].campaign_id).await?;
        let (weights_sha256, weights_uri) =
            (model.weights_sha256.clone(), model.weights_uri.clone());
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
        Ok((jobs, model))
    }

    /// A campaign's model entry (without layers) with the weights, and an exported model's
    /// manifest, the campaign pinned when it was submitted, not whatever the registry says
    /// now: every result of a campaign comes from the same weights. A pin never changes, so it
    /// is looked up once.
    async fn pinned_model(&self, campaign_id: i64) -> Result<Model> {
        if let Some(model) = self.cache.pins.lock().expect("pin cache").get(&campaign_id) {
            return Ok(model.clone());
        }
        let (name, architecture, input_size, weights_sha256, weights_uri, manifest_json): (
            String,
            String,
            i64,
            String,
            String,
            String,
        ) = sqlx::query_as(
            "SELECT m.name, m.architecture, m.input_size, c.weights_sha256, c.weights_uri, c.manifest
             FROM campaigns c JOIN models m ON m.name = c.model WHERE c.id = $1",
        )
        .bind(campaign_id)
        .fetch_one(&self.pool)
        .await?;
        let model = Model {
            name,
            architecture,
            input_size,
            weights_sha256,
            weights_uri,
            layers: Vec::new(),
            manifest_json,
        };
        let mut pins = self.cache.pins.lock().expect("pin cache");
        if pins.len() >= super::Cache::MAX_PINS {
            pins.clear();
        }
        pins.insert(campaign_id, model.clone());
        Ok(model)
    }
}
