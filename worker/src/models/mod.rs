//! The model zoo: networks as a chain of named stages, run in pixel space.
//!
//! A network is a list of stages; stage i's output is layer i. Running "up to layer L" means
//! running stages 0..=L and nothing after, which is what synthesis and probes need. Each model
//! family lives in its own file as a short function of an `nn::Path`.

mod efficientnet_lite;
pub mod ops;
mod vgg;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;
use tch::{nn, Device, Kind, Tensor};

use crate::error::{Result, WorkerError};
use crate::weights;
use ops::Op;

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

pub fn model_names() -> Vec<&'static str> {
    ZOO.iter().map(|(name, _, _)| *name).collect()
}

/// How a model turns pixel-space input into what its weights expect. Applied inside the
/// forward pass so that every caller, and every saved PNG, talks pixel space.
#[derive(Debug, Clone, Copy)]
pub enum InputNorm {
    MeanStd { mean: [f64; 3], std: [f64; 3] },
    Affine { scale: f64, shift: f64 },
}

/// One named layer: the op producing it and the names it answers to.
pub struct Stage {
    name: String,
    aliases: Vec<String>,
    op: Box<dyn Op>,
}

impl Stage {
    pub fn new(name: &str, aliases: &[&str], op: impl Op + 'static) -> Stage {
        Stage {
            name: name.to_string(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            op: Box::new(op),
        }
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

pub struct Network {
    name: String,
    stages: Vec<Stage>,
    input: InputNorm,
    vs: nn::VarStore,
    weights_sha256: Option<String>,
    /// Layer shapes by input size: a shape probe runs the whole network once, and synthesis
    /// and probes ask for the same sizes again and again.
    shapes: Mutex<HashMap<i64, Vec<LayerShape>>>,
}

impl Network {
    /// Builds `model` on `device` with random weights; call `load_weights` for real ones.
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
        Network {
            name: name.to_string(),
            stages,
            input,
            vs,
            weights_sha256: None,
            shapes: Mutex::default(),
        }
    }

    /// Loads safetensors weights (every parameter must be present with the right shape, and
    /// nothing else may be in the file) and remembers the file's sha256.
    pub fn load_weights(&mut self, path: &Path) -> Result<()> {
        let sha = weights::load(&mut self.vs, path, &self.name)?;
        self.weights_sha256 = Some(sha);
        Ok(())
    }

    /// Every parameter and buffer by its safetensors name (tensors share storage with the
    /// network: editing one edits the model, which tests use to build units with known weights).
    pub fn parameters(&self) -> std::collections::HashMap<String, Tensor> {
        self.vs.variables()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    pub fn weights_sha256(&self) -> Option<&str> {
        self.weights_sha256.as_deref()
    }

    /// Index of the layer called `layer` (its name or any alias).
    pub fn layer_index(&self, layer: &str) -> Result<usize> {
        self.stages
            .iter()
            .position(|s| s.name == layer || s.aliases.iter().any(|a| a == layer))
            .ok_or_else(|| WorkerError::UnknownLayer {
                model: self.name.clone(),
                layer: layer.to_string(),
            })
    }

    pub fn layer_name(&self, index: usize) -> &str {
        &self.stages[index].name
    }

    fn normalize(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self.input {
            InputNorm::MeanStd { mean, std } => {
                let mean = Tensor::from_slice(&mean)
                    .to_kind(Kind::Float)
                    .to_device(x.device())
                    .view([1, 3, 1, 1]);
                let std = Tensor::from_slice(&std)
                    .to_kind(Kind::Float)
                    .to_device(x.device())
                    .view([1, 3, 1, 1]);
                x.f_sub(&mean)?.f_div(&std)?
            }
            InputNorm::Affine { scale, shift } => x.f_mul_scalar(scale)?.f_add_scalar(shift)?,
        })
    }

    /// Output of layer `index` for pixel-space images `x` ([B, 3, H, W] in [0, 1]), always 4-D
    /// ([B, C, h, w]; classifier outputs are [B, C, 1, 1]).
    pub fn forward_to(&self, x: &Tensor, index: usize) -> Result<Tensor> {
        let mut h = self.normalize(x)?;
        for stage in &self.stages[..=index] {
            h = stage.op.forward(&h)?;
        }
        Ok(as_map(h))
    }

    /// Outputs of every layer, in order (for parity tests and inspection).
    pub fn forward_all(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let mut h = self.normalize(x)?;
        let mut outputs = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            h = stage.op.forward(&h)?;
            outputs.push(as_map(h.shallow_clone()));
        }
        Ok(outputs)
    }

    /// Every layer with its output shape for `size` x `size` input. Layers the image is too
    /// small to reach are left out, so the result is empty for a uselessly small size.
    pub fn layer_shapes(&self, size: i64) -> Vec<LayerShape> {
        let mut cache = self.shapes.lock().expect("shape cache poisoned");
        cache
            .entry(size)
            .or_insert_with(|| self.probe_shapes(size))
            .clone()
    }

    fn probe_shapes(&self, size: i64) -> Vec<LayerShape> {
        let _guard = tch::no_grad_guard();
        let mut shapes = Vec::new();
        let Ok(mut h) = Tensor::f_zeros([1, 3, size, size], (Kind::Float, self.device())) else {
            return shapes;
        };
        for stage in &self.stages {
            match stage.op.forward(&h) {
                Ok(out) if out.numel() > 0 => h = out,
                _ => break,
            }
            let map = as_map(h.shallow_clone());
            let s = map.size();
            shapes.push(LayerShape {
                name: stage.name.clone(),
                aliases: stage.aliases.clone(),
                channels: s[1],
                height: s[2],
                width: s[3],
            });
        }
        shapes
    }

    /// Shape (C, h, w) of layer `index` at input `size`, or `ImageTooSmall` naming the smallest
    /// size that works.
    pub fn check_size(&self, index: usize, size: i64) -> Result<LayerShape> {
        if let Some(shape) = self.layer_shapes(size).into_iter().nth(index) {
            return Ok(shape);
        }
        let reaches = |s: i64| self.layer_shapes(s).len() > index;
        // Output size grows with input size, so bisect for the smallest size that reaches.
        let (mut lo, mut hi) = (size.max(1), size.max(1) * 2);
        while !reaches(hi) && hi < 8192 {
            lo = hi;
            hi *= 2;
        }
        while lo + 1 < hi {
            let mid = (lo + hi) / 2;
            if reaches(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Err(WorkerError::ImageTooSmall {
            model: self.name.clone(),
            layer: self.stages[index].name.clone(),
            size,
            min: hi,
        })
    }
}

fn as_map(h: Tensor) -> Tensor {
    if h.dim() == 2 {
        h.unsqueeze(-1).unsqueeze(-1)
    } else {
        h
    }
}
