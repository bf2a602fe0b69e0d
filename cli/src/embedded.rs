//! The embedded coordinator: the real coordinator, in this process, on a SQLite file in a data
//! directory, listening on a random loopback port with fresh random tokens. `vephys local` runs
//! campaigns on it; `--data-dir` lets every other command read the same data afterwards.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rand::distributions::{Alphanumeric, DistString};
use tokio::net::TcpListener;
use vephys_coordinator::auth::Tokens;
use vephys_coordinator::metrics::Metrics;
use vephys_coordinator::server::{serve_grpc, spawn_reaper, Settings};
use vephys_coordinator::store::{Connect, Policy, Store};

pub struct Embedded {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub user_token: String,
    pub worker_token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    reaper: tokio::task::JoinHandle<()>,
}

/// Where things live in a data directory.
pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    pub fn new(root: &Path) -> Result<DataDir> {
        let root = std::path::absolute(root)
            .with_context(|| format!("cannot resolve --data-dir {}", root.display()))?;
        Ok(DataDir { root })
    }

    pub fn database(&self) -> PathBuf {
        self.root.join("vephys.db")
    }

    pub fn objects_url(&self) -> String {
        format!("file://{}", self.root.join("objects").display())
    }

    pub fn report(&self) -> PathBuf {
        self.root.join("report")
    }
}

impl Embedded {
    /// Opens (creating if needed) the data directory's database and serves it. `lease` is how
    /// long a worker's lease lasts without a heartbeat.
    pub async fn start(data: &DataDir, lease: Duration) -> Result<Embedded> {
        std::fs::create_dir_all(&data.root)
            .with_context(|| format!("cannot create the data directory {}", data.root.display()))?;
        let url = format!("sqlite://{}", data.database().display());
        let policy = Policy {
            lease_ms: lease.as_millis() as i64,
            retry_base_ms: 2_000,
            retry_max_ms: 60_000,
        };
        let store = Arc::new(
            Store::open(
                Connect {
                    url: &url,
                    max_connections: 4,
                },
                policy,
            )
            .await
            .with_context(|| format!("cannot open the database {}", data.database().display()))?,
        );
        let metrics = Arc::new(Metrics::new());
        let token = || Alphanumeric.sample_string(&mut rand::thread_rng(), 32);
        let (user_token, worker_token) = (token(), token());
        let settings = Settings {
            tokens: Tokens::new(Some(user_token.clone()), Some(worker_token.clone())),
            watch_interval: Duration::from_millis(250),
            tls: None,
        };
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot listen on a loopback port")?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let reaper = spawn_reaper(store.clone(), metrics.clone(), Duration::from_secs(1));
        let server = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = serve_grpc(store, metrics, settings, listener, shutdown).await {
                eprintln!("error: the embedded coordinator stopped: {e}");
            }
        });
        Ok(Embedded {
            url: format!("http://{addr}"),
            user_token,
            worker_token,
            stop: Some(stop),
            server,
            reaper,
        })
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.reaper.abort();
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.server).await;
    }
}
