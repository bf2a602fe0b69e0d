//! Max-image synthesis: the objective, the regularisers, the batched gradient-ascent engine.

pub mod bench;
mod engine;
pub mod objective;
mod params;
pub mod regularizers;

pub use engine::{synthesize, synthesize_pass, Status, SynthOutcome, DATASET_MEAN, STARTS};
pub use params::{ColorMode, ObjectiveKind, SynthParams};
