//! The results browser: a read-only web UI on the coordinator's `--http` address. Pages are
//! HTML rendered on the server (charts are the static report's SVG, from `vephys-results`), with
//! a small embedded script for keyboard navigation and live progress (server-sent events).
//! Every view has its own URL, and every page has a JSON twin under `/api/`:
//!
//! | URL | what |
//! |---|---|
//! | `/` | campaigns with live progress per layer and probe |
//! | `/c/{id}` | one campaign: facts, spec, progress, its layers |
//! | `/c/{id}/l/{layer}` | the layer's units: grid of max images or table (`view=table`), sorted (`sort`, `dir`), filtered (`q`), paged (`page`, `per`) |
//! | `/c/{id}/l/{layer}/units.csv`, `.parquet`, `.json` | the layer's table as shown (sorted, filtered, every page) |
//! | `/c/{id}/l/{layer}/u/{filter}` | one unit: images, every tuning curve, numbers, parameters, provenance |
//! | `/c/{id}/l/{layer}/u/{filter}/record.json` | the unit's record |
//! | `/c/{id}/l/{layer}/compare?f=3,7` | units side by side |
//! | `/a/{job}/{kind}/{sha256}` | an artifact from the object store, checked against its sha256 |
//! | `/events` | server-sent events: campaign progress |
//! | `/login`, `/logout` | the session when the coordinator has a user token |
//!
//! Modules: [`auth`] (token, session cookie, login), [`cache`] (a layer's rows, kept while they
//! do not change), [`query`] (sort, filter, paging), [`campaigns`], [`layer`], [`unit`] and
//! [`artifacts`] (the pages), [`html`] (page shell, links, errors), [`assets`] (CSS, script).

mod artifacts;
mod assets;
mod auth;
mod cache;
mod campaigns;
mod html;
mod layer;
mod query;
mod unit;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use vephys_objects::{Objects, S3Options};

use crate::store::Store;

/// What the results browser needs besides the store.
#[derive(Clone, Default)]
pub struct Settings {
    /// The object store the workers write to; without it images are not shown.
    pub objects: Option<Objects>,
    /// The user token; when set, every page asks for it.
    pub user_token: Option<String>,
    /// Set to true when the server is about to stop: live event streams end, so a graceful
    /// shutdown does not wait for open browser tabs.
    pub shutdown: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Settings {
    /// Opens `store` (file:///dir or s3://bucket/prefix) when given.
    pub fn new(
        store: Option<&str>,
        s3_endpoint: Option<String>,
        user_token: Option<String>,
    ) -> Result<Settings, vephys_objects::ObjectsError> {
        let objects = match store.filter(|s| !s.is_empty()) {
            Some(url) => Some(Objects::open(
                url,
                &S3Options {
                    endpoint: s3_endpoint,
                },
            )?),
            None => None,
        };
        Ok(Settings {
            objects,
            user_token: user_token.filter(|t| !t.is_empty()),
            shutdown: None,
        })
    }
}

/// Shared by every handler.
pub(crate) struct Web {
    pub store: Arc<Store>,
    pub objects: Option<Objects>,
    pub auth: auth::Auth,
    pub layers: Arc<cache::LayerCache>,
    pub shutdown: Option<tokio::sync::watch::Receiver<bool>>,
    pub progress: campaigns::Progress,
}

pub(crate) type State = axum::extract::State<Arc<Web>>;

/// The UI's routes; merge them into the HTTP router (`/metrics` and `/healthz` stay open).
pub fn router(store: Arc<Store>, settings: Settings) -> Router {
    let web = Arc::new(Web {
        store,
        objects: settings.objects,
        auth: auth::Auth::new(settings.user_token),
        layers: Arc::new(cache::LayerCache::new()),
        shutdown: settings.shutdown,
        progress: campaigns::Progress::default(),
    });
    let guarded = Router::new()
        .route("/", get(campaigns::list_page))
        .route("/api/campaigns", get(campaigns::list_json))
        .route("/events", get(campaigns::events))
        .route("/c/{id}", get(campaigns::campaign_page))
        .route("/api/c/{id}", get(campaigns::campaign_json))
        .route("/c/{id}/l/{layer}", get(layer::show))
        .route("/api/c/{id}/l/{layer}", get(layer::json))
        .route("/c/{id}/l/{layer}/units.csv", get(layer::csv))
        .route("/c/{id}/l/{layer}/units.json", get(layer::json_download))
        .route("/c/{id}/l/{layer}/units.parquet", get(layer::parquet))
        .route("/c/{id}/l/{layer}/compare", get(unit::compare_page))
        .route("/c/{id}/l/{layer}/u/{filter}", get(unit::show))
        .route(
            "/c/{id}/l/{layer}/u/{filter}/record.json",
            get(unit::record_download),
        )
        .route("/api/c/{id}/l/{layer}/u/{filter}", get(unit::record_json))
        .route("/a/{job}/{kind}/{sha256}", get(artifacts::get))
        .route_layer(axum::middleware::from_fn_with_state(
            web.clone(),
            auth::require,
        ));
    Router::new()
        .merge(guarded)
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/static/{file}", get(assets::get))
        .route("/favicon.ico", get(assets::favicon))
        .with_state(web)
}
