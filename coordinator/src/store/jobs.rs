//! Where each job of a campaign stands: its state, its latest attempt and the attempt whose
//! result was recorded. `vephys gc` reads it to tell the objects of winning (or still running)
//! attempts from those of attempts that can never be recorded.

use super::Store;
use crate::error::Result;
use vephys_proto::v1::JobState;

#[derive(sqlx::FromRow)]
struct JobRow {
    id: i64,
    layer: String,
    filter: i64,
    probe: String,
    state: String,
    attempt: i64,
    result_attempt: Option<i64>,
}

impl Store {
    /// Up to `limit` jobs of `campaign_id` with ids above `after`, in id order (keyset
    /// pagination, like [`Store::results_page`]).
    pub async fn jobs_page(
        &self,
        campaign_id: i64,
        after: i64,
        limit: i64,
    ) -> Result<Vec<JobState>> {
        let rows: Vec<JobRow> = sqlx::query_as(
            "SELECT j.id, j.layer, j.filter, j.probe, j.state, j.attempt, r.attempt AS result_attempt
             FROM jobs j LEFT JOIN results r ON r.job_id = j.id
             WHERE j.campaign_id = $1 AND j.id > $2
             ORDER BY j.id
             LIMIT $3",
        )
        .bind(campaign_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| JobState {
                job_id: r.id,
                layer: r.layer,
                filter: r.filter,
                probe: r.probe,
                state: r.state,
                attempt: r.attempt,
                result_attempt: r.result_attempt.unwrap_or(0),
            })
            .collect())
    }
}
