//! Generates the gRPC client and server code from `vephys.proto`, with a vendored `protoc` so the
//! build needs nothing installed, and writes the descriptor set the reflection service serves.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // prost-build reads PROTOC; setting it here pins the compiler to the vendored one.
    std::env::set_var("PROTOC", protoc);
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("vephys_descriptor.bin"))
        .compile_protos(&["vephys.proto"], &["."])?;
    println!("cargo:rerun-if-changed=vephys.proto");
    Ok(())
}
