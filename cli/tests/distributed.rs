//! The distributed system for real: Postgres, an S3-compatible server (Garage, started by
//! scripts/test.sh), one `vephys-coordinator` process and worker processes that fetch the
//! weights from S3. One worker is killed with SIGKILL mid-campaign, another is paused with
//! SIGSTOP past its lease and resumed; the campaign still completes with exactly one result per
//! job, every artifact exists in S3 with its recorded sha256, and the paused worker's late
//! results are refused.

mod e2e;

use std::time::Duration;

use e2e::{binary, free_port, text, vephys, wait_for, weights_dir, Proc};
use sqlx::{Connection, PgConnection, Row};
use vephys_objects::{sha256_hex, Objects, S3Options};

struct Env {
    database: String,
    s3_endpoint: String,
    bucket: String,
}

fn env() -> Env {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set; run the tests through scripts/test.sh (it starts Postgres and Garage)")
        })
    };
    Env {
        database: var("VEPHYS_TEST_DATABASE_URL"),
        s3_endpoint: var("VEPHYS_TEST_S3_ENDPOINT"),
        bucket: var("VEPHYS_TEST_S3_BUCKET"),
    }
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

struct Cluster {
    dir: tempfile::TempDir,
    url: String,
    user_token: &'static str,
    worker_token: &'static str,
    store: String,
    s3_endpoint: String,
    _coordinator: Proc,
}

