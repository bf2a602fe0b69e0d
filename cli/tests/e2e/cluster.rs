//! A whole cluster on loopback for the distributed and chaos tests: a fresh Postgres database,
//! `vephys-coordinator` processes on it, worker processes and the S3 server scripts/test.sh
//! started (Garage).

use std::time::Duration;

use sqlx::{Connection, PgConnection, Row};
use vephys_objects::{Objects, S3Options};

use super::{binary, free_port, text, vephys, wait_for, weights_dir, Proc};

/// Where scripts/test.sh put Postgres and the S3 server.
pub struct Env {
    pub database: String,
    pub s3_endpoint: String,
    pub bucket: String,
}

pub fn env() -> Env {
    Env {
        database: var("VEPHYS_TEST_DATABASE_URL"),
        s3_endpoint: var("VEPHYS_TEST_S3_ENDPOINT"),
        bucket: var("VEPHYS_TEST_S3_BUCKET"),
    }
}

/// A variable scripts/test.sh sets.
pub fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set; run the tests through scripts/test.sh (it starts Postgres and Garage)")
    })
}

/// A fresh Postgres database for this test; its URL.
async fn fresh_database(base: &str, name: &str) -> String {
    let mut admin = PgConnection::connect(base)
        .await
        .expect("connect to Postgres");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let (server, _) = base.rsplit_once('/').expect("the url names a database");
    format!("{server}/{name}")
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub database: String,
    /// The first coordinator's gRPC URL.
    pub url: String,
    pub user_token: &'static str,
    pub worker_token: &'static str,
    pub store: String,
    pub s3_endpoint: String,
    pub coordinator: Proc,
}

impl Cluster {
    /// A coordinator on the cluster's database listening on `grpc` (its log: `NAME.log`,
    /// appended to, so a restarted coordinator keeps its predecessor's lines). Short leases and
    /// retries keep the tests quick.
    pub fn start_coordinator(&self, name: &str, grpc: u16) -> Proc {
        start_coordinator(self.dir.path(), &self.database, name, grpc)
    }

    /// A worker of the first coordinator.
    pub fn worker(&self, name: &str, extra: &[&str]) -> Proc {
        self.worker_of(&self.url, name, extra)
    }

