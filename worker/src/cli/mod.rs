//! Command-line interface. Every flag also reads a `VEPHYS_…` environment variable; `--help` on
//! each command is the documentation of record.

mod characterize;
mod layers;
mod probe;
mod respond;
mod serve;
mod synth;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use vephys_worker::device::parse_device;
use vephys_worker::models::Network;
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
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Layers(args) => layers::run(args),
        Command::Respond(args) => respond::run(args),
        Command::Synth(args) => synth::run(args),
        Command::Probe(args) => probe::run(*args),
        Command::Characterize(args) => characterize::run(*args),
        Command::Serve(args) => serve::run(*args),
    }
}

/// Which network to run, with which weights, where.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model: efficientnet_lite0, vgg16 or vgg19
    #[arg(long, env = "VEPHYS_MODEL", default_value = "efficientnet_lite0")]
    pub model: String,

    /// Weights (.safetensors); default $VEPHYS_WEIGHTS_DIR/<model>.safetensors
    #[arg(long, env = "VEPHYS_WEIGHTS")]
    pub weights: Option<PathBuf>,

    /// Directory holding <model>.safetensors files
    #[arg(long, env = "VEPHYS_WEIGHTS_DIR", default_value_os_t = default_weights_dir())]
    pub weights_dir: PathBuf,

    /// Compute device: auto (CUDA when present), cpu, cuda or cuda:N
    #[arg(long, env = "VEPHYS_DEVICE", default_value = "auto")]
    pub device: String,
}

pub(crate) fn default_weights_dir() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/vephys/weights")
}

impl ModelArgs {
    /// Builds the network and loads its weights (required: results on random weights would be
    /// meaningless, so a missing file is an error, not a fallback).
    pub fn load(&self) -> Result<Network, WorkerError> {
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
        let mut net = Network::build(&self.model, parse_device(&self.device)?)?;
        if let Some(path) = &self.weights {
            net.load_weights(path)?;
        }
        Ok(net)
    }
}
