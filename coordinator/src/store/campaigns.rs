//! Campaigns: submission (validate, record, expand in one transaction), progress and cancel.

use super::{expand, now_ms, Store};
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use vephys_proto::spec::{CampaignSpec, SpecError};
use vephys_proto::v1::{Campaign, GroupProgress, JobCounts};

/// What a submission did.
#[derive(Debug)]
pub struct Submitted {
    pub campaign_id: i64,
    pub jobs_created: u64,
    /// The same spec had been submitted before.
    pub existing: bool,
}

#[derive(sqlx::FromRow)]
struct CampaignRow {
    id: i64,
    name: String,
    model: String,
    spec_toml: String,
    created_at: i64,
    cancelled_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct CountRow {
    campaign_id: i64,
    layer: String,
    probe: String,
    state: String,
    jobs: i64,
    first_job: i64,
    /// Sum of the progress fractions heartbeats reported (only leased jobs have any).
    progress: f64,
}

impl Store {
    /// Validates `spec_toml` against the registry and expands it into jobs. Submitting a spec
    /// that was submitted before returns that campaign and creates nothing.
    pub async fn submit_campaign(&self, spec_toml: &str) -> Result<Submitted> {
        let spec = CampaignSpec::from_toml(spec_toml).map_err(Error::invalid_spec)?;
        spec.check().map_err(Error::invalid_spec)?;
        let model = self.model(&spec.model).await?.ok_or_else(|| {
            Error::invalid_spec(SpecError::new(
                "model",
                format!(
                    "model `{}` is not registered; add it with `vephys models add FILE.json`",
                    spec.model
                ),
            ))
        })?;
        let jobs = expand::plan(&spec, &model, self.limits.max_campaign_jobs)?;
        // The canonical form (defaults filled in, fields ordered) is what identifies a spec, so
        // cosmetic differences in the submitted TOML do not make a new campaign.
        let canonical = spec.to_toml();
        let spec_hash = hex::encode(Sha256::digest(canonical.as_bytes()));
        let now = now_ms();

        let mut tx = self.begin_write().await?;
        // Insert-or-find in one statement pair: ON CONFLICT on the spec hash is what makes a
        // concurrent double submit safe (the loser finds the winner's row below). The campaign
        // pins the model's weights as they are now: its leases name them, and results computed
        // with others are refused, whatever the registry says later.
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO campaigns (name, model, spec_hash, spec_toml, created_at,
                                    weights_sha256, weights_uri, manifest)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (spec_hash) DO NOTHING
             RETURNING id",
        )
        .bind(&spec.name)
        .bind(&model.name)
        .bind(&spec_hash)
        .bind(&canonical)
        .bind(now)
        .bind(model.weights_sha256.to_lowercase())
        .bind(&model.weights_uri)
        .bind(&model.manifest_json)
        .fetch_optional(&mut *tx)
        .await?;
        let (campaign_id, existing) = match inserted {
            Some(id) => (id, false),
            None => {
                let id: i64 = sqlx::query_scalar("SELECT id FROM campaigns WHERE spec_hash = $1")
                    .bind(&spec_hash)
                    .fetch_one(&mut *tx)
                    .await?;
                (id, true)
            }
        };
        // Expanding an existing campaign again is harmless and finishes one whose first
        // expansion was interrupted.
        let campaign = expand::Campaign {
            dialect: self.dialect,
            id: campaign_id,
            model: &model.name,
            max_attempts: i64::from(spec.max_attempts),
            seed: spec.seed as i64,
        };
        let jobs_created = expand::insert_jobs(&mut tx, &campaign, &jobs, now).await?;
        tx.commit().await?;
        self.analyze_after_expansion(jobs_created).await;
        tracing::info!(campaign_id, jobs_created, existing, name = %spec.name, "campaign submitted");
        Ok(Submitted {
            campaign_id,
            jobs_created,
            existing,
        })
    }

    /// After a big expansion, Postgres' statistics of `jobs` say the queue is what it was
    /// before (autovacuum analyzes minutes later): the claim's planner then walks the whole
    /// campaign and sorts it on every lease (≈100 ms at 100,000 jobs instead of 0.2 ms).
    /// Analyzing at once keeps leasing an index walk. A failure costs speed, not correctness.
    async fn analyze_after_expansion(&self, jobs_created: u64) {
        const BIG: u64 = 1000;
        if self.dialect != super::Dialect::Postgres || jobs_created < BIG {
            return;
        }
        if let Err(error) = sqlx::query("ANALYZE jobs").execute(&self.pool).await {
            tracing::warn!(%error, "cannot analyze the jobs table; leases may be slow until autovacuum does");
        }
    }

    pub async fn campaign(&self, campaign_id: i64) -> Result<Campaign> {
        let mut found = self
            .load_campaigns(campaign_id.saturating_sub(1), 1, Some(campaign_id))
            .await?;
        found.pop().ok_or(Error::NotFound {
            what: "campaign",
            id: campaign_id.to_string(),
            hint: "list campaigns with `vephys status`",
        })
    }

    /// Every campaign, oldest first. On a big database prefer [`Store::list_campaigns_page`].
    pub async fn list_campaigns(&self) -> Result<Vec<Campaign>> {
        self.load_campaigns(0, i64::MAX, None).await
    }

