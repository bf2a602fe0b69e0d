//! The worker daemon's lifecycle, in-process, against the real coordinator over gRPC on
//! loopback: register (and say so in the ready file), lease, compute on the real
//! EfficientNet-Lite0, upload, complete, stop. Then the faults a cluster brings, each of which
//! must cost no attempt and lose no result: the coordinator's database unavailable (Postgres
//! behind a proxy that fails), the coordinator itself gone and back, a store that fails for a
//! while, weights this worker cannot get, a worker restarted with completions in its spool. And
//! one unreadable input fails its own job only.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use vephys_coordinator::auth::Tokens;
use vephys_coordinator::metrics::Metrics;
use vephys_coordinator::server::{
    serve_grpc_with_options, spawn_reaper, DbHealth, ServeOptions, Settings,
};
use vephys_coordinator::store::{Connect, Policy, Store};
use vephys_coordinator::testing::{fresh_postgres, Proxy};
use vephys_objects::{sha256_hex, Objects, S3Options};
use vephys_proto::params::PrecisionChoice;
use vephys_proto::v1::{Artifact, JobCompletion, JobOutcome, Provenance, RegisterWorkerRequest};
use vephys_worker::daemon::{self, Config, DaemonError, Stop};

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info,sqlx=warn")
        .with_test_writer()
        .try_init();
}

/// A coordinator served in this process, which the test can stop and start again on the same
/// port and database.
struct Coordinator {
    database: String,
    policy: Policy,
    addr: std::net::SocketAddr,
    running: Option<Running>,
}

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
    reaper: tokio::task::JoinHandle<()>,
}

impl Coordinator {
    async fn start(database: &str, policy: Policy) -> Coordinator {
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let mut c = Coordinator {
            database: database.to_string(),
            policy,
            addr,
            running: None,
        };
        c.up().await;
        c
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn up(&mut self) {
        assert!(self.running.is_none());
        let store = Arc::new(
            Store::open(
                Connect {
                    url: &self.database,
                    max_connections: 4,
                },
                self.policy.clone(),
            )
            .await
            .expect("the coordinator's store opens"),
        );
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("the port is free again");
        let metrics = Arc::new(Metrics::new());
        let settings = Settings {
            tokens: Tokens::new(None, Some("worker-secret".into())),
            watch_interval: Duration::from_millis(100),
            tls: None,
        };
        let health = DbHealth::spawn(
            store.clone(),
            Duration::from_millis(500),
            Duration::from_millis(500),
        );
        let reaper = spawn_reaper(store.clone(), metrics.clone(), Duration::from_millis(200));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let shutdown = async {
                stopped.await.ok();
            };
            let options = ServeOptions::default();
            serve_grpc_with_options(
                store, metrics, settings, options, health, listener, shutdown,
            )
            .await
            .expect("the coordinator serves");
        });
        self.running = Some(Running {
            stop,
            server,
            reaper,
        });
    }

    /// Stops serving (as a crashed coordinator would: in-flight calls are cut).
    async fn down(&mut self) {
        let running = self.running.take().expect("the coordinator runs");
        let _ = running.stop.send(());
        running.reaper.abort();
        running.server.abort();
        let _ = running.server.await;
    }
}

/// One test's world: a database, a coordinator on it, a file store, and a direct store for
/// the test's own reads and writes.
struct World {
    dir: tempfile::TempDir,
    coordinator: Coordinator,
    store: Store,
    objects: Objects,
    store_url: String,
}

