//! TLS on both sides of the coordinator (issue 17).
//!
//! - The database: a Postgres cluster that takes TLS connections only, with a server
//!   certificate for `localhost` from a private CA (`eval "$(scripts/postgres.sh tls)"`, which
//!   scripts/test.sh runs, exports its URL and CAs). Clear text is refused by the server; without
//!   the CA (or with another CA) the coordinator refuses the server; with `--database-ca` /
//!   `VEPHYS_DATABASE_CA` it connects, over TLS. `sslmode` is honoured: verify-full checks the
//!   chain and the host name, verify-ca the chain (and, with sqlx 0.8.6, the name too), and
//!   require with a CA checks the chain (as libpq does), without one nothing.
//! - gRPC: a coordinator serving a certificate from a private CA is reached through the
//!   endpoint the worker and the CLI build (`vephys_proto::endpoint`) when that CA is given as
//!   `--ca-cert`, and not without it. (cli/tests/tls.rs runs the real binaries.)
//!
//! These tests fail, not skip, without the TLS cluster's variables.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Identity, ServerTlsConfig};
use vephys_coordinator::auth::Tokens;
use vephys_coordinator::metrics::Metrics;
use vephys_coordinator::server::{serve_grpc, Settings};
use vephys_coordinator::store::{Connect, DatabaseTls, Policy, Store};
use vephys_coordinator::testing::private_ca;

/// The TLS-only cluster's URL (no sslmode), the CA that signed its certificate, another CA.
fn tls_cluster() -> (String, PathBuf, PathBuf) {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set; start the TLS-only Postgres with `eval \"$(scripts/postgres.sh tls)\"` (scripts/test.sh does)")
        })
    };
    (
        var("VEPHYS_TEST_TLS_DATABASE_URL"),
        var("VEPHYS_TEST_DATABASE_CA").into(),
        var("VEPHYS_TEST_OTHER_CA").into(),
    )
}

/// `base` with its database replaced by a fresh one named `name`, made over a verified TLS
/// connection.
async fn fresh_database(base: &str, ca: &Path, name: &str) -> String {
    use sqlx::Connection;
    let admin_url = format!("{base}?sslmode=verify-full&sslrootcert={}", ca.display());
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("connect to the TLS cluster with its CA");
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::query(&sql).execute(&mut admin).await.expect(&sql);
    }
    admin.close().await.ok();
    let (server, _) = base.rsplit_once('/').expect("the url names a database");
    format!("{server}/{name}")
}

async fn open(url: &str, ca: Option<&Path>) -> Result<Store, String> {
    Store::open_with_tls(
        Connect {
            url,
            max_connections: 2,
        },
        DatabaseTls { ca },
        Policy::default(),
    )
    .await
    .map_err(|e| e.to_string())
}

async fn encrypted(store: &Store) -> bool {
    let (ssl,): (bool,) =
        sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(store.pool())
            .await
            .expect("pg_stat_ssl answers");
    ssl
}

#[tokio::test]
async fn postgres_requiring_tls_refuses_us_without_the_ca_and_accepts_us_with_it() {
    let (base, ca, other) = tls_cluster();
    let url = fresh_database(&base, &ca, "vt_tls_store").await;

    // Clear text: the server itself refuses (pg_hba: hostnossl ... reject).
    let err = open(&format!("{url}?sslmode=disable"), None)
        .await
        .err()
        .expect("a clear-text connection is refused");
    assert!(err.contains("no encryption"), "{err}");
    // TLS, checking the certificate against the public roots only: unknown issuer.
    let err = open(&format!("{url}?sslmode=verify-full"), None)
        .await
        .err()
        .expect("a certificate from a private CA is refused without that CA");
    assert!(err.contains("UnknownIssuer"), "{err}");
    // A CA, but not the one that signed the certificate.
    let err = open(&url, Some(&other))
        .await
        .err()
        .expect("another CA does not vouch for the server");
    assert!(err.contains("UnknownIssuer"), "{err}");

    // The CA that signed it: no sslmode in the URL means verify-full, and it holds.
    let store = open(&url, Some(&ca)).await.expect("the CA lets us in");
    assert!(encrypted(&store).await, "the connection is encrypted");
    // The store works over it: migrated, and a model goes in and comes back.
    store
        .register_model(&common::test_model("testnet"))
        .await
        .unwrap();
    assert_eq!(store.list_models().await.unwrap().len(), 1);
    store.close().await;
}

