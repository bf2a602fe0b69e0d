//! Makes the worker binaries find libtorch without LD_LIBRARY_PATH and see CUDA when present.
fn main() {
    // torch-sys publishes the libtorch directory it linked against (`links = "tch"`).
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:rustc-env=VEPHYS_LIBTORCH_VERSION=unknown");
        return;
    };
    // Recorded in every result's provenance: the wheel's torch/version.py names the build.
    let version_py = std::path::Path::new(&lib_dir).join("../version.py");
    let version = std::fs::read_to_string(&version_py)
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("__version__ = ")
                    .map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_string())
            })
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=VEPHYS_LIBTORCH_VERSION={version}");
    println!("cargo:rerun-if-changed={}", version_py.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    // Nothing in our code references libtorch_cuda's symbols, so `--as-needed` would drop it and
    // libtorch would silently report no CUDA device. Keep it linked when the wheel ships it.
    if std::path::Path::new(&lib_dir)
        .join("libtorch_cuda.so")
        .exists()
    {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
