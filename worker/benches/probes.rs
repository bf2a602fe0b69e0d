//! Probe cost against synthesis cost: all the paper's probes (baseline, zoom, rotation, color)
//! of one filter, against that filter's synthesis (256 steps, 224 px), on the same machine in
//! the same run. Goal: probes <= 5% of synthesis at default settings on CPU.
//!
//! What each side counts (the bench prints it too):
//! - synthesis: one full-colour synthesis of the filter (256 steps), run as the worker runs it
//!   (`synthesize`: on the CPU one image per pass, so one filter is timed; elsewhere the default
//!   batch of 16 at once, divided by 16). A run of a few steps and one of three times as many
//!   give the cost of a step and the fixed cost (start, final measurement), so neither is
//!   scaled wrongly to 256 steps. `VEPHYS_BENCH_STEPS` scales the timed steps (4 and 12).
//! - probes: making and evaluating the stimuli of the four paper probes for that one filter,
//!   49 at the defaults, as `characterize` and `serve` run them:
//!   - the max image's own response, measured by its synthesis, is not run again: the
//!     baseline's `max_image`, zoom 1 and the color probe's three "as is" stimuli (its
//!     single-colour syntheses measured them);
//!   - the baseline's white and noise images are shared by the filters of a batch: the
//!     baseline is timed for the default batch of 16 filters and divided by 16.
//!
//!   That leaves 2 + 2/16 + 7 + 24 + 9 = 42.1 images run per filter. Not counted: the three
//!   single-colour max images the color probe starts from; they are syntheses of their own
//!   (each as costly as the full-colour one), not probes. Grating and hue are left out: their
//!   ~300 stimuli are shared by every filter of a layer.
//!
//! The sides are timed alternately, `VEPHYS_BENCH_ROUNDS` times (default 3), so that load from
//! other processes hits them alike; the best round of each is the result, the worst is printed
//! beside it, and each round's own ratios (timed back to back) follow with their median. Times
//! are wall clock. Other processes on the machine distort the ratio; run it on an otherwise
//! idle machine.
//!
//! `VEPHYS_BENCH_MODELS=vgg19` (comma-separated) runs only those models.
//! `VEPHYS_BENCH_FORWARD=1` also times the two ways of evaluating the rotation probe's 24
//! stimuli: the full forward pass then selecting the filter (`forward_to`, what the probes did
//! first) against `forward_to_channels` (what `measure` uses).
//!
//! Run: `cargo bench -p vephys-worker --bench probes` inside the project's environment.

use std::path::PathBuf;
use std::time::Instant;

use tch::{Kind, Tensor};
use vephys_worker::device::{describe, parse_device};
use vephys_worker::models::Network;
use vephys_worker::probes::{self, baseline, color, stimuli, Input, MaxImage, Probe, ProbeParams};
use vephys_worker::synthesis::{synthesize, ColorMode, SynthParams};

fn env_dir(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(default))
}

