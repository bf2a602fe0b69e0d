//! The worker's typed errors. Every message says what was wrong and what to do about it; the
//! binary prints them as they are and exits non-zero.

use std::path::PathBuf;

use tch::TchError;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("unknown model `{name}`: choose one of {known}, or an exported model (--model-dir DIR, or DIR/{name}/model.json in the weights directory; see vephys-export)")]
    UnknownModel { name: String, known: String },

    /// An exported model that cannot be used as it is (archive, manifest, torch release).
    #[error("model {model}: {reason}")]
    Model { model: String, reason: String },

    #[error("{reason}")]
    InputSize { reason: String },

    #[error("model {model} has no layer `{layer}`: run `vephys-worker layers --model {model}` to list them")]
    UnknownLayer { model: String, layer: String },

    #[error("filter {filter} is out of range for layer {layer}, which has {channels} filters (0-{last})", last = channels - 1)]
    FilterOutOfRange {
        layer: String,
        filter: i64,
        channels: i64,
    },

    #[error(
        "bad filter spec `{spec}`: {reason}; write `all`, a list and/or ranges such as `0-15,40`"
    )]
    BadFilterSpec { spec: String, reason: String },

    #[error("image size {size} is too small for layer {layer} of {model}: its output would be empty; use a size of at least {min}")]
    ImageTooSmall {
        model: String,
        layer: String,
        size: i64,
        min: i64,
    },

    #[error("bad value for {name}: {reason}")]
    BadParameter { name: &'static str, reason: String },

    #[error("weights {path}: {reason}")]
    Weights { path: PathBuf, reason: String },

    #[error("image {path}: {reason}")]
    Image { path: PathBuf, reason: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },

    #[error("libtorch: {0}")]
    Torch(#[from] TchError),
}

pub type Result<T, E = WorkerError> = std::result::Result<T, E>;

/// A parameter out of bounds, named by the worker's flag for it.
impl From<vephys_proto::params::ParamError> for WorkerError {
    fn from(e: vephys_proto::params::ParamError) -> Self {
        WorkerError::BadParameter {
            name: e.field.flag(),
            reason: e.reason,
        }
    }
}

impl WorkerError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> WorkerError {
        let context = context.into();
        move |source| WorkerError::Io { context, source }
    }

    pub fn bad(name: &'static str, reason: impl Into<String>) -> WorkerError {
        WorkerError::BadParameter {
            name,
            reason: reason.into(),
        }
    }
}
