//! Choosing the compute device (CUDA when present unless told otherwise) and the number format
//! it computes in (`resolve_precision`).

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

// ---------------------------------------------------------------------------------------------
// Precision

pub use vephys_proto::params::PrecisionChoice;

/// The number format a computation runs in, resolved for its device from a `PrecisionChoice`
/// (`resolve_precision`). `Bf16` is mixed precision (see `models::Network::forward_to_in`):
/// convolutions and matrix products in bfloat16 under libtorch's autocast, everything around
/// them — the image, the regularisers, the gradient normalisation, the objective's reduction,
/// the reported activity of a saved max image — in fp32.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Bf16,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl From<Precision> for PrecisionChoice {
    fn from(p: Precision) -> PrecisionChoice {
        match p {
            Precision::Fp32 => PrecisionChoice::Fp32,
            Precision::Bf16 => PrecisionChoice::Bf16,
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Set to 1 to run bf16 on a device that only emulates it (libtorch computes it correctly but
/// several times slower than fp32): for tests and benchmarks of the bf16 path on such machines.
pub const ALLOW_EMULATED_BF16: &str = "VEPHYS_ALLOW_EMULATED_BF16";

/// Whether a device runs bf16 natively, and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bf16Support {
    pub native: bool,
    /// What decided it, for messages: "this CPU has avx512_bf16", "cuda:0 is sm_75", ...
    pub reason: String,
}

/// Whether `device` runs bf16 natively: a CPU with AVX-512 BF16 or AMX-BF16 (its
/// /proc/cpuinfo flags), a CUDA device of compute capability 8.0 or more (Ampere and later,
/// read from the driver). Anything else emulates bf16 through fp32 conversions: libtorch's
/// answers are right but slow (on a 2-core AVX2 EPYC, VGG-19 to block3_pool took 14x and
/// EfficientNet-Lite0 to blocks.7 4-15x the fp32 time in a plain PyTorch autocast loop).
pub fn bf16_support(device: Device) -> Bf16Support {
    match device {
        Device::Cpu => {
            let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            match cpu_bf16_flag(&info) {
                Some(flag) => Bf16Support {
                    native: true,
                    reason: format!("this CPU has {flag}"),
                },
                None => Bf16Support {
                    native: false,
                    reason: format!(
                        "this CPU ({}) has neither AVX-512 BF16 nor AMX-BF16 (no avx512_bf16 or amx_bf16 in /proc/cpuinfo)",
                        cpu_model(&info).unwrap_or("model unknown")
                    ),
                },
            }
        }
        Device::Cuda(n) => match cuda_capability(n) {
            Some((major, minor)) => Bf16Support {
                native: major >= 8,
                reason: format!("cuda:{n} is sm_{major}{minor}"),
            },
            None => Bf16Support {
                native: false,
                reason: format!(
                    "the compute capability of cuda:{n} could not be read from the CUDA driver"
                ),
            },
        },
        other => Bf16Support {
            native: false,
            reason: format!("vephys runs bf16 only on CPUs and CUDA devices, not {other:?}"),
        },
    }
}

/// The CPU flag that makes bf16 native, from the text of /proc/cpuinfo.
pub fn cpu_bf16_flag(cpuinfo: &str) -> Option<&'static str> {
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))?
        .split_once(':')?
        .1;
    ["amx_bf16", "avx512_bf16"]
        .into_iter()
        .find(|want| flags.split_whitespace().any(|f| f == *want))
}

fn cpu_model(cpuinfo: &str) -> Option<&str> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))?
        .split_once(':')
        .map(|(_, m)| m.trim())
}

