//! `vephys-worker synth`: max images for filters of a layer, in batches, with a progress bar.
//! Writes `filter_NNNN.png` (absent for dead units) and `filter_NNNN.json` per filter.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use vephys_worker::filters::parse_filters;
use vephys_worker::image_io::{png_bytes, write_atomic};
use vephys_worker::models::Network;
use vephys_worker::provenance::Provenance;
use vephys_worker::synthesis::{
    synthesize, ColorMode, ObjectiveKind, Status, SynthOutcome, SynthParams,
};

use super::{ModelArgs, PrecisionArgs};

/// The regularised gradient ascent's settings, shared by every command that synthesizes.
#[derive(Args, Debug, Clone)]
pub struct SynthFlags {
    /// Gradient-ascent steps
    #[arg(long, env = "VEPHYS_STEPS", allow_negative_numbers = true, default_value_t = SynthParams::default().steps)]
    pub steps: i64,

    /// Image side in pixels [default: the model's input size, 224 for the built-in models]
    #[arg(long, env = "VEPHYS_SIZE", allow_negative_numbers = true)]
    pub size: Option<i64>,

    /// Step size in pixel units (the gradient is normalised to unit RMS per image)
    #[arg(long, env = "VEPHYS_LR", allow_negative_numbers = true, default_value_t = SynthParams::default().lr)]
    pub lr: f64,

    /// L2 decay toward the mean colour per step
    #[arg(long, env = "VEPHYS_DECAY", allow_negative_numbers = true, default_value_t = SynthParams::default().decay)]
    pub decay: f64,

    /// Gaussian blur std in pixels (0: off)
    #[arg(long, env = "VEPHYS_BLUR_SIGMA", allow_negative_numbers = true, default_value_t = SynthParams::default().blur_sigma)]
    pub blur_sigma: f64,

    /// Blur every N steps (0: off)
    #[arg(long, env = "VEPHYS_BLUR_EVERY", allow_negative_numbers = true, default_value_t = SynthParams::default().blur_every)]
    pub blur_every: i64,

    /// Random seed (same seed, weights, parameters and device => same bytes on CPU)
    #[arg(long, env = "VEPHYS_SEED", default_value_t = SynthParams::default().seed)]
    pub seed: u64,

    /// Std of the start noise around the mean colour
    #[arg(long, env = "VEPHYS_INIT_STD", allow_negative_numbers = true, default_value_t = SynthParams::default().init_std)]
    pub init_std: f64,

    /// Filters optimised together in one forward/backward pass on a GPU (and written out
    /// together); the CPU runs one image per pass, which is faster there
    #[arg(long, env = "VEPHYS_BATCH", default_value_t = 16)]
    pub batch: usize,
}

impl SynthFlags {
    /// The parameters for one colour mode, with the channel objective, for a model whose
    /// input size is `input_size` (the size unless --size gives one).
    pub fn params(&self, color: ColorMode, input_size: i64) -> SynthParams {
        SynthParams {
            steps: self.steps,
            size: self.size.unwrap_or(input_size),
            lr: self.lr,
            decay: self.decay,
            blur_sigma: self.blur_sigma,
            blur_every: self.blur_every,
            color,
            seed: self.seed,
            init_std: self.init_std,
            ..SynthParams::default()
        }
    }
}

#[derive(Args)]
pub struct SynthArgs {
    #[command(flatten)]
    model: ModelArgs,

    /// Layer whose filters to drive (name or alias; see `vephys-worker layers`)
    #[arg(long, env = "VEPHYS_LAYER")]
    layer: String,

    /// Filters: `all`, a list and/or ranges (`0-15,40`)
    #[arg(long, env = "VEPHYS_FILTERS")]
    filters: String,

    /// Output directory (created if missing; existing files for the same filters are replaced)
    #[arg(long, env = "VEPHYS_OUT")]
    out: PathBuf,

    #[command(flatten)]
    synth: SynthFlags,

    #[command(flatten)]
    precision: PrecisionArgs,

    /// What to maximise: channel (mean of the filter's map), unit (one position), layer (all filters)
    #[arg(long, env = "VEPHYS_OBJECTIVE", default_value_t = ObjectiveKind::Channel)]
    objective: ObjectiveKind,

    /// Row of the unit for --objective unit (default: centre)
    #[arg(long, env = "VEPHYS_UNIT_Y", allow_negative_numbers = true)]
    unit_y: Option<i64>,

    /// Column of the unit for --objective unit (default: centre)
    #[arg(long, env = "VEPHYS_UNIT_X", allow_negative_numbers = true)]
    unit_x: Option<i64>,

