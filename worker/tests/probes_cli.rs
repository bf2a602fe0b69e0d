//! `characterize` and `probe` as a user runs them, on the real EfficientNet-Lite0 at reduced
//! size: every file and number is there, the two commands agree, and bad input gives one clear
//! error and writes nothing.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{stderr, worker};
use serde_json::Value;

const FREQUENCIES: &str = "2,4,6,8,12,16";

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// One `characterize` of filters 0-3 of blocks.4 at 64 px, shared by the tests.
fn characterized() -> &'static Path {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    OUT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep().join("lite0");
        let o = worker(&[
            "characterize",
            "--layer",
            "blocks.4",
            "--filters",
            "0-3",
            "--size",
            "64",
            "--steps",
            "4",
            "--frequencies",
            FREQUENCIES,
            "--json",
            "--out",
            dir.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(summary["filters"].as_array().unwrap().len(), 4);
        dir
    })
}

#[test]
fn characterize_writes_every_curve_number_and_figure_per_filter() {
    let out = characterized();
    for f in 0..4 {
        let doc = read_json(&out.join(format!("filter_{f:04}.json")));
        assert_eq!(doc["status"], "ok", "filter {f}");
        let probes = doc["probes"].as_object().unwrap();
        for name in ["baseline", "zoom", "rotation", "color", "grating", "hue"] {
            assert!(probes.contains_key(name), "filter {f} lacks {name}");
        }
        let rotation = &probes["rotation"];
        assert_eq!(rotation["curve"]["values"].as_array().unwrap().len(), 24);
        assert_eq!(
            rotation["curve"]["responses"]["mean"]
                .as_array()
                .unwrap()
                .len(),
            24
        );
        for key in ["preferred", "peak", "peak_to_mean", "bandwidth", "flat"] {
            assert!(
                rotation["curve"]["tuning"]["mean"].get(key).is_some(),
                "{key}"
            );
        }
        assert!(rotation["symmetry_period_deg"].get("mean").is_some());
        assert!(rotation["orientation_circular_variance"]
            .get("max")
            .is_some());
        assert_eq!(
            probes["zoom"]["curve"]["values"].as_array().unwrap().len(),
            8
        );
        assert!(["r", "g", "b"].contains(
            &probes["color"]["preferred_channel"]["mean"]
                .as_str()
                .unwrap()
        ));
        assert_eq!(
            probes["color"]["responses"]["max"]
                .as_array()
                .unwrap()
                .len(),
            15,
            "12 stimuli of the paper's protocol and 3 equal-channel controls"
        );
        assert_eq!(
            probes["grating"]["responses"]["mean"]
                .as_array()
                .unwrap()
                .len(),
            12 * 6
        );
        assert_eq!(
            probes["hue"]["curve"]["values"].as_array().unwrap().len(),
            12
        );
        assert!(doc["weights_sha256"].as_str().unwrap().len() == 64);
        assert!(doc["timings"]["probe_seconds"].as_f64().unwrap() > 0.0);
        for c in ["r", "g", "b"] {
            assert_eq!(doc["synthesis"][c]["status"], "ok");
            assert!(out.join(c).join(format!("filter_{f:04}.png")).is_file());
        }
        let figure = image::open(out.join(format!("filter_{f:04}_tuning.png"))).unwrap();
        assert!(figure.width() >= 4 * 200 && figure.height() >= 2 * 200);
    }
}

