//! `vephys local` end to end: the embedded coordinator, a real `vephys-worker serve` child with
//! the real EfficientNet-Lite0 weights, a local object store, the summary and the HTML report.

mod e2e;

use e2e::{binary, text, vephys, weights_dir};

fn local_args<'a>(data: &'a str, worker: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "local",
        "--data-dir",
        data,
        "--worker-bin",
        worker,
        "--device",
        "cpu",
        "--layer",
        "blocks.4",
        "--filters",
        "0..3",
        "--steps",
        "6",
        "--size",
        "64",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn local_runs_every_probe_writes_the_report_and_resumes() {
    weights_dir();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (data_s, worker) = (data.to_str().unwrap(), binary("vephys-worker"));
    let args = local_args(data_s, worker.to_str().unwrap(), &[]);

    let out = vephys(&args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}\nworker log:\n{}",
        std::fs::read_to_string(data.join("worker.log")).unwrap_or_default()
    );
    // the summary: one line per filter, then the timing and where things are
    for filter in 0..3 {
        assert!(
            stdout.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.len() > 2 && w[0] == "blocks.4" && w[1] == filter.to_string() && w[2] == "ok"
            }),
            "no summary line for filter {filter}:\n{stdout}"
        );
    }
    assert!(stdout.contains("overhead"), "{stdout}");
    assert!(stdout.contains("campaign 1 succeeded"), "{stdout}");
    let index = data.join("report/index.html");
    let html = std::fs::read_to_string(&index).expect("the report exists");
    assert!(html.contains("<svg"), "the report has plots");
    let images = std::fs::read_dir(data.join("report/images"))
        .unwrap()
        .count();
    assert!(
        images >= 3,
        "one max image per filter at least, found {images}"
    );

    // the same results through the CLI's --data-dir
    let results = vephys(&["--data-dir", data_s, "results", "1"]);
    let table = text(&results.stdout);
    assert!(results.status.success(), "{}", text(&results.stderr));
    for probe in vephys_proto::params::Probe::ALL.map(|p| p.as_str()) {
        assert!(table.contains(probe), "no {probe} results:\n{table}");
    }
    // `csi` means one thing everywhere: the daemon's baseline job and `vephys-worker probe`
    // on the same max image agree
    let json = vephys(&["--data-dir", data_s, "results", "1", "--format", "json"]);
    assert!(json.status.success(), "{}", text(&json.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let job = |probe: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["probe"] == probe && r["filter"] == 0)
            .unwrap()
            .clone()
    };
    let synthesis = job("synthesis");
    let png = synthesis["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "max_image")
        .unwrap()["uri"]
        .as_str()
        .unwrap()
        .trim_start_matches("file://")
        .to_string();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::copy(&png, images.join("filter_0000.png")).unwrap();
    let probe = std::process::Command::new(&worker)
        .args([
            "probe",
            "--probe",
            "baseline",
            "--layer",
            "blocks.4",
            "--filters",
            "0",
        ])
        .args(["--device", "cpu", "--json", "--images"])
        .arg(&images)
        .arg("--out")
        .arg(dir.path().join("probe-out"))
        .env("VEPHYS_WEIGHTS_DIR", weights_dir())
        .output()
        .unwrap();
    assert!(probe.status.success(), "{}", text(&probe.stderr));
    let cli: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap();
    let (daemon, by_cli) = (
        job("baseline")["derived"]["csi"].as_f64().unwrap(),
        cli[0]["derived"]["csi"].as_f64().unwrap(),
    );
    assert!(
        (daemon - by_cli).abs() < 1e-4,
        "csi {daemon} (daemon) vs {by_cli} (probe)"
    );

    let report2 = dir.path().join("report2");
    let again = vephys(&[
        "--data-dir",
        data_s,
        "report",
        "1",
        "--out",
        report2.to_str().unwrap(),
    ]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(report2.join("index.html").is_file());

    // the same command resumes: nothing is recomputed
    let rerun = vephys(&args);
    assert!(rerun.status.success(), "{}", text(&rerun.stderr));
    assert!(
        text(&rerun.stderr).contains("resumed"),
        "{}",
        text(&rerun.stderr)
    );
    let list = text(&vephys(&["--data-dir", data_s, "status"]).stdout);
    assert_eq!(
        list.lines()
            .filter(|l| l.contains("local efficientnet_lite0"))
            .count(),
        1,
        "{list}"
    );
}

#[test]
fn local_refuses_bad_campaigns_and_leaves_none_behind() {
    weights_dir();
    let worker = binary("vephys-worker");
    for (flag, value, says) in [
        ("--layer", "blocks.99", "blocks.99"),
        ("--filters", "0..100000", "out of range"),
        ("--model", "resnet9000", "resnet9000"),
        ("--steps", "0", "synthesis.steps"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let data_s = data.to_str().unwrap();
        let out = vephys(&local_args(
            data_s,
            worker.to_str().unwrap(),
            &[flag, value],
        ));
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} was accepted");
        assert!(
            stderr.contains(says),
            "{flag} {value}: the error does not say `{says}`:\n{stderr}"
        );
        if data.join("vephys.db").exists() {
            let list = vephys(&["--data-dir", data_s, "status"]);
            assert!(list.status.success(), "{}", text(&list.stderr));
            assert!(
                !text(&list.stdout).contains("local"),
                "{flag} {value} left a campaign:\n{}",
                text(&list.stdout)
            );
        }
    }
}

/// Ctrl-C (SIGINT to the foreground process group; the worker runs in a group of its own, so
/// it reaches only `vephys`) lets the worker finish and report its batch in flight, then
/// both exit; running the command again resumes with that batch's results kept.
#[test]
fn ctrl_c_lets_the_worker_report_its_batch_and_a_rerun_resumes() {
    weights_dir();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (data_s, worker) = (data.to_str().unwrap(), binary("vephys-worker"));
    // one synthesis batch, long enough to be interrupted in flight
    let args = local_args(
        data_s,
        worker.to_str().unwrap(),
        &["--steps", "1500", "--probes", "synthesis"],
    );
    let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut local = e2e::Proc::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_vephys")),
        &owned,
        &[("NO_COLOR", "1".to_string())],
        &dir.path().join("vephys.log"),
    );
    let worker_log = || std::fs::read_to_string(data.join("worker.log")).unwrap_or_default();
    e2e::wait_for(
        "the batch to start",
        std::time::Duration::from_secs(180),
        || worker_log().contains("batch started").then_some(()),
    );
    local.signal_group(libc::SIGINT); // what Ctrl-C in a terminal does
    let status = local
        .wait_exit(std::time::Duration::from_secs(600))
        .expect("vephys exits once the worker has reported its batch");
    let said = local.log_text();
    assert!(!status.success(), "{said}");
    assert!(said.contains("interrupted"), "{said}");
    let log = worker_log();
    let finishing = log.find("finishing the batch in flight").expect(&log);
    let completed = log.rfind("jobs completed accepted=[1, 2, 3]").expect(&log);
    assert!(
        finishing < completed,
        "the batch was reported after the signal:\n{log}"
    );
    assert!(
        !log.contains("releasing"),
        "one Ctrl-C must not release the batch:\n{log}"
    );

    // the rerun finds the batch's results: nothing left to compute
    let again = vephys(&args);
    let stdout = text(&again.stdout);
    assert!(again.status.success(), "{stdout}\n{}", text(&again.stderr));
    assert!(
        text(&again.stderr).contains("resumed"),
        "{}",
        text(&again.stderr)
    );
    assert!(stdout.contains("campaign 1 succeeded"), "{stdout}");
    assert_eq!(
        worker_log().matches("batch started").count(),
        1,
        "{}",
        worker_log()
    );
}

