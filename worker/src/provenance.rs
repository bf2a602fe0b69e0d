//! Where a result came from: enough to reproduce it or to tell two results apart.

use serde::Serialize;

use crate::device::{describe, Precision};
use crate::models::{MemoryFormat, Network};

#[derive(Debug, Clone, Serialize)]
pub struct Versions {
    pub vephys: &'static str,
    pub libtorch: &'static str,
    pub tch: &'static str,
}

pub const VERSIONS: Versions = Versions {
    vephys: env!("CARGO_PKG_VERSION"),
    libtorch: env!("VEPHYS_LIBTORCH_VERSION"),
    tch: "0.24.0",
};

#[derive(Debug, Clone, Serialize)]
pub struct Provenance {
    pub model: String,
    pub weights_sha256: Option<String>,
    pub device: String,
    /// How stimuli were evaluated: `framed` (only where they differ from their uniform
    /// background) or `whole` (exported models run whole images).
    pub stimulus_forward: &'static str,
    /// The precision the result was computed in (`fp32`, or `bf16`: mixed precision).
    pub precision: Precision,
    /// How bf16 ran: `autocast` (libtorch's bf16 autocast: convolutions and matrix products in
    /// bf16; the image, regularisers, gradient normalisation, objective and the max image's
    /// reported activity in fp32), on built-in and exported networks alike; None in fp32.
    pub mixed_precision: Option<&'static str>,
    /// Memory format of the gradient passes of synthesis.
    pub memory_format: MemoryFormat,
    pub versions: Versions,
    pub host: String,
}

impl Provenance {
    /// Of results computed by `net` in `precision`.
    pub fn of(net: &Network, precision: Precision) -> Provenance {
        Provenance {
            model: net.name().to_string(),
            weights_sha256: net.weights_sha256().map(str::to_string),
            device: describe(net.device()),
            stimulus_forward: net.stimulus_forward(),
            precision,
            mixed_precision: (precision == Precision::Bf16).then_some("autocast"),
            memory_format: net.memory_format(precision),
            versions: VERSIONS,
            host: std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
        }
    }
}
