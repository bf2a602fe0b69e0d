//! The distributed system for real: Postgres, an S3-compatible server (Garage, started by
//! scripts/test.sh), one `vephys-coordinator` process and worker processes that fetch the
//! weights from S3. One worker is killed with SIGKILL mid-campaign, another is paused with
//! SIGSTOP past its lease and resumed; the campaign still completes with exactly one result per
//! job, every artifact exists in S3 with its recorded sha256, and the paused worker's late
//! results are refused.

mod e2e;

use std::time::Duration;

use e2e::cluster::{artifacts_are_whole, env, query_i64, register_model_from_s3, start_cluster};
use e2e::{free_port, text, Proc};
use sqlx::{Connection, PgConnection, Row};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_survives_a_killed_and_a_paused_worker() {
    let env = env();
    let cluster = start_cluster(&env, "vt_e2e_distributed").await;
    register_model_from_s3(&cluster).await;
    let mut db = PgConnection::connect(&cluster.database).await.unwrap();

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

    let names = ["w1", "w2", "w3", "coordinator"];
    cluster
        .all_succeed(&mut db, 32, Duration::from_secs(900), &names)
        .await;

    // exactly one result per job
    assert_eq!(query_i64(&mut db, "SELECT COUNT(*) FROM results").await, 32);
    assert_eq!(
        query_i64(&mut db, "SELECT COUNT(DISTINCT job_id) FROM results").await,
        32
    );

    // every artifact exists in S3 with its recorded sha256, under the winning attempt's key
    let artifacts = artifacts_are_whole(&cluster, &mut db).await;
    assert!(
        artifacts >= 32 + 8,
        "a record per job and a max image per live unit: {artifacts}"
    );

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
    let cluster = start_cluster(&env, "vt_e2e_bad_start").await;
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

/// An exported model reaches workers only through the store: `vephys models add model.json
/// --store` uploads its archive and registers its manifest; workers without a copy fetch the
/// archive by the registry's weights_uri, check its sha256 and run it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_fetch_an_exported_model_from_the_store() {
    let env = env();
    let cluster = start_cluster(&env, "vt_e2e_exported").await;
    let export = e2e::exported("resnet18_small");
    let added = cluster.cli(&[
        "models",
        "add",
        export.join("model.json").to_str().unwrap(),
        "--store",
        &cluster.store,
        "--s3-endpoint",
        &cluster.s3_endpoint,
    ]);
    assert!(added.status.success(), "{}", text(&added.stderr));
    let mut db = PgConnection::connect(&cluster.database).await.unwrap();
    let (uri, sha): (String, String) = {
        let row = sqlx::query(
            "SELECT weights_uri, weights_sha256 FROM models WHERE name = 'resnet18_small'",
        )
        .fetch_one(&mut db)
        .await
        .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(uri.starts_with(&cluster.store), "{uri}");

    let _w1 = cluster.worker("w1", &[]);
    let _w2 = cluster.worker("w2", &[]);
    let submit = cluster.cli(&[
        "submit",
        "--name",
        "exported",
        "--model",
        "resnet18_small",
        "--layers",
        "layer1",
        "--filters",
        "0..4",
        "--probes",
        "synthesis,baseline,rotation",
        "--steps",
        "8",
    ]);
    assert!(submit.status.success(), "{}", text(&submit.stderr));
    let names = ["w1", "w2", "coordinator"];
    cluster
        .all_succeed(&mut db, 12, Duration::from_secs(600), &names)
        .await;
    // every result names the archive's sha256, and the workers fetched it from the store
    let other = sqlx::query("SELECT COUNT(*) FROM results WHERE weights_sha256 <> $1")
        .bind(&sha)
        .fetch_one(&mut db)
        .await
        .unwrap()
        .get::<i64, _>(0);
    assert_eq!(other, 0);
    assert!(
        cluster
            .logs(&names)
            .contains("weights fetched from the store"),
        "{}",
        cluster.logs(&names)
    );
}
