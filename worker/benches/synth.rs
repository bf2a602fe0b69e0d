//! Synthesis throughput: vephys against a plain PyTorch loop doing the same work on the same
//! machine, in the same run (`vephys_worker::synthesis::bench`, also behind `vephys-worker
//! bench`). Prints image-steps/s for both and their ratio (goal: >= 0.95), per precision, and
//! bf16 over fp32. Built-in models run against the reference networks of
//! scripts/python/reference.py; exported ones (TorchScript archives from vephys-export, the
//! test fixtures) against the eager PyTorch model they were exported from, truncated at the same
//! layer; and the exported EfficientNet-Lite0 against the built-in one (the price of the
//! TorchScript path).
//!
//! Run: `scripts/bench.sh synth` (or `cargo bench -p vephys-worker --bench synth` inside the
//! project's environment). Environment:
//! - VEPHYS_BENCH_STEPS scales the number of timed steps, VEPHYS_BENCH_ROUNDS sets the
//!   interleaved rounds (medians are reported), VEPHYS_BENCH_MODELS limits the models
//!   (comma-separated), VEPHYS_BENCH_BATCHES the batches (default 1,16);
//! - VEPHYS_BENCH_PRECISIONS: fp32,bf16 (default: fp32, and bf16 where the device runs it
//!   natively; VEPHYS_ALLOW_EMULATED_BF16=1 measures emulated bf16 too);
//! - VEPHYS_BENCH_LAYOUTS=both compares contiguous and channels-last maps;
//! - VEPHYS_BENCH_WAIT_FOR_IDLE=1 waits before each timed run until the CPUs are otherwise idle
//!   (a shared machine's other processes slow libtorch's threads by up to 50x);
//! - VEPHYS_BENCH_QUALITY=1 adds the quality at equal steps: 8 filters, 50 steps
//!   (VEPHYS_BENCH_QUALITY_STEPS), median max-image activity over the best natural photo,
//!   bf16 against fp32.

use std::path::{Path, PathBuf};

use tch::Device;
use vephys_worker::device::{
    bf16_support, describe, parse_device, resolve_precision, Precision, PrecisionChoice,
};
use vephys_worker::models::{MemoryFormat, Network};
use vephys_worker::synthesis::bench::{self, median, vephys_rate, Case, Config, PyTorch, Source};

fn env_dir(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(default))
}

