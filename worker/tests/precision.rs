//! Precision: `auto` picks what the device supports; bf16 (mixed precision) and fp32 synthesis
//! agree on what matters, on the real EfficientNet-Lite0; bf16 is reproducible; the fast
//! (bf16) and the exact (fp32) forward paths agree within bf16's rounding, built-in and
//! exported; every record names the precision that computed it; bad values are one clear error.
//!
//! This machine may have no native bf16 (a CPU without AVX-512 BF16 or AMX): then libtorch
//! emulates it, correctly but slowly, so the bf16 runs here are small. The engine is called
//! with `Precision::Bf16` directly (resolution is the commands' job), and the commands with
//! VEPHYS_ALLOW_EMULATED_BF16=1.

mod common;

use std::process::{Command, Output};

use common::{fixtures, lite0_weights, photos, rel_err, stderr, worker};
use tch::{Device, Kind, Tensor};
use vephys_worker::device::{
    bf16_support, cpu_bf16_flag, resolve_precision, Precision, PrecisionChoice, ALLOW_EMULATED_BF16,
};
use vephys_worker::image_io::png_bytes;
use vephys_worker::models::Network;
use vephys_worker::probes::{self, Input, MaxImage, ProbeParams, ProbeResult, Response};
use vephys_worker::synthesis::bench::best_photo_activity;
use vephys_worker::synthesis::{synthesize, Status, SynthParams};

fn lite0() -> Network {
    let mut net = Network::build("efficientnet_lite0", Device::Cpu).unwrap();
    net.load_weights(&lite0_weights()).unwrap();
    net
}

fn params(steps: i64, size: i64, precision: Precision) -> SynthParams {
    SynthParams {
        steps,
        size,
        precision,
        ..SynthParams::default()
    }
}

/// bf16 is allowed for this process's children only where native, unless the override is set
/// in the environment the tests were started with.
fn emulation_allowed() -> bool {
    std::env::var(ALLOW_EMULATED_BF16).is_ok_and(|v| v == "1")
}

#[test]
fn auto_picks_what_the_device_supports() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let native = cpu_bf16_flag(&cpuinfo).is_some();
    let support = bf16_support(Device::Cpu);
    assert_eq!(support.native, native, "{}", support.reason);
    let auto = resolve_precision(PrecisionChoice::Auto, Device::Cpu).unwrap();
    assert_eq!(
        auto,
        if native {
            Precision::Bf16
        } else {
            Precision::Fp32
        }
    );
    assert_eq!(
        resolve_precision(PrecisionChoice::Fp32, Device::Cpu).unwrap(),
        Precision::Fp32
    );
    match resolve_precision(PrecisionChoice::Bf16, Device::Cpu) {
        Ok(p) => {
            assert!(native || emulation_allowed());
            assert_eq!(p, Precision::Bf16);
        }
        Err(e) => {
            assert!(!native && !emulation_allowed());
            let text = e.to_string();
            assert!(
                text.starts_with("bad value for --precision: bf16 needs"),
                "{text}"
            );
            assert!(
                text.contains("avx512_bf16") && text.contains(ALLOW_EMULATED_BF16),
                "{text}"
            );
        }
    }
}

/// The science check, bf16 against fp32 on the same filters of the real EfficientNet-Lite0:
/// every bf16 max image beats every natural photo for its filter, and its activity — measured
/// in fp32 on the saved 8-bit image, as for fp32 runs — is within `TOLERANCE` of the fp32
/// image's.
///
/// Gradient ascent amplifies any rounding difference step by step (fp32 batch against single
/// runs already drift apart, see synthesis.rs), so the two precisions end at different images
/// of the same quality, and the tolerance is about quality, not identity. Measured on a
/// 2-core AVX2 EPYC (emulated bf16), filters 0, 10, ..., 70 of blocks.7, 48 steps: bf16/fp32
/// activity ratios 0.964 to 1.055 (median 0.982) at 64 px, 0.946 to 1.039 (median 1.009) at
/// 96 px; every bf16 image beat every photo. `TOLERANCE` is about three times the largest
/// deviation seen.
const TOLERANCE: f64 = 0.15;

#[test]
fn bf16_and_fp32_synthesis_agree_on_what_matters() {
    let net = lite0();
    let layer = net.layer_index("blocks.7").unwrap();
    let size = 64;
    let filters: Vec<i64> = (0..8).map(|i| i * 10).collect();
    let fp32 = synthesize(
        &net,
        layer,
        &filters,
        &params(48, size, Precision::Fp32),
        &mut |_| {},
    )
    .unwrap();
    let bf16 = synthesize(
        &net,
        layer,
        &filters,
        &params(48, size, Precision::Bf16),
        &mut |_| {},
    )
    .unwrap();
    let best = best_photo_activity(&net, layer, &filters, size, &photos()).unwrap();
    let mut ratios = Vec::new();
    for ((f, b), photo) in fp32.iter().zip(&bf16).zip(&best) {
        assert_eq!((f.status, b.status), (Status::Ok, Status::Ok));
        assert!(
            b.mean_activity > *photo,
            "filter {}: the bf16 max image's activity {:.4} <= the best photo's {:.4}",
            b.filter,
            b.mean_activity,
            photo
        );
        let ratio = b.mean_activity / f.mean_activity;
        ratios.push(ratio);
        assert!(
            (ratio - 1.0).abs() <= TOLERANCE,
            "filter {}: bf16 image's activity {:.4} vs fp32 image's {:.4} (ratio {ratio:.3})",
            b.filter,
            b.mean_activity,
            f.mean_activity
        );
        // the objective climbed in bf16 too
        assert!(
            b.trajectory.last().unwrap() > &b.trajectory[0],
            "filter {}",
            b.filter
        );
    }
    eprintln!("bf16/fp32 activity ratios: {ratios:.3?}");
}

