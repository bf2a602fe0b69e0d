//! The model zoo: networks run in pixel space, up to any of their layers.
//!
//! Two kinds of network answer to the same API: the built-in ones, written in Rust as a chain
//! of stages (`staged`, one file per family), and exported ones, TorchScript archives written
//! by `vephys-export` from any PyTorch model (`exported`). Running "up to layer L" computes only
//! what L needs, which is what synthesis and probes ask for again and again.

mod autocast;
mod efficientnet_lite;
mod exported;
mod framing;
pub mod ops;
mod staged;
mod vgg;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;
use tch::{nn, Device, Kind, Tensor};
use vephys_proto::manifest::{Manifest, Normalization};

pub use crate::device::Precision;
use crate::error::{Result, WorkerError};
use crate::weights;
use autocast::Autocast;
use exported::Exported;
pub use staged::Stage;
use staged::Staged;

/// The models vephys can build, with the function that builds each.
type Builder = fn(&nn::Path) -> Vec<Stage>;

const ZOO: [(&str, Builder, InputNorm); 3] = [
    (
        "efficientnet_lite0",
        efficientnet_lite::efficientnet_lite0,
        efficientnet_lite::INPUT,
    ),
    ("vgg16", vgg::vgg16, vgg::INPUT),
    ("vgg19", vgg::vgg19, vgg::INPUT),
];

/// The built-in models.
pub fn model_names() -> Vec<&'static str> {
    ZOO.iter().map(|(name, _, _)| *name).collect()
}

pub fn is_builtin(model: &str) -> bool {
    ZOO.iter().any(|(name, _, _)| *name == model)
}

/// The input side the built-in models were trained at.
pub const BUILTIN_INPUT_SIZE: i64 = 224;

/// The manifest file of an exported model's directory.
pub const MANIFEST_FILE: &str = "model.json";

/// How a model turns pixel-space input into what its weights expect. Applied inside the
/// forward pass so that every caller, and every saved PNG, talks pixel space.
#[derive(Debug, Clone, Copy)]
pub enum InputNorm {
    MeanStd { mean: [f64; 3], std: [f64; 3] },
    Affine { scale: f64, shift: f64 },
}

impl From<Normalization> for InputNorm {
    fn from(n: Normalization) -> InputNorm {
        match n {
            Normalization::MeanStd { mean, std } => InputNorm::MeanStd { mean, std },
            Normalization::Affine { scale, shift } => InputNorm::Affine { scale, shift },
        }
    }
}

impl InputNorm {
    /// `x` normalised in one pass, x * scale + shift with per-channel [1, 3, 1, 1] scale and
    /// shift (mean/std folded: scale = 1/std, shift = -mean/std), which costs half of a
    /// subtraction then a division.
    pub(crate) fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let (scale, shift) = match *self {
            InputNorm::MeanStd { mean, std } => {
                (std.map(|s| 1.0 / s), [0, 1, 2].map(|c| -mean[c] / std[c]))
            }
            InputNorm::Affine { scale, shift } => ([scale; 3], [shift; 3]),
        };
        let channel = |v: [f64; 3]| -> Result<Tensor> {
            Ok(Tensor::from_slice(&v.map(|v| v as f32))
                .f_to_device(x.device())?
                .f_view([1, 3, 1, 1])?)
        };
        Ok(channel(shift)?.f_addcmul(x, &channel(scale)?)?)
    }

    /// `apply` for evaluating stimuli: on the CPU, stored channels-last (the layout oneDNN's
    /// convolutions run fastest in, kept from layer to layer).
    fn apply_for_eval(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.apply(x)?;
        Ok(match h.device() == Device::Cpu && h.dim() == 4 {
            true => channels_last(&h)?,
            false => h,
        })
    }
}

/// A layer and its output shape at some input size.
#[derive(Debug, Clone, Serialize)]
pub struct LayerShape {
    pub name: String,
    pub aliases: Vec<String>,
    pub channels: i64,
    pub height: i64,
    pub width: i64,
}

/// How [B, C, H, W] maps are laid out in memory on the gradient passes of synthesis (stimuli
/// are always evaluated channels-last on the CPU, see `forward_to_channels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryFormat {
    /// NCHW, libtorch's default.
    Contiguous,
    /// NHWC strides: oneDNN's and cuDNN's tensor-core convolutions run natively in it.
    ChannelsLast,
}

