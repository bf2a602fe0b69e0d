//! Completion: results, tuning points, artifacts and the job's new state, in one transaction.

use super::limits::{
    check_count, check_len, MAX_ARTIFACTS_PER_JOB, MAX_BATCH, MAX_JSON_BYTES, MAX_POINTS_PER_JOB,
    MAX_TEXT_BYTES,
};
use super::{placeholders, value_rows, value_rows_json, Dialect, Store, Tx, ROWS_PER_STATEMENT};
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use vephys_proto::v1::{Artifact, JobCompletion, JobOutcome, TuningPoint};

#[derive(Debug, Default, PartialEq)]
pub struct Completed {
    /// Jobs this call finished.
    pub accepted: Vec<i64>,
    /// Jobs this same lease had already finished: the replay changed nothing.
    pub duplicate: Vec<i64>,
    /// Jobs of a cancelled campaign; their results were dropped.
    pub cancelled: Vec<i64>,
}

/// A job's row as the fence sees it.
#[derive(sqlx::FromRow)]
pub(crate) struct Fence {
    pub id: i64,
    pub state: String,
    pub attempt: i64,
    /// The worker that holds (or last held) the lease.
    pub worker_id: Option<i64>,
    pub leased_at: Option<i64>,
    pub max_attempts: i64,
    /// The weights the job's campaign pinned at submission; empty when none were known.
    pub pinned_sha256: String,
}

/// What the fence says about one write.
pub(crate) enum Verdict {
    /// The writer holds the current lease.
    Current,
    /// The writer's lease was current, and the job has since been finished by it.
    AlreadyDone,
    /// The writer's lease was current, and the campaign has since been cancelled.
    Cancelled,
}

impl Fence {
    /// Whether `worker_id`, showing `token`, may write this job: the token must be the job's
    /// current attempt and the worker the one the attempt was leased to.
    pub(crate) fn check(&self, token: i64, worker_id: i64) -> Result<Verdict> {
        if self.attempt == token && self.worker_id != Some(worker_id) {
            return Err(Error::NotLessee {
                job_id: self.id,
                worker_id,
            });
        }
        if self.attempt == token {
            match self.state.as_str() {
                "leased" => return Ok(Verdict::Current),
                "succeeded" => return Ok(Verdict::AlreadyDone),
                "cancelled" => return Ok(Verdict::Cancelled),
                _ => {}
            }
        }
        Err(Error::StaleLease {
            job_id: self.id,
            token,
            current: self.attempt,
            state: self.state.clone(),
        })
    }
}

/// Reads and locks the jobs a worker wants to write. On Postgres `FOR UPDATE` holds them until
/// commit so the reaper or a cancel cannot slip in between the check and the write; SQLite's
/// write transaction already excludes every other writer.
pub(crate) async fn lock_jobs(
    tx: &mut Tx,
    dialect: Dialect,
    ids: &[i64],
) -> Result<HashMap<i64, Fence>> {
    let lock = if dialect == Dialect::Postgres {
        "FOR UPDATE OF j"
    } else {
        ""
    };
    let sql = format!(
        "SELECT j.id, j.state, j.attempt, j.worker_id, j.leased_at, j.max_attempts,
                c.weights_sha256 AS pinned_sha256
         FROM jobs j JOIN campaigns c ON c.id = j.campaign_id
         WHERE j.id IN ({}) ORDER BY j.id {lock}",
        placeholders(1, ids.len())
    );
    let mut query = sqlx::query_as::<_, Fence>(&sql);
    for id in ids {
        query = query.bind(*id);
    }
    let rows = query.fetch_all(&mut **tx).await?;
    let found: HashMap<i64, Fence> = rows.into_iter().map(|f| (f.id, f)).collect();
    if let Some(missing) = ids.iter().find(|id| !found.contains_key(id)) {
        return Err(Error::NotFound {
            what: "job",
            id: missing.to_string(),
            hint: "the coordinator does not know this job; drop it",
        });
    }
    Ok(found)
}