impl World {
    async fn sqlite(policy: Policy) -> World {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("vephys.db").display());
        Self::on(dir, url.clone(), url, policy).await
    }

    /// Postgres, with the coordinator's connections through a proxy the test can break.
    async fn postgres_behind_proxy(name: &str, policy: Policy) -> (World, Proxy) {
        let dir = tempfile::tempdir().unwrap();
        let url = fresh_postgres(name).await;
        let (proxy, proxied) = Proxy::in_front_of(&url).await;
        let world = Self::on(dir, proxied, url, policy).await;
        (world, proxy)
    }

    /// The coordinator on `coordinator_db`, the test's own store on `direct_db` (the same
    /// database, perhaps not through the proxy).
    async fn on(
        dir: tempfile::TempDir,
        coordinator_db: String,
        direct_db: String,
        policy: Policy,
    ) -> World {
        let store = Store::open(
            Connect {
                url: &direct_db,
                max_connections: 4,
            },
            policy.clone(),
        )
        .await
        .unwrap();
        let coordinator = Coordinator::start(&coordinator_db, policy).await;
        let store_url = format!("file://{}", dir.path().join("objects").display());
        let objects = Objects::open(&store_url, &S3Options::default()).unwrap();
        World {
            dir,
            coordinator,
            store,
            objects,
            store_url,
        }
    }

    /// A worker's settings: the real EfficientNet-Lite0 weights (and no others), on the CPU.
    fn config(&self, name: &str) -> Config {
        let weights = self.dir.path().join("weights");
        std::fs::create_dir_all(&weights).unwrap();
        let link = weights.join("efficientnet_lite0.safetensors");
        if !link.exists() {
            std::os::unix::fs::symlink(common::lite0_weights(), &link).unwrap();
        }
        let home = self.dir.path().join(name);
        Config {
            coordinator: self.coordinator.url(),
            token: Some("worker-secret".into()),
            ca_cert: None,
            store: self.store_url.clone(),
            s3_endpoint: None,
            name: name.into(),
            device: tch::Device::Cpu,
            precision: PrecisionChoice::Fp32,
            weights_dir: weights,
            model_dirs: vec![],
            cache_dir: home.join("cache"),
            spool_dir: home.join("spool"),
            max_jobs: 2,
            ready_file: Some(home.join("ready")),
        }
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(self.store.pool())
            .await
            .unwrap()
    }

    /// Waits until no job of the database is unfinished.
    async fn finished(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let open =
            "SELECT COUNT(*) FROM jobs WHERE state NOT IN ('succeeded', 'failed', 'cancelled')";
        while self.count(open).await > 0 {
            assert!(Instant::now() < deadline, "jobs still open after {limit:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn until(&self, what: &str, sql: &str, at_least: i64, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.count(sql).await < at_least {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every recorded artifact is in the store with its recorded sha256, under the winning
    /// attempt's key.
    async fn artifacts_are_whole(&self) {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT a.uri, a.sha256, r.attempt FROM artifacts a JOIN results r ON r.job_id = a.job_id",
        )
        .fetch_all(self.store.pool())
        .await
        .unwrap();
        assert!(!rows.is_empty());
        for (uri, sha, attempt) in rows {
            let bytes = self.objects.get(&uri).await.unwrap();
            assert_eq!(sha256_hex(&bytes), sha, "{uri}");
            assert!(uri.contains(&format!("/attempt_{attempt}/")), "{uri}");
        }
    }
}

fn spec(name: &str, probes: &str, filters: &str, steps: u32) -> String {
    format!(
        "name = \"{name}\"\nmodel = \"efficientnet_lite0\"\nlayers = [\"blocks.4\"]\n\
         filters = \"{filters}\"\nprobes = {probes}\nmax_attempts = 2\n\
         [synthesis]\nsteps = {steps}\nimage_size = 64\nbatch_size = 2\n\
         [rotation]\nstep_degrees = 90.0\n[grating]\norientations = 4\nphases = 2\n"
    )
}

fn spawn(config: Config) -> (Arc<Stop>, tokio::task::JoinHandle<Result<(), DaemonError>>) {
    let stop = Stop::new();
    let task = tokio::spawn(daemon::run(config, stop.clone()));
    (stop, task)
}

async fn ready(path: &Path) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(text) = tokio::fs::read_to_string(path).await {
            return serde_json::from_str(&text).expect("the ready file is JSON");
        }
        assert!(
            Instant::now() < deadline,
            "no ready file at {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spool_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "pb"))
                .collect()
        })
        .unwrap_or_default()
}

async fn stopped(stop: &Stop, task: tokio::task::JoinHandle<Result<(), DaemonError>>) {
    stop.escalate();
    let ran = tokio::time::timeout(Duration::from_secs(120), task)
        .await
        .expect("the daemon stops after its batch")
        .expect("the daemon does not panic");
    ran.expect("the daemon stops cleanly");
}

