//! The `vephys` binary against an in-process coordinator (SQLite, real TCP).

use std::sync::Arc;
use std::time::Duration;
use tokio::process::Command;
use vephys_coordinator::auth::Tokens;
use vephys_coordinator::metrics::Metrics;
use vephys_coordinator::server::{serve_grpc, Settings};
use vephys_coordinator::store::{now_ms, Connect, Policy, Store};
use vephys_proto::v1::{JobCompletion, JobOutcome, Provenance, RegisterWorkerRequest, TuningPoint};

const MODEL_JSON: &str = r#"{"model":"tinynet","architecture":"tinynet","input_size":32,"weights_sha256":null,
  "layers":[{"name":"stem","aliases":["features.0"],"channels":4,"height":16,"width":16}]}"#;

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn vephys(url: &str, token: &str, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_vephys"))
        .args(["--coordinator", url, "--token", token])
        .args(args)
        .env_remove("VEPHYS_COORDINATOR")
        .env_remove("VEPHYS_TOKEN")
        .output()
        .await
        .expect("run vephys");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_registers_a_model_submits_and_reads_results() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("cli.db").display());
    let store = Arc::new(
        Store::open(
            Connect {
                url: &url,
                max_connections: 4,
            },
            Policy::default(),
        )
        .await
        .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let coordinator = format!("http://{}", listener.local_addr().unwrap());
    let settings = Settings {
        tokens: Tokens::new(Some("user".into()), Some("worker".into())),
        watch_interval: Duration::from_millis(20),
        tls: None,
    };
    let server_store = store.clone();
    tokio::spawn(async move {
        serve_grpc(
            server_store,
            Arc::new(Metrics::new()),
            settings,
            listener,
            std::future::pending(),
        )
        .await
        .unwrap()
    });
    let model = dir.path().join("tinynet.json");
    std::fs::write(&model, MODEL_JSON).unwrap();

    let run = vephys(
        &coordinator,
        "user",
        &["models", "add", model.to_str().unwrap()],
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    assert!(
        run.stdout.contains("registered model tinynet (1 layers)"),
        "{}",
        run.stdout
    );
    let run = vephys(&coordinator, "user", &["models"]).await;
    assert!(run.stdout.contains("tinynet"), "{}", run.stdout);

    let submit = [
        "submit",
        "--model",
        "tinynet",
        "--layers",
        "features.0",
        "--filters",
        "0..2",
        "--probes",
        "synthesis",
    ];
    let run = vephys(&coordinator, "user", &submit).await;
    assert!(run.ok, "{}", run.stderr);
    assert!(
        run.stdout.contains("campaign 1 submitted: 2 jobs"),
        "{}",
        run.stdout
    );
    let run = vephys(&coordinator, "user", &submit).await;
    assert!(run.stdout.contains("already exists"), "{}", run.stdout);

    // A bad spec is refused with the field named.
    let run = vephys(
        &coordinator,
        "user",
        &[
            "submit",
            "--model",
            "tinynet",
            "--layers",
            "stem",
            "--filters",
            "9",
        ],
    )
    .await;
    assert!(!run.ok);
    assert!(
        run.stderr.contains("field `filters`") && run.stderr.contains("InvalidArgument"),
        "{}",
        run.stderr
    );

    // Play the worker directly against the store.
    let worker = store
        .register_worker(&RegisterWorkerRequest {
            name: "w".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let jobs = store.lease(worker, 8, &[], now_ms()).await.unwrap().jobs;
    let completions: Vec<JobCompletion> = jobs
        .iter()
        .map(|j| JobCompletion {
            job_id: j.job_id,
            token: j.token,
            result: Some(JobOutcome {
                max_act: 3.0,
                mean_act: 1.0,
                status: "ok".into(),
                derived_json: r#"{"a": 1, "b": "x,y"}"#.into(),
                provenance: Some(Provenance::default()),
            }),
            points: vec![TuningPoint {
                probe: "synthesis".into(),
                x: 1.0,
                label: None,
                max_act: 3.0,
                mean_act: 1.0,
            }],
            artifacts: vec![],
        })
        .collect();
    store
        .complete(worker, &completions, now_ms())
        .await
        .unwrap();

    let run = vephys(&coordinator, "user", &["results", "1", "--format", "csv"]).await;
    assert!(run.ok, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "job,layer,filter,probe,max_act,mean_act,status,derived"
    );
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    assert!(
        lines[1].starts_with("1,stem,0,synthesis,3.000000,1.000000,ok,\""),
        "{}",
        lines[1]
    );
    let run = vephys(
        &coordinator,
        "user",
        &["results", "1", "--format", "json", "--filter", "1"],
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json[0]["filter"], 1);
    assert_eq!(json[0]["derived"]["b"], "x,y");

    let run = vephys(&coordinator, "user", &["status"]).await;
    assert!(run.stdout.contains("succeeded"), "{}", run.stdout);
    let run = vephys(&coordinator, "user", &["watch", "1"]).await;
    assert!(
        run.stdout.contains("campaign 1 succeeded"),
        "{}",
        run.stdout
    );

    let run = vephys(&coordinator, "worker", &["cancel", "1"]).await;
    assert!(
        !run.ok && run.stderr.contains("PermissionDenied"),
        "{}",
        run.stderr
    );
    let run = vephys(&coordinator, "wrong", &["status"]).await;
    assert!(
        !run.ok && run.stderr.contains("Unauthenticated"),
        "{}",
        run.stderr
    );
}
