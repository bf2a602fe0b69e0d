//! Expansion: a validated campaign spec becomes one job per (layer, filter, probe).
//!
//! Each job gets a content key, the hash of everything that determines its output; the
//! `(campaign_id, content_key)` unique constraint plus `ON CONFLICT DO NOTHING` make expansion
//! idempotent, so a resubmitted or half-expanded campaign never gains duplicate jobs.

use super::{models::find_layer, value_rows_json, Dialect, Tx, ROWS_PER_STATEMENT};
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use vephys_proto::spec::{CampaignSpec, Probe, SpecError};
use vephys_proto::v1::Model;

/// A job to create.
#[derive(Debug, Clone)]
pub(crate) struct NewJob {
    pub content_key: String,
    /// Shared by the jobs of a layer: a campaign over a whole network is many jobs.
    pub layer: Arc<str>,
    pub filter: i64,
    pub probe: Probe,
    /// Shared by the jobs of a probe.
    pub params: Arc<str>,
}

/// Checks `spec` against the registry entry of its model and lists its jobs, synthesis jobs
/// first. A probe that starts from the max image brings its filter's synthesis job along even
/// when the spec does not list `synthesis`. More than `max_jobs` jobs are refused before they
/// are listed.
pub(crate) fn plan(spec: &CampaignSpec, model: &Model, max_jobs: u64) -> Result<Vec<NewJob>> {
    spec.check().map_err(Error::invalid_spec)?;
    let mut probes = spec.probes.clone();
    if probes.iter().any(|p| p.needs_max_image()) {
        probes.push(Probe::Synthesis);
    }
    probes.sort();
    probes.dedup();

    let mut synthesis = spec.synthesis.clone();
    if synthesis.image_size == 0 {
        synthesis.image_size = model.input_size as u32;
    }
    spec.check_image_size(synthesis.image_size)
        .map_err(Error::invalid_spec)?;
    if let Some(manifest) = super::models::manifest(model) {
        manifest
            .check_size(i64::from(synthesis.image_size))
            .map_err(|reason| {
                Error::invalid_spec(SpecError::new("synthesis.image_size", reason))
            })?;
    }
    let params: Vec<(Probe, Arc<str>)> = probes
        .iter()
        .map(|p| {
            (
                *p,
                Arc::from(spec.job_params(*p, synthesis.image_size).to_json()),
            )
        })
        .collect();
    let mut jobs = Vec::new();
    let mut seen_layers = Vec::new();
    for (i, name) in spec.layers.iter().enumerate() {
        let layer = find_layer(model, name).ok_or_else(|| {
            let known: Vec<&str> = model.layers.iter().map(|l| l.name.as_str()).collect();
            Error::invalid_spec(SpecError::new(
                format!("layers[{i}]"),
                format!(
                    "model `{}` has no layer `{name}`; use one of: {}",
                    model.name,
                    known.join(", ")
                ),
            ))
        })?;
        if seen_layers.contains(&layer.name) {
            continue;
        }
        seen_layers.push(layer.name.clone());
        let filters = spec.filters.resolve(layer.channels).map_err(|reason| {
            Error::invalid_spec(SpecError::new(
                "filters",
                format!("layer `{}`: {reason}", layer.name),
            ))
        })?;
        let total = jobs.len() as u64 + (filters.len() * params.len()) as u64;
        if total > max_jobs {
            return Err(Error::invalid_spec(SpecError::new(
                "filters",
                format!(
                    "the campaign makes more than {max_jobs} jobs (layer `{}` alone {}), the most \
                     this coordinator takes in one campaign (--max-campaign-jobs); split it by \
                     layers or filters",
                    layer.name,
                    filters.len() * params.len()
                ),
            )));
        }
        let layer_name: Arc<str> = Arc::from(layer.name.as_str());
        jobs.reserve(filters.len() * params.len());
        // Probes are the outer loop so synthesis jobs come first in id order and are leased first.
        for (probe, params) in &params {
            for &filter in &filters {
                jobs.push(NewJob {
                    content_key: content_key(&model.name, &layer.name, filter, *probe, params),
                    layer: layer_name.clone(),
                    filter,
                    probe: *probe,
                    params: params.clone(),
                });
            }
        }
    }
    Ok(jobs)
}