#[test]
fn bf16_synthesis_gives_identical_png_bytes_for_the_same_seed() {
    let net = lite0();
    let layer = net.layer_index("blocks.4").unwrap();
    let p = params(8, 48, Precision::Bf16);
    let run = |p: &SynthParams| -> Vec<Vec<u8>> {
        synthesize(&net, layer, &[0, 5, 9], p, &mut |_| {})
            .unwrap()
            .iter()
            .map(|o| png_bytes(&o.image).unwrap())
            .collect()
    };
    let first = run(&p);
    assert_eq!(first, run(&p));
    let fp32 = run(&SynthParams {
        precision: Precision::Fp32,
        ..p.clone()
    });
    assert_ne!(first, fp32, "bf16 must actually run in bf16");
    assert_ne!(
        p.hash(),
        SynthParams {
            precision: Precision::Fp32,
            ..p.clone()
        }
        .hash()
    );
}

/// Largest error of bf16 maps relative to the fp32 map's largest value. bf16 keeps 8 bits of
/// mantissa (rounding 2^-9, 0.2%, per value), and errors grow through the layers: measured
/// 2.3% at EfficientNet-Lite0's blocks.7 and 0.6% at the exported ResNet-18's layer2 (random
/// 64 px images); `FORWARD_TOLERANCE` is about 2.5 times the larger.
const FORWARD_TOLERANCE: f64 = 0.06;

#[test]
fn the_fast_and_the_exact_forward_paths_agree() {
    tch::manual_seed(3);
    let x = Tensor::rand([2, 3, 64, 64], (Kind::Float, Device::Cpu));
    let filters = [0i64, 7, 20];
    let mut nets = vec![(lite0(), "blocks.7")];
    let dir = fixtures().join("exported/resnet18_small");
    nets.push((Network::load_dir(&dir, Device::Cpu).unwrap(), "layer2"));
    for (net, layer) in &nets {
        let l = net.layer_index(layer).unwrap();
        let exact = tch::no_grad(|| net.forward_to(&x, l)).unwrap();
        let fast = tch::no_grad(|| net.forward_to_in(&x, l, Precision::Bf16)).unwrap();
        assert_eq!(fast.kind(), Kind::Float, "maps come back fp32");
        let err = rel_err(&fast, &exact);
        eprintln!(
            "{} {layer}: bf16 vs fp32 relative error {err:.4}",
            net.name()
        );
        assert!(
            err > 0.0 && err < FORWARD_TOLERANCE,
            "{} {layer}: bf16 vs fp32 {err}",
            net.name()
        );
        let index = Tensor::from_slice(&filters);
        let channels = net
            .forward_to_channels_in(&x, l, &filters, Precision::Bf16)
            .unwrap();
        let err = rel_err(&channels, &exact.index_select(1, &index));
        assert!(
            err < FORWARD_TOLERANCE,
            "{} {layer}: channels bf16 vs fp32 {err}",
            net.name()
        );
        // gradients reach the fp32 image through the bf16 network
        let leaf = x.detach().set_requires_grad(true);
        let out = net.forward_to_in(&leaf, l, Precision::Bf16).unwrap();
        let g = Tensor::run_backward(&[out.sum(Kind::Float)], &[&leaf], false, false).remove(0);
        assert_eq!(g.kind(), Kind::Float);
        assert!(g.abs().max().double_value(&[]) > 0.0);
    }
}

/// A probe in bf16 measures the max image with its other stimuli (its curves are computed in
/// one precision); in fp32 it takes the response the synthesis measured.
#[test]
fn a_bf16_probe_measures_the_max_image_itself() {
    let net = lite0();
    let layer = net.layer_index("blocks.2").unwrap();
    let image = Tensor::rand([3, 48, 48], (Kind::Float, Device::Cpu));
    let known = Response {
        max: 1e9,
        mean: 1e9,
    };
    let images = [MaxImage {
        image,
        response: Some(known),
    }];
    let run = |precision| {
        let params = ProbeParams {
            precision,
            ..ProbeParams::default()
        };
        let mut r = probes::run(
            &net,
            layer,
            probes::Probe::Baseline,
            &[3],
            Input::MaxImages(&images),
            &params,
        )
        .unwrap();
        match r.remove(0) {
            ProbeResult::Baseline(b) => b.responses.max[0],
            _ => unreachable!(),
        }
    };
    assert_eq!(run(Precision::Fp32), 1e9, "fp32 takes the known response");
    let measured = run(Precision::Bf16);
    assert!(
        measured < 1e6 && measured.is_finite(),
        "bf16 measures it: {measured}"
    );
}