fn policy(lease_ms: i64) -> Policy {
    Policy {
        lease_ms,
        retry_base_ms: 100,
        retry_max_ms: 1000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_registers_leases_computes_uploads_completes_and_stops() {
    init_logs();
    let world = World::sqlite(policy(30_000)).await;
    let config = world.config("w1");
    let ready_file = config.ready_file.clone().unwrap();
    let spool = config.spool_dir.clone();
    let (stop, task) = spawn(config);

    // readiness: the ready file, written after the coordinator registered the worker
    let said = ready(&ready_file).await;
    assert_eq!(said["name"], "w1");
    assert_eq!(said["models"], serde_json::json!(["efficientnet_lite0"]));
    let registered: i64 = world
        .count("SELECT COUNT(*) FROM workers WHERE name = 'w1'")
        .await;
    assert_eq!(registered, 1);
    let model = world
        .store
        .model("efficientnet_lite0")
        .await
        .unwrap()
        .expect("the worker added its model");
    assert_eq!(
        model.weights_sha256,
        sha256_hex(&std::fs::read(common::lite0_weights()).unwrap())
    );

    let probes = "[\"synthesis\", \"baseline\", \"rotation\", \"grating\"]";
    world
        .store
        .submit_campaign(&spec("life", probes, "0..3", 8))
        .await
        .unwrap();
    world.finished(Duration::from_secs(300)).await;
    assert_eq!(
        world
            .count("SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'")
            .await,
        12
    );
    assert_eq!(world.count("SELECT COUNT(*) FROM results").await, 12);
    assert_eq!(
        world
            .count("SELECT COUNT(*) FROM attempts WHERE outcome <> 'succeeded'")
            .await,
        0
    );
    world.artifacts_are_whole().await;
    assert!(
        spool_files(&spool).is_empty(),
        "answered completions leave the spool"
    );

    stopped(&stop, task).await;
    assert!(!ready_file.exists(), "a stopped worker is not ready");
}

/// The coordinator's database goes away for longer than a lease, then the coordinator itself
/// does: the worker keeps its results, retries, and every job ends with one result from its
/// first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_of_the_database_and_the_coordinator_cost_nothing() {
    init_logs();
    let lease_ms = 3_000;
    let (mut world, proxy) = World::postgres_behind_proxy("daemon_outages", policy(lease_ms)).await;
    let config = world.config("w1");
    let spool = config.spool_dir.clone();
    let ready_file = config.ready_file.clone().unwrap();
    let (stop, task) = spawn(config);
    ready(&ready_file).await; // the worker has registered its model, which the spec names
    world
        .store
        .submit_campaign(&spec("outages", "[\"synthesis\"]", "0..12", 120))
        .await
        .unwrap();

    world
        .until(
            "a first result",
            "SELECT COUNT(*) FROM results",
            1,
            Duration::from_secs(300),
        )
        .await;
    proxy.refuse();
    tokio::time::sleep(Duration::from_millis(2 * lease_ms as u64)).await;
    proxy.restore();

    world
        .until(
            "more results",
            "SELECT COUNT(*) FROM results",
            4,
            Duration::from_secs(300),
        )
        .await;
    let left = world
        .count("SELECT COUNT(*) FROM jobs WHERE state <> 'succeeded'")
        .await;
    assert!(
        left > 0,
        "the campaign finished before the coordinator could be stopped; give it more jobs"
    );
    world.coordinator.down().await;
    tokio::time::sleep(Duration::from_millis(2 * lease_ms as u64)).await;
    world.coordinator.up().await;

    world.finished(Duration::from_secs(300)).await;
    assert!(!task.is_finished(), "the worker exited during an outage");
    assert_eq!(
        world
            .count("SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'")
            .await,
        12
    );
    assert_eq!(
        world
            .count("SELECT COUNT(*) FROM results WHERE attempt = 1")
            .await,
        12,
        "a result was recomputed"
    );
    assert_eq!(
        world
            .count("SELECT COUNT(*) FROM attempts WHERE outcome <> 'succeeded'")
            .await,
        0
    );
    world.artifacts_are_whole().await;
    stopped(&stop, task).await;
    assert!(spool_files(&spool).is_empty());
}

/// The test as a fake synthesis worker: completes the campaign's synthesis jobs with max
/// images it made itself (so it can make one unreadable), stored outside the campaign's keys.
async fn fake_synthesis(world: &World, images: &[Vec<u8>]) {
    let fake = world
        .store
        .register_worker(&RegisterWorkerRequest {
            name: "fake".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let jobs = world
        .store
        .lease(fake, 64, &[], world.store.now_ms())
        .await
        .unwrap()
        .jobs;
    assert_eq!(jobs.len(), images.len());
    let mut done = Vec::new();
    for (job, bytes) in jobs.iter().zip(images) {
        // keyed by attempt as a worker's uploads are (the token is the attempt number)
        let key = format!("fake/attempt_{}/{}.png", job.token, job.filter);
        let stored = world.objects.put(&key, bytes.clone()).await.unwrap();
        done.push(JobCompletion {
            job_id: job.job_id,
            token: job.token,
            result: Some(JobOutcome {
                max_act: 1.0,
                mean_act: 1.0,
                status: "ok".into(),
                derived_json: "{}".into(),
                provenance: Some(Provenance {
                    weights_sha256: job.weights_sha256.clone(),
                    params_json: job.params_json.clone(),
                    worker: "fake".into(),
                    ..Default::default()
                }),
            }),
            points: vec![],
            artifacts: vec![Artifact {
                kind: "max_image".into(),
                uri: stored.uri,
                sha256: stored.sha256,
                bytes: stored.bytes,
            }],
        });
    }
    world
        .store
        .complete(fake, &done, world.store.now_ms())
        .await
        .unwrap();
}

fn png(size: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(size, size, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 4) as u8, 128])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// One max image is not a PNG: that job fails (and uses its attempts), the others of its batch
/// succeed. Meanwhile the store refuses every write for a while: the uploads wait for it, and
/// no job uses an attempt for that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_input_fails_its_job_only_and_a_failing_store_costs_nothing() {
    init_logs();
    let world = World::sqlite(policy(30_000)).await;
    // the worker registers the model; the test's campaign needs it registered first
    let config = world.config("w1");
    let ready_file = config.ready_file.clone().unwrap();
    let (stop, task) = spawn(config);
    ready(&ready_file).await;
    // held back: no batch may start before the store breaks below
    stop.escalate();
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    world
        .store
        .submit_campaign(&spec("inputs", "[\"baseline\"]", "0..4", 4))
        .await
        .unwrap();
    let campaign = 1;
    let images = [png(64), png(64), b"not a png".to_vec(), png(64)];
    fake_synthesis(&world, &images).await;

    // the store refuses writes under the campaign's keys: a file where its directory goes
    let blocked = world
        .dir
        .path()
        .join(format!("objects/campaigns/{campaign}"));
    std::fs::create_dir_all(blocked.parent().unwrap()).unwrap();
    std::fs::write(&blocked, b"in the way").unwrap();
    let (stop, task) = spawn(world.config("w1"));
    // two batches of two: the first upload attempts fail for a few seconds
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(world.count("SELECT COUNT(*) FROM results r JOIN jobs j ON j.id = r.job_id WHERE j.probe = 'baseline'").await, 0);
    std::fs::remove_file(&blocked).unwrap();

    world.finished(Duration::from_secs(300)).await;
    let state = |filter: i64| {
        let store = &world.store;
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT state FROM jobs WHERE probe = 'baseline' AND filter = $1",
            )
            .bind(filter)
            .fetch_one(store.pool())
            .await
            .unwrap()
        }
    };
    assert_eq!(
        state(2).await,
        "failed",
        "the job with the unreadable image"
    );
    for filter in [0, 1, 3] {
        assert_eq!(
            state(filter).await,
            "succeeded",
            "filter {filter} shared a batch with the bad image"
        );
    }
    let charged = world
        .count("SELECT COUNT(*) FROM attempts a JOIN jobs j ON j.id = a.job_id WHERE a.outcome = 'failed' AND j.filter <> 2")
        .await;
    assert_eq!(charged, 0, "the store's failure cost an attempt");
    let error: String =
        sqlx::query_scalar("SELECT last_error FROM jobs WHERE probe = 'baseline' AND filter = 2")
            .fetch_one(world.store.pool())
            .await
            .unwrap();
    assert!(error.contains("cannot be used"), "{error}");
    world.artifacts_are_whole().await;
    stopped(&stop, task).await;
}