    /// Channels to optimise: rgb, or r/g/b alone (the other two stay exactly 0)
    #[arg(long, env = "VEPHYS_COLOR", value_enum, default_value_t = ColorMode::Rgb)]
    color: ColorMode,

    /// Print a JSON summary on stdout instead of a table
    #[arg(long)]
    json: bool,
}

impl SynthArgs {
    fn params(&self, input_size: i64) -> SynthParams {
        SynthParams {
            objective: self.objective,
            unit_y: self.unit_y,
            unit_x: self.unit_x,
            ..self.synth.params(self.color, input_size)
        }
    }
}

pub fn run(args: SynthArgs) -> Result<()> {
    // Validate everything before writing anything.
    if args.synth.batch == 0 {
        anyhow::bail!("bad value for --batch: 0; use at least 1");
    }
    let net = args.model.load()?;
    let params = SynthParams {
        precision: args.precision.resolve(&net)?,
        ..args.params(net.input_size())
    };
    params.validate()?;
    let layer = net.layer_index(&args.layer)?;
    let shape = net.check_size(layer, params.size)?;
    let filters = parse_filters(&args.filters, shape.channels, &shape.name)?;
    if args.out.exists() && !args.out.is_dir() {
        anyhow::bail!(
            "--out {} exists and is not a directory; choose another path",
            args.out.display()
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("create output directory {}", args.out.display()))?;

    let total = (filters.len() as u64) * params.steps as u64;
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} image-steps {per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(format!("{} {}", net.name(), shape.name));
    let provenance = Provenance::of(&net, params.precision);
    let mut summary = Vec::new();
    for chunk in filters.chunks(args.synth.batch) {
        let outcomes = synthesize(&net, layer, chunk, &params, &mut |n| bar.inc(n))?;
        for outcome in &outcomes {
            write_filter(&args.out, &net, &shape.name, &params, &provenance, outcome)?;
            summary.push(json!({
                "filter": outcome.filter,
                "status": outcome.status,
                "max_activity": outcome.max_activity,
                "mean_activity": outcome.mean_activity,
            }));
        }
    }
    bar.finish_and_clear();

    if args.json {
        let doc = json!({
            "model": net.name(),
            "layer": shape.name,
            "precision": params.precision,
            "out": args.out,
            "filters": summary,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "{:>6} {:>6} {:>12} {:>12}",
        "filter", "status", "max", "mean"
    );
    for s in &summary {
        println!(
            "{:>6} {:>6} {:>12.4} {:>12.4}",
            s["filter"],
            s["status"].as_str().unwrap_or(""),
            s["max_activity"].as_f64().unwrap_or(f64::NAN),
            s["mean_activity"].as_f64().unwrap_or(f64::NAN)
        );
    }
    eprintln!("wrote {} filters to {}", summary.len(), args.out.display());
    Ok(())
}

fn write_filter(
    out: &Path,
    net: &Network,
    layer: &str,
    params: &SynthParams,
    provenance: &Provenance,
    outcome: &SynthOutcome,
) -> Result<()> {
    let stem = format!("filter_{:04}", outcome.filter);
    let png = (outcome.status == Status::Ok).then(|| format!("{stem}.png"));
    match &png {
        Some(name) => write_atomic(&out.join(name), &png_bytes(&outcome.image)?)?,
        // A dead unit has no max image; never leave one from an earlier run beside its JSON.
        None => match std::fs::remove_file(out.join(format!("{stem}.png"))) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        },
    }
    let doc = json!({
        "model": net.name(),
        "layer": layer,
        "filter": outcome.filter,
        "status": outcome.status,
        "image": png,
        "max_activity": outcome.max_activity,
        "mean_activity": outcome.mean_activity,
        "objective_trajectory": outcome.trajectory,
        "params": params,
        "params_hash": params.hash(),
        "seed": params.seed,
        "weights_sha256": provenance.weights_sha256,
        "device": provenance.device,
        "precision": provenance.precision,
        "mixed_precision": provenance.mixed_precision,
        "memory_format": provenance.memory_format,
        "versions": provenance.versions,
        "host": provenance.host,
        "timings": {
            "seconds": outcome.seconds,
            "steps_per_second": params.steps as f64 / outcome.seconds.max(1e-9),
        },
    });
    write_atomic(
        &out.join(format!("{stem}.json")),
        serde_json::to_string_pretty(&doc)?.as_bytes(),
    )?;
    Ok(())
}
