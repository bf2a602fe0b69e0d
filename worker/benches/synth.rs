//! Synthesis throughput: vephys against a plain PyTorch loop doing the same work on the same
//! machine, in the same run. Prints image-steps/s for both and their ratio (goal: >= 0.95).
//!
//! Run: `scripts/bench.sh` (or `cargo bench -p vephys-worker --bench synth` inside the
//! project's environment). VEPHYS_BENCH_STEPS scales the number of timed steps,
//! VEPHYS_BENCH_ROUNDS sets the interleaved rounds (best of each is reported), and
//! VEPHYS_BENCH_MODELS limits the models.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use tch::Device;
use vephys_worker::device::{describe, parse_device};
use vephys_worker::models::Network;
use vephys_worker::synthesis::{synthesize, SynthParams};

struct Case {
    model: &'static str,
    layer: &'static str,
    /// The same layer under its torchvision/reference name, for the PyTorch loop.
    reference_layer: &'static str,
    weights: PathBuf,
}

fn env_dir(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(default))
}

/// Steady-state image-steps/s: from the end of the first step to the end of the last (both
/// sides exclude start-up and the first step's kernel selection; vephys's final measurement of
/// each pass and, on the CPU, the start of each pass after the first count against it).
fn vephys_rate(net: &Network, layer: &str, batch: usize, steps: i64) -> f64 {
    let layer = net.layer_index(layer).unwrap();
    let filters: Vec<i64> = (0..batch as i64).collect();
    let params = SynthParams {
        steps: steps + 1,
        ..SynthParams::default()
    };
    // (when, image-steps done by then)
    let mut stamps: Vec<(Instant, u64)> = Vec::new();
    let mut done = 0;
    synthesize(net, layer, &filters, &params, &mut |n| {
        if let Device::Cuda(n) = net.device() {
            tch::Cuda::synchronize(n as i64);
        }
        done += n;
        stamps.push((Instant::now(), done))
    })
    .unwrap();
    let (first, last) = (stamps[0], stamps[stamps.len() - 1]);
    (last.1 - first.1) as f64 / (last.0 - first.0).as_secs_f64()
}

fn pytorch_rate(case: &Case, device: Device, batch: usize, steps: i64) -> f64 {
    let device = match device {
        Device::Cuda(n) => format!("cuda:{n}"),
        _ => "cpu".to_string(),
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/python/bench_synth.py");
    let out = Command::new("python")
        .arg(&script)
        .args([
            case.model,
            case.reference_layer,
            case.weights.to_str().unwrap(),
            "224",
            &batch.to_string(),
            &steps.to_string(),
            &device,
        ])
        .output()
        .expect("run python (use scripts/bench.sh so the project's venv is on PATH)");
    assert!(
        out.status.success(),
        "pytorch loop failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["image_steps_per_s"].as_f64().unwrap()
}

fn main() {
    let device =
        parse_device(&std::env::var("VEPHYS_DEVICE").unwrap_or_else(|_| "auto".into())).unwrap();
    let scale: f64 = std::env::var("VEPHYS_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let rounds: usize = std::env::var("VEPHYS_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let cases = [
        Case {
            model: "vgg19",
            layer: "block3_pool",
            reference_layer: "features.18",
            weights: env_dir("VEPHYS_FIXTURES", ".cache/vephys/fixtures").join("vgg19.safetensors"),
        },
        Case {
            model: "efficientnet_lite0",
            layer: "blocks.7",
            reference_layer: "blocks.7",
            weights: env_dir("VEPHYS_WEIGHTS_DIR", ".cache/vephys/weights")
                .join("efficientnet_lite0.safetensors"),
        },
    ];
    println!("synthesis benchmark, 224 px, device {}", describe(device));
    if device == Device::Cpu {
        println!(
            "  on the CPU vephys runs a batch one image per pass (faster there); the PyTorch loop runs it whole"
        );
    }
    println!(
        "{:<30} {:>5} {:>6} {:>14} {:>14} {:>7}",
        "model/layer", "batch", "steps", "vephys img-st/s", "pytorch img-st/s", "ratio"
    );
    // VEPHYS_BENCH_MODELS=efficientnet_lite0 (comma-separated) runs only those models.
    let only = std::env::var("VEPHYS_BENCH_MODELS").unwrap_or_default();
    for case in cases
        .iter()
        .filter(|c| only.is_empty() || only.split(',').any(|m| m == c.model))
    {
        let mut net = Network::build(case.model, device).unwrap();
        net.load_weights(&case.weights).unwrap();
        for (batch, base_steps) in [(1usize, 4.0f64), (16, 2.0)] {
            let steps = (base_steps * scale).ceil().max(1.0) as i64;
            // Interleaved rounds, best of each: the other processes on a shared machine slow
            // whichever side they happen to overlap, never both the same way.
            let (mut ours, mut theirs) = (0.0f64, 0.0f64);
            for _ in 0..rounds {
                ours = ours.max(vephys_rate(&net, case.layer, batch, steps));
                theirs = theirs.max(pytorch_rate(case, device, batch, steps));
            }
            println!(
                "{:<30} {:>5} {:>6} {:>14.2} {:>14.2} {:>7.3}",
                format!("{}/{}", case.model, case.layer),
                batch,
                steps,
                ours,
                theirs,
                ours / theirs
            );
        }
    }
}
