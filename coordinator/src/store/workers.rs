//! The worker roster: who is out there, on what device, with which models loaded.

use super::limits::{check_count, check_len, MAX_MODELS_PER_WORKER, MAX_TEXT_BYTES};
use super::{now_ms, Store};
use crate::error::{Error, Result};
use serde_json::json;
use vephys_proto::v1::RegisterWorkerRequest;

impl Store {
    /// Records a worker and what it holds; returns its id. Models the registry does not know
    /// are added; a registered model is left as it is, even when the worker holds other
    /// weights for it (those leases fetch the campaign's weights instead).
    pub async fn register_worker(&self, request: &RegisterWorkerRequest) -> Result<i64> {
        let what = "worker registration";
        if request.name.trim().is_empty() {
            return Err(Error::invalid(
                what,
                "name",
                "is empty; name the worker, e.g. after its host",
            ));
        }
        check_len(what, "name", &request.name, MAX_TEXT_BYTES)?;
        check_len(what, "device", &request.device, MAX_TEXT_BYTES)?;
        check_count(what, "models", &request.models, MAX_MODELS_PER_WORKER)?;
        check_count(
            what,
            "loaded_models",
            &request.loaded_models,
            MAX_MODELS_PER_WORKER,
        )?;
        for (i, name) in request.loaded_models.iter().enumerate() {
            check_len(what, &format!("loaded_models[{i}]"), name, MAX_TEXT_BYTES)?;
        }
        let mut held = Vec::with_capacity(request.models.len());
        for model in &request.models {
            if !self.add_missing_model(model).await? {
                let registered = self.model(&model.name).await?;
                let theirs = registered.map(|m| m.weights_sha256).unwrap_or_default();
                if !theirs.eq_ignore_ascii_case(&model.weights_sha256) {
                    tracing::warn!(name = %request.name, model = %model.name,
                        "worker holds other weights than the registry; its leases of this model fetch the campaign's weights");
                }
            }
            held.push(json!({"model": model.name, "weights_sha256": model.weights_sha256}));
        }
        let now = now_ms();
        let loaded = serde_json::to_string(&request.loaded_models).expect("strings serialize");
        let held = serde_json::Value::Array(held).to_string();
        // A restarted worker registers anew and gets a new id: its old leases stay with the
        // old id and expire, which is exactly what should happen to work it lost in the crash.
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO workers (name, device, memory_bytes, loaded_models, held, registered_at, last_seen_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING id",
        )
        .bind(&request.name)
        .bind(&request.device)
        .bind(request.memory_bytes.min(i64::MAX as u64) as i64)
        .bind(loaded)
        .bind(held)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        tracing::info!(worker_id = id, name = %request.name, device = %request.device, "worker registered");
        self.cache_worker(id, request.loaded_models.clone());
        Ok(id)
    }

    /// Checks that the worker is registered and returns the models it registered as loaded.
    /// A read, not a write: on the lease and completion paths an extra write would cost a
    /// commit (an fsync) per call. Heartbeats record that a worker is alive. Workers are never
    /// removed, so a worker found once is remembered.
    pub(crate) async fn check_worker(&self, worker_id: i64) -> Result<Vec<String>> {
        if let Some(loaded) = self
            .cache
            .workers
            .lock()
            .expect("worker cache")
            .get(&worker_id)
        {
            return Ok(loaded.clone());
        }
        let loaded: Option<String> =
            sqlx::query_scalar("SELECT loaded_models FROM workers WHERE id = $1")
                .bind(worker_id)
                .fetch_optional(&self.pool)
                .await?;
        let loaded = loaded.ok_or_else(|| unregistered(worker_id))?;
        let loaded: Vec<String> = serde_json::from_str(&loaded).unwrap_or_default();
        self.cache_worker(worker_id, loaded.clone());
        Ok(loaded)
    }

    fn cache_worker(&self, worker_id: i64, loaded: Vec<String>) {
        self.cache
            .workers
            .lock()
            .expect("worker cache")
            .insert(worker_id, loaded);
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