fn content_key(model: &str, layer: &str, filter: i64, probe: Probe, params: &str) -> String {
    let mut hash = Sha256::new();
    for part in [model, layer, &filter.to_string(), probe.as_str(), params] {
        hash.update(part.as_bytes());
        hash.update([0u8]);
    }
    hex::encode(hash.finalize())
}

/// What every job of a campaign shares.
pub(crate) struct Campaign<'a> {
    pub dialect: Dialect,
    pub id: i64,
    pub model: &'a str,
    pub max_attempts: i64,
    pub seed: i64,
}

/// Inserts the planned jobs of a campaign; returns how many were new. Runs inside the submit
/// transaction, so a campaign is never visible half-expanded.
pub(crate) async fn insert_jobs(
    tx: &mut Tx,
    campaign: &Campaign<'_>,
    jobs: &[NewJob],
    now: i64,
) -> Result<u64> {
    let campaign_id = campaign.id;
    let (independent, dependent): (Vec<&NewJob>, Vec<&NewJob>) =
        jobs.iter().partition(|j| !j.probe.needs_max_image());
    let mut created = 0;
    for chunk in independent.chunks(ROWS_PER_STATEMENT) {
        let rows: Vec<(&NewJob, Option<i64>)> = chunk.iter().map(|j| (*j, None)).collect();
        created += insert_chunk(tx, campaign, &rows, now).await?;
    }
    if dependent.is_empty() {
        return Ok(created);
    }
    // The synthesis job ids, now that they exist, for the dependent jobs' `depends_on`.
    let synthesis: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT id, layer, filter FROM jobs WHERE campaign_id = $1 AND probe = 'synthesis'",
    )
    .bind(campaign_id)
    .fetch_all(&mut **tx)
    .await?;
    let synthesis: HashMap<(String, i64), i64> = synthesis
        .into_iter()
        .map(|(id, layer, filter)| ((layer, filter), id))
        .collect();
    for chunk in dependent.chunks(ROWS_PER_STATEMENT) {
        let mut rows = Vec::with_capacity(chunk.len());
        for job in chunk {
            let dep = synthesis.get(&(job.layer.to_string(), job.filter)).copied();
            debug_assert!(
                dep.is_some(),
                "plan() adds a synthesis job for every dependent job"
            );
            rows.push((*job, dep));
        }
        created += insert_chunk(tx, campaign, &rows, now).await?;
    }
    // A job whose synthesis already succeeded (a campaign resumed after a crash mid-expansion)
    // is runnable now; everything else waits for its synthesis job to complete.
    sqlx::query(
        "UPDATE jobs SET state = 'queued'
         WHERE campaign_id = $1 AND state = 'waiting'
           AND depends_on IN (SELECT id FROM jobs WHERE campaign_id = $1 AND state = 'succeeded')",
    )
    .bind(campaign_id)
    .execute(&mut **tx)
    .await?;
    Ok(created)
}

async fn insert_chunk(
    tx: &mut Tx,
    campaign: &Campaign<'_>,
    rows: &[(&NewJob, Option<i64>)],
    now: i64,
) -> Result<u64> {
    // One multi-row INSERT per chunk: expansion of a whole network is thousands of jobs.
    // ON CONFLICT DO NOTHING on the content key is what makes resubmission add nothing.
    let sql = format!(
        "INSERT INTO jobs (campaign_id, content_key, model, layer, filter, probe, params, seed,
                           depends_on, state, max_attempts, created_at)
         VALUES {}
         ON CONFLICT (campaign_id, content_key) DO NOTHING",
        value_rows_json(campaign.dialect, 1, rows.len(), 12, &[6])
    );
    let mut query = sqlx::query(&sql);
    for (job, dep) in rows {
        query = query
            .bind(campaign.id)
            .bind(job.content_key.as_str())
            .bind(campaign.model)
            .bind(&*job.layer)
            .bind(job.filter)
            .bind(job.probe.as_str())
            .bind(&*job.params)
            .bind(campaign.seed)
            .bind(*dep)
            .bind(if dep.is_some() { "waiting" } else { "queued" })
            .bind(campaign.max_attempts)
            .bind(now);
    }
    let done = query.execute(&mut **tx).await?;
    Ok(done.rows_affected())
}