fn env_num<T: std::str::FromStr>(var: &str, default: T) -> T {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Seconds of wall clock `f` takes.
fn seconds(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64()
}

/// Best (lowest) and worst of the rounds.
#[derive(Debug, Clone, Copy)]
struct Spread {
    best: f64,
    worst: f64,
}

impl Spread {
    fn new() -> Spread {
        Spread {
            best: f64::INFINITY,
            worst: 0.0,
        }
    }

    fn push(&mut self, s: f64) {
        self.best = self.best.min(s);
        self.worst = self.worst.max(s);
    }
}

/// The default `--batch` of `synth` and `characterize`.
const DEFAULT_SYNTH_BATCH: i64 = 16;

/// Seconds per filter of a full-colour synthesis (256 steps at 224 px) of the default batch,
/// from runs of `steps` and `3 * steps` steps (see the top of the file).
fn synthesis_seconds(net: &Network, layer: usize, steps: i64) -> f64 {
    // the CPU runs a batch one image per pass: one filter costs what each of 16 would
    let batch = match net.device() {
        tch::Device::Cpu => 1,
        _ => DEFAULT_SYNTH_BATCH,
    };
    let filters: Vec<i64> = (0..batch).collect();
    let run = |steps: i64| {
        let params = SynthParams {
            steps,
            ..SynthParams::default()
        };
        seconds(|| {
            synthesize(net, layer, &filters, &params, &mut |_| {}).unwrap();
        })
    };
    let (short, long) = (run(steps), run(3 * steps));
    let per_step = ((long - short) / (2 * steps) as f64).max(0.0);
    let fixed = (short - per_step * steps as f64).max(0.0);
    (fixed + per_step * SynthParams::default().steps as f64) / batch as f64
}

const PROBES: [&str; 4] = ["baseline", "zoom", "rotation", "color"];

/// What the probes start from: max images of the default batch of filters (the first one's
/// serves zoom and rotation) and the first filter's single-colour ones, made by short
/// syntheses (stimuli cost the same whatever the image), each with its measured response.
struct Inputs {
    filters: Vec<i64>,
    images: Vec<MaxImage>,
    /// One filter's R-only, G-only and B-only max images.
    single: Vec<[MaxImage; 3]>,
}

impl Inputs {
    fn new(net: &Network, layer: usize) -> Inputs {
        let filters: Vec<i64> = (0..DEFAULT_SYNTH_BATCH).collect();
        let run = |color: ColorMode, filters: &[i64]| {
            let params = SynthParams {
                steps: 2,
                color,
                ..SynthParams::default()
            };
            synthesize(net, layer, filters, &params, &mut |_| {}).unwrap()
        };
        let images = run(ColorMode::Rgb, &filters)
            .iter()
            .map(MaxImage::synthesized)
            .collect();
        let single = vec![[ColorMode::R, ColorMode::G, ColorMode::B]
            .map(|c| MaxImage::synthesized(&run(c, &filters[..1])[0]))];
        Inputs {
            filters,
            images,
            single,
        }
    }
}

/// Seconds per filter of each of the four paper probes, in `PROBES` order (see the top of the
/// file: the baseline runs for the whole default batch and is divided by it).
fn paper_probe_seconds(net: &Network, layer: usize, inputs: &Inputs) -> [f64; 4] {
    let p = ProbeParams::default();
    let (f, one) = (&inputs.filters[..1], &inputs.images[..1]);
    let batch = inputs.filters.len() as f64;
    let run = |probe, filters: &[i64], input| {
        probes::run(net, layer, probe, filters, input, &p).unwrap();
    };
    [
        seconds(|| {
            run(
                Probe::Baseline,
                &inputs.filters,
                Input::MaxImages(&inputs.images),
            )
        }) / batch,
        seconds(|| run(Probe::Zoom, f, Input::MaxImages(one))),
        seconds(|| run(Probe::Rotation, f, Input::MaxImages(one))),
        seconds(|| run(Probe::Color, f, Input::SingleColour(&inputs.single))),
    ]
}

/// Images the four paper probes run per filter, in `PROBES` order (the max images' own
/// responses are known; the baseline's white and noise are shared by the default batch).
fn paper_stimuli() -> [f64; 4] {
    let p = ProbeParams::default();
    let known = |n: usize| n as f64 - 1.0;
    let shared = 2.0 / DEFAULT_SYNTH_BATCH as f64;
    [
        known(baseline::STIMULI.len() - 2) + shared,
        known(p.zoom.factors.len()),
        p.rotation.angles.len() as f64,
        color::labels().len() as f64 - 3.0,
    ]
}

/// Seconds for the rotation probe's stimuli through the full forward pass (then the filter
/// selected) and through `forward_to_channels`, and the largest relative difference of their
/// maps.
fn forward_seconds(net: &Network, layer: usize) -> (f64, f64, f64) {
    let size = SynthParams::default().size;
    let p = ProbeParams::default();
    let image = Tensor::rand([3, size, size], (Kind::Float, net.device()));
    let x = stimuli::rotations(&image, &p.rotation.angles, p.rotation.aperture).unwrap();
    let _guard = tch::no_grad_guard();
    let index = Tensor::from_slice(&[0i64]).to_device(net.device());
    let (mut full, mut narrow) = (None, None);
    let a = seconds(|| full = Some(net.forward_to(&x, layer).unwrap().index_select(1, &index)));
    let b = seconds(|| narrow = Some(net.forward_to_channels(&x, layer, &[0]).unwrap()));
    let (full, narrow) = (full.unwrap(), narrow.unwrap());
    let err = (&full - &narrow).abs().max().double_value(&[])
        / full.abs().max().double_value(&[]).max(1e-30);
    (a, b, err)
}

/// The rounds' ratios, sorted, then their median: on a machine whose speed drifts the median
/// of ratios timed back to back is steadier than the ratio of the best times.
fn percent(values: &mut [f64]) -> String {
    values.sort_by(f64::total_cmp);
    let v: Vec<String> = values.iter().map(|r| format!("{r:.2}%")).collect();
    let n = values.len();
    let median = match n % 2 {
        1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    };
    format!("{} (median {median:.2}%)", v.join(" "))
}

fn main() {
    let device =
        parse_device(&std::env::var("VEPHYS_DEVICE").unwrap_or_else(|_| "auto".into())).unwrap();
    let scale = env_num("VEPHYS_BENCH_STEPS", 1.0f64);
    let steps = |n: f64| (n * scale).ceil().max(1.0) as i64;
    let synth_steps = steps(4.0);
    let rounds: usize = env_num("VEPHYS_BENCH_ROUNDS", 3).max(1);
    let compare_forward = std::env::var("VEPHYS_BENCH_FORWARD").is_ok_and(|v| v == "1");
    let only: Option<String> = std::env::var("VEPHYS_BENCH_MODELS").ok();
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
    let counts = paper_stimuli();
    let total: f64 = counts.iter().sum();
    let default_steps = SynthParams::default().steps;
    println!(
        "probe cost vs synthesis per filter, 224 px, device {}",
        describe(device)
    );
    println!(
        "  synthesis: one full-colour synthesis ({default_steps} steps) per filter of the default batch of \
         {DEFAULT_SYNTH_BATCH} (on the CPU one image per pass), from runs of {synth_steps} and {} steps",
        3 * synth_steps
    );
    println!(
        "  probes: making and evaluating the {total:.1} images run per filter of baseline ({:.1}: its white and \
         noise images shared by a batch of {DEFAULT_SYNTH_BATCH}), zoom ({}), rotation ({}), color ({}); the max \
         images' own responses come from their syntheses",
        counts[0], counts[1], counts[2], counts[3]
    );
    println!(
        "  not counted: the 3 single-colour max images the color probe starts from (syntheses of their own)"
    );
    println!(
        "  best of {rounds} alternating rounds, worst in brackets; wall seconds; an idle machine gives honest ratios"
    );
    println!(
        "{:<28} {:>15} {:>15} {:>17}",
        "model/layer", "synthesis s", "probes s", "probes/synthesis",
    );
    for (model, layer, weights) in cases {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|m| m == model))
        {
            continue;
        }
        let mut net = Network::build(model, device).unwrap();
        net.load_weights(&weights).unwrap();
        let layer_index = net.layer_index(layer).unwrap();
        let inputs = Inputs::new(&net, layer_index);
        // warm-up: libtorch picks its kernels on first use
        synthesis_seconds(&net, layer_index, 1);
        paper_probe_seconds(&net, layer_index, &inputs);
        let (mut synthesis, mut probes) = (Spread::new(), Spread::new());
        let mut ratios = Vec::new();
        let mut per_probe = [f64::INFINITY; 4];
        let (mut full, mut narrow, mut err) = (Spread::new(), Spread::new(), 0.0f64);
        for _ in 0..rounds {
            let synth = synthesis_seconds(&net, layer_index, synth_steps);
            let each = paper_probe_seconds(&net, layer_index, &inputs);
            let sum: f64 = each.iter().sum();
            if sum < probes.best {
                per_probe = each;
            }
            synthesis.push(synth);
            probes.push(sum);
            ratios.push(100.0 * sum / synth);
            if compare_forward {
                let (a, b, e) = forward_seconds(&net, layer_index);
                full.push(a);
                narrow.push(b);
                err = err.max(e);
            }
        }
        let spread = |s: Spread, d: usize| format!("{:.d$} [{:.d$}]", s.best, s.worst);
        let ratio = |p: Spread, s: Spread| {
            format!(
                "{:.2}% [{:.2}%]",
                100.0 * p.best / s.best,
                100.0 * p.worst / s.worst
            )
        };
        println!(
            "{:<28} {:>15} {:>15} {:>17}",
            format!("{model}/{layer}"),
            spread(synthesis, 1),
            spread(probes, 2),
            ratio(probes, synthesis),
        );
        let names: Vec<String> = PROBES
            .iter()
            .zip(per_probe)
            .zip(counts)
            .map(|((name, s), n)| format!("{name} {s:.3} ({n:.1})"))
            .collect();
        println!(
            "{:<28} per probe, s (images run): {}; {:.4} s per image, {:.4} s per synthesis step",
            "",
            names.join(", "),
            probes.best / total,
            synthesis.best / default_steps as f64,
        );
        println!(
            "{:<28} each round's ratio, sorted: {}",
            "",
            percent(&mut ratios),
        );
        if compare_forward {
            println!(
                "{:<28} rotation's {} stimuli: full forward + select {}, forward_to_channels {}, max rel diff {err:.1e}",
                "",
                counts[2],
                spread(full, 2),
                spread(narrow, 2),
            );
        }
    }
}
