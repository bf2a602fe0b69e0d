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
use vephys_coordinator::server::{serve_grpc, spawn_reaper, Settings};
use vephys_coordinator::store::{Connect, Policy, Store};

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
        Store::open(connect, policy)
            .await
            .context("cannot open the database")?,
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
    let settings = Settings {
        tokens: Tokens::new(config.user_token.clone(), config.worker_token.clone()),
        watch_interval: Duration::from_millis(500),
        tls,
    };

    let grpc = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let http = TcpListener::bind(config.http)
        .await
        .with_context(|| format!("cannot listen on {}", config.http))?;
    tracing::info!(grpc = %config.listen, http = %config.http, database = %config.database_url.split('@').next_back().unwrap_or(""), "coordinator up");

    let reaper = spawn_reaper(
        store.clone(),
        metrics.clone(),
        Duration::from_secs(config.reap_seconds.max(1)),
    );
    let router = vephys_coordinator::http::router(store.clone(), metrics.clone());
    let http_server = tokio::spawn(async move {
        axum::serve(http, router)
            .with_graceful_shutdown(shutdown_signal())
            .await
    });
    serve_grpc(store.clone(), metrics, settings, grpc, shutdown_signal())
        .await
        .context("grpc server failed")?;
    reaper.abort();
    http_server
        .await
        .context("http server panicked")?
        .context("http server failed")?;
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
