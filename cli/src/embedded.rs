//! The embedded coordinator: the real coordinator, in this process, on a SQLite file in a data
//! directory, listening on a random loopback port with fresh random tokens. `vephys local` runs
//! campaigns on it; `--data-dir` lets every other command read the same data afterwards. Its
//! HTTP side serves the results browser (images from the data directory's object store, behind
//! the same user token): `vephys local` prints its address, `vephys --data-dir DIR ui` keeps it
//! serving until Ctrl-C.

use std::net::SocketAddr;
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
    /// The results browser, `http://127.0.0.1:PORT/`
    pub ui_url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// Tells the HTTP side (and its live event streams) to stop.
    stop_http: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    http: tokio::task::JoinHandle<()>,
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
    /// Opens (creating if needed) the data directory's database and serves it, the results
    /// browser on a random loopback port. `lease` is how long a worker's lease lasts without a
    /// heartbeat.
    pub async fn start(data: &DataDir, lease: Duration) -> Result<Embedded> {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::start_with_http(data, lease, any_port).await
    }

    /// [`Embedded::start`] with the results browser on `http`.
    pub async fn start_with_http(
        data: &DataDir,
        lease: Duration,
        http: SocketAddr,
    ) -> Result<Embedded> {
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
        let http_listener = TcpListener::bind(http).await.with_context(|| {
            format!("cannot serve the results browser on {http}; is the port in use? pick another with --http")
        })?;
        let http_addr = http_listener.local_addr()?;
        let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
        let mut web = vephys_coordinator::web::Settings::new(
            Some(&data.objects_url()),
            None,
            Some(user_token.clone()),
        )
        .context("cannot open the data directory's object store")?;
        web.shutdown = Some(http_stopped.clone());
        let router = vephys_coordinator::http::router(store.clone(), metrics.clone())
            .merge(vephys_coordinator::web::router(store.clone(), web));
        let http = tokio::spawn(async move {
            let mut stopped = http_stopped;
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(http_listener, router)
                .with_graceful_shutdown(shutdown)
                .await
            {
                eprintln!("error: the results browser stopped: {e}");
            }
        });
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
            ui_url: format!("http://{http_addr}/"),
            stop: Some(stop),
            stop_http,
            server,
            http,
            reaper,
        })
    }

    /// A link into the results browser that logs the browser in (the token is traded for a
    /// session cookie and dropped from the address bar): `path` is e.g. `c/1`.
    pub fn ui_login_url(&self, path: &str) -> String {
        format!("{}{path}?token={}", self.ui_url, self.user_token)
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.stop_http.send(true);
        self.reaper.abort();
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.server).await;
        if tokio::time::timeout(Duration::from_secs(2), &mut self.http)
            .await
            .is_err()
        {
            self.http.abort();
        }
    }
}

/// `vephys --data-dir DIR ui`: serves the data directory's results browser on `http` until
/// Ctrl-C (or SIGTERM), and prints where.
pub async fn serve_ui(dir: &Path, http: SocketAddr) -> Result<()> {
    let data = DataDir::new(dir)?;
    if !data.database().is_file() {
        anyhow::bail!(
            "{} holds no vephys database; run `vephys local --data-dir {}` first, or pass the \
             directory it used with --data-dir",
            dir.display(),
            dir.display()
        );
    }
    let embedded = Embedded::start_with_http(&data, Duration::from_secs(30), http).await?;
    println!("results browser: {}", embedded.ui_login_url(""));
    println!(
        "serving {} until Ctrl-C (the link logs the browser in; the token changes every start)",
        data.root.display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("stopping the results browser");
    embedded.shutdown().await;
    Ok(())
}
