//! Probe cost against synthesis cost: all the paper's probes (baseline, zoom, rotation, color)
//! of one filter, against that filter's synthesis at default settings (256 steps, 224 px,
//! batch 1), on the same machine in the same run. Goal: probes <= 5% of synthesis.
//!
//! Synthesis time is measured over a few steps and scaled to the default step count (every
//! step costs the same); VEPHYS_BENCH_STEPS scales the number of timed steps. The single-colour
//! max images the color probe starts from are syntheses of their own and are not counted as
//! probe time. The two are timed alternately, `VEPHYS_BENCH_ROUNDS` times (default 2), and the
//! best of each is kept, so that load from other processes hits both alike. Grating and hue are
//! left out: their ~300 stimuli are shared by every filter of a layer.
//!
//! Run: `cargo bench -p vephys-worker --bench probes` inside the project's environment.

use std::path::PathBuf;
use std::time::Instant;

use tch::{Kind, Tensor};
use vephys_worker::device::{describe, parse_device};
use vephys_worker::models::Network;
use vephys_worker::probes::{baseline, color, rotation, zoom, ProbeParams};
use vephys_worker::synthesis::{synthesize, ColorMode, SynthParams};

fn env_dir(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(default))
}

/// Seconds per filter of a default synthesis, from `steps` timed steps at batch 1.
fn synthesis_seconds(net: &Network, layer: usize, steps: i64) -> f64 {
    let params = SynthParams {
        steps,
        ..SynthParams::default()
    };
    let start = Instant::now();
    synthesize(net, layer, &[0], &params, &mut || {}).unwrap();
    start.elapsed().as_secs_f64() / steps as f64 * SynthParams::default().steps as f64
}

/// Seconds for the four paper probes of one filter.
fn paper_probe_seconds(net: &Network, layer: usize) -> f64 {
    let size = SynthParams::default().size;
    let p = ProbeParams::default();
    let image = Tensor::rand([3, size, size], (Kind::Float, net.device()));
    let single: [Tensor; 3] = [ColorMode::R, ColorMode::G, ColorMode::B].map(|c| {
        let mask = Tensor::from_slice(&c.mask())
            .to_device(net.device())
            .view([3, 1, 1]);
        &image * mask
    });
    let (f, images, singles) = (&[0i64][..], std::slice::from_ref(&image), [single]);
    let start = Instant::now();
    baseline::run(net, layer, f, images, &p).unwrap();
    zoom::run(net, layer, f, images, &p).unwrap();
    rotation::run(net, layer, f, images, &p).unwrap();
    color::run(net, layer, f, &singles, &p).unwrap();
    start.elapsed().as_secs_f64()
}

/// Stimuli the four paper probes show one filter.
fn paper_stimuli() -> usize {
    let p = ProbeParams::default();
    baseline::STIMULI.len() + p.zoom_factors.len() + p.angles.len() + color::labels().len()
}

fn main() {
    let device =
        parse_device(&std::env::var("VEPHYS_DEVICE").unwrap_or_else(|_| "auto".into())).unwrap();
    let scale: f64 = std::env::var("VEPHYS_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let steps = (8.0 * scale).ceil().max(1.0) as i64;
    let rounds: usize = std::env::var("VEPHYS_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let cases = [
        (
            "vgg19",
            "block3_pool",
            env_dir("VEPHYS_FIXTURES", ".cache/vephys/fixtures").join("vgg19.safetensors"),
        ),
        (
            "efficientnet_lite0",
            "blocks.4",
            env_dir("VEPHYS_WEIGHTS_DIR", ".cache/vephys/weights")
                .join("efficientnet_lite0.safetensors"),
        ),
    ];
    println!(
        "probe cost vs synthesis, 224 px, device {}; synthesis timed over {steps} steps and scaled to {}",
        describe(device),
        SynthParams::default().steps
    );
    println!(
        "{} stimuli per filter for the paper probes; best of {rounds} alternating rounds",
        paper_stimuli()
    );
    println!(
        "{:<30} {:>14} {:>14} {:>8}",
        "model/layer", "synthesis s", "paper probes s", "ratio"
    );
    for (model, layer, weights) in cases {
        let mut net = Network::build(model, device).unwrap();
        net.load_weights(&weights).unwrap();
        let layer_index = net.layer_index(layer).unwrap();
        // warm-up: libtorch picks its kernels on first use
        synthesis_seconds(&net, layer_index, 1);
        paper_probe_seconds(&net, layer_index);
        let (mut synth, mut probes) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..rounds {
            synth = synth.min(synthesis_seconds(&net, layer_index, steps));
            probes = probes.min(paper_probe_seconds(&net, layer_index));
        }
        println!(
            "{:<30} {:>14.2} {:>14.3} {:>7.2}%",
            format!("{model}/{layer}"),
            synth,
            probes,
            100.0 * probes / synth,
        );
    }
}
