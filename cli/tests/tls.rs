//! The real binaries through TLS from a private CA (issue 17), as the Helm chart runs them with
//! `coordinator.tls`: `vephys-coordinator --tls-cert/--tls-key` serving a certificate signed by a
//! CA of our own, and the `vephys` CLI and a `vephys-worker serve` daemon reaching it at
//! https://localhost:PORT with that CA as `--ca-cert` or `VEPHYS_CA_CERT`. Without the CA both
//! are refused (the certificate's issuer is unknown to the public roots).

mod e2e;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e::{binary, free_port, text, wait_for, Proc};
use vephys_coordinator::testing::private_ca;

/// `vephys ARGS` against `url` with the user token; `ca` as --ca-cert or VEPHYS_CA_CERT.
fn vephys(
    url: &str,
    args: &[&str],
    ca_flag: Option<&Path>,
    ca_env: Option<&Path>,
) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vephys"));
    cmd.env_remove("VEPHYS_CA_CERT")
        .env_remove("VEPHYS_DATA_DIR")
        .env("VEPHYS_COORDINATOR", url)
        .env("VEPHYS_TOKEN", "u-secret")
        .env("NO_COLOR", "1");
    if let Some(ca) = ca_flag {
        cmd.arg("--ca-cert").arg(ca);
    }
    if let Some(ca) = ca_env {
        cmd.env("VEPHYS_CA_CERT", ca);
    }
    cmd.args(args).output().expect("run vephys")
}

#[test]
fn the_cli_and_a_worker_reach_a_tls_coordinator_through_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(dir.path(), "coordinator");
    let (other_ca, _, _) = private_ca(dir.path(), "other");
    let (grpc, http) = (free_port(), free_port());
    let db = dir.path().join("vephys.db");
    let _coordinator = Proc::start(
        &binary("vephys-coordinator"),
        &[
            "--database-url".into(),
            format!("sqlite://{}", db.display()),
            "--listen".into(),
            format!("127.0.0.1:{grpc}"),
            "--http".into(),
            format!("127.0.0.1:{http}"),
        ],
        &[
            ("VEPHYS_WORKER_TOKEN", "w-secret".into()),
            ("VEPHYS_USER_TOKEN", "u-secret".into()),
            ("VEPHYS_TLS_CERT", cert.display().to_string()),
            ("VEPHYS_TLS_KEY", key.display().to_string()),
        ],
        &dir.path().join("coordinator.log"),
    );
    let url = format!("https://localhost:{grpc}");

    // The CLI with --ca-cert, and with VEPHYS_CA_CERT.
    wait_for("the TLS coordinator", Duration::from_secs(30), || {
        vephys(&url, &["models"], Some(&ca), None)
            .status
            .success()
            .then_some(())
    });
    let out = vephys(&url, &["models"], None, Some(&ca));
    assert!(
        out.status.success(),
        "VEPHYS_CA_CERT: {}",
        text(&out.stderr)
    );
    // Without the CA, or with another: refused, saying why.
    for (what, ca) in [("no CA", None), ("another CA", Some(other_ca.as_path()))] {
        let out = vephys(&url, &["models"], ca, None);
        assert!(!out.status.success(), "{what}: connected");
        let err = text(&out.stderr);
        assert!(
            err.contains("cannot reach the coordinator") && err.contains("UnknownIssuer"),
            "{what}: {err}"
        );
    }

    // A worker daemon: registers through TLS with the CA (no weights: it registers no models,
    // which is all this needs; the store is a local directory).
    let worker = |name: &str, ca: Option<&Path>| {
        let home = dir.path().join(name);
        std::fs::create_dir_all(home.join("store")).unwrap();
        std::fs::create_dir_all(home.join("weights")).unwrap();
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--coordinator".into(),
            url.clone(),
            "--store".into(),
            format!("file://{}", home.join("store").display()),
            "--weights-dir".into(),
            home.join("weights").display().to_string(),
            "--cache-dir".into(),
            home.join("cache").display().to_string(),
            "--device".into(),
            "cpu".into(),
            "--name".into(),
            name.into(),
        ];
        if let Some(ca) = ca {
            args.push("--ca-cert".into());
            args.push(ca.display().to_string());
        }
        let env = [
            ("VEPHYS_WORKER_TOKEN", "w-secret".to_string()),
            ("VEPHYS_LOG", "info".into()),
        ];
        Proc::start(
            &binary("vephys-worker"),
            &args,
            &env,
            &home.join("worker.log"),
        )
    };
    let trusted = worker("trusting", Some(&ca));
    wait_for(
        "the worker to register over TLS",
        Duration::from_secs(60),
        || {
            trusted
                .log_text()
                .contains("worker registered")
                .then_some(())
        },
    );
    let untrusted = worker("untrusting", None);
    wait_for(
        "the worker without the CA to fail",
        Duration::from_secs(60),
        || {
            let log = untrusted.log_text();
            (log.contains("coordinator unreachable") && log.contains("UnknownIssuer")).then_some(())
        },
    );
    assert!(
        !untrusted.log_text().contains("worker registered"),
        "{}",
        untrusted.log_text()
    );
}
