//! The worker roster: who is out there, on what device, with which models loaded.

use super::{now_ms, Store};
use crate::error::{Error, Result};
use vephys_proto::v1::RegisterWorkerRequest;

impl Store {
    /// Records a worker and the models it describes; returns its id.
    pub async fn register_worker(&self, request: &RegisterWorkerRequest) -> Result<i64> {
        if request.name.trim().is_empty() {
            return Err(Error::invalid(
                "worker registration",
                "name",
                "is empty; name the worker, e.g. after its host",
            ));
        }
        for model in &request.models {
            self.register_model(model).await?;
        }
        let now = now_ms();
        let loaded = serde_json::to_string(&request.loaded_models).expect("strings serialize");
        // A restarted worker registers anew and gets a new id: its old leases stay with the
        // old id and expire, which is exactly what should happen to work it lost in the crash.
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO workers (name, device, memory_bytes, loaded_models, registered_at, last_seen_at)
             VALUES ($1, $2, $3, $4, $5, $5) RETURNING id",
        )
        .bind(&request.name)
        .bind(&request.device)
        .bind(request.memory_bytes as i64)
        .bind(loaded)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        tracing::info!(worker_id = id, name = %request.name, device = %request.device, "worker registered");
        Ok(id)
    }

    /// Checks that the worker is registered and returns the models it registered as loaded.
    /// A read, not a write: on the lease and completion paths an extra write would cost a
    /// commit (an fsync) per call. Heartbeats record that a worker is alive.
    pub(crate) async fn check_worker(&self, worker_id: i64) -> Result<Vec<String>> {
        let loaded: Option<String> =
            sqlx::query_scalar("SELECT loaded_models FROM workers WHERE id = $1")
                .bind(worker_id)
                .fetch_optional(&self.pool)
                .await?;
        let loaded = loaded.ok_or_else(|| unregistered(worker_id))?;
        Ok(serde_json::from_str(&loaded).unwrap_or_default())
    }

    /// Records that the worker is alive (on every heartbeat).
    pub(crate) async fn touch_worker(&self, worker_id: i64, now: i64) -> Result<()> {
        let seen = sqlx::query("UPDATE workers SET last_seen_at = $1 WHERE id = $2")
            .bind(now)
            .bind(worker_id)
            .execute(&self.pool)
            .await?;
        if seen.rows_affected() == 0 {
            return Err(unregistered(worker_id));
        }
        Ok(())
    }
}

fn unregistered(worker_id: i64) -> Error {
    Error::NotFound {
        what: "worker",
        id: worker_id.to_string(),
        hint: "register with RegisterWorker first (the coordinator may have a fresh database)",
    }
}
