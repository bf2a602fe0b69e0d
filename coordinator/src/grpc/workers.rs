//! The worker-facing service: register, lease, heartbeat, complete, fail.

use crate::error::Error;
use crate::metrics::Metrics;
use crate::store::lease::LeaseAsk;
use crate::store::Store;
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status};
use vephys_proto::v1::workers_server::Workers;
use vephys_proto::v1::*;

pub struct WorkersService {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
}

impl WorkersService {
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>) -> Self {
        Self { store, metrics }
    }

    /// Counts refused stale writes before handing the error on.
    fn note(&self, error: Error) -> Status {
        if matches!(error, Error::StaleLease { .. } | Error::NotLessee { .. }) {
            self.metrics.stale_writes.inc();
            tracing::info!(%error, "stale write refused");
        }
        Status::from(error)
    }
}

#[tonic::async_trait]
impl Workers for WorkersService {
    async fn register_worker(
        &self,
        request: Request<RegisterWorkerRequest>,
    ) -> Result<Response<RegisterWorkerResponse>, Status> {
        let worker_id = self.store.register_worker(request.get_ref()).await?;
        Ok(Response::new(RegisterWorkerResponse {
            worker_id,
            lease_ms: self.store.policy.lease_ms,
        }))
    }

    async fn lease(
        &self,
        request: Request<LeaseRequest>,
    ) -> Result<Response<LeaseResponse>, Status> {
        let started = Instant::now();
        let r = request.get_ref();
        let ask = LeaseAsk {
            worker_id: r.worker_id,
            max_jobs: r.max_jobs,
            loaded_models: &r.loaded_models,
            request_id: &r.request_id,
        };
        let lease = self.store.lease_for(ask, self.store.now_ms()).await?;
        self.metrics
            .lease_latency
            .observe(started.elapsed().as_secs_f64());
        let outcome = if lease.jobs.is_empty() {
            "empty"
        } else {
            "granted"
        };
        self.metrics
            .lease_requests
            .with_label_values(&[outcome])
            .inc();
        self.metrics.jobs_leased.inc_by(lease.jobs.len() as u64);
        Ok(Response::new(LeaseResponse {
            jobs: lease.jobs,
            lease_expires_at_ms: lease.expires_at_ms,
            model: lease.model,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let r = request.get_ref();
        let now = self.store.now_ms();
        let beat = self.store.heartbeat(r.worker_id, &r.jobs, now).await?;
        Ok(Response::new(HeartbeatResponse {
            extended: beat.extended,
            lease_expires_at_ms: beat.expires_at_ms,
            cancelled: beat.cancelled,
            lost: beat.lost,
        }))
    }

    async fn complete(
        &self,
        request: Request<CompleteRequest>,
    ) -> Result<Response<CompleteResponse>, Status> {
        let r = request.get_ref();
        let done = self
            .store
            .complete(r.worker_id, &r.jobs, self.store.now_ms())
            .await
            .map_err(|e| self.note(e))?;
        self.metrics
            .jobs_completed
            .inc_by(done.accepted.len() as u64);
        Ok(Response::new(CompleteResponse {
            accepted: done.accepted,
            duplicate: done.duplicate,
            cancelled: done.cancelled,
        }))
    }

    async fn fail(&self, request: Request<FailRequest>) -> Result<Response<FailResponse>, Status> {
        let r = request.get_ref();
        let failed = self
            .store
            .fail(r.worker_id, &r.jobs, self.store.now_ms())
            .await
            .map_err(|e| self.note(e))?;
        self.metrics
            .jobs_failed
            .with_label_values(&["retrying"])
            .inc_by(failed.retrying.len() as u64);
        self.metrics
            .jobs_failed
            .with_label_values(&["failed"])
            .inc_by(failed.failed.len() as u64);
        Ok(Response::new(FailResponse {
            retrying: failed.retrying,
            failed: failed.failed,
            cancelled: failed.cancelled,
        }))
    }
}
