//! The `vephys-worker` commands as a user runs them: outputs on good input, and on bad input
//! one clear error, a non-zero exit and nothing written.

mod common;

use std::path::Path;

use common::{fixtures, stderr, worker};

#[test]
fn layers_json_lists_every_layer_with_its_shape() {
    let o = worker(&["layers", "--model", "vgg19", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["model"], "vgg19");
    let pool3 = doc["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "block3_pool")
        .unwrap();
    assert_eq!(pool3["aliases"][0], "features.18");
    assert_eq!(
        (pool3["channels"].as_i64(), pool3["height"].as_i64()),
        (Some(256), Some(28))
    );
}

#[test]
fn respond_reports_max_and_mean_per_filter_and_image() {
    let photos = fixtures().join("photos");
    let (cat, coffee) = (photos.join("chelsea.png"), photos.join("coffee.png"));
    let o = worker(&[
        "respond",
        "--layer",
        "logits",
        "--filters",
        "281-285,967",
        "--size",
        "224",
        "--json",
        "--image",
        cat.to_str().unwrap(),
        coffee.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let r = doc["responses"].as_array().unwrap();
    assert_eq!(r.len(), 2);
    // logits are 1x1 maps: max == mean; the cat photo prefers a cat class over espresso
    let cat_max: Vec<f64> = r[0]["max"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(cat_max.len(), 6);
    assert!(cat_max[..5].iter().cloned().fold(f64::MIN, f64::max) > cat_max[5]);
    assert_eq!(r[1]["max"], r[1]["mean"]);
}

#[test]
fn synth_writes_a_png_and_a_json_per_filter() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = worker(&[
        "synth",
        "--layer",
        "blocks.3",
        "--filters",
        "0-2,7",
        "--steps",
        "6",
        "--size",
        "40",
        "--batch",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in [0, 1, 2, 7] {
        let json: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out.join(format!("filter_{f:04}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(json["status"], "ok");
        assert_eq!(json["objective_trajectory"].as_array().unwrap().len(), 6);
        assert_eq!(json["weights_sha256"].as_str().unwrap().len(), 64);
        assert_eq!(json["params"]["size"], 40);
        assert!(json["versions"]["libtorch"]
            .as_str()
            .unwrap()
            .starts_with("2.11"));
        let png = image::open(out.join(format!("filter_{f:04}.png"))).unwrap();
        assert_eq!((png.width(), png.height()), (40, 40));
    }
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 8);
}

/// Runs a bad command and checks: failure, the expected words on stderr, no output directory.
fn refused(args: &[&str], expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut full: Vec<&str> = args.to_vec();
    if args[0] == "synth" {
        full.extend(["--out", out.to_str().unwrap()]);
    }
    let o = worker(&full);
    assert!(!o.status.success(), "{args:?} succeeded");
    let err = stderr(&o);
    assert!(
        err.contains(expect),
        "{args:?}: expected `{expect}` in: {err}"
    );
    assert!(
        !Path::new(&out).exists(),
        "{args:?} wrote {}",
        out.display()
    );
}

#[test]
fn bad_input_gets_one_clear_error_and_writes_nothing() {
    let junk = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(junk.path(), b"definitely not a png").unwrap();
    let vgg16 = fixtures().join("vgg16.safetensors");
    fn synth<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec![
            "synth",
            "--layer",
            "blocks.3",
            "--filters",
            "0",
            "--steps",
            "2",
            "--size",
            "32",
        ];
        v.extend_from_slice(extra);
        v
    }
    refused(
        &[
            "synth",
            "--model",
            "alexnet",
            "--layer",
            "x",
            "--filters",
            "0",
        ],
        "unknown model `alexnet`",
    );
    refused(
        &["synth", "--layer", "blocks.99", "--filters", "0"],
        "no layer `blocks.99`",
    );
    refused(&synth(&["--filters", "0,40"]), "filter 40 is out of range");
    refused(&synth(&["--filters", "5-2"]), "inverted");
    refused(&synth(&["--steps", "0"]), "--steps");
    refused(&synth(&["--steps", "-3"]), "--steps");
    refused(&synth(&["--lr", "-1"]), "--lr");
    refused(&synth(&["--decay", "1.5"]), "--decay");
    let vgg19 = fixtures().join("vgg19.safetensors");
    let vgg19_small = [
        "synth",
        "--model",
        "vgg19",
        "--weights",
        vgg19.to_str().unwrap(),
        "--layer",
        "block5_pool",
    ];
    refused(
        &[&vgg19_small[..], &["--filters", "0", "--size", "16"]].concat(),
        "use a size of at least 32",
    );
    refused(
        &synth(&["--weights", "/nonexistent/w.safetensors"]),
        "no such file",
    );
    refused(
        &synth(&["--weights", vgg16.to_str().unwrap()]),
        "does not match efficientnet_lite0",
    );
    refused(
        &synth(&["--weights", junk.path().to_str().unwrap()]),
        "safetensors",
    );
    refused(&synth(&["--device", "tpu"]), "--device");
    refused(
        &[
            "respond",
            "--layer",
            "stem",
            "--image",
            junk.path().to_str().unwrap(),
        ],
        "cannot read it as an image",
    );
    refused(
        &["respond", "--layer", "stem", "--image", "/nonexistent.png"],
        "cannot read it as an image",
    );
}
