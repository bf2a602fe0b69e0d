//! The chaos test: one campaign (64 jobs) on a real cluster (Postgres, Garage, two coordinator processes
//! on one database, four worker processes fetching the weights from S3) through every routine
//! fault of a shared cluster, one after the other while jobs run:
//!
//! 1. a worker is SIGKILLed while it holds leases;
//! 2. another is SIGSTOPped past its lease, then resumed (its late results must be refused);
//! 3. the first coordinator is SIGKILLed and started again on its port;
//! 4. the coordinators' database connections are terminated (`pg_terminate_backend`) again and
//!    again while results are being completed;
//! 5. Postgres is stopped for longer than a lease (25 s, four leases) and started again;
//! 6. the S3 server is paused (SIGSTOP) for 60 s.
//!
//! The oracle: every job succeeded, none failed for an infrastructure reason (no attempt was
//! charged for anything but a killed or paused worker's expired lease), one result per job,
//! no result from a stale attempt, every artifact in S3 with its recorded sha256 under the
//! winning attempt's key, and no worker exited on its own.
//!
//! It has a test binary of its own: it restarts the Postgres cluster and pauses the S3 server
//! that the other tests share, and cargo runs test binaries one at a time.

mod e2e;

use std::time::{Duration, Instant};

use e2e::cluster::{
    artifacts_are_whole, env, query_i64, register_model_from_s3, start_cluster, var, OPEN_JOBS,
};
use e2e::{free_port, text};
use sqlx::{Connection, PgConnection};

const HOLDS: &str = "SELECT COUNT(*) FROM jobs j JOIN workers w ON w.id = j.worker_id \
                     WHERE j.state = 'leased' AND w.name = ";