/// Built-in (Rust stages) or exported (TorchScript) network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NetworkKind {
    BuiltIn,
    Exported,
}

impl MemoryFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryFormat::Contiguous => "contiguous",
            MemoryFormat::ChannelsLast => "channels_last",
        }
    }

    /// The memory format for gradient passes. On the CPU, channels-last, measured faster for
    /// built-in and exported networks alike (`vephys-worker bench --both-layouts`, the
    /// README's benchmark table). On CUDA (not measured yet: `scripts/bench.sh gpu` compares
    /// both), channels-last for bf16, the layout tensor-core convolutions run natively, and
    /// libtorch's default for fp32.
    fn measured_best(device: Device, kind: NetworkKind, precision: Precision) -> MemoryFormat {
        let _ = kind;
        match (device, precision) {
            (Device::Cpu, _) | (_, Precision::Bf16) => MemoryFormat::ChannelsLast,
            (_, Precision::Fp32) => MemoryFormat::Contiguous,
        }
    }
}

pub struct Network {
    name: String,
    input: InputNorm,
    body: Body,
    device: Device,
    weights_sha256: Option<String>,
    /// The memory format of gradient passes when set (benchmarks compare them); by default
    /// `MemoryFormat::measured_best`.
    memory_format: Option<MemoryFormat>,
    /// Every layer's shape by input size (a built-in network's shape probe runs it whole
    /// once, and synthesis and probes ask for the same sizes again and again).
    shapes: Mutex<HashMap<i64, Vec<LayerShape>>>,
}

// one per loaded network: the size of the smaller variant does not matter
#[allow(clippy::large_enum_variant)]
enum Body {
    Staged(Staged),
    Exported(Exported),
}

impl Network {
    /// Builds the built-in `model` on `device` with random weights; call `load_weights` for
    /// real ones.
    pub fn build(model: &str, device: Device) -> Result<Network> {
        let Some((name, build, input)) = ZOO.iter().find(|(name, _, _)| *name == model) else {
            return Err(WorkerError::UnknownModel {
                name: model.to_string(),
                known: model_names().join(", "),
            });
        };
        Ok(Network::custom(name, *input, device, build))
    }

    /// Builds a network from stages made in code, named `name`: tests and experiments give it
    /// known weights by editing the tensors of `parameters()`.
    pub fn custom(
        name: &str,
        input: InputNorm,
        device: Device,
        build: impl FnOnce(&nn::Path) -> Vec<Stage>,
    ) -> Network {
        let mut vs = nn::VarStore::new(device);
        let stages = build(&vs.root());
        // Weights are never trained here: no weight gradients, only gradients w.r.t. the image.
        vs.freeze();
        Network::new(
            name,
            input,
            Body::Staged(Staged::new(vs, stages)),
            device,
            None,
        )
    }

    /// Loads an exported model: the archive at `archive`, described by `manifest` (the
    /// registry's copy, or its directory's `model.json`), on `device`. The archive must be
    /// the manifest's (sha256) and come from this worker's torch release.
    pub fn exported(manifest: Manifest, archive: &Path, device: Device) -> Result<Network> {
        let name = manifest.model.clone();
        let input = InputNorm::from(manifest.normalization);
        let (exported, sha256) = Exported::load(manifest, archive, device)?;
        Ok(Network::new(
            &name,
            input,
            Body::Exported(exported),
            device,
            Some(sha256),
        ))
    }

    /// Loads the exported model in `dir` (`model.json` and its archive, as `vephys-export`
    /// writes them).
    pub fn load_dir(dir: &Path, device: Device) -> Result<Network> {
        let manifest = read_manifest(dir)?;
        let archive = dir.join(&manifest.archive);
        Network::exported(manifest, &archive, device)
    }

    fn new(
        name: &str,
        input: InputNorm,
        body: Body,
        device: Device,
        weights_sha256: Option<String>,
    ) -> Network {
        if let Device::Cuda(_) = device {
            // cuDNN times its algorithms on the first pass of each shape and keeps the fastest:
            // synthesis runs the same shapes hundreds of times
            tch::Cuda::cudnn_set_benchmark(true);
        }
        Network {
            name: name.to_string(),
            input,
            body,
            device,
            weights_sha256,
            memory_format: None,
            shapes: Mutex::default(),
        }
    }

