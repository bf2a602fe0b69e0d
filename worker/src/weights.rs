//! Loading weights from safetensors, strictly: the file must hold exactly the network's
//! parameters with exactly its shapes, or nothing is loaded. Safetensors is plain data, so a
//! weights file can never run code (unlike a pickled `.pth`).

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};
use tch::{nn, Tensor};

use crate::error::{Result, WorkerError};

/// Copies the tensors of `path` into `vs` and returns the file's sha256 (hex).
pub fn load(vs: &mut nn::VarStore, path: &Path, model: &str) -> Result<String> {
    let fail = |reason: String| WorkerError::Weights {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_file() {
        return Err(fail(
            "no such file; convert a checkpoint with `python scripts/python/pth_to_safetensors.py IN.pth OUT.safetensors` or pass --weights"
                .to_string(),
        ));
    }
    let sha256 = sha256_file(path)?;
    let tensors = Tensor::read_safetensors(path).map_err(|e| {
        fail(format!(
            "not a readable safetensors file ({e}); vephys loads only .safetensors weights"
        ))
    })?;

    let mut variables = vs.variables();
    let expected: BTreeSet<&String> = variables.keys().collect();
    let found: BTreeSet<&String> = tensors.iter().map(|(name, _)| name).collect();
    let missing: Vec<_> = expected.difference(&found).collect();
    let unexpected: Vec<_> = found.difference(&expected).collect();
    if !missing.is_empty() || !unexpected.is_empty() {
        return Err(fail(format!(
            "does not match {model}: {} missing tensor(s) {}, {} unexpected tensor(s) {}; is it a {model} checkpoint in the expected layout?",
            missing.len(),
            preview(&missing),
            unexpected.len(),
            preview(&unexpected)
        )));
    }
    for (name, tensor) in &tensors {
        let var = &variables[name];
        if var.size() != tensor.size() {
            return Err(fail(format!(
                "tensor {name} has shape {:?} but {model} expects {:?}; is it a {model} checkpoint?",
                tensor.size(),
                var.size()
            )));
        }
    }
    tch::no_grad(|| -> Result<()> {
        for (name, tensor) in &tensors {
            let var = variables.get_mut(name).expect("checked above");
            var.f_copy_(&tensor.to_kind(var.kind()))?;
        }
        Ok(())
    })?;
    Ok(sha256)
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).map_err(WorkerError::io(format!("open {}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(WorkerError::io(format!("read {}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn preview(names: &[&&String]) -> String {
    let shown: Vec<&str> = names.iter().take(3).map(|s| s.as_str()).collect();
    let more = if names.len() > 3 { ", ..." } else { "" };
    format!("[{}{more}]", shown.join(", "))
}