    /// Up to `limit` campaigns with ids above `after`, oldest first (keyset pagination: each
    /// page is an index range, and campaigns submitted meanwhile do not shift the pages).
    pub async fn list_campaigns_page(&self, after: i64, limit: i64) -> Result<Vec<Campaign>> {
        self.load_campaigns(after, limit, None).await
    }

    /// Campaigns with ids above `after` (only `only`, when given), at most `limit`.
    async fn load_campaigns(
        &self,
        after: i64,
        limit: i64,
        only: Option<i64>,
    ) -> Result<Vec<Campaign>> {
        let rows: Vec<CampaignRow> = sqlx::query_as(
            "SELECT id, name, model, spec_toml, created_at, cancelled_at FROM campaigns
             WHERE id > $1 AND ($2 IS NULL OR id = $2) ORDER BY id LIMIT $3",
        )
        .bind(after)
        .bind(only)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            return Ok(Vec::new());
        };
        // Counting by state is what progress is; MIN(id) orders the groups as they were
        // submitted (synthesis first). Only the page's campaigns are counted.
        let counts: Vec<CountRow> = sqlx::query_as(
            "SELECT campaign_id, layer, probe, state, COUNT(*) AS jobs, MIN(id) AS first_job,
                    CAST(SUM(CASE WHEN state = 'leased' THEN progress ELSE 0 END) AS DOUBLE PRECISION) AS progress
             FROM jobs WHERE campaign_id BETWEEN $1 AND $2
             GROUP BY campaign_id, layer, probe, state",
        )
        .bind(first.id)
        .bind(last.id)
        .fetch_all(&self.pool)
        .await?;
        let mut campaigns = Vec::with_capacity(rows.len());
        for row in rows {
            let mut groups: Vec<(i64, GroupProgress)> = Vec::new();
            let mut totals = JobCounts::default();
            let mut leased_progress = 0.0;
            for count in counts.iter().filter(|c| c.campaign_id == row.id) {
                let index = match groups
                    .iter()
                    .position(|(_, g)| g.layer == count.layer && g.probe == count.probe)
                {
                    Some(i) => i,
                    None => {
                        groups.push((
                            count.first_job,
                            GroupProgress {
                                layer: count.layer.clone(),
                                probe: count.probe.clone(),
                                counts: Some(JobCounts::default()),
                            },
                        ));
                        groups.len() - 1
                    }
                };
                let (first, group) = &mut groups[index];
                *first = (*first).min(count.first_job);
                let n = count.jobs as u64;
                add_count(
                    group.counts.get_or_insert_with(Default::default),
                    &count.state,
                    n,
                );
                add_count(&mut totals, &count.state, n);
                leased_progress += count.progress;
            }
            groups.sort_by_key(|(first, _)| *first);
            let state = campaign_state(row.cancelled_at.is_some(), &totals);
            campaigns.push(Campaign {
                id: row.id,
                name: row.name,
                model: row.model,
                state: state.to_string(),
                created_at_ms: row.created_at,
                totals: Some(totals),
                groups: groups.into_iter().map(|(_, g)| g).collect(),
                spec_toml: row.spec_toml,
                leased_progress,
            });
        }
        Ok(campaigns)
    }

    /// Cancels a campaign: every unfinished job becomes `cancelled` in one transaction, so the
    /// next claim cannot see them and the next heartbeat of a running job reports it.
    pub async fn cancel_campaign(&self, campaign_id: i64) -> Result<Campaign> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let found = sqlx::query(
            "UPDATE campaigns SET cancelled_at = COALESCE(cancelled_at, $1) WHERE id = $2",
        )
        .bind(now)
        .bind(campaign_id)
        .execute(&mut *tx)
        .await?;
        if found.rows_affected() == 0 {
            return Err(Error::NotFound {
                what: "campaign",
                id: campaign_id.to_string(),
                hint: "list campaigns with `vephys status`",
            });
        }
        // Leased jobs keep their attempt number: the lessee's token still matches, which is how
        // its heartbeat learns "cancelled" rather than "lost".
        let cancelled = sqlx::query(
            "UPDATE jobs SET state = 'cancelled', finished_at = $1, lease_expires_at = NULL
             WHERE campaign_id = $2 AND state IN ('waiting', 'queued', 'leased')",
        )
        .bind(now)
        .bind(campaign_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(
            campaign_id,
            jobs = cancelled.rows_affected(),
            "campaign cancelled"
        );
        self.campaign(campaign_id).await
    }
}

fn add_count(counts: &mut JobCounts, state: &str, n: u64) {
    match state {
        "waiting" => counts.waiting += n,
        "queued" => counts.queued += n,
        "leased" => counts.leased += n,
        "succeeded" => counts.succeeded += n,
        "failed" => counts.failed += n,
        "cancelled" => counts.cancelled += n,
        other => debug_assert!(false, "unknown job state {other}"),
    }
}

/// A campaign's state follows from its jobs; only cancellation is recorded on the campaign.
fn campaign_state(cancelled: bool, totals: &JobCounts) -> &'static str {
    if cancelled {
        return "cancelled";
    }
    if totals.waiting + totals.queued + totals.leased > 0 {
        return "running";
    }
    if totals.failed > 0 {
        return "failed";
    }
    "succeeded"
}

/// Whether a campaign in this state will change no more.
pub fn is_terminal(state: &str) -> bool {
    state != "running"
}
