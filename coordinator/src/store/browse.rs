//! Reads for the results browser (coordinator/src/web): a layer's `unit_summary` rows with
//! whatever columns the view has today, a cheap stamp that changes whenever those rows may
//! have, a layer's max images, a unit's jobs, and one artifact by its key. Everything here is
//! read-only.

use super::{placeholders, Store};
use crate::error::Result;
use sqlx::any::AnyTypeInfoKind;
use sqlx::{Column as _, Row, ValueRef as _};
use vephys_results::table::{Cell, Column, Kind, Table};

/// A recorded artifact: where it is and what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ArtifactRecord {
    pub job_id: i64,
    pub kind: String,
    pub uri: String,
    pub sha256: String,
    pub bytes: i64,
}

/// A unit's max image, as the grid links it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MaxImage {
    pub filter: i64,
    pub job_id: i64,
    pub sha256: String,
}

/// One job of a unit, finished or not.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct UnitJob {
    pub job_id: i64,
    pub probe: String,
    pub state: String,
    pub attempt: i64,
    pub max_attempts: i64,
    pub last_error: Option<String>,
    pub finished_at: Option<i64>,
}

/// What the pages show of a campaign without counting its jobs.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CampaignHead {
    pub id: i64,
    pub name: String,
    pub model: String,
    pub created_at: i64,
}

/// A failed or expired attempt (the `job_errors` view).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct JobError {
    pub layer: String,
    pub filter: i64,
    pub probe: String,
    pub attempt: i64,
    pub outcome: String,
    pub error: Option<String>,
}

/// A layer's rows change only when one of its jobs finishes (results and failures are written
/// with the state) or when jobs are added: (jobs, finished jobs) changes whenever they may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LayerStamp {
    pub jobs: i64,
    pub finished: i64,
}

impl Store {
    /// A campaign's name and model (one primary-key read); None when there is no such campaign.
    pub async fn campaign_head(&self, campaign_id: i64) -> Result<Option<CampaignHead>> {
        Ok(
            sqlx::query_as("SELECT id, name, model, created_at FROM campaigns WHERE id = $1")
                .bind(campaign_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// A campaign's layers, in the order their first jobs were created.
    pub async fn campaign_layers(&self, campaign_id: i64) -> Result<Vec<String>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT layer, MIN(id) AS first FROM jobs WHERE campaign_id = $1
             GROUP BY layer ORDER BY first",
        )
        .bind(campaign_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(l, _)| l).collect())
    }

    /// Every `unit_summary` row of one layer of a campaign, ordered by filter, with the view's
    /// columns as they are in this database (their names and kinds are read from the result,
    /// not assumed). A column whose kind the database does not say (SQLite aggregates) takes
    /// the kind of its values; one with no values at all is a float column.
    pub async fn unit_summary_rows(&self, campaign_id: i64, layer: &str) -> Result<Table> {
        let rows = sqlx::query(
            "SELECT * FROM unit_summary WHERE campaign_id = $1 AND layer = $2 ORDER BY filter",
        )
        .bind(campaign_id)
        .bind(layer)
        .fetch_all(&self.pool)
        .await?;
        let Some(first) = rows.first() else {
            return Ok(Table::default());
        };
        let mut declared: Vec<Option<Kind>> = first
            .columns()
            .iter()
            .map(|c| kind_of(c.type_info().kind()))
            .collect();
        let columns: Vec<String> = first
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        let mut table = Table::new(Vec::new());
        table.rows.reserve(rows.len());
        for row in &rows {
            let mut cells = Vec::with_capacity(columns.len());
            for i in 0..columns.len() {
                let raw = row.try_get_raw(i)?;
                let cell = if raw.is_null() {
                    Cell::Null
                } else {
                    match raw.type_info().kind() {
                        k if k.is_integer() => Cell::Int(row.try_get::<i64, _>(i)?),
                        AnyTypeInfoKind::Bool => Cell::Int(i64::from(row.try_get::<bool, _>(i)?)),
                        AnyTypeInfoKind::Real | AnyTypeInfoKind::Double => {
                            Cell::Float(row.try_get::<f64, _>(i)?)
                        }
                        AnyTypeInfoKind::Text => Cell::Text(row.try_get::<String, _>(i)?),
                        _ => Cell::Null,
                    }
                };
                cells.push(cell);
            }
            table.rows.push(cells);
        }
        // Kinds: declared by the database where it says, else from the values.
        for (i, kind) in declared.iter_mut().enumerate() {
            if kind.is_none() {
                *kind = table.rows.iter().find_map(|r| match &r[i] {
                    Cell::Int(_) => Some(Kind::Int),
                    Cell::Float(_) => Some(Kind::Float),
                    Cell::Text(_) => Some(Kind::Text),
                    Cell::Null => None,
                });
            }
        }
        table.columns = columns
            .into_iter()
            .zip(declared)
            .map(|(name, kind)| Column::new(name, kind.unwrap_or(Kind::Float)))
            .collect();
        let kinds = table.kinds();
        for (c, k) in table.columns.iter_mut().zip(kinds) {
            c.kind = k;
        }
        Ok(table)
    }

