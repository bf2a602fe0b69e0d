//! Command-line interface. Every flag also reads a `VEPHYS_…` environment variable; `--help` on
//! each command is the documentation of record.

mod bench;
mod characterize;
mod layers;
mod probe;
mod respond;
mod serve;
mod synth;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use vephys_worker::device::{parse_device, resolve_precision, Precision, PrecisionChoice};
use vephys_worker::models::{is_builtin, Network, MANIFEST_FILE};
use vephys_worker::WorkerError;

#[derive(Parser)]
#[command(
    name = "vephys-worker",
    version,
    about = "virtual electrophysiology on deep vision networks: the libtorch worker",
    long_about = "virtual electrophysiology on deep vision networks: the libtorch worker.\n\n\
Images are RGB in [0, 1] (pixel space); each model applies its own input normalisation, so saved \
PNGs are exactly what the network saw. Weights load from safetensors only; by default \
$VEPHYS_WEIGHTS_DIR/<model>.safetensors (scripts/setup.sh puts EfficientNet-Lite0's ImageNet \
weights there)."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every addressable layer of a model with its output shape (C, H, W)
    #[command(args_override_self = true)]
    Layers(layers::LayersArgs),
    /// Max and mean activity of every filter of a layer for each image (the virtual electrode)
    #[command(args_override_self = true)]
    Respond(respond::RespondArgs),
    /// Synthesize the image that drives each filter hardest; one PNG and one JSON per filter
    #[command(args_override_self = true)]
    Synth(synth::SynthArgs),
    /// Run one probe (baseline, zoom, rotation, color, grating, hue) on filters' max images
    #[command(args_override_self = true)]
    Probe(Box<probe::ProbeArgs>),
    /// Synthesize max images and run every probe; per filter a JSON of all curves and a figure
    #[command(args_override_self = true)]
    Characterize(Box<characterize::CharacterizeArgs>),
    /// Run as a daemon: lease jobs from a coordinator, compute them, store results (see --help)
    #[command(
        args_override_self = true,
        long_about = "Run as a daemon: register with the coordinator, lease batches of jobs of one \
(model, layer, probe), run each batch as one on the device, write PNGs and JSON records to the \
object store under attempt-scoped keys, and complete the jobs with their results.\n\n\
Models whose weights are in --weights-dir are registered at start. Completions are spooled to \
--spool-dir before they are sent, so finished work survives an unreachable coordinator and a \
restart. SIGTERM or SIGINT: finish and report the batch in flight, then exit; a second signal \
releases its leases and exits at once."
    )]
    Serve(Box<serve::ServeArgs>),
    /// Synthesis throughput (fp32 and bf16) against a plain PyTorch loop in the same run, and
    /// the max images' quality per precision (scripts/bench.sh gpu runs it on a GPU machine)
    #[command(args_override_self = true)]
    Bench(Box<bench::BenchArgs>),
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Layers(args) => layers::run(args),
        Command::Respond(args) => respond::run(args),
        Command::Synth(args) => synth::run(args),
        Command::Probe(args) => probe::run(*args),
        Command::Characterize(args) => characterize::run(*args),
        Command::Serve(args) => serve::run(*args),
        Command::Bench(args) => bench::run(*args),
    }
}

/// Which network to run, with which weights, where.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model: a built-in one (efficientnet_lite0, vgg16, vgg19), or an exported one: its
    /// directory (from vephys-export), or its name when that directory is <weights-dir>/<model>
    #[arg(long, env = "VEPHYS_MODEL", default_value = "efficientnet_lite0")]
    pub model: String,

    /// An exported model's directory (model.json and its archive, from vephys-export); wins
    /// over --model
    #[arg(long, env = "VEPHYS_MODEL_DIR")]
    pub model_dir: Option<PathBuf>,

    /// Weights of a built-in model (.safetensors); default
    /// $VEPHYS_WEIGHTS_DIR/<model>.safetensors
    #[arg(long, env = "VEPHYS_WEIGHTS")]
    pub weights: Option<PathBuf>,

    /// Directory holding <model>.safetensors files of the built-in models and <model>/
    /// directories of exported ones
    #[arg(long, env = "VEPHYS_WEIGHTS_DIR", default_value_os_t = default_weights_dir())]
    pub weights_dir: PathBuf,

    /// Compute device: auto (CUDA when present), cpu, cuda or cuda:N
    #[arg(long, env = "VEPHYS_DEVICE", default_value = "auto")]
    pub device: String,
}