/// `vephys local --model-dir` characterizes an exported model as it does a built-in one: every
/// probe, the summary, the report; the worker registers the model from its directory.
#[test]
fn local_runs_every_probe_on_an_exported_model() {
    let export = e2e::exported("resnet18_small");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (data_s, worker) = (data.to_str().unwrap(), binary("vephys-worker"));
    let out = vephys(&[
        "local",
        "--data-dir",
        data_s,
        "--worker-bin",
        worker.to_str().unwrap(),
        "--device",
        "cpu",
        "--model-dir",
        export.to_str().unwrap(),
        "--layer",
        "layer1",
        "--filters",
        "0..2",
        "--steps",
        "4",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}\nworker log:\n{}",
        std::fs::read_to_string(data.join("worker.log")).unwrap_or_default()
    );
    assert!(stdout.contains("campaign 1 succeeded"), "{stdout}");
    let results = vephys(&["--data-dir", data_s, "results", "1", "--format", "json"]);
    assert!(results.status.success(), "{}", text(&results.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&results.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    for probe in vephys_proto::params::Probe::ALL.map(|p| p.as_str()) {
        assert_eq!(
            rows.iter().filter(|r| r["probe"] == probe).count(),
            2,
            "{probe} results of both filters"
        );
    }
    assert!(data.join("report/index.html").is_file());
}
