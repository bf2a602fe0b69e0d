//! `vephys-coordinator --migrate-only` (the Helm chart's pre-install/pre-upgrade hook): applies
//! the migrations, says so, and exits 0 without binding its ports.

use std::process::Command;
use vephys_coordinator::store::{Connect, Policy, Store};

#[tokio::test]
async fn migrate_only_migrates_and_exits_without_serving() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hook.db");
    let url = format!("sqlite://{}", db.display());
    // Both ports are taken: a coordinator that tried to serve would fail to bind them.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();

    let run = || {
        Command::new(env!("CARGO_BIN_EXE_vephys-coordinator"))
            .env_clear()
            .env("VEPHYS_MIGRATE_ONLY", "true")
            .args(["--database-url", &url, "--listen", &addr, "--http", &addr])
            .output()
            .expect("run vephys-coordinator")
    };
    for round in 0..2 {
        // The second run finds everything applied and still succeeds (hooks run on every upgrade).
        let out = run();
        let log = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "round {round}: {}\n{log}", out.status);
        assert!(log.contains("database migrated"), "round {round}: {log}");
    }

    let store = Store::open(
        Connect {
            url: &url,
            max_connections: 1,
        },
        Policy::default(),
    )
    .await
    .unwrap();
    let (jobs,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM jobs")
        .fetch_one(store.pool())
        .await
        .expect("the migrated database has a jobs table");
    assert_eq!(jobs, 0);
    store.close().await;
}
