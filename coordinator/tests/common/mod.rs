//! Shared test fixtures: fresh databases (Postgres and SQLite), a test model, an in-process
//! coordinator on a real TCP port.
#![allow(dead_code)] // each test binary uses a different subset

use std::sync::Arc;
use std::time::Duration;
use vephys_coordinator::auth::Tokens;
use vephys_coordinator::metrics::Metrics;
use vephys_coordinator::server::{serve_grpc_with_options, DbHealth, ServeOptions, Settings};
use vephys_coordinator::store::{Connect, Policy, Store};
use vephys_proto::v1::{Layer, Model, RegisterWorkerRequest};

/// `both!(PREFIX, THREADS; test_a, test_b)` runs each `async fn test_a(Backend, &str)` of the
/// test file twice: on Postgres (database `PREFIX` + name, so test binaries never share one)
/// and on SQLite, each on a multi-threaded runtime of THREADS workers.
#[allow(unused_macros)] // as dead_code above
macro_rules! both {
    ($prefix:literal, $threads:literal; $($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
                async fn $name() {
                    super::$name(super::Backend::Postgres, concat!($prefix, stringify!($name))).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite, stringify!($name)).await
                }
            )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use both;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A store on a fresh database, and what keeps that database alive.
pub struct TestDb {
    pub store: Store,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// Another store on the same database: a second coordinator.
    pub async fn second_store(&self, policy: Policy) -> Store {
        Store::open(
            Connect {
                url: &self.url,
                max_connections: 8,
            },
            policy,
        )
        .await
        .expect("second store opens")
    }
}

/// Policy for tests: no retry delay unless a test asks, a lease of a minute.
pub fn policy() -> Policy {
    Policy {
        lease_ms: 60_000,
        retry_base_ms: 0,
        retry_max_ms: 0,
    }
}

/// Opens a fresh, migrated database named after the test. Postgres needs
/// VEPHYS_TEST_DATABASE_URL (`bash scripts/postgres.sh` prints it); without it the test fails.
pub async fn open(backend: Backend, name: &str, policy: Policy) -> TestDb {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("vephys.db").display());
            let store = Store::open(
                Connect {
                    url: &url,
                    max_connections: 4,
                },
                policy,
            )
            .await
            .expect("sqlite store opens");
            TestDb {
                store,
                url,
                _dir: Some(dir),
            }
        }
        Backend::Postgres => {
            let url = vephys_coordinator::testing::fresh_postgres(name).await;
            let store = Store::open(
                Connect {
                    url: &url,
                    max_connections: 16,
                },
                policy,
            )
            .await
            .expect("postgres store opens");
            TestDb {
                store,
                url,
                _dir: None,
            }
        }
    }
}

/// A small model: `conv1` (alias `features.0`) with 8 channels, `wide` with 10,000.
pub fn test_model(name: &str) -> Model {
    Model {
        name: name.into(),
        architecture: "testnet".into(),
        input_size: 32,
        weights_sha256: "ab".repeat(32),
        weights_uri: String::new(),
        layers: vec![
            Layer {
                name: "conv1".into(),
                aliases: vec!["features.0".into()],
                channels: 8,
                height: 16,
                width: 16,
            },
            Layer {
                name: "conv2".into(),
                aliases: vec![],
                channels: 4,
                height: 8,
                width: 8,
            },
            Layer {
                name: "wide".into(),
                aliases: vec![],
                channels: 10_000,
                height: 1,
                width: 1,
            },
        ],
        manifest_json: String::new(),
    }
}

pub fn worker(name: &str) -> RegisterWorkerRequest {
    RegisterWorkerRequest {
        name: name.into(),
        device: "cpu".into(),
        memory_bytes: 1 << 30,
        loaded_models: vec![],
        models: vec![],
    }
}

/// A campaign spec over the test model.
/// testnet takes 32 px images, so gratings stay below its Nyquist limit of 16 cycles.
pub fn spec(name: &str, layers: &str, filters: &str, probes: &str) -> String {
    format!(
        "name = \"{name}\"\nmodel = \"testnet\"\nlayers = {layers}\nfilters = {filters}\nprobes = {probes}\n\
         grating = {{ spatial_frequencies = [2, 4, 8] }}\n[synthesis]\nsteps = 8\n"
    )
}

/// An in-process coordinator on 127.0.0.1:0 serving gRPC over real TCP.
pub struct Coordinator {
    pub addr: std::net::SocketAddr,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Coordinator {
    pub async fn start(store: Store, tokens: Tokens) -> Coordinator {
        Self::start_with(store, tokens, ServeOptions::default()).await
    }

    /// [`Coordinator::start`] with the stream limit and keepalive given.
    pub async fn start_with(store: Store, tokens: Tokens, options: ServeOptions) -> Coordinator {
        let store = Arc::new(store);
        let metrics = Arc::new(Metrics::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let settings = Settings {
            tokens,
            watch_interval: Duration::from_millis(20),
            tls: None,
        };
        let (s, m) = (store.clone(), metrics.clone());
        let health = DbHealth::spawn(
            s.clone(),
            DbHealth::DEFAULT_INTERVAL,
            DbHealth::DEFAULT_TIMEOUT,
        );
        tokio::spawn(async move {
            let shutdown = async {
                rx.await.ok();
            };
            serve_grpc_with_options(s, m, settings, options, health, listener, shutdown)
                .await
                .expect("grpc server runs");
        });
        Coordinator {
            addr,
            store,
            metrics,
            shutdown: Some(tx),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