/// Refuses requests that name a job twice: which of the two writes should win is unclear.
pub(crate) fn unique_ids(what: &'static str, ids: &[i64]) -> Result<()> {
    let mut seen = HashSet::new();
    for id in ids {
        if !seen.insert(*id) {
            return Err(Error::invalid(
                what,
                "jobs",
                format!("job {id} appears twice; send each job once"),
            ));
        }
    }
    Ok(())
}

impl Store {
    pub async fn complete(
        &self,
        worker_id: i64,
        jobs: &[JobCompletion],
        now: i64,
    ) -> Result<Completed> {
        if jobs.is_empty() {
            return Err(Error::invalid(
                "completion",
                "jobs",
                "is empty; send at least one finished job",
            ));
        }
        check_count("completion", "jobs", jobs, MAX_BATCH)?;
        let ids: Vec<i64> = jobs.iter().map(|j| j.job_id).collect();
        unique_ids("completion", &ids)?;
        for (i, job) in jobs.iter().enumerate() {
            check_completion(i, job)?;
        }
        self.check_worker(worker_id).await?;

        let mut tx = self.begin_write().await?;
        let fences = lock_jobs(&mut tx, self.dialect, &ids).await?;
        let mut done = Completed::default();
        let mut accepted = Vec::new();
        for job in jobs {
            // Any stale token refuses the whole request (nothing is written): the worker lost
            // that job and must resend the rest without it.
            let fence = &fences[&job.job_id];
            match fence.check(job.token, worker_id)? {
                Verdict::Current => {
                    check_weights(fence, job)?;
                    accepted.push(job)
                }
                Verdict::AlreadyDone => done.duplicate.push(job.job_id),
                Verdict::Cancelled => done.cancelled.push(job.job_id),
            }
        }
        if !accepted.is_empty() {
            write_completions(&mut tx, self.dialect, worker_id, &accepted, &fences, now).await?;
        }
        tx.commit().await?;
        done.accepted = accepted.iter().map(|j| j.job_id).collect();
        Ok(done)
    }
}