    /// Loads safetensors weights into a built-in network (every parameter must be present
    /// with the right shape, and nothing else may be in the file) and remembers the file's
    /// sha256.
    pub fn load_weights(&mut self, path: &Path) -> Result<()> {
        let Body::Staged(staged) = &mut self.body else {
            return Err(WorkerError::bad(
                "--weights",
                format!(
                    "{} is an exported model: its weights are in its archive",
                    self.name
                ),
            ));
        };
        let sha = weights::load(&mut staged.vs, path, &self.name)?;
        self.weights_sha256 = Some(sha);
        Ok(())
    }

    /// Every parameter and buffer by its name (tensors share storage with the network:
    /// editing one edits the model, which tests use to build units with known weights).
    pub fn parameters(&self) -> Result<HashMap<String, Tensor>> {
        match &self.body {
            Body::Staged(s) => Ok(s.vs.variables()),
            Body::Exported(e) => e.parameters(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn weights_sha256(&self) -> Option<&str> {
        self.weights_sha256.as_deref()
    }

    /// The input side the model was made for: its manifest's default for an exported model,
    /// 224 for the built-in ones (all ImageNet networks at 224 px).
    pub fn input_size(&self) -> i64 {
        match &self.body {
            Body::Staged(_) => BUILTIN_INPUT_SIZE,
            Body::Exported(e) => e.manifest.input_sizes.default,
        }
    }

    /// The manifest of an exported model; None for a built-in one.
    pub fn manifest(&self) -> Option<&Manifest> {
        match &self.body {
            Body::Staged(_) => None,
            Body::Exported(e) => Some(&e.manifest),
        }
    }

    /// How `forward_to_channels` evaluates stimuli: `framed` (built-in networks run only where
    /// stimuli differ from their uniform background) or `whole` (exported ones run whole
    /// images). Recorded in every result's provenance; the numbers agree either way.
    pub fn stimulus_forward(&self) -> &'static str {
        match &self.body {
            Body::Staged(_) => "framed",
            Body::Exported(_) => "whole",
        }
    }

    /// Index of the layer called `layer` (its name or any alias).
    pub fn layer_index(&self, layer: &str) -> Result<usize> {
        let found = match &self.body {
            Body::Staged(s) => s.layer_index(layer),
            Body::Exported(e) => e.layer_index(layer),
        };
        found.ok_or_else(|| WorkerError::UnknownLayer {
            model: self.name.clone(),
            layer: layer.to_string(),
        })
    }

    pub fn layer_name(&self, index: usize) -> &str {
        match &self.body {
            Body::Staged(s) => &s.stages[index].name,
            Body::Exported(e) => e.layer_name(index),
        }
    }

    /// Output of layer `index` for pixel-space images `x` ([B, 3, H, W] in [0, 1]), always 4-D
    /// ([B, C, h, w]; classifier outputs are [B, C, 1, 1]), in fp32: the exact path.
    pub fn forward_to(&self, x: &Tensor, index: usize) -> Result<Tensor> {
        self.forward_to_in(x, index, Precision::Fp32)
    }

    /// `forward_to` in `precision`; the gradient passes of synthesis run here. The output is
    /// fp32 either way, so what callers reduce it to (objectives, activities) is fp32. Bf16 is
    /// mixed precision: the input is normalised in fp32, then the network runs under bf16
    /// autocast (`autocast`), which runs convolutions and matrix products in bf16 and keeps
    /// reductions and norms in fp32; gradients come back to `x` in fp32. Maps are stored as
    /// `memory_format` says (channels-last where measured faster).
    pub fn forward_to_in(&self, x: &Tensor, index: usize, precision: Precision) -> Result<Tensor> {
        let mut h = self.input.apply(x)?;
        if h.dim() == 4 && self.memory_format(precision) == MemoryFormat::ChannelsLast {
            h = channels_last(&h)?;
        }
        let _autocast = self.autocast(precision)?;
        let out = match &self.body {
            Body::Staged(s) => s.forward_to(h, index)?,
            Body::Exported(e) => e.forward_to(&h, index)?,
        };
        Ok(match out.kind() {
            Kind::Float => out,
            _ => out.f_to_kind(Kind::Float)?,
        })
    }

    /// bf16 autocast on this network's device for `precision` bf16; nothing for fp32.
    fn autocast(&self, precision: Precision) -> Result<Option<Autocast>> {
        match precision {
            Precision::Fp32 => Ok(None),
            Precision::Bf16 => Autocast::bf16(self.device).map(Some).ok_or_else(|| {
                WorkerError::bad(
                    "--precision",
                    format!(
                        "bf16 runs on CPUs and CUDA devices, not {:?}; use fp32",
                        self.device
                    ),
                )
            }),
        }
    }

    /// The memory format of gradient passes in `precision`: the one set with
    /// `set_memory_format`, else the one measured fastest (`MemoryFormat::measured_best`).
    pub fn memory_format(&self, precision: Precision) -> MemoryFormat {
        self.memory_format
            .unwrap_or_else(|| MemoryFormat::measured_best(self.device, self.kind(), precision))
    }

    /// Sets the memory format of gradient passes (None: the measured best), for benchmarks.
    pub fn set_memory_format(&mut self, format: Option<MemoryFormat>) {
        self.memory_format = format;
    }

    fn kind(&self) -> NetworkKind {
        match &self.body {
            Body::Staged(_) => NetworkKind::BuiltIn,
            Body::Exported(_) => NetworkKind::Exported,
        }
    }

    /// Channels `filters` of layer `index` for pixel-space images `x`: [B, F, h, w], the same
    /// values as `forward_to(x, index)` narrowed to those channels (in that order) up to float
    /// rounding. For evaluating stimuli: it runs without gradients and does less work than the
    /// full forward pass. Built-in networks:
    /// - the last stage that mixes channels computes only `filters` (the stages after it,
    ///   activations and pooling, act on each channel alone);
    /// - images that all equal one colour outside a rectangle (a stimulus seen through an
    ///   aperture) are run only where they differ from that uniform background, the rest of
    ///   every map being the background's own (see `framing`);
    /// - activations overwrite their input instead of allocating.
    ///
    /// Every network: on the CPU maps are kept channels-last, the layout oneDNN's
    /// convolutions run fastest in, and images go through in sub-batches of `CPU_SUB_BATCH`.
    pub fn forward_to_channels(&self, x: &Tensor, index: usize, filters: &[i64]) -> Result<Tensor> {
        self.forward_to_channels_in(x, index, filters, Precision::Fp32)
    }

    /// `forward_to_channels` in `precision` (see `forward_to_in`); the output is fp32. Framing
    /// works the same in bf16 (the kept background's maps are made, and kept, per precision).
    pub fn forward_to_channels_in(
        &self,
        x: &Tensor,
        index: usize,
        filters: &[i64],
        precision: Precision,
    ) -> Result<Tensor> {
        let out = {
            let _autocast = self.autocast(precision)?;
            self.channels_of(x, index, filters, precision)?
        };
        Ok(match out.kind() {
            Kind::Float => out,
            _ => out.f_to_kind(Kind::Float)?,
        })
    }

    fn channels_of(
        &self,
        x: &Tensor,
        index: usize,
        filters: &[i64],
        precision: Precision,
    ) -> Result<Tensor> {
        let exported = match &self.body {
            Body::Staged(s) => {
                return s.forward_to_channels(&self.input, x, index, filters, precision)
            }
            Body::Exported(e) => e,
        };
        let _no_grad = tch::no_grad_guard();
        let channels = Tensor::from_slice(filters).to_device(x.device());
        let (n, step) = (x.size()[0], sub_batch(x));
        let mut parts = Vec::with_capacity(((n + step - 1) / step) as usize);
        for start in (0..n).step_by(step as usize) {
            let part = self
                .input
                .apply_for_eval(&x.f_narrow(0, start, step.min(n - start))?)?;
            parts.push(
                exported
                    .forward_to(&part, index)?
                    .f_index_select(1, &channels)?,
            );
        }
        Ok(match parts.len() {
            1 => parts.remove(0),
            _ => Tensor::f_cat(&parts, 0)?,
        })
    }

    /// Outputs of every layer, in order (for parity tests and inspection).
    pub fn forward_all(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let h = self.input.apply(x)?;
        match &self.body {
            Body::Staged(s) => s.forward_all(h),
            Body::Exported(e) => (0..e.layer_count()).map(|i| e.forward_to(&h, i)).collect(),
        }
    }

    /// Every layer with its output shape for `size` x `size` input. Layers the image is too
    /// small to reach are left out, so the result is empty for a uselessly small size (and,
    /// for an exported model, for any size outside its manifest's range).
    pub fn layer_shapes(&self, size: i64) -> Result<Vec<LayerShape>> {
        if let Some(shapes) = self.shapes.lock().expect("shape cache poisoned").get(&size) {
            return Ok(shapes.clone());
        }
        let shapes = match &self.body {
            Body::Staged(s) => {
                match Tensor::f_zeros([1, 3, size, size], (Kind::Float, self.device)) {
                    Ok(zeros) => s.probe_shapes(zeros),
                    Err(_) => Vec::new(),
                }
            }
            Body::Exported(e) => match e.manifest.check_size(size) {
                Ok(()) => (0..e.layer_count())
                    .map(|i| e.shape(i, size, self.device))
                    .collect::<Result<_>>()?,
                Err(_) => Vec::new(),
            },
        };
        let mut cache = self.shapes.lock().expect("shape cache poisoned");
        Ok(cache.entry(size).or_insert(shapes).clone())
    }

    /// Shape (C, h, w) of layer `index` at input `size`, or why the size does not work: for a
    /// built-in network `ImageTooSmall` naming the smallest size that does, for an exported
    /// one the sizes its manifest allows.
    pub fn check_size(&self, index: usize, size: i64) -> Result<LayerShape> {
        if let Body::Exported(e) = &self.body {
            e.manifest
                .check_size(size)
                .map_err(|reason| WorkerError::InputSize { reason })?;
            return e.shape(index, size, self.device);
        }
        if let Some(shape) = self.layer_shapes(size)?.into_iter().nth(index) {
            return Ok(shape);
        }
        let reaches = |s: i64| -> Result<bool> { Ok(self.layer_shapes(s)?.len() > index) };
        // Output size grows with input size, so bisect for the smallest size that reaches.
        let (mut lo, mut hi) = (size.max(1), size.max(1) * 2);
        while !reaches(hi)? && hi < 8192 {
            lo = hi;
            hi *= 2;
        }
        while lo + 1 < hi {
            let mid = (lo + hi) / 2;
            if reaches(mid)? {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Err(WorkerError::ImageTooSmall {
            model: self.name.clone(),
            layer: self.layer_name(index).to_string(),
            size,
            min: hi,
        })
    }

    /// The built-in network's stages, for the framing tests.
    #[cfg(test)]
    fn staged(&self) -> &Staged {
        match &self.body {
            Body::Staged(s) => s,
            Body::Exported(_) => panic!("not a built-in network"),
        }
    }
}

/// The manifest in an exported model's directory.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| WorkerError::Model {
        model: dir.display().to_string(),
        reason: format!(
            "cannot read {} ({e}); give the directory vephys-export wrote (--out)",
            path.display()
        ),
    })?;
    Manifest::parse(&text).map_err(|e| WorkerError::Model {
        model: dir.display().to_string(),
        reason: format!("{}: {e}", path.display()),
    })
}

/// Images per forward pass on the CPU (see `forward_to_channels`); other devices take the
/// whole batch at once. Measured on a 2-core CPU with a 32 MB cache: 24 stimuli through
/// VGG-19 to block3_pool and EfficientNet-Lite0 to blocks.4 took 2.8 s and 0.12 s at 2 per
/// pass (1 was as fast for VGG, 13% slower for EfficientNet), 3.6 s and 0.23 s at 8, 3.9 s and
/// 0.34 s all at once.
pub(crate) const CPU_SUB_BATCH: i64 = 2;

fn sub_batch(h: &Tensor) -> i64 {
    let n = h.size()[0].max(1);
    match h.device() {
        Device::Cpu => CPU_SUB_BATCH.min(n),
        _ => n,
    }
}

/// The same [N, C, H, W] tensor stored channels-last (NHWC strides), which libtorch's CPU
/// convolutions keep from layer to layer.
fn channels_last(x: &Tensor) -> Result<Tensor> {
    Ok(x.f_permute([0, 2, 3, 1])?
        .f_contiguous()?
        .f_permute([0, 3, 1, 2])?)
}

fn as_map(h: Tensor) -> Tensor {
    if h.dim() == 2 {
        h.unsqueeze(-1).unsqueeze(-1)
    } else {
        h
    }
}
