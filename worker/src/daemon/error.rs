//! Why the daemon stopped, or could not start. Every message says what was wrong and what to
//! do; the binary prints it and exits non-zero. Errors of single jobs are not here: they are
//! reported to the coordinator (`complete`) and the daemon goes on.

use std::path::PathBuf;

use vephys_objects::ObjectsError;

use crate::WorkerError;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A start-up setting that cannot work (a flag, a file, the store).
    #[error("{0}")]
    Config(String),

    #[error("cannot write to the store {url} ({source}); {hint}")]
    Store {
        url: String,
        hint: &'static str,
        // boxed: the store's error is large, and every daemon Result carries this type
        #[source]
        source: Box<ObjectsError>,
    },

    #[error("the coordinator at {url} refused this worker's token ({message}); pass its --worker-token value as --token or VEPHYS_WORKER_TOKEN")]
    Token { url: String, message: String },

    /// The coordinator answered a call with a final refusal the daemon cannot work around.
    #[error("the coordinator at {url} refused to {call}: {message} ({code:?})")]
    Refused {
        url: String,
        call: &'static str,
        code: tonic::Code,
        message: String,
    },

    #[error("stopped by a second signal; released {0} leased job(s)")]
    Released(usize),

    #[error("{context} {}: {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    Worker(#[from] WorkerError),
}

impl DaemonError {
    pub(crate) fn io(
        context: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> DaemonError {
        let path = path.to_path_buf();
        move |source| DaemonError::Io {
            context,
            path,
            source,
        }
    }
}

pub type Result<T, E = DaemonError> = std::result::Result<T, E>;