/// Waits until the worker `name` holds a lease.
async fn until_holding(db: &mut PgConnection, name: &str) {
    let sql = format!("{HOLDS}'{name}'");
    let deadline = Instant::now() + Duration::from_secs(300);
    while query_i64(db, &sql).await == 0 {
        assert!(Instant::now() < deadline, "{name} leased nothing in 300 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The campaign is still running: a fault injected now hits work in flight.
async fn still_running(db: &mut PgConnection, fault: &str) {
    let open = query_i64(db, OPEN_JOBS).await;
    assert!(
        open > 0,
        "the campaign finished before {fault}; give it more work so every fault meets running jobs"
    );
    eprintln!("chaos: {fault} ({open} jobs open)");
}

/// `pg_ctlcluster 15 main ACTION` for the cluster scripts/postgres.sh runs.
fn postgres(action: &str) {
    let out = std::process::Command::new("pg_ctlcluster")
        .args(["15", "main", action, "-m", "fast"])
        .output()
        .expect("run pg_ctlcluster (scripts/postgres.sh installs it)");
    assert!(
        out.status.success(),
        "pg_ctlcluster 15 main {action}: {}",
        text(&out.stderr)
    );
}

/// The S3 server's process (scripts/garage.sh exports its pid).
fn s3_signal(signal: i32) {
    let pid: i32 = var("VEPHYS_TEST_S3_PID")
        .parse()
        .expect("VEPHYS_TEST_S3_PID is a pid");
    assert_eq!(
        unsafe { libc::kill(pid, signal) },
        0,
        "signal the S3 server"
    );
}

/// Sends SIGCONT to the S3 server when dropped, so a failing test never leaves it paused.
struct S3Paused;

impl Drop for S3Paused {
    fn drop(&mut self) {
        s3_signal(libc::SIGCONT);
    }
}

/// Starts Postgres again when dropped, so a failing test never leaves it down.
struct PostgresDown;

impl Drop for PostgresDown {
    fn drop(&mut self) {
        postgres("start");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_survives_every_routine_fault_of_a_cluster() {
    let env = env();
    let mut cluster = start_cluster(&env, "vt_chaos").await;
    register_model_from_s3(&cluster).await;
    let mut db = PgConnection::connect(&cluster.database).await.unwrap();

    // a second coordinator on the same database, all along
    let second_port = free_port();
    let _second = cluster.start_coordinator("coordinator2", second_port);
    let second = format!("http://127.0.0.1:{second_port}");
    cluster.wait_answering(&second);

    let submit = cluster.cli(&[
        "submit",
        "--name",
        "chaos",
        "--model",
        "efficientnet_lite0",
        "--layers",
        "blocks.4",
        "--filters",
        "0..16",
        "--probes",
        "synthesis,baseline,zoom,rotation",
        "--steps",
        "96",
    ]);
    assert!(submit.status.success(), "{}", text(&submit.stderr));
    let jobs = query_i64(&mut db, "SELECT COUNT(*) FROM jobs").await;
    assert_eq!(jobs, 64);

    let first = cluster.url.clone();
    let mut w1 = cluster.worker_of(&first, "w1", &[]);
    let mut w2 = cluster.worker_of(&second, "w2", &[]);
    let mut w3 = cluster.worker_of(&first, "w3", &[]);
    let names = ["w1", "w2", "w3", "w4", "coordinator", "coordinator2"];

    // 1. SIGKILL w1 while it holds leases
    until_holding(&mut db, "w1").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    still_running(&mut db, "SIGKILL of worker w1").await;
    w1.signal(libc::SIGKILL);
    w1.wait_exit(Duration::from_secs(10))
        .expect("SIGKILL ends w1");
    let mut w4 = cluster.worker_of(&second, "w4", &[]);

    // 2. SIGSTOP w2 past its lease (4 s), then let it go on
    until_holding(&mut db, "w2").await;
    let held: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT j.id, j.attempt FROM jobs j JOIN workers w ON w.id = j.worker_id \
         WHERE j.state = 'leased' AND w.name = 'w2'",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    still_running(&mut db, "SIGSTOP of worker w2 for 10 s").await;
    w2.signal(libc::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(10)).await;
    w2.signal(libc::SIGCONT);

    // 3. SIGKILL the first coordinator and start it again on its port
    still_running(&mut db, "SIGKILL and restart of the first coordinator").await;
    cluster.coordinator.signal(libc::SIGKILL);
    cluster
        .coordinator
        .wait_exit(Duration::from_secs(10))
        .expect("SIGKILL ends the coordinator");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let port: u16 = first.rsplit(':').next().unwrap().parse().unwrap();
    cluster.coordinator = cluster.start_coordinator("coordinator", port);
    cluster.wait_answering(&first);

    // 4. terminate the coordinators' connections while results are being completed
    let done_before = query_i64(&mut db, "SELECT COUNT(*) FROM results").await;
    still_running(
        &mut db,
        "pg_terminate_backend of every coordinator connection",
    )
    .await;
    let mut terminated = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while query_i64(&mut db, "SELECT COUNT(*) FROM results").await < done_before + 3 {
        assert!(
            Instant::now() < deadline,
            "no completions while connections were terminated:\n{}",
            cluster.logs(&names)
        );
        terminated += query_i64(
            &mut db,
            "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()) t",
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(terminated > 0, "no coordinator connection was terminated");

    // 5. Postgres down for 25 s (the test's own connection goes too)
    still_running(&mut db, "Postgres stopped for 25 s").await;
    drop(db);
    {
        postgres("stop");
        let _restart = PostgresDown;
        tokio::time::sleep(Duration::from_secs(25)).await;
    }
    let mut db = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match PgConnection::connect(&cluster.database).await {
                Ok(db) => break db,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("chaos: Postgres not back yet: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => panic!("Postgres did not come back: {e}"),
            }
        }
    };

    // 6. the S3 server paused for 60 s
    still_running(&mut db, "S3 server paused for 60 s").await;
    {
        s3_signal(libc::SIGSTOP);
        let _resume = S3Paused;
        tokio::time::sleep(Duration::from_secs(60)).await;
    }

    let logs = || cluster.logs(&names);
    cluster
        .all_succeed(&mut db, 64, Duration::from_secs(900), &names)
        .await;
    // nothing was charged for an infrastructure fault: the only attempts that did not succeed
    // are expired leases (the killed and the paused worker's) and released ones
    assert_eq!(
        query_i64(
            &mut db,
            "SELECT COUNT(*) FROM attempts WHERE outcome = 'failed' AND NOT released"
        )
        .await,
        0,
        "{}",
        logs()
    );
    // one result per job, each from the job's last attempt
    assert_eq!(query_i64(&mut db, "SELECT COUNT(*) FROM results").await, 64);
    assert_eq!(
        query_i64(&mut db, "SELECT COUNT(DISTINCT job_id) FROM results").await,
        64
    );
    assert_eq!(
        query_i64(
            &mut db,
            "SELECT COUNT(*) FROM results r JOIN jobs j ON j.id = r.job_id WHERE r.attempt <> j.attempt"
        )
        .await,
        0,
        "a result from a stale attempt"
    );
    for (job, attempt) in &held {
        let won = query_i64(
            &mut db,
            &format!("SELECT attempt FROM results WHERE job_id = {job}"),
        )
        .await;
        assert!(
            won > *attempt,
            "job {job} kept the paused worker's attempt {attempt}"
        );
    }
    let artifacts = artifacts_are_whole(&cluster, &mut db).await;
    assert!(artifacts >= 64, "a record per job: {artifacts}");

    // no worker gave up on its own
    for (name, w) in [("w2", &mut w2), ("w3", &mut w3), ("w4", &mut w4)] {
        assert!(
            w.child.try_wait().unwrap().is_none(),
            "{name} exited during the faults:\n{}",
            w.log_text()
        );
    }
}