/// The number format to compute in, for the commands that run networks at length.
#[derive(Args, Debug, Clone)]
pub struct PrecisionArgs {
    /// Number format: fp32 (exact), bf16 (mixed precision: convolutions and matrix products
    /// in bf16; the image, regularisers, gradient normalisation and objective in fp32, and a
    /// max image's reported activity measured in fp32), or auto: bf16 where the device runs it
    /// natively (CUDA with bf16 support, CPUs with AVX-512 BF16 or AMX), fp32 elsewhere. Every
    /// record says which ran
    #[arg(long, env = "VEPHYS_PRECISION", default_value_t = PrecisionChoice::Auto, value_parser = parse_precision)]
    pub precision: PrecisionChoice,
}

impl PrecisionArgs {
    /// The precision to compute in on `net`'s device (an error for bf16 where it is not native).
    pub fn resolve(&self, net: &Network) -> Result<Precision, WorkerError> {
        resolve_precision(self.precision, net.device())
    }
}

/// `fp32`, `bf16` or `auto`, refused in the contract's words otherwise.
pub(crate) fn parse_precision(text: &str) -> Result<PrecisionChoice, String> {
    text.parse::<PrecisionChoice>().map_err(|e| e.reason)
}

pub(crate) fn default_weights_dir() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/vephys/weights")
}

impl ModelArgs {
    /// The exported model's directory when the model is an exported one: --model-dir, --model
    /// as a directory, or <weights-dir>/<model>, whichever holds a manifest first.
    fn exported_dir(&self) -> Option<PathBuf> {
        if let Some(dir) = &self.model_dir {
            return Some(dir.clone());
        }
        if is_builtin(&self.model) {
            return None;
        }
        // a path to an export, or a name in the weights directory
        [
            PathBuf::from(&self.model),
            self.weights_dir.join(&self.model),
        ]
        .into_iter()
        .find(|dir| dir.join(MANIFEST_FILE).is_file())
    }

    /// The exported model, when it is one (its weights are in its archive).
    fn load_exported(&self) -> Result<Option<Network>, WorkerError> {
        let Some(dir) = self.exported_dir() else {
            return Ok(None);
        };
        if self.weights.is_some() {
            return Err(WorkerError::bad(
                "--weights",
                "an exported model carries its weights in its archive; leave --weights out",
            ));
        }
        Ok(Some(Network::load_dir(&dir, parse_device(&self.device)?)?))
    }

    /// Builds the network and loads its weights (required: results on random weights would be
    /// meaningless, so a missing file is an error, not a fallback).
    pub fn load(&self) -> Result<Network, WorkerError> {
        if let Some(net) = self.load_exported()? {
            return Ok(net);
        }
        let mut net = Network::build(&self.model, parse_device(&self.device)?)?;
        let path = self
            .weights
            .clone()
            .unwrap_or_else(|| self.weights_dir.join(format!("{}.safetensors", self.model)));
        net.load_weights(&path)?;
        Ok(net)
    }

    /// Builds the network; loads weights only if `--weights` was given (shapes need none).
    pub fn build(&self) -> Result<Network, WorkerError> {
        if let Some(net) = self.load_exported()? {
            return Ok(net);
        }
        let mut net = Network::build(&self.model, parse_device(&self.device)?)?;
        if let Some(path) = &self.weights {
            net.load_weights(path)?;
        }
        Ok(net)
    }
}