/// A campaign pinned to weights this worker does not hold (and cannot fetch) is given back,
/// using no attempt, and the worker pauses between leases instead of spinning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_the_worker_cannot_get_are_given_back_without_using_attempts() {
    init_logs();
    let world = World::sqlite(policy(30_000)).await;
    let mut model = vephys_proto::v1::Model {
        name: "efficientnet_lite0".into(),
        architecture: "efficientnet_lite0".into(),
        input_size: 224,
        weights_sha256: "ab".repeat(32),
        ..Default::default()
    };
    model.layers.push(vephys_proto::v1::Layer {
        name: "blocks.4".into(),
        aliases: vec![],
        channels: 40,
        height: 28,
        width: 28,
    });
    world.store.register_model(&model).await.unwrap();
    world
        .store
        .submit_campaign(&spec("elsewhere", "[\"synthesis\"]", "0..2", 4))
        .await
        .unwrap();
    let (stop, task) = spawn(world.config("w1"));
    tokio::time::sleep(Duration::from_secs(8)).await;

    let released = world
        .count("SELECT COUNT(*) FROM attempts WHERE released")
        .await;
    assert!(released >= 2, "the jobs were not given back: {released}");
    assert!(
        released <= 16,
        "{released} releases in 8 s: the worker does not back off"
    );
    assert_eq!(
        world
            .count("SELECT COUNT(*) FROM attempts WHERE NOT released")
            .await,
        0
    );
    assert_eq!(
        world
            .count("SELECT COUNT(*) FROM jobs WHERE state = 'failed'")
            .await,
        0
    );
    let error: String = sqlx::query_scalar("SELECT error FROM attempts LIMIT 1")
        .fetch_one(world.store.pool())
        .await
        .unwrap();
    assert!(
        error.contains("lacks the weights")
            && !error.contains(&sha256_hex(
                &std::fs::read(common::lite0_weights()).unwrap()
            )),
        "{error}"
    );
    stopped(&stop, task).await;
}