async fn write_completions(
    tx: &mut Tx,
    dialect: Dialect,
    worker_id: i64,
    jobs: &[&JobCompletion],
    fences: &HashMap<i64, Fence>,
    now: i64,
) -> Result<()> {
    let ids: Vec<i64> = jobs.iter().map(|j| j.job_id).collect();
    for chunk in jobs.chunks(ROWS_PER_STATEMENT) {
        // ON CONFLICT is a second fence: the primary key allows one result per job, ever.
        let sql = format!(
            "INSERT INTO results (job_id, attempt, max_act, mean_act, status, derived, weights_sha256,
                                  params, params_hash, seed, device, library_versions, worker,
                                  duration_ms, created_at)
             VALUES {} ON CONFLICT (job_id) DO NOTHING",
            // derived, params and library_versions are JSON documents
            value_rows_json(dialect, 1, chunk.len(), 15, &[5, 7, 11])
        );
        let mut query = sqlx::query(&sql);
        for job in chunk {
            let outcome = job.result.clone().unwrap_or_default();
            let p = outcome.provenance.unwrap_or_default();
            let params_hash = if p.params_hash.is_empty() {
                hex::encode(Sha256::digest(p.params_json.as_bytes()))
            } else {
                p.params_hash
            };
            query = query
                .bind(job.job_id)
                .bind(job.token)
                .bind(outcome.max_act)
                .bind(outcome.mean_act)
                .bind(if outcome.status.is_empty() {
                    "ok".to_string()
                } else {
                    outcome.status
                })
                .bind(json_or(&outcome.derived_json, "{}"))
                .bind(p.weights_sha256)
                .bind(p.params_json)
                .bind(params_hash)
                .bind(p.seed)
                .bind(p.device)
                .bind(json_or(&p.library_versions_json, "{}"))
                .bind(p.worker)
                .bind(p.duration_ms)
                .bind(now);
        }
        query.execute(&mut **tx).await?;
    }

    let points: Vec<(i64, usize, &TuningPoint)> = jobs
        .iter()
        .flat_map(|j| {
            j.points
                .iter()
                .enumerate()
                .map(move |(i, p)| (j.job_id, i, p))
        })
        .collect();
    for chunk in points.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO tuning_points (job_id, position, probe, x, label, max_act, mean_act) VALUES {}",
            value_rows(1, chunk.len(), 7)
        );
        let mut query = sqlx::query(&sql);
        for (job_id, position, point) in chunk {
            query = query
                .bind(*job_id)
                .bind(*position as i64)
                .bind(point.probe.as_str())
                .bind(point.x)
                .bind(point.label.as_deref())
                .bind(point.max_act)
                .bind(point.mean_act);
        }
        query.execute(&mut **tx).await?;
    }

    // Only the winning attempt's objects are recorded; a loser's attempt-scoped keys are
    // orphans for the object store's lifecycle rules to collect.
    let artifacts: Vec<(i64, i64, &Artifact)> = jobs
        .iter()
        .flat_map(|j| j.artifacts.iter().map(move |a| (j.job_id, j.token, a)))
        .collect();
    for chunk in artifacts.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO artifacts (job_id, attempt, kind, uri, sha256, bytes) VALUES {}",
            value_rows(1, chunk.len(), 6)
        );
        let mut query = sqlx::query(&sql);
        for (job_id, attempt, artifact) in chunk {
            query = query
                .bind(*job_id)
                .bind(*attempt)
                .bind(artifact.kind.as_str())
                .bind(artifact.uri.as_str())
                .bind(artifact.sha256.as_str())
                .bind(artifact.bytes as i64);
        }
        query.execute(&mut **tx).await?;
    }

    for chunk in jobs.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO attempts (job_id, attempt, worker_id, started_at, finished_at, outcome)
             VALUES {}",
            value_rows(1, chunk.len(), 6)
        );
        let mut query = sqlx::query(&sql);
        for job in chunk {
            query = query
                .bind(job.job_id)
                .bind(job.token)
                .bind(worker_id)
                .bind(fences[&job.job_id].leased_at)
                .bind(now)
                .bind("succeeded");
        }
        query.execute(&mut **tx).await?;
    }

    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "UPDATE jobs SET state = 'succeeded', finished_at = $1, progress = 1, lease_expires_at = NULL
             WHERE id IN ({})",
            placeholders(2, chunk.len())
        );
        let mut query = sqlx::query(&sql).bind(now);
        for id in chunk {
            query = query.bind(*id);
        }
        query.execute(&mut **tx).await?;

        // The probes waiting on these jobs' max images can run now.
        let sql = format!(
            "UPDATE jobs SET state = 'queued', not_before = $1
             WHERE state = 'waiting' AND depends_on IN ({})",
            placeholders(2, chunk.len())
        );
        let mut query = sqlx::query(&sql).bind(now);
        for id in chunk {
            query = query.bind(*id);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// A result must come from the weights its campaign pinned at submission (when it pinned any).
fn check_weights(fence: &Fence, job: &JobCompletion) -> Result<()> {
    let used = job
        .result
        .as_ref()
        .and_then(|r| r.provenance.as_ref())
        .map_or("", |p| p.weights_sha256.as_str());
    let pinned = fence.pinned_sha256.as_str();
    match pinned.is_empty() || used.eq_ignore_ascii_case(pinned) {
        true => Ok(()),
        false => Err(Error::WrongWeights { job_id: job.job_id }),
    }
}

fn json_or(text: &str, empty: &str) -> String {
    if text.trim().is_empty() {
        empty.to_string()
    } else {
        text.to_string()
    }
}

/// Checks one completion before anything is written, so a malformed one refuses the request.
fn check_completion(i: usize, job: &JobCompletion) -> Result<()> {
    let bad = |field: &str, reason: String| {
        Err(Error::invalid(
            "completion",
            format!("jobs[{i}].{field}"),
            reason,
        ))
    };
    let Some(JobOutcome {
        max_act,
        mean_act,
        derived_json,
        provenance,
        ..
    }) = &job.result
    else {
        return bad(
            "result",
            "is missing; send the job's numbers and provenance".into(),
        );
    };
    if !max_act.is_finite() || !mean_act.is_finite() {
        return bad(
            "result",
            format!("activity must be finite, got max {max_act} mean {mean_act}"),
        );
    }
    check_len(
        "completion",
        &format!("jobs[{i}].result.derived_json"),
        derived_json,
        MAX_JSON_BYTES,
    )?;
    let status = job.result.as_ref().map_or("", |r| r.status.as_str());
    check_len(
        "completion",
        &format!("jobs[{i}].result.status"),
        status,
        MAX_TEXT_BYTES,
    )?;
    if !derived_json.trim().is_empty() && !is_json_object(derived_json) {
        return bad(
            "result.derived_json",
            "is not a JSON object; send e.g. {\"preferred\": 90.0}".into(),
        );
    }
    let Some(p) = provenance else {
        return bad(
            "result.provenance",
            "is missing; every result must say how it was made".into(),
        );
    };
    let field = |name: &str| format!("jobs[{i}].result.provenance.{name}");
    check_len(
        "completion",
        &field("params_json"),
        &p.params_json,
        MAX_JSON_BYTES,
    )?;
    check_len(
        "completion",
        &field("library_versions_json"),
        &p.library_versions_json,
        MAX_JSON_BYTES,
    )?;
    for (name, value) in [
        ("weights_sha256", &p.weights_sha256),
        ("params_hash", &p.params_hash),
        ("device", &p.device),
        ("worker", &p.worker),
    ] {
        check_len("completion", &field(name), value, MAX_TEXT_BYTES)?;
    }
    if !p.library_versions_json.trim().is_empty() && !is_json_object(&p.library_versions_json) {
        return bad(
            "result.provenance.library_versions_json",
            "is not a JSON object".into(),
        );
    }
    check_count(
        "completion",
        &format!("jobs[{i}].artifacts"),
        &job.artifacts,
        MAX_ARTIFACTS_PER_JOB,
    )?;
    check_count(
        "completion",
        &format!("jobs[{i}].points"),
        &job.points,
        MAX_POINTS_PER_JOB,
    )?;
    let mut kinds = HashSet::new();
    for (k, artifact) in job.artifacts.iter().enumerate() {
        if artifact.uri.is_empty() || artifact.kind.is_empty() {
            return bad(&format!("artifacts[{k}]"), "needs a kind and a uri".into());
        }
        for (name, value) in [
            ("kind", &artifact.kind),
            ("uri", &artifact.uri),
            ("sha256", &artifact.sha256),
        ] {
            check_len(
                "completion",
                &format!("jobs[{i}].artifacts[{k}].{name}"),
                value,
                MAX_TEXT_BYTES,
            )?;
        }
        if !kinds.insert(artifact.kind.as_str()) {
            return bad(
                &format!("artifacts[{k}].kind"),
                format!("kind `{}` appears twice in one job", artifact.kind),
            );
        }
    }
    for (k, point) in job.points.iter().enumerate() {
        check_len(
            "completion",
            &format!("jobs[{i}].points[{k}].probe"),
            &point.probe,
            MAX_TEXT_BYTES,
        )?;
        let label = point.label.as_deref().unwrap_or_default();
        check_len(
            "completion",
            &format!("jobs[{i}].points[{k}].label"),
            label,
            MAX_TEXT_BYTES,
        )?;
    }
    if let Some(k) = job
        .points
        .iter()
        .position(|p| !p.x.is_finite() || !p.max_act.is_finite() || !p.mean_act.is_finite())
    {
        return bad(
            &format!("points[{k}]"),
            "x and activities must be finite numbers".into(),
        );
    }
    Ok(())
}

fn is_json_object(text: &str) -> bool {
    matches!(
        serde_json::from_str::<serde_json::Value>(text),
        Ok(serde_json::Value::Object(_))
    )
}