#[tokio::test]
async fn sslmode_decides_what_is_checked() {
    let (base, ca, other) = tls_cluster();
    let url = fresh_database(&base, &ca, "vt_tls_modes").await;
    // The certificate names localhost only: reached as 127.0.0.1, its host name is wrong.
    let by_ip = url.replace("@localhost:", "@127.0.0.1:");
    assert_ne!(by_ip, url);
    let with = |url: &str, mode: &str| format!("{url}?sslmode={mode}");

    // verify-full: the chain and the name.
    let store = open(&with(&url, "verify-full"), Some(&ca)).await.unwrap();
    assert!(encrypted(&store).await);
    store.close().await;
    let err = open(&with(&by_ip, "verify-full"), Some(&ca))
        .await
        .err()
        .expect("verify-full checks the host name");
    assert!(err.contains("not valid for name \"127.0.0.1\""), "{err}");
    // No sslmode with a CA means verify-full.
    assert!(open(&by_ip, Some(&ca)).await.is_err());

    // verify-ca: the chain.
    let store = open(&with(&url, "verify-ca"), Some(&ca)).await.unwrap();
    store.close().await;
    let err = open(&with(&url, "verify-ca"), Some(&other))
        .await
        .err()
        .expect("verify-ca checks the chain");
    assert!(err.contains("UnknownIssuer"), "{err}");
    // sqlx 0.8.6 on rustls >= 0.23.24 checks the name under verify-ca as well (its verifier
    // waits for an error variant rustls no longer returns: launchbadge/sqlx#3793, fixed in
    // 0.9): stricter than libpq, never weaker. This tells when an upgrade changes it.
    let err = open(&with(&by_ip, "verify-ca"), Some(&ca))
        .await
        .err()
        .expect("sqlx 0.8.6: verify-ca checks the name too");
    assert!(err.contains("not valid for name"), "{err}");

    // require with a CA checks the chain too (libpq's rule; plain sqlx would not).
    let store = open(&with(&url, "require"), Some(&ca))
        .await
        .expect("require + CA = verify-ca");
    store.close().await;
    let err = open(&with(&url, "require"), Some(&other))
        .await
        .err()
        .expect("require + another CA is refused");
    assert!(err.contains("UnknownIssuer"), "{err}");
    // require alone encrypts without checking anything (a managed service's usual URL).
    let store = open(&with(&by_ip, "require"), None)
        .await
        .expect("require without a CA connects");
    assert!(encrypted(&store).await);
    store.close().await;
    // A CA with a mode that could fall back to clear text is a configuration error.
    let err = open(&with(&url, "prefer"), Some(&ca)).await.err().unwrap();
    assert!(
        err.contains("sslmode=prefer may connect without TLS"),
        "{err}"
    );
}

#[tokio::test]
async fn the_coordinator_binary_reads_the_ca_from_its_flag_and_variable() {
    let (base, ca, _) = tls_cluster();
    // As the Helm chart has it: the URL (a Secret) asks for verify-full, the CA comes apart.
    let url = format!(
        "{}?sslmode=verify-full",
        fresh_database(&base, &ca, "vt_tls_binary").await
    );
    let run = |ca_flag: Option<&Path>, ca_env: Option<&Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vephys-coordinator"));
        cmd.env_clear()
            .args(["--migrate-only", "--database-url", &url]);
        if let Some(path) = ca_flag {
            cmd.arg("--database-ca").arg(path);
        }
        if let Some(path) = ca_env {
            cmd.env("VEPHYS_DATABASE_CA", path);
        }
        let out = cmd.output().expect("run vephys-coordinator");
        let log = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), log)
    };
    let (ok, log) = run(None, None);
    assert!(!ok, "connected without the CA:\n{log}");
    assert!(
        log.contains("cannot open the database") && log.contains("UnknownIssuer"),
        "{log}"
    );
    let (ok, log) = run(Some(&ca), None);
    assert!(ok, "--database-ca:\n{log}");
    assert!(log.contains("database migrated"), "{log}");
    let (ok, log) = run(None, Some(&ca));
    assert!(ok, "VEPHYS_DATABASE_CA:\n{log}");
    let (ok, log) = run(Some(Path::new("/nonexistent/ca.crt")), None);
    assert!(!ok);
    assert!(
        log.contains("database-ca") && log.contains("cannot read /nonexistent/ca.crt"),
        "{log}"
    );
}

#[tokio::test]
async fn grpc_clients_reach_a_tls_coordinator_through_its_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(dir.path(), "coordinator");
    let (other_ca, _, _) = private_ca(dir.path(), "other");

    let db = common::open(common::Backend::Sqlite, "grpc_tls", common::policy()).await;
    let store = Arc::new(db.store);
    let identity = Identity::from_pem(std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let settings = Settings {
        tokens: Tokens::new(None, None),
        watch_interval: Duration::from_millis(50),
        tls: Some(ServerTlsConfig::new().identity(identity)),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_grpc(
        store,
        Arc::new(Metrics::new()),
        settings,
        listener,
        async move {
            stopped.await.ok();
        },
    ));
    let url = format!("https://localhost:{port}");

    // What the worker and the CLI do with --coordinator and --ca-cert.
    let call = |ca: Option<PathBuf>| {
        let url = url.clone();
        async move {
            let channel = vephys_proto::endpoint::endpoint(&url, ca.as_deref())?
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await
                .map_err(|e| format!("{e:?}"))?;
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            let status = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: "vephys.v1.Campaigns".into(),
                })
                .await
                .map_err(|e| format!("{e:?}"))?
                .into_inner()
                .status;
            Ok::<i32, String>(status)
        }
    };
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    assert_eq!(call(Some(ca.clone())).await, Ok(serving), "with the CA");
    let err = call(None).await.expect_err("public roots only");
    assert!(err.contains("UnknownIssuer"), "{err}");
    let err = call(Some(other_ca)).await.expect_err("another CA");
    assert!(err.contains("UnknownIssuer"), "{err}");
    let err = call(Some(dir.path().join("missing.crt")))
        .await
        .expect_err("a CA file that is not there");
    assert!(err.contains("cannot read --ca-cert"), "{err}");

    stop.send(()).ok();
    server.await.unwrap().unwrap();
}
