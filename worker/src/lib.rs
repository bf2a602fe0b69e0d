//! vephys worker: libtorch models in pixel space, batched max-image synthesis, the probes, and
//! the daemon that runs them for a coordinator (`daemon`); the binary's commands expose them.

pub mod daemon;
pub mod device;
pub mod error;
pub mod figure;
pub mod filters;
pub mod image_io;
pub mod models;
pub mod probes;
pub mod provenance;
pub mod synthesis;
pub mod weights;

pub use error::{Result, WorkerError};