impl Cluster {
    fn worker(&self, name: &str, extra: &[&str]) -> Proc {
        let mut args: Vec<String> = [
            "serve",
            "--coordinator",
            &self.url,
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
        let home = self.dir.path().join(name);
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

    fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["--coordinator", &self.url, "--token", self.user_token];
        all.extend_from_slice(args);
        vephys(&all)
    }
}

async fn start_cluster(env: &Env, name: &str) -> (Cluster, String) {
    let database = fresh_database(&env.database, name).await;
    let dir = tempfile::tempdir().unwrap();
    let (grpc, http) = (free_port(), free_port());
    let coordinator = Proc::start(
        &binary("vephys-coordinator"),
        &[
            "--database-url".into(),
            database.clone(),
            "--listen".into(),
            format!("127.0.0.1:{grpc}"),
            "--http".into(),
            format!("127.0.0.1:{http}"),
            "--lease-seconds".into(),
            "4".into(),
            "--reap-seconds".into(),
            "1".into(),
            "--retry-base-seconds".into(),
            "1".into(),
        ],
        &[
            ("VEPHYS_WORKER_TOKEN", "w-secret".into()),
            ("VEPHYS_USER_TOKEN", "u-secret".into()),
        ],
        &dir.path().join("coordinator.log"),
    );
    let cluster = Cluster {
        url: format!("http://127.0.0.1:{grpc}"),
        user_token: "u-secret",
        worker_token: "w-secret",
        store: format!("s3://{}/{name}", env.bucket),
        s3_endpoint: env.s3_endpoint.clone(),
        _coordinator: coordinator,
        dir,
    };
    wait_for("the coordinator", Duration::from_secs(30), || {
        cluster.cli(&["models"]).status.success().then_some(())
    });
    (cluster, database)
}

/// Uploads the real weights to S3 and registers the model with their URI and sha256, so the
/// workers (which have no local weights) must fetch and check them.
async fn register_model_from_s3(cluster: &Cluster) {
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

async fn query_i64(db: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query(sql)
        .fetch_one(db)
        .await
        .unwrap()
        .get::<i64, _>(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_survives_a_killed_and_a_paused_worker() {
    let env = env();
    let (cluster, database) = start_cluster(&env, "vt_e2e_distributed").await;
    register_model_from_s3(&cluster).await;
    let mut db = PgConnection::connect(&database).await.unwrap();

    let mut w1 = cluster.worker("w1", &[]);
    let w2 = cluster.worker("w2", &[]);
    let submit = cluster.cli(&[
        "submit",
        "--name",
        "e2e",
        "--model",
        "efficientnet_lite0",
        "--layers",
        "blocks.4",
        "--filters",
        "0..8",
        "--probes",
        "synthesis,baseline,zoom,rotation",
        "--steps",
        "80",
    ]);
    assert!(submit.status.success(), "{}", text(&submit.stderr));
    let jobs = query_i64(&mut db, "SELECT COUNT(*) FROM jobs").await;
    assert_eq!(jobs, 32);

    // SIGKILL w1 while it computes: its leases expire and go to the others.
    let holds = |name: &'static str| {
        format!("SELECT COUNT(*) FROM jobs j JOIN workers w ON w.id = j.worker_id WHERE j.state = 'leased' AND w.name = '{name}'")
    };
    loop {
        if query_i64(&mut db, &holds("w1")).await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    w1.signal(libc::SIGKILL);
    w1.wait_exit(Duration::from_secs(10))
        .expect("SIGKILL ends w1");
    let _w3 = cluster.worker("w3", &[]);

    // SIGSTOP w2 while it holds leases, for longer than a lease; then let it go on.
    loop {
        if query_i64(&mut db, &holds("w2")).await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held: Vec<(i64, i64)> = sqlx::query(
        "SELECT j.id, j.attempt FROM jobs j JOIN workers w ON w.id = j.worker_id WHERE j.state = 'leased' AND w.name = 'w2'",
    )
    .fetch_all(&mut db)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    w2.signal(libc::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(8)).await;
    w2.signal(libc::SIGCONT);

    let watch = tokio::time::timeout(Duration::from_secs(900), async {
        loop {
            let open = query_i64(
                &mut db,
                "SELECT COUNT(*) FROM jobs WHERE state NOT IN ('succeeded', 'failed', 'cancelled')",
            )
            .await;
            if open == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    let logs = || {
        ["w1", "w2", "w3", "coordinator"]
            .map(|n| {
                format!(
                    "--- {n}:\n{}",
                    std::fs::read_to_string(cluster.dir.path().join(format!("{n}.log")))
                        .unwrap_or_default()
                )
            })
            .join("\n")
    };
    assert!(
        watch.is_ok(),
        "the campaign did not finish; logs:\n{}",
        logs()
    );
    assert_eq!(
        query_i64(
            &mut db,
            "SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'"
        )
        .await,
        32,
        "{}",
        logs()
    );

    // exactly one result per job
    assert_eq!(query_i64(&mut db, "SELECT COUNT(*) FROM results").await, 32);
    assert_eq!(
        query_i64(&mut db, "SELECT COUNT(DISTINCT job_id) FROM results").await,
        32
    );

    // every artifact exists in S3 with its recorded sha256, under the winning attempt's key
    let objects = Objects::open(
        &cluster.store,
        &S3Options {
            endpoint: Some(cluster.s3_endpoint.clone()),
        },
    )
    .unwrap();
    let artifacts = sqlx::query("SELECT a.job_id, a.uri, a.sha256, r.attempt FROM artifacts a JOIN results r ON r.job_id = a.job_id")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert!(
        artifacts.len() >= 32 + 8,
        "a record per job and a max image per live unit: {}",
        artifacts.len()
    );
    for row in &artifacts {
        let (uri, sha, attempt): (String, String, i64) = (row.get(1), row.get(2), row.get(3));
        let bytes = objects
            .get(&uri)
            .await
            .unwrap_or_else(|e| panic!("{uri}: {e}"));
        assert_eq!(sha256_hex(&bytes), sha, "{uri}");
        assert!(
            uri.contains(&format!("/attempt_{attempt}/")),
            "{uri} is not the winner's (attempt {attempt})"
        );
    }

    // the paused worker's jobs were finished by a later lease, and its late results refused
    for (job, attempt) in &held {
        let won: i64 = sqlx::query("SELECT attempt FROM results WHERE job_id = $1")
            .bind(job)
            .fetch_one(&mut db)
            .await
            .unwrap()
            .get(0);
        assert!(
            won > *attempt,
            "job {job} kept the paused worker's attempt {attempt}"
        );
    }
    let w2_log = w2.log_text();
    assert!(
        w2_log.contains("result dropped") || w2_log.contains("completion refused"),
        "w2 did not report its late results as refused:\n{w2_log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_refuse_to_start_with_a_bad_token_or_store() {
    let env = env();
    let (cluster, _) = start_cluster(&env, "vt_e2e_bad_start").await;
    let bad = |proc: &mut Proc, says: &str| {
        let status = proc
            .wait_exit(Duration::from_secs(60))
            .expect("the worker exits at start-up");
        assert!(!status.success());
        let log = proc.log_text();
        assert!(
            log.contains(says),
            "the error does not say `{says}`:\n{log}"
        );
    };
    let mut wrong_token = cluster.worker("bad-token", &["--token", "nope"]);
    bad(&mut wrong_token, "refused this worker's token");
    let mut unreachable = cluster.worker(
        "bad-endpoint",
        &[
            "--s3-endpoint",
            &format!("http://127.0.0.1:{}", free_port()),
        ],
    );
    bad(&mut unreachable, "cannot write to the store");
    let mut no_bucket = cluster.worker("bad-bucket", &["--store", "s3://no-such-bucket-vephys/x"]);
    bad(&mut no_bucket, "cannot write to the store");
}