#[test]
fn probe_reproduces_the_curves_of_characterize() {
    let out = characterized();
    let probe_out = tempfile::tempdir().unwrap();
    for probe in ["rotation", "color"] {
        let o = worker(&[
            "probe",
            "--probe",
            probe,
            "--layer",
            "blocks.4",
            "--filters",
            "1,3",
            "--images",
            out.to_str().unwrap(),
            "--out",
            probe_out.path().to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{probe}: {}", stderr(&o));
        for f in [1, 3] {
            let ours = read_json(&probe_out.path().join(format!("filter_{f:04}_{probe}.json")));
            let theirs = read_json(&out.join(format!("filter_{f:04}.json")));
            let (a, b) = (
                &ours["result"]["responses"],
                &theirs["probes"][probe]["responses"],
            );
            let (a, b) = if probe == "rotation" {
                (
                    &ours["result"]["curve"]["responses"],
                    &theirs["probes"][probe]["curve"]["responses"],
                )
            } else {
                (a, b)
            };
            for (x, y) in a["mean"]
                .as_array()
                .unwrap()
                .iter()
                .zip(b["mean"].as_array().unwrap())
            {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                assert!(
                    (x - y).abs() <= 1e-4 * y.abs().max(1e-3),
                    "{probe} filter {f}: {x} vs {y}"
                );
            }
        }
    }
    // grating needs no max images; --json prints the results
    let o = worker(&[
        "probe",
        "--probe",
        "grating",
        "--layer",
        "blocks.4",
        "--filters",
        "0",
        "--size",
        "64",
        "--frequencies",
        FREQUENCIES,
        "--json",
        "--out",
        probe_out.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let docs: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(docs[0]["result"]["probe"], "grating");
    assert!(probe_out.path().join("filter_0000_grating.json").is_file());
}

#[test]
fn bad_probe_input_is_refused_and_nothing_is_written() {
    let images = characterized();
    let odd = tempfile::tempdir().unwrap();
    // a max image of another size beside the right ones
    std::fs::copy(
        images.join("filter_0000.png"),
        odd.path().join("filter_0000.png"),
    )
    .unwrap();
    let small = image::RgbImage::new(48, 48);
    small.save(odd.path().join("filter_0001.png")).unwrap();
    let images = images.to_str().unwrap();
    let odd = odd.path().to_str().unwrap();
    let cases: [(&[&str], &str); 8] = [
        (&["--probe", "wobble", "--images", images], "wobble"),
        (
            &[
                "--probe", "rotation", "--images", images, "--angles", "345:0:15",
            ],
            "inverted",
        ),
        (
            &["--probe", "rotation", "--images", images, "--angles", ""],
            "empty",
        ),
        (
            &[
                "--probe",
                "zoom",
                "--images",
                images,
                "--zoom-factors",
                "0,1,2",
            ],
            "bad value for --zoom-factors: zoom factor 0 is out of bounds",
        ),
        (
            &[
                "--probe",
                "zoom",
                "--images",
                images,
                "--zoom-factors",
                "-1,1",
            ],
            "bad value for --zoom-factors: zoom factor -1 is out of bounds",
        ),
        (
            &["--probe", "zoom", "--images", images, "--filters", "0-5"],
            "missing max image",
        ),
        (
            &["--probe", "baseline", "--images", odd, "--filters", "0,1"],
            "48 x 48",
        ),
        (&["--probe", "rotation", "--filters", "0"], "--images"),
    ];
    for (extra, expected) in cases {
        let out = tempfile::tempdir().unwrap().path().join("never");
        let mut args = vec![
            "probe",
            "--layer",
            "blocks.4",
            "--filters",
            "0",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = worker(&args);
        assert!(!o.status.success(), "{extra:?} succeeded");
        let err = stderr(&o);
        assert!(err.contains(expected), "{extra:?}: {err}");
        assert!(!out.exists(), "{extra:?} wrote {}", out.display());
    }
    // characterize checks its probe parameters before synthesizing anything
    let out = tempfile::tempdir().unwrap().path().join("never");
    let o = worker(&[
        "characterize",
        "--layer",
        "blocks.4",
        "--filters",
        "0",
        "--size",
        "64",
        "--angles",
        "0:90:0",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("step 0 must be > 0"), "{}", stderr(&o));
    assert!(!out.exists());
}

/// Every default is valid at any accepted size: with no flag but the size, `characterize` runs
/// every probe at small and odd sizes (the grating frequencies were once fixed, and 64 cycles
/// per image refused every size up to 128).
#[test]
fn characterize_runs_with_default_parameters_at_any_size() {
    for size in ["32", "97"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("char");
        let o = worker(&[
            "characterize",
            "--layer",
            "blocks.4",
            "--filters",
            "1",
            "--size",
            size,
            "--steps",
            "2",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "--size {size}: {}", stderr(&o));
        let doc = read_json(&out.join("filter_0001.json"));
        let frequencies = doc["probes"]["grating"]["frequencies"].as_array().unwrap();
        let nyquist = size.parse::<f64>().unwrap() / 2.0;
        assert!(
            !frequencies.is_empty() && frequencies.iter().all(|f| f.as_f64().unwrap() < nyquist),
            "--size {size}: {frequencies:?}"
        );
    }
}

/// The probe command's derived numbers are the daemon's: the same encoding (`csi` from the
/// max-activity responses, the mean-activity ones under `mean`).
#[test]
fn probe_derives_the_numbers_the_daemon_stores() {
    let dir = characterized();
    let out = tempfile::tempdir().unwrap();
    let o = worker(&[
        "probe",
        "--probe",
        "baseline",
        "--layer",
        "blocks.4",
        "--filters",
        "0",
        "--images",
        dir.to_str().unwrap(),
        "--json",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    let d = &doc[0]["derived"];
    let r = &doc[0]["result"]["responses"];
    let csi = |a: f64, b: f64| (a - b) / (a + b);
    let (max, mean) = (&r["max"], &r["mean"]);
    let expect = csi(max[0].as_f64().unwrap(), max[2].as_f64().unwrap());
    assert!((d["csi"].as_f64().unwrap() - expect).abs() < 1e-12, "{d}");
    let expect = csi(mean[0].as_f64().unwrap(), mean[2].as_f64().unwrap());
    assert!(
        (d["mean"]["csi"].as_f64().unwrap() - expect).abs() < 1e-12,
        "{d}"
    );
}