/// A worker computes while the coordinator is down and is then stopped for good: its
/// completion stays in the spool. Started again (a new process, a new worker id) with the same
/// spool, it sends it, and the results count as the first attempt's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_sends_what_its_spool_kept() {
    init_logs();
    let mut world = World::sqlite(policy(60_000)).await;
    let config = world.config("w1");
    let spool = config.spool_dir.clone();
    let (stop, task) = spawn(config.clone());
    ready(config.ready_file.as_ref().unwrap()).await;
    world
        .store
        .submit_campaign(&spec("spool", "[\"synthesis\"]", "0..2", 200))
        .await
        .unwrap();
    world
        .until(
            "the batch leased",
            "SELECT COUNT(*) FROM jobs WHERE state = 'leased'",
            2,
            Duration::from_secs(60),
        )
        .await;
    world.coordinator.down().await;
    let deadline = Instant::now() + Duration::from_secs(300);
    while spool_files(&spool).is_empty() {
        assert!(Instant::now() < deadline, "no completion was spooled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // a second stop: the completion cannot be sent, the worker leaves it in the spool
    stop.escalate();
    stop.escalate();
    let _ = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the worker stops");
    assert_eq!(spool_files(&spool).len(), 1);

    world.coordinator.up().await;
    let (stop, task) = spawn(world.config("w1"));
    world.finished(Duration::from_secs(120)).await;
    assert!(spool_files(&spool).is_empty());
    assert_eq!(
        world
            .count("SELECT COUNT(*) FROM results WHERE attempt = 1")
            .await,
        2
    );
    stopped(&stop, task).await;
}
