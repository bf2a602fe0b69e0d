//! Choosing the compute device: CUDA when present unless told otherwise.

use tch::Device;

use crate::error::{Result, WorkerError};

/// Parses `auto`, `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(s: &str) -> Result<Device> {
    let bad = |reason: String| WorkerError::bad("--device", reason);
    match s {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => cuda(0)
            .ok_or_else(|| bad("no CUDA device is visible to libtorch; use --device cpu".into())),
        other => {
            let Some(n) = other.strip_prefix("cuda:") else {
                return Err(bad(format!(
                    "`{other}` is not a device; use auto, cpu, cuda or cuda:N"
                )));
            };
            let n: usize = n.parse().map_err(|_| {
                bad(format!(
                    "`{other}` is not a device; use auto, cpu, cuda or cuda:N"
                ))
            })?;
            cuda(n).ok_or_else(|| {
                bad(format!(
                    "cuda:{n} does not exist ({} CUDA device(s) visible)",
                    tch::Cuda::device_count()
                ))
            })
        }
    }
}

fn cuda(n: usize) -> Option<Device> {
    (tch::Cuda::is_available() && (n as i64) < tch::Cuda::device_count()).then_some(Device::Cuda(n))
}

pub fn describe(device: Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({} threads)", tch::get_num_threads()),
        Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}"),
    }
}
