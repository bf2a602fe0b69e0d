//! The read side: finished jobs with their numbers, tuning points and artifacts.

use super::browse::ArtifactRecord;
use super::{placeholders, Store};
use crate::error::Result;
use std::collections::HashMap;
use vephys_proto::v1::{Artifact, JobOutcome, JobResult, Provenance, TuningPoint};

/// Which results to read.
#[derive(Debug, Clone, Default)]
pub struct ResultFilter {
    pub campaign_id: i64,
    pub layer: Option<String>,
    pub filter: Option<i64>,
    pub probe: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ResultRow {
    job_id: i64,
    layer: String,
    filter: i64,
    probe: String,
    attempt: i64,
    max_act: f64,
    mean_act: f64,
    status: String,
    derived: String,
    weights_sha256: String,
    params: String,
    params_hash: String,
    seed: i64,
    device: String,
    library_versions: String,
    worker: String,
    duration_ms: i64,
}

#[derive(sqlx::FromRow)]
struct PointRow {
    job_id: i64,
    probe: String,
    x: f64,
    label: Option<String>,
    max_act: f64,
    mean_act: f64,
}

impl Store {
    /// One page of results in job order, starting after job `after`; an empty page is the end.
    pub async fn results_page(
        &self,
        filter: &ResultFilter,
        after: i64,
        limit: i64,
    ) -> Result<Vec<JobResult>> {
        // Keyset pagination on the job id: stable while workers keep completing jobs, and each
        // page is an index range scan however deep the reader is.
        let sql = format!(
            "SELECT {} FROM jobs j JOIN results r ON r.job_id = j.id
             WHERE j.campaign_id = $1 AND j.id > $2
               AND ($3 IS NULL OR j.layer = $3)
               AND ($4 IS NULL OR j.filter = $4)
               AND ($5 IS NULL OR j.probe = $5)
             ORDER BY j.id
             LIMIT $6",
            self.result_columns()
        );
        let rows: Vec<ResultRow> = sqlx::query_as(&sql)
            .bind(filter.campaign_id)
            .bind(after)
            .bind(filter.layer.as_deref())
            .bind(filter.filter)
            .bind(filter.probe.as_deref())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        self.with_points_and_artifacts(rows).await
    }

    /// The finished ones of these jobs, as `results_page` reads them, in id order.
    pub async fn results_of(&self, ids: &[i64]) -> Result<Vec<JobResult>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {} FROM jobs j JOIN results r ON r.job_id = j.id
             WHERE j.id IN ({}) ORDER BY j.id",
            self.result_columns(),
            placeholders(1, ids.len())
        );
        let mut query = sqlx::query_as::<_, ResultRow>(&sql);
        for id in ids {
            query = query.bind(*id);
        }
        let rows = query.fetch_all(&self.pool).await?;
        self.with_points_and_artifacts(rows).await
    }

    /// The select list of a `ResultRow` over `jobs j JOIN results r`.
    fn result_columns(&self) -> String {
        let json = |c| self.dialect.json_text(c);
        format!(
            "j.id AS job_id, j.layer, j.filter, j.probe, r.attempt, r.max_act, r.mean_act,
             r.status, {} AS derived, r.weights_sha256, {} AS params, r.params_hash, r.seed,
             r.device, {} AS library_versions, r.worker, r.duration_ms",
            json("r.derived"),
            json("r.params"),
            json("r.library_versions")
        )
    }

    /// The rows' jobs completed with their tuning points and artifacts (two queries for all).
    async fn with_points_and_artifacts(&self, rows: Vec<ResultRow>) -> Result<Vec<JobResult>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.job_id).collect();
        let list = placeholders(1, ids.len());

        let sql = format!(
            "SELECT job_id, probe, x, label, max_act, mean_act FROM tuning_points
             WHERE job_id IN ({list}) ORDER BY job_id, position"
        );
        let mut query = sqlx::query_as::<_, PointRow>(&sql);
        for id in &ids {
            query = query.bind(*id);
        }
        let mut points: HashMap<i64, Vec<TuningPoint>> = HashMap::new();
        for p in query.fetch_all(&self.pool).await? {
            points.entry(p.job_id).or_default().push(TuningPoint {
                probe: p.probe,
                x: p.x,
                label: p.label,
                max_act: p.max_act,
                mean_act: p.mean_act,
            });
        }

        let sql = format!(
            "SELECT job_id, kind, uri, sha256, bytes FROM artifacts
             WHERE job_id IN ({list}) ORDER BY job_id, kind"
        );
        let mut query = sqlx::query_as::<_, ArtifactRecord>(&sql);
        for id in &ids {
            query = query.bind(*id);
        }
        let mut artifacts: HashMap<i64, Vec<Artifact>> = HashMap::new();
        for a in query.fetch_all(&self.pool).await? {
            artifacts.entry(a.job_id).or_default().push(Artifact {
                kind: a.kind,
                uri: a.uri,
                sha256: a.sha256,
                bytes: a.bytes as u64,
            });
        }

        let results = rows
            .into_iter()
            .map(|r| JobResult {
                job_id: r.job_id,
                layer: r.layer,
                filter: r.filter,
                probe: r.probe,
                attempt: r.attempt,
                points: points.remove(&r.job_id).unwrap_or_default(),
                artifacts: artifacts.remove(&r.job_id).unwrap_or_default(),
                result: Some(JobOutcome {
                    max_act: r.max_act,
                    mean_act: r.mean_act,
                    status: r.status,
                    derived_json: r.derived,
                    provenance: Some(Provenance {
                        weights_sha256: r.weights_sha256,
                        params_json: r.params,
                        params_hash: r.params_hash,
                        seed: r.seed,
                        device: r.device,
                        library_versions_json: r.library_versions,
                        worker: r.worker,
                        duration_ms: r.duration_ms,
                    }),
                }),
            })
            .collect();
        Ok(results)
    }

    /// Job counts by state over all campaigns, for the metrics endpoint.
    pub async fn jobs_by_state(&self) -> Result<Vec<(String, i64)>> {
        Ok(
            sqlx::query_as("SELECT state, COUNT(*) FROM jobs GROUP BY state")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Every attempt of a job, oldest first: (attempt, outcome, error).
    pub async fn attempts(&self, job_id: i64) -> Result<Vec<(i64, String, Option<String>)>> {
        Ok(sqlx::query_as(
            "SELECT attempt, outcome, error FROM attempts WHERE job_id = $1 ORDER BY attempt",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?)
    }
}