fn env_list<T: std::str::FromStr>(var: &str) -> Option<Vec<T>> {
    let text = std::env::var(var).ok().filter(|s| !s.trim().is_empty())?;
    Some(
        text.split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{var}: bad item `{s}`"))
            })
            .collect(),
    )
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
        .unwrap_or(3);
    let precisions: Vec<Precision> = match env_list::<String>("VEPHYS_BENCH_PRECISIONS") {
        Some(words) => words
            .iter()
            .map(|w| resolve_precision(w.parse::<PrecisionChoice>().unwrap(), device).unwrap())
            .collect(),
        None => {
            let mut p = vec![Precision::Fp32];
            let emulated =
                std::env::var(vephys_worker::device::ALLOW_EMULATED_BF16).is_ok_and(|v| v == "1");
            if bf16_support(device).native || emulated {
                p.push(Precision::Bf16);
            }
            p
        }
    };
    let formats = (std::env::var("VEPHYS_BENCH_LAYOUTS").as_deref() == Ok("both"))
        .then(|| vec![MemoryFormat::Contiguous, MemoryFormat::ChannelsLast]);
    let batches = env_list::<usize>("VEPHYS_BENCH_BATCHES").unwrap_or(vec![1, 16]);
    let fixtures = env_dir("VEPHYS_FIXTURES", ".cache/vephys/fixtures");
    let lite0 = env_dir("VEPHYS_WEIGHTS_DIR", ".cache/vephys/weights")
        .join("efficientnet_lite0.safetensors");
    let export = |name: &str| Source::Export(fixtures.join("exported").join(name));
    let mut cases = vec![
        Case::builtin(
            "vgg19",
            "block3_pool",
            "features.18",
            Source::Weights(fixtures.join("vgg19.safetensors")),
        ),
        Case::builtin(
            "efficientnet_lite0",
            "blocks.7",
            "blocks.7",
            Source::Weights(lite0.clone()),
        ),
        Case {
            size: 331,
            ..Case::builtin("nasnetalarge", "Cell_0", "cell_0", export("nasnetalarge"))
        },
        Case::builtin("resnet50", "layer3", "layer3", export("resnet50")),
    ];
    let only = std::env::var("VEPHYS_BENCH_MODELS").unwrap_or_default();
    let chosen = |model: &str| only.is_empty() || only.split(',').any(|m| m == model);
    cases.retain(|c| chosen(&c.model));

    println!("synthesis benchmark, device {}", describe(device));
    if device == Device::Cpu {
        println!("  on the CPU vephys runs a batch one image per pass (faster there); the PyTorch loop runs it whole");
        println!("  bf16 on this CPU: {}", bf16_support(device).reason);
    }
    let pytorch = PyTorch {
        python: "python".into(),
        script: Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/python/bench_synth.py"),
    };
    let config = Config {
        device,
        cases: cases.clone(),
        precisions: precisions.clone(),
        batches,
        // steps per measurement: 4 x scale at batch 1, 2 x scale at batch 16
        image_steps: (4.0 * scale).ceil() as i64,
        min_steps: (2.0 * scale).ceil().max(1.0) as i64,
        rounds,
        formats,
        pytorch: Some(pytorch),
        wait_for_idle: std::env::var("VEPHYS_BENCH_WAIT_FOR_IDLE").as_deref() == Ok("1"),
    };
    let rows = bench::run(&config).unwrap();
    bench::print_speedups(&rows);

    if std::env::var("VEPHYS_BENCH_QUALITY").as_deref() == Ok("1") {
        let steps: i64 = std::env::var("VEPHYS_BENCH_QUALITY_STEPS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(50);
        let photos = bench::photos_in(&fixtures.join("photos")).unwrap();
        for case in cases
            .iter()
            .filter(|c| !matches!(c.source, Source::Export(_)))
        {
            let net = case.network(device).unwrap();
            let channels = net
                .check_size(net.layer_index(&case.layer).unwrap(), case.size)
                .unwrap()
                .channels;
            let filters: Vec<i64> = (0..8).map(|i| i * channels / 8).collect();
            let mut medians = Vec::new();
            for &precision in &precisions {
                let q = bench::quality(&net, case, &filters, steps, precision, &photos).unwrap();
                println!(
                    "quality {} {} ({steps} steps, filters {:?}): median activity / best photo {:.3} (per filter {:?}), every photo beaten: {}",
                    case.name(),
                    precision,
                    filters,
                    q.median,
                    q.ratios.iter().map(|r| (r * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
                    q.beats_every_photo
                );
                medians.push(q.median);
            }
            if medians.len() == 2 {
                println!(
                    "quality {} bf16/fp32: {:.3} (goal >= 0.97)",
                    case.name(),
                    medians[1] / medians[0]
                );
            }
        }
    }

    if chosen("efficientnet_lite0") {
        exported_against_builtin(
            device,
            &lite0,
            &fixtures.join("exported/efficientnet_lite0"),
            scale,
            rounds,
            &precisions,
        );
    }
}

/// The exported EfficientNet-Lite0 (TorchScript, whole forwards) against the built-in one
/// (Rust stages), the same synthesis on the same weights: what the exported path costs.
fn exported_against_builtin(
    device: Device,
    weights: &Path,
    export: &Path,
    scale: f64,
    rounds: usize,
    precisions: &[Precision],
) {
    let mut builtin = Network::build("efficientnet_lite0", device).unwrap();
    builtin.load_weights(weights).unwrap();
    let exported = Network::load_dir(export, device).unwrap();
    println!(
        "{:<34} {:>4} {:>5} {:>6} {:>5} {:>14} {:>14} {:>7}",
        "efficientnet_lite0/blocks.7",
        "px",
        "batch",
        "steps",
        "prec",
        "exported",
        "built-in",
        "ratio"
    );
    for &precision in precisions {
        for (batch, base_steps) in [(1usize, 4.0f64), (16, 2.0)] {
            let steps = (base_steps * scale).ceil().max(1.0) as i64;
            let (mut theirs, mut ours) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                theirs.push(
                    vephys_rate(&exported, "blocks.7", 224, batch, steps, precision).unwrap(),
                );
                ours.push(vephys_rate(&builtin, "blocks.7", 224, batch, steps, precision).unwrap());
            }
            let (theirs, ours) = (median(&theirs), median(&ours));
            println!(
                "{:<34} {:>4} {:>5} {:>6} {:>5} {:>14.2} {:>14.2} {:>7.3}",
                "  exported vs built-in",
                224,
                batch,
                steps,
                precision.as_str(),
                theirs,
                ours,
                theirs / ours
            );
        }
    }
}
