//! `vephys-coordinator`: see `--help`, and docs/coordinator.md.

use anyhow::Context;
use clap::Parser;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::transport::{Identity, ServerTlsConfig};
use tracing_subscriber::EnvFilter;
use vephys_coordinator::auth::Tokens;
use vephys_coordinator::config::Config;
use vephys_coordinator::metrics::Metrics;
use vephys_coordinator::server::{
    serve_grpc_with_options, spawn_reaper, DbHealth, ServeOptions, Settings,
};
use vephys_coordinator::store::{Connect, DatabaseTls, Limits, Policy, Store};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if config.dump_config {
        print!("{}", config.dump());
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&config.log).context("--log is not a valid filter")?)
        .init();
    config.check_exposure().map_err(anyhow::Error::msg)?;

    let policy = Policy {
        lease_ms: (config.lease_seconds * 1000) as i64,
        retry_base_ms: (config.retry_base_seconds * 1000) as i64,
        retry_max_ms: (config.retry_max_seconds * 1000) as i64,
    };
    let connect = Connect {
        url: &config.database_url,
        max_connections: config.database_max_connections,
    };
    let store = Arc::new(
        Store::open_with_tls(
            connect,
            DatabaseTls {
                ca: config.database_ca.as_deref(),
            },
            policy,
        )
        .await
        .context("cannot open the database")?
        .with_limits(Limits {
            max_campaign_jobs: config.max_campaign_jobs,
        }),
    );
    if config.migrate_only {
        // Store::open has applied every embedded migration not yet in _sqlx_migrations.
        let (applied, latest): (i64, Option<i64>) =
            sqlx::query_as("SELECT COUNT(*), MAX(version) FROM _sqlx_migrations")
                .fetch_one(store.pool())
                .await
                .context("cannot read the migration history")?;
        tracing::info!(
            database = %config.database_url.split('@').next_back().unwrap_or(""),
            applied,
            latest = latest.unwrap_or(0),
            "database migrated; exiting (--migrate-only)"
        );
        store.close().await;
        return Ok(());
    }
    let metrics = Arc::new(Metrics::new());

    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let cert = std::fs::read(cert)
                .with_context(|| format!("cannot read --tls-cert {}", cert.display()))?;
            let key = std::fs::read(key)
                .with_context(|| format!("cannot read --tls-key {}", key.display()))?;
            Some(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
        }
        _ => None,
    };
    if config.user_token.is_none() || config.worker_token.is_none() {
        tracing::warn!(
            "a user or worker token is unset: that api is open to anyone who can reach --listen"
        );
    }
    let options = ServeOptions {
        max_streams: config.max_streams as usize,
        ..ServeOptions::default()
    };
    let settings = Settings {
        tokens: Tokens::new(config.user_token.clone(), config.worker_token.clone()),
        watch_interval: Duration::from_millis(500),
        tls,
    };

    // The results browser: images come from the workers' store, pages ask for the user token.
    let mut web = vephys_coordinator::web::Settings::new(
        config.store.as_deref(),
        config.s3_endpoint.clone(),
        config.user_token.clone(),
    )
    .context("cannot open --store")?;
    // open event streams end when the server stops, so shutdown does not wait for browser tabs
    let (stop_events, events_stopped) = tokio::sync::watch::channel(false);
    web.shutdown = Some(events_stopped);
    if web.objects.is_none() {
        tracing::warn!("no --store: the results browser shows no images");
    }

    let grpc = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let http = TcpListener::bind(config.http)
        .await
        .with_context(|| format!("cannot listen on {}", config.http))?;
    tracing::info!(grpc = %config.listen, http = %config.http, ui = %format!("http://{}/", config.http), database = %config.database_url.split('@').next_back().unwrap_or(""), "coordinator up");

    let reaper = spawn_reaper(
        store.clone(),
        metrics.clone(),
        Duration::from_secs(config.reap_seconds.max(1)),
    );
    let health = DbHealth::spawn(
        store.clone(),
        Duration::from_secs_f64(config.readiness_check_seconds),
        Duration::from_secs_f64(config.readiness_timeout_seconds),
    );
    let router = vephys_coordinator::http::router(store.clone(), metrics.clone())
        .merge(vephys_coordinator::http::readiness_router(health.clone()))
        .merge(vephys_coordinator::web::router(store.clone(), web));
    // One signal stops both servers; each waits for what is in flight, up to the deadline.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing requests in flight");
        let _ = stop.send(true);
        let _ = stop_events.send(true);
    });
    let signalled = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let http_stop = signalled(stopping.clone());
    let http_server = tokio::spawn(async move {
        axum::serve(http, router)
            .with_graceful_shutdown(http_stop)
            .await
    });
    let grpc_server = serve_grpc_with_options(
        store.clone(),
        metrics,
        settings,
        options,
        health,
        grpc,
        signalled(stopping.clone()),
    );
    let deadline = Duration::from_secs_f64(config.shutdown_seconds);
    let past_deadline = async move {
        signalled(stopping).await;
        tokio::time::sleep(deadline).await;
    };
    tokio::select! {
        served = grpc_server => served.context("grpc server failed")?,
        () = past_deadline => tracing::warn!(
            deadline_s = deadline.as_secs_f64(),
            "shutdown deadline passed with requests or streams still open; closing them"
        ),
    }
    reaper.abort();
    match tokio::time::timeout(Duration::from_secs(1), http_server).await {
        Ok(joined) => joined
            .context("http server panicked")?
            .context("http server failed")?,
        Err(_) => tracing::warn!("the http server had connections open at the deadline; closed"),
    }
    store.close().await;
    tracing::info!("coordinator stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("can install a SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
