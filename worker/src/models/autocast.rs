//! libtorch's autocast for bf16, as PyTorch's `torch.autocast(device, dtype=torch.bfloat16)`
//! sets it: inside an `Autocast` guard, the ops on autocast's lower-precision list
//! (convolutions, matrix products, linear layers) run in bf16, casting their inputs, the ops on
//! its fp32 list (reductions, norms, softmax and the like) run in fp32, and the rest run in
//! their inputs' type. That is mixed precision, not blind casting, and it reaches into
//! TorchScript archives (their ops go through the same dispatcher), so built-in and exported
//! networks run bf16 the same way.
//!
//! tch 0.24 wraps only the deprecated CUDA-only switch, whose type is fp16, so the guard calls
//! libtorch's own functions (`at::autocast::set_autocast_enabled(DeviceType, bool)` and
//! friends, exported by libtorch_cpu with C++ linkage). They take and return plain values
//! (`c10::DeviceType` and `c10::ScalarType` are `int8_t` enums) and do not throw, so they are
//! declared here by their mangled names; a libtorch without them fails at link time, never at
//! run time. The state is thread-local, like PyTorch's.

use tch::Device;

mod ffi {
    extern "C" {
        #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
        pub fn set_autocast_enabled(device: i8, enabled: bool);
        #[link_name = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE"]
        pub fn is_autocast_enabled(device: i8) -> bool;
        #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
        pub fn set_autocast_dtype(device: i8, dtype: i8);
        #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
        pub fn get_autocast_dtype(device: i8) -> i8;
        #[link_name = "_ZN2at8autocast17increment_nestingEv"]
        pub fn increment_nesting() -> i32;
        #[link_name = "_ZN2at8autocast17decrement_nestingEv"]
        pub fn decrement_nesting() -> i32;
        #[link_name = "_ZN2at8autocast11clear_cacheEv"]
        pub fn clear_cache();
    }
}

/// `c10::DeviceType` values.
const CPU: i8 = 0;
const CUDA: i8 = 1;
/// `c10::ScalarType::BFloat16`.
const BFLOAT16: i8 = 15;

/// bf16 autocast on one device type for the guard's lifetime; the previous state (enabled or
/// not, and its type) comes back when it drops, so guards nest.
pub(crate) struct Autocast {
    device: i8,
    was_enabled: bool,
    was_dtype: i8,
}

impl Autocast {
    /// bf16 autocast for `device`'s type (CPU or CUDA; None for any other device).
    pub(crate) fn bf16(device: Device) -> Option<Autocast> {
        let device = match device {
            Device::Cpu => CPU,
            Device::Cuda(_) => CUDA,
            _ => return None,
        };
        // SAFETY: see the module doc; plain values in and out, no exceptions.
        unsafe {
            let guard = Autocast {
                device,
                was_enabled: ffi::is_autocast_enabled(device),
                was_dtype: ffi::get_autocast_dtype(device),
            };
            ffi::set_autocast_dtype(device, BFLOAT16);
            ffi::set_autocast_enabled(device, true);
            ffi::increment_nesting();
            Some(guard)
        }
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        // SAFETY: as in `bf16`.
        unsafe {
            // the casts autocast kept for the guard's lifetime go with the outermost guard
            if ffi::decrement_nesting() == 0 {
                ffi::clear_cache();
            }
            ffi::set_autocast_enabled(self.device, self.was_enabled);
            ffi::set_autocast_dtype(self.device, self.was_dtype);
        }
    }
}

/// Whether bf16 autocast is on for `device`'s type on this thread (for tests).
#[cfg(test)]
pub(crate) fn bf16_enabled(device: Device) -> bool {
    let code = match device {
        Device::Cpu => CPU,
        Device::Cuda(_) => CUDA,
        _ => return false,
    };
    // SAFETY: as in `Autocast::bf16`.
    unsafe { ffi::is_autocast_enabled(code) && ffi::get_autocast_dtype(code) == BFLOAT16 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn convolutions_run_in_bf16_inside_the_guard_and_fp32_after() {
        let x = Tensor::rand([1, 3, 8, 8], (Kind::Float, Device::Cpu));
        let w = Tensor::rand([4, 3, 3, 3], (Kind::Float, Device::Cpu));
        assert!(!bf16_enabled(Device::Cpu));
        {
            let _outer = Autocast::bf16(Device::Cpu).unwrap();
            {
                let _inner = Autocast::bf16(Device::Cpu).unwrap();
                assert!(bf16_enabled(Device::Cpu));
            }
            assert!(
                bf16_enabled(Device::Cpu),
                "an inner guard leaves the outer one's state"
            );
            let y = x.conv2d(&w, None::<Tensor>, [1], [1], [1], 1);
            assert_eq!(y.kind(), Kind::BFloat16);
            // elementwise ops follow their input
            assert_eq!(y.relu().kind(), Kind::BFloat16);
        }
        assert!(!bf16_enabled(Device::Cpu));
        let y = x.conv2d(&w, None::<Tensor>, [1], [1], [1], 1);
        assert_eq!(y.kind(), Kind::Float);
    }
}
