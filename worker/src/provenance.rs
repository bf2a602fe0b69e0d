//! Where a result came from: enough to reproduce it or to tell two results apart.

use serde::Serialize;

use crate::device::describe;
use crate::models::Network;

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
    pub versions: Versions,
    pub host: String,
}

impl Provenance {
    pub fn of(net: &Network) -> Provenance {
        Provenance {
            model: net.name().to_string(),
            weights_sha256: net.weights_sha256().map(str::to_string),
            device: describe(net.device()),
            versions: VERSIONS,
            host: std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
        }
    }
}
