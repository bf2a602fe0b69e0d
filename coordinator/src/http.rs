//! The HTTP side: Prometheus metrics and a liveness probe.

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
