//! vephys worker: libtorch models in pixel space, batched max-image synthesis, and the
//! commands that expose them (`vephys-worker layers | respond | synth`).

pub mod device;
pub mod error;
pub mod filters;
pub mod image_io;
pub mod models;
pub mod plot;
pub mod probes;
pub mod provenance;
pub mod synthesis;
pub mod weights;

pub use error::{Result, WorkerError};
