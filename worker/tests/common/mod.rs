//! Shared test helpers: where `scripts/test.sh` put the fixtures and weights.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn dir_from_env(var: &str, default: &str) -> PathBuf {
    let dir = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(default));
    assert!(
        dir.is_dir(),
        "{} not found: run scripts/test.sh (it creates the fixtures and weights)",
        dir.display()
    );
    dir
}

pub fn fixtures() -> PathBuf {
    dir_from_env("VEPHYS_FIXTURES", ".cache/vephys/fixtures")
}

pub fn weights_dir() -> PathBuf {
    dir_from_env("VEPHYS_WEIGHTS_DIR", ".cache/vephys/weights")
}

pub fn lite0_weights() -> PathBuf {
    weights_dir().join("efficientnet_lite0.safetensors")
}

/// The scikit-image photos exported by make_fixtures.py.
pub fn photos() -> Vec<PathBuf> {
    let mut photos: Vec<PathBuf> = std::fs::read_dir(fixtures().join("photos"))
        .expect("photos fixture")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    photos.sort();
    assert!(
        photos.len() >= 10,
        "expected the scikit-image photos, found {}",
        photos.len()
    );
    photos
}

/// Max |a - b| relative to max |b|.
pub fn rel_err(a: &tch::Tensor, b: &tch::Tensor) -> f64 {
    let diff = (a - b).abs().max().double_value(&[]);
    let scale = b.abs().max().double_value(&[]).max(1e-12);
    diff / scale
}

/// Runs the `vephys-worker` binary on the CPU with the project's weights directory.
pub fn worker(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vephys-worker"))
        .args(args)
        .env("VEPHYS_WEIGHTS_DIR", lite0_weights().parent().unwrap())
        .env("VEPHYS_DEVICE", "cpu")
        .output()
        .expect("run vephys-worker")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
