//! `vephys-worker bench`: the synthesis benchmark from a release binary (`scripts/bench.sh gpu`
//! runs it on a GPU machine that has no Rust toolchain, against the machine's own PyTorch).
//! The measurement is `vephys_worker::synthesis::bench`, the same as `cargo bench --bench synth`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use vephys_worker::device::{describe, parse_device, resolve_precision, PrecisionChoice};
use vephys_worker::models::MemoryFormat;
use vephys_worker::synthesis::bench::{self, Case, Config, PyTorch, Source};

#[derive(Args)]
pub struct BenchArgs {
    /// Compute device: auto (CUDA when present), cpu, cuda or cuda:N
    #[arg(long, env = "VEPHYS_DEVICE", default_value = "auto")]
    device: String,

    /// Models: vgg19 (to block3_pool) and/or efficientnet_lite0 (to blocks.7)
    #[arg(long, value_delimiter = ',', default_values_t = ["vgg19".to_string(), "efficientnet_lite0".to_string()])]
    models: Vec<String>,

    /// Precisions to compare (fp32, bf16; bf16 must be native on the device unless
    /// VEPHYS_ALLOW_EMULATED_BF16=1)
    #[arg(long, value_delimiter = ',', value_parser = super::parse_precision, default_values_t = [PrecisionChoice::Fp32, PrecisionChoice::Bf16])]
    precisions: Vec<PrecisionChoice>,

    /// Images per forward/backward pass
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 4, 16, 64])]
    batches: Vec<usize>,

    /// Image-steps timed per measurement (steps = this / batch, at least 4)
    #[arg(long, default_value_t = 64)]
    image_steps: i64,

    /// Interleaved rounds (medians are reported)
    #[arg(long, default_value_t = 3)]
    rounds: usize,

    /// Compare both memory formats (contiguous and channels-last) instead of running only the
    /// one vephys picks
    #[arg(long)]
    both_layouts: bool,

    /// Directories to find vgg19.safetensors and efficientnet_lite0.safetensors in (the first
    /// that has the file); models without weights run with seeded random weights on both
    /// sides (rates do not depend on them)
    #[arg(long, env = "VEPHYS_WEIGHTS_DIR", value_delimiter = ',', default_values_os_t = [super::default_weights_dir()])]
    weights_dir: Vec<PathBuf>,

    /// Python with torch and torchvision (the PyTorch loop); none: vephys only
    #[arg(long, env = "VEPHYS_BENCH_PYTHON", default_value = "python3")]
    python: String,

    /// The PyTorch loop's script (scripts/python/bench_synth.py; reference.py beside it)
    #[arg(
        long,
        env = "VEPHYS_BENCH_SCRIPT",
        default_value = "scripts/python/bench_synth.py"
    )]
    script: PathBuf,

    /// Also synthesize 8 filters for 50 steps per precision and compare their activity with the
    /// best of the photos in this directory
    #[arg(long)]
    quality_photos: Option<PathBuf>,

    /// Before each timed run, wait (up to a minute) until the CPUs are otherwise idle (on a
    /// shared machine)
    #[arg(long)]
    wait_for_idle: bool,

    /// Write every row (and the quality results) as JSON here
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    // a precision the device does not run natively is left out, with the reason
    let mut precisions = Vec::new();
    for choice in &args.precisions {
        match resolve_precision(*choice, device) {
            Ok(p) if !precisions.contains(&p) => precisions.push(p),
            Ok(_) => {}
            Err(e) => println!("skipping {choice}: {e}"),
        }
    }
    anyhow::ensure!(
        !precisions.is_empty(),
        "no precision left to measure on {}",
        describe(device)
    );
    let mut cases = Vec::new();
    for model in &args.models {
        let (layer, reference) = match model.as_str() {
            "vgg19" | "vgg16" => ("block3_pool", "features.18"),
            "efficientnet_lite0" => ("blocks.7", "blocks.7"),
            other => {
                anyhow::bail!("bad value for --models: `{other}`; use vgg19 or efficientnet_lite0")
            }
        };
        let reference = match model.as_str() {
            "vgg16" => "features.16",
            _ => reference,
        };
        let file = format!("{model}.safetensors");
        let source = match args
            .weights_dir
            .iter()
            .map(|d| d.join(&file))
            .find(|p| p.is_file())
        {
            Some(weights) => Source::Weights(weights),
            None => Source::Random,
        };
        cases.push(Case::builtin(model, layer, reference, source));
    }
    let pytorch = match args.python.as_str() {
        "none" | "" => None,
        python => Some(PyTorch {
            python: python.to_string(),
            script: args.script.clone(),
        }),
    };
    if let Some(py) = &pytorch {
        anyhow::ensure!(
            py.script.is_file(),
            "--script {} does not exist; run from the repository root or pass --script (or --python none)",
            py.script.display()
        );
    }
    println!(
        "synthesis benchmark, device {}, libtorch {}",
        describe(device),
        vephys_worker::provenance::VERSIONS.libtorch
    );
    let config = Config {
        device,
        cases: cases.clone(),
        precisions: precisions.clone(),
        batches: args.batches.clone(),
        image_steps: args.image_steps,
        min_steps: 4,
        rounds: args.rounds.max(1),
        formats: args
            .both_layouts
            .then(|| vec![MemoryFormat::Contiguous, MemoryFormat::ChannelsLast]),
        pytorch,
        wait_for_idle: args.wait_for_idle,
    };
    let rows = bench::run(&config)?;
    bench::print_speedups(&rows);
    let mut quality = Vec::new();
    if let Some(dir) = &args.quality_photos {
        let photos = bench::photos_in(dir)?;
        anyhow::ensure!(!photos.is_empty(), "no photos in {}", dir.display());
        for case in &cases {
            let net = case.network(device)?;
            let channels = net
                .check_size(net.layer_index(&case.layer)?, case.size)?
                .channels;
            let filters: Vec<i64> = (0..8).map(|i| i * channels / 8).collect();
            for &precision in &precisions {
                let q = bench::quality(&net, case, &filters, 50, precision, &photos)?;
                println!(
                    "quality {} {}: median max-image activity / best photo {:.3}, every photo beaten: {}",
                    case.name(),
                    precision,
                    q.median,
                    q.beats_every_photo
                );
                quality.push((case.name(), q));
            }
        }
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "device": describe(device),
            "versions": vephys_worker::provenance::VERSIONS,
            "rows": rows,
            "quality": quality.iter().map(|(c, q)| serde_json::json!({"case": c, "quality": q})).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