    /// A worker of the coordinator at `url`, with no local weights (it fetches them from S3),
    /// its caches and spool under the test's directory, and its log in `NAME.log`.
    pub fn worker_of(&self, url: &str, name: &str, extra: &[&str]) -> Proc {
        let home = self.dir.path().join(name);
        let mut args: Vec<String> = [
            "serve",
            "--coordinator",
            url,
            "--store",
            &self.store,
            "--s3-endpoint",
            &self.s3_endpoint,
            "--device",
            "cpu",
            "--max-jobs",
            "2",
            "--name",
            name,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (flag, sub) in [
            ("--weights-dir", "no-weights"),
            ("--cache-dir", "cache"),
            ("--spool-dir", "spool"),
        ] {
            args.push(flag.into());
            args.push(home.join(sub).display().to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Proc::start(
            &binary("vephys-worker"),
            &args,
            &[
                ("VEPHYS_WORKER_TOKEN", self.worker_token.to_string()),
                ("VEPHYS_LOG", "info".into()),
            ],
            &self.dir.path().join(format!("{name}.log")),
        )
    }

    /// `vephys ARGS` against the first coordinator, as the user.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["--coordinator", &self.url, "--token", self.user_token];
        all.extend_from_slice(args);
        vephys(&all)
    }

    /// The logs of the named processes, for a failing assertion's message.
    pub fn logs(&self, names: &[&str]) -> String {
        names
            .iter()
            .map(|n| {
                let log = std::fs::read_to_string(self.dir.path().join(format!("{n}.log")));
                format!("--- {n}:\n{}", log.unwrap_or_default())
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn start_coordinator(dir: &std::path::Path, database: &str, name: &str, grpc: u16) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let mut args: Vec<String> = vec![
        "--database-url".into(),
        database.into(),
        "--listen".into(),
        format!("127.0.0.1:{grpc}"),
        "--http".into(),
        format!("127.0.0.1:{}", free_port()),
    ];
    for (flag, value) in [
        ("--lease-seconds", "4"),
        ("--reap-seconds", "1"),
        ("--retry-base-seconds", "1"),
    ] {
        args.push(flag.into());
        args.push(value.into());
    }
    let previous = std::fs::read(&log).unwrap_or_default();
    let proc = Proc::start(
        &binary("vephys-coordinator"),
        &args,
        &[
            ("VEPHYS_WORKER_TOKEN", "w-secret".into()),
            ("VEPHYS_USER_TOKEN", "u-secret".into()),
        ],
        &log,
    );
    if !previous.is_empty() {
        // Proc::start truncated the log; keep the predecessor's lines in front
        let fresh = std::fs::read(&log).unwrap_or_default();
        std::fs::write(
            &log,
            [previous, b"--- restarted\n".to_vec(), fresh].concat(),
        )
        .unwrap();
    }
    proc
}

/// A cluster with one coordinator on a fresh database called `name`, answering.
pub async fn start_cluster(env: &Env, name: &str) -> Cluster {
    let database = fresh_database(&env.database, name).await;
    let dir = tempfile::tempdir().unwrap();
    let grpc = free_port();
    let coordinator = start_coordinator(dir.path(), &database, "coordinator", grpc);
    let cluster = Cluster {
        url: format!("http://127.0.0.1:{grpc}"),
        database,
        user_token: "u-secret",
        worker_token: "w-secret",
        store: format!("s3://{}/{name}", env.bucket),
        s3_endpoint: env.s3_endpoint.clone(),
        coordinator,
        dir,
    };
    cluster.wait_answering(&cluster.url);
    cluster
}

impl Cluster {
    /// Waits until the coordinator at `url` answers the CLI.
    pub fn wait_answering(&self, url: &str) {
        wait_for("the coordinator", Duration::from_secs(30), || {
            vephys(&["--coordinator", url, "--token", self.user_token, "models"])
                .status
                .success()
                .then_some(())
        });
    }
}

/// Uploads the real weights to S3 and registers the model with their URI and sha256, so the
/// workers (which have no local weights) must fetch and check them.
pub async fn register_model_from_s3(cluster: &Cluster) {
    let weights = weights_dir().join("efficientnet_lite0.safetensors");
    let objects = Objects::open(
        &cluster.store,
        &S3Options {
            endpoint: Some(cluster.s3_endpoint.clone()),
        },
    )
    .unwrap();
    let stored = objects
        .put(
            "weights/efficientnet_lite0.safetensors",
            std::fs::read(&weights).unwrap(),
        )
        .await
        .unwrap();
    let layers = std::process::Command::new(binary("vephys-worker"))
        .args([
            "layers",
            "--model",
            "efficientnet_lite0",
            "--json",
            "--weights",
        ])
        .arg(&weights)
        .output()
        .unwrap();
    assert!(layers.status.success(), "{}", text(&layers.stderr));
    let mut model: serde_json::Value = serde_json::from_slice(&layers.stdout).unwrap();
    assert_eq!(model["weights_sha256"], stored.sha256.as_str());
    model["weights_uri"] = stored.uri.clone().into();
    let file = cluster.dir.path().join("model.json");
    std::fs::write(&file, model.to_string()).unwrap();
    let added = cluster.cli(&["models", "add", file.to_str().unwrap()]);
    assert!(added.status.success(), "{}", text(&added.stderr));
}

pub async fn query_i64(db: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query(sql)
        .fetch_one(db)
        .await
        .unwrap()
        .get::<i64, _>(0)
}

/// Jobs not yet in a final state.
pub const OPEN_JOBS: &str =
    "SELECT COUNT(*) FROM jobs WHERE state NOT IN ('succeeded', 'failed', 'cancelled')";

/// Waits until every job of the database is final; false if `limit` passed first.
pub async fn until_finished(db: &mut PgConnection, limit: Duration) -> bool {
    tokio::time::timeout(limit, async {
        while query_i64(db, OPEN_JOBS).await > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await
    .is_ok()
}

impl Cluster {
    /// Waits (up to `limit`) until every job is final, then checks that all `jobs` succeeded;
    /// a failure shows the logs of `names`.
    pub async fn all_succeed(
        &self,
        db: &mut PgConnection,
        jobs: i64,
        limit: Duration,
        names: &[&str],
    ) {
        assert!(
            until_finished(db, limit).await,
            "the campaign did not finish; logs:\n{}",
            self.logs(names)
        );
        let succeeded = query_i64(db, "SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'").await;
        assert_eq!(succeeded, jobs, "{}", self.logs(names));
    }
}

/// Checks that every artifact the database records exists in S3 with its recorded sha256,
/// under the key of the attempt whose result won; returns how many there are.
pub async fn artifacts_are_whole(cluster: &Cluster, db: &mut PgConnection) -> usize {
    let objects = Objects::open(
        &cluster.store,
        &S3Options {
            endpoint: Some(cluster.s3_endpoint.clone()),
        },
    )
    .unwrap();
    let artifacts = sqlx::query(
        "SELECT a.uri, a.sha256, r.attempt FROM artifacts a JOIN results r ON r.job_id = a.job_id",
    )
    .fetch_all(db)
    .await
    .unwrap();
    for row in &artifacts {
        let (uri, sha, attempt): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
        let bytes = objects
            .get(&uri)
            .await
            .unwrap_or_else(|e| panic!("{uri}: {e}"));
        assert_eq!(vephys_objects::sha256_hex(&bytes), sha, "{uri}");
        assert!(
            uri.contains(&format!("/attempt_{attempt}/")),
            "{uri} is not the winner's (attempt {attempt})"
        );
    }
    artifacts.len()
}