fn worker_bf16(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vephys-worker"))
        .args(args)
        .env("VEPHYS_WEIGHTS_DIR", lite0_weights().parent().unwrap())
        .env("VEPHYS_DEVICE", "cpu")
        .env(ALLOW_EMULATED_BF16, "1")
        .output()
        .expect("run vephys-worker")
}

fn json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn every_record_names_its_precision() {
    let dir = tempfile::tempdir().unwrap();
    let synth = |precision: &str, out: &std::path::Path, run: fn(&[&str]) -> Output| {
        let o = run(&[
            "synth",
            "--layer",
            "blocks.2",
            "--filters",
            "0,3",
            "--steps",
            "3",
            "--size",
            "32",
            "--precision",
            precision,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{precision}: {}", stderr(&o));
    };
    let (fp32, bf16, auto) = (
        dir.path().join("fp32"),
        dir.path().join("bf16"),
        dir.path().join("auto"),
    );
    synth("fp32", &fp32, worker);
    synth("bf16", &bf16, worker_bf16);
    synth("auto", &auto, worker);
    let auto_is = resolve_precision(PrecisionChoice::Auto, Device::Cpu)
        .unwrap()
        .as_str();
    for (out, expect) in [(&fp32, "fp32"), (&bf16, "bf16"), (&auto, auto_is)] {
        let doc = json(&out.join("filter_0003.json"));
        assert_eq!(doc["precision"], expect, "{doc}");
        assert_eq!(doc["params"]["precision"], expect, "{doc}");
        let mixed = if expect == "bf16" {
            serde_json::json!("autocast")
        } else {
            serde_json::Value::Null
        };
        assert_eq!(doc["mixed_precision"], mixed);
    }
    let hash = |out: &std::path::Path| json(&out.join("filter_0000.json"))["params_hash"].clone();
    assert_ne!(
        hash(&fp32),
        hash(&bf16),
        "results of different precisions never share a hash"
    );

    // probes: the records, and the params they hash
    let probe = |precision: &str, run: fn(&[&str]) -> Output| -> serde_json::Value {
        let out = dir.path().join(format!("hue_{precision}"));
        let o = run(&[
            "probe",
            "--probe",
            "hue",
            "--layer",
            "blocks.2",
            "--filters",
            "1",
            "--size",
            "32",
            "--precision",
            precision,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{precision}: {}", stderr(&o));
        json(&out.join("filter_0001_hue.json"))
    };
    let (a, b) = (probe("fp32", worker), probe("bf16", worker_bf16));
    assert_eq!(
        (a["precision"].as_str(), b["precision"].as_str()),
        (Some("fp32"), Some("bf16"))
    );
    assert_eq!(b["params"]["precision"], "bf16");
    assert_ne!(a["params_hash"], b["params_hash"]);
}

#[test]
fn bad_precisions_are_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    for command in ["synth", "probe", "characterize"] {
        let mut args = vec![
            command,
            "--layer",
            "blocks.2",
            "--filters",
            "0",
            "--out",
            out.to_str().unwrap(),
        ];
        if command == "probe" {
            args.extend(["--probe", "hue"]);
        }
        for bad in ["fp16", "double"] {
            let mut a = args.clone();
            a.extend(["--precision", bad]);
            let o = worker(&a);
            assert!(!o.status.success(), "{command} --precision {bad} succeeded");
            let err = stderr(&o);
            assert!(
                err.contains(&format!(
                    "unknown precision `{bad}`; use fp32, bf16 or auto"
                )),
                "{err}"
            );
            assert!(err.contains("--precision"), "{err}");
        }
        // the environment variable reads the same
        let o = Command::new(env!("CARGO_BIN_EXE_vephys-worker"))
            .args(&args)
            .env("VEPHYS_PRECISION", "fp16")
            .env("VEPHYS_DEVICE", "cpu")
            .output()
            .unwrap();
        assert!(
            !o.status.success() && stderr(&o).contains("unknown precision `fp16`"),
            "{}",
            stderr(&o)
        );
        if !bf16_support(Device::Cpu).native && !emulation_allowed() {
            let mut a = args.clone();
            a.extend(["--precision", "bf16"]);
            let o = worker(&a);
            assert!(
                !o.status.success(),
                "{command} --precision bf16 without native bf16 succeeded"
            );
            let err = stderr(&o);
            assert!(
                err.contains(
                    "bad value for --precision: bf16 needs a device that runs it natively"
                ),
                "{err}"
            );
            assert_eq!(err.trim().lines().count(), 1, "one clear error: {err}");
        }
        assert!(!out.exists(), "{command} wrote {}", out.display());
    }
}
