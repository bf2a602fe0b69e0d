//! The HTTP side: Prometheus metrics, a liveness probe (`/healthz`) and, merged in by
//! [`readiness_router`], a readiness probe (`/readyz`) that follows the database.

use crate::metrics::Metrics;
use crate::store::Store;
use axum::{extract::State, routing::get, Router};
use std::sync::Arc;

#[derive(Clone)]
struct AppState {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
}

pub fn router(store: Arc<Store>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(AppState { store, metrics })
}

async fn metrics_text(
    State(state): State<AppState>,
) -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    let body = state.metrics.render(&state.store).await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
}

/// `GET /readyz`: `200 ready` while the last database check answered, `503` (with the reason)
/// while it did not. Liveness stays on `/healthz`, which answers as long as the process does.
/// Merge it into [`router`]: `router(store, metrics).merge(readiness_router(health))`.
pub fn readiness_router(health: crate::server::DbHealth) -> Router {
    Router::new()
        .route("/readyz", get(readyz))
        .with_state(health)
}

async fn readyz(
    State(health): State<crate::server::DbHealth>,
) -> (axum::http::StatusCode, &'static str) {
    match health.status() {
        Ok(()) => (axum::http::StatusCode::OK, "ready\n"),
        Err(_) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the database does not answer\n",
        ),
    }
}