    /// The stamp of a layer's rows (see [`LayerStamp`]); one index range scan.
    pub async fn layer_stamp(&self, campaign_id: i64, layer: &str) -> Result<LayerStamp> {
        let (jobs, finished): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*),
                    CAST(SUM(CASE WHEN state IN ('succeeded', 'failed') THEN 1 ELSE 0 END) AS BIGINT)
             FROM jobs WHERE campaign_id = $1 AND layer = $2",
        )
        .bind(campaign_id)
        .bind(layer)
        .fetch_one(&self.pool)
        .await?;
        Ok(LayerStamp {
            jobs,
            finished: finished.unwrap_or(0),
        })
    }

    /// The max image of every unit of a layer that has one.
    pub async fn layer_max_images(&self, campaign_id: i64, layer: &str) -> Result<Vec<MaxImage>> {
        Ok(sqlx::query_as(
            "SELECT j.filter, a.job_id, a.sha256
             FROM jobs j JOIN artifacts a ON a.job_id = j.id AND a.kind = 'max_image'
             WHERE j.campaign_id = $1 AND j.layer = $2 AND j.probe = 'synthesis'",
        )
        .bind(campaign_id)
        .bind(layer)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every job of a layer as (filter, job id): the results browser keeps this map, so a
    /// unit's jobs are then read by primary key (there is no index on the filter).
    pub async fn layer_jobs(&self, campaign_id: i64, layer: &str) -> Result<Vec<(i64, i64)>> {
        Ok(sqlx::query_as(
            "SELECT filter, id FROM jobs WHERE campaign_id = $1 AND layer = $2 ORDER BY id",
        )
        .bind(campaign_id)
        .bind(layer)
        .fetch_all(&self.pool)
        .await?)
    }

    /// These jobs with their states, in id order.
    pub async fn jobs_by_id(&self, ids: &[i64]) -> Result<Vec<UnitJob>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT id AS job_id, probe, state, attempt, max_attempts, last_error, finished_at
             FROM jobs WHERE id IN ({}) ORDER BY id",
            placeholders(1, ids.len())
        );
        let mut query = sqlx::query_as::<_, UnitJob>(&sql);
        for id in ids {
            query = query.bind(*id);
        }
        Ok(query.fetch_all(&self.pool).await?)
    }

    /// The latest failed or expired attempts of a campaign, newest first.
    pub async fn recent_errors(&self, campaign_id: i64, limit: i64) -> Result<Vec<JobError>> {
        Ok(sqlx::query_as(
            // the job_errors view's rows, read from the attempts side: there are few failed
            // attempts, and SQLite would otherwise walk every job of the campaign (CROSS JOIN
            // keeps its join order; Postgres plans as it likes)
            "SELECT j.layer, j.filter, j.probe, a.attempt, a.outcome, a.error
             FROM attempts a CROSS JOIN jobs j
             WHERE j.id = a.job_id AND a.outcome <> 'succeeded' AND j.campaign_id = $1
             ORDER BY a.finished_at DESC, a.job_id DESC LIMIT $2",
        )
        .bind(campaign_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// One artifact by its key (job, kind).
    pub async fn artifact(&self, job_id: i64, kind: &str) -> Result<Option<ArtifactRecord>> {
        Ok(sqlx::query_as(
            "SELECT job_id, kind, uri, sha256, bytes FROM artifacts WHERE job_id = $1 AND kind = $2",
        )
        .bind(job_id)
        .bind(kind)
        .fetch_optional(&self.pool)
        .await?)
    }
}

fn kind_of(kind: AnyTypeInfoKind) -> Option<Kind> {
    match kind {
        k if k.is_integer() => Some(Kind::Int),
        AnyTypeInfoKind::Bool => Some(Kind::Int),
        AnyTypeInfoKind::Real | AnyTypeInfoKind::Double => Some(Kind::Float),
        AnyTypeInfoKind::Text => Some(Kind::Text),
        _ => None,
    }
}
