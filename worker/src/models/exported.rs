//! Exported networks: a TorchScript archive written by `vephys-export`, with one method per
//! layer that computes only what its layer needs (a truncated graph), described by its
//! manifest (`vephys_proto::manifest`). Normalisation happens here, as for the built-ins, so
//! each method takes normalised images and returns a 4-D map [B, C, h, w].
//!
//! The archive is read once into memory, hashed and loaded from those same bytes, so the
//! weights that compute are the bytes whose sha256 the results name. Nothing in an archive can
//! run Python: libtorch reads TorchScript code and tensors, and refuses anything else.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::Mutex;

use tch::{CModule, Device, Tensor};
use vephys_proto::manifest::{torch_release, Manifest};

use super::LayerShape;
use crate::error::{Result, WorkerError};
use crate::provenance::VERSIONS;

pub(super) struct Exported {
    module: CModule,
    pub(super) manifest: Manifest,
    /// Each layer's output shape by input size, once its method ran at that size.
    shapes: Mutex<HashMap<(usize, i64), LayerShape>>,
}

impl Exported {
    /// Loads the archive at `path` described by `manifest` onto `device`; returns it with the
    /// archive's sha256. Refuses an archive whose sha256 is not the manifest's, and one exported
    /// with another torch release than this worker's libtorch.
    pub(super) fn load(
        manifest: Manifest,
        path: &Path,
        device: Device,
    ) -> Result<(Exported, String)> {
        let fail = |reason: String| WorkerError::Model {
            model: manifest.model.clone(),
            reason,
        };
        let exported_with = torch_release(&manifest.versions.torch);
        let running = torch_release(VERSIONS.libtorch);
        if exported_with != running {
            return Err(fail(format!(
                "it was exported with torch {exported_with}, but this worker runs libtorch {running}; \
                 TorchScript archives are read by the release that wrote them: export it again with \
                 torch {running} (the venv scripts/setup.sh makes)"
            )));
        }
        let bytes = std::fs::read(path).map_err(WorkerError::io(format!(
            "read the archive {}",
            path.display()
        )))?;
        let sha256 = crate::weights::sha256_bytes(&bytes);
        if !sha256.eq_ignore_ascii_case(&manifest.weights_sha256) {
            return Err(fail(format!(
                "the archive {} is not the one its manifest describes (sha256 differs); \
                 export the model again or restore its model.pt",
                path.display()
            )));
        }
        let mut module = CModule::load_data_on_device(&mut Cursor::new(bytes), device).map_err(|e| {
            fail(format!(
                "{} is not a TorchScript archive libtorch can read ({}); give the model.pt vephys-export wrote",
                path.display(),
                first_line(&e.to_string())
            ))
        })?;
        module.f_set_eval()?;
        // Weights are frozen: gradients flow to the image only.
        for (_, parameter) in module.named_parameters()? {
            let _ = parameter.set_requires_grad(false);
        }
        let exported = Exported {
            module,
            manifest,
            shapes: Mutex::default(),
        };
        Ok((exported, sha256))
    }

    pub(super) fn layer_index(&self, layer: &str) -> Option<usize> {
        self.manifest.layer_index(layer)
    }

    pub(super) fn layer_name(&self, index: usize) -> &str {
        &self.manifest.layers[index].name
    }

    pub(super) fn layer_count(&self) -> usize {
        self.manifest.layers.len()
    }

    /// Layer `index`'s output for normalised images `h`: the archive's method for it, which
    /// must return a 4-D map.
    pub(super) fn forward_to(&self, h: &Tensor, index: usize) -> Result<Tensor> {
        let layer = &self.manifest.layers[index];
        let out = self.module.method_ts(&layer.method, &[h]).map_err(|e| {
            let text = e.to_string();
            let reason = match text.contains("is not defined") || text.contains("not found") {
                true => format!(
                    "its manifest names layer `{}` (method {}), which the archive does not have; \
                     export the model again",
                    layer.name, layer.method
                ),
                false => format!("layer `{}` failed: {}", layer.name, first_line(&text)),
            };
            WorkerError::Model {
                model: self.manifest.model.clone(),
                reason,
            }
        })?;
        if out.dim() != 4 {
            return Err(WorkerError::Model {
                model: self.manifest.model.clone(),
                reason: format!(
                    "layer `{}` put out a tensor of shape {:?}, but vephys reads layers as 4-D maps \
                     [batch, channels, height, width]; export the model again with vephys-export, \
                     which turns vectors and tokens into maps",
                    layer.name,
                    out.size()
                ),
            });
        }
        Ok(out)
    }

    /// Layer `index`'s output shape at `size`: its method run once on zeros (shapes do not
    /// depend on values). At the default size it must be the manifest's shape; at any size it
    /// must have the manifest's channels.
    pub(super) fn shape(&self, index: usize, size: i64, device: Device) -> Result<LayerShape> {
        if let Some(shape) = self.cached(index, size) {
            return Ok(shape);
        }
        let layer = &self.manifest.layers[index];
        let zeros = Tensor::f_zeros([1, 3, size, size], (tch::Kind::Float, device))?;
        let out = tch::no_grad(|| self.forward_to(&zeros, index))?;
        let s = out.size();
        let expected = match size == self.manifest.input_sizes.default {
            true => [layer.channels, layer.height, layer.width],
            false => [layer.channels, s[2], s[3]],
        };
        if s[1..] != expected {
            return Err(WorkerError::Model {
                model: self.manifest.model.clone(),
                reason: format!(
                    "layer `{}` puts out {:?} per image at {size} px, but its manifest says {:?}; \
                     the manifest does not describe this archive: export the model again",
                    layer.name,
                    &s[1..],
                    expected
                ),
            });
        }
        let shape = LayerShape {
            name: layer.name.clone(),
            aliases: layer.aliases.clone(),
            channels: s[1],
            height: s[2],
            width: s[3],
        };
        self.shapes
            .lock()
            .expect("shape cache poisoned")
            .insert((index, size), shape.clone());
        Ok(shape)
    }

    fn cached(&self, index: usize, size: i64) -> Option<LayerShape> {
        let shapes = self.shapes.lock().expect("shape cache poisoned");
        shapes.get(&(index, size)).cloned()
    }

    /// Every parameter of the archive by its TorchScript name.
    pub(super) fn parameters(&self) -> Result<HashMap<String, Tensor>> {
        Ok(self.module.named_parameters()?.into_iter().collect())
    }
}

/// libtorch's messages carry a C++ backtrace after the first line.
fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text).trim()
}