/// The precision to compute in on `device` for `choice`: `fp32` as asked; `auto` bf16 where
/// the device runs it natively (`bf16_support`), fp32 elsewhere; `bf16` where it is native,
/// and an error naming --precision elsewhere (unless ALLOW_EMULATED_BF16 is set).
pub fn resolve_precision(choice: PrecisionChoice, device: Device) -> Result<Precision> {
    match choice {
        PrecisionChoice::Fp32 => Ok(Precision::Fp32),
        PrecisionChoice::Auto => Ok(match bf16_support(device).native {
            true => Precision::Bf16,
            false => Precision::Fp32,
        }),
        PrecisionChoice::Bf16 => {
            let support = bf16_support(device);
            let allowed = std::env::var(ALLOW_EMULATED_BF16).is_ok_and(|v| v == "1");
            match support.native || allowed {
                true => Ok(Precision::Bf16),
                false => Err(WorkerError::bad(
                    "--precision",
                    format!(
                        "bf16 needs a device that runs it natively, but {}: libtorch would only \
                         emulate it, several times slower than fp32; use --precision fp32, or auto \
                         (bf16 where it is native). {ALLOW_EMULATED_BF16}=1 runs emulated bf16 \
                         anyway, for tests",
                        support.reason
                    ),
                )),
            }
        }
    }
}

/// Compute capability (major, minor) of CUDA device `ordinal`, from the CUDA driver (libtorch
/// does not expose it through tch); None when the driver cannot be read.
fn cuda_capability(ordinal: usize) -> Option<(i32, i32)> {
    use std::ffi::{c_char, c_int, c_void};
    extern "C" {
        fn dlopen(filename: *const c_char, flag: c_int) -> *mut c_void;
        fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    }
    const RTLD_NOW: c_int = 2;
    // CUdevice_attribute values of the driver API (cuda.h)
    const COMPUTE_CAPABILITY_MAJOR: c_int = 75;
    const COMPUTE_CAPABILITY_MINOR: c_int = 76;
    type CuInit = unsafe extern "C" fn(u32) -> c_int;
    type CuDeviceGet = unsafe extern "C" fn(*mut c_int, c_int) -> c_int;
    type CuDeviceGetAttribute = unsafe extern "C" fn(*mut c_int, c_int, c_int) -> c_int;
    // SAFETY: the driver's documented C entry points, called with their documented signatures;
    // the library stays loaded (libtorch has it loaded already when CUDA is in use).
    unsafe {
        let lib = dlopen(c"libcuda.so.1".as_ptr(), RTLD_NOW);
        if lib.is_null() {
            return None;
        }
        let symbol = |name: &std::ffi::CStr| {
            let f = dlsym(lib, name.as_ptr());
            (!f.is_null()).then_some(f)
        };
        let init: CuInit = std::mem::transmute(symbol(c"cuInit")?);
        let get: CuDeviceGet = std::mem::transmute(symbol(c"cuDeviceGet")?);
        let attribute: CuDeviceGetAttribute = std::mem::transmute(symbol(c"cuDeviceGetAttribute")?);
        let mut device: c_int = 0;
        if init(0) != 0 || get(&mut device, c_int::try_from(ordinal).ok()?) != 0 {
            return None;
        }
        let (mut major, mut minor): (c_int, c_int) = (0, 0);
        if attribute(&mut major, COMPUTE_CAPABILITY_MAJOR, device) != 0
            || attribute(&mut minor, COMPUTE_CAPABILITY_MINOR, device) != 0
        {
            return None;
        }
        Some((major, minor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_flags_decide_native_bf16() {
        let info =
            |flags: &str| format!("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n");
        assert_eq!(
            cpu_bf16_flag(&info("fpu avx2 avx512f avx512_bf16 avx512_vnni")),
            Some("avx512_bf16")
        );
        assert_eq!(
            cpu_bf16_flag(&info("fpu avx2 amx_tile amx_bf16 amx_int8")),
            Some("amx_bf16")
        );
        assert_eq!(cpu_bf16_flag(&info("fpu avx2 avx512f avx512_vnni")), None);
        assert_eq!(
            cpu_bf16_flag(&info("fpu avx2 avx512_bf16x")),
            None,
            "a whole flag, not a prefix"
        );
        assert_eq!(cpu_bf16_flag(""), None);
    }

    #[test]
    fn fp32_is_always_fp32() {
        assert_eq!(
            resolve_precision(PrecisionChoice::Fp32, Device::Cpu).unwrap(),
            Precision::Fp32
        );
    }
}
