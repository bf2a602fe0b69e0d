//! The contract of vephys: the gRPC API generated from `vephys.proto`, the campaign spec format
//! users write in TOML, the typed parameters every job carries (`params`), the filter grammar
//! every tool shares (`filters`) and the manifest of exported models (`manifest`).

pub mod bearer;
pub mod derived;
pub mod endpoint;
pub mod filters;
pub mod manifest;
pub mod params;
pub mod spec;

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("vephys.v1");

    /// Encoded descriptor set of `vephys.proto`, served by the reflection service.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("vephys_descriptor");
}
