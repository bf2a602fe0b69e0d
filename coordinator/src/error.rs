//! The coordinator's one error type, and its mapping to gRPC status codes.

use vephys_proto::spec::SpecError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The campaign spec (or a model description) is wrong; `field` names the culprit.
    #[error("invalid {what}: field `{field}`: {reason}")]
    Invalid {
        what: &'static str,
        field: String,
        reason: String,
    },
    /// A write carried a fencing token that is not the job's current lease.
    #[error("stale lease for job {job_id}: token {token} is not the current lease (attempt {current}, state {state}); drop the job and lease again")]
    StaleLease {
        job_id: i64,
        token: i64,
        current: i64,
        state: String,
    },
    #[error("{what} {id} not found; {hint}")]
    NotFound {
        what: &'static str,
        id: String,
        hint: &'static str,
    },
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    PermissionDenied(&'static str),
    #[error("database error: {0}; check that the database is reachable and migrated")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}; the database may belong to a newer vephys")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl Error {
    pub fn invalid_spec(e: SpecError) -> Self {
        Error::Invalid {
            what: "campaign spec",
            field: e.field,
            reason: e.reason,
        }
    }

    pub fn invalid(
        what: &'static str,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Invalid {
            what,
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The single place where coordinator errors become gRPC statuses.
impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::Invalid { .. } => tonic::Status::invalid_argument(message),
            Error::StaleLease { .. } => tonic::Status::failed_precondition(message),
            Error::NotFound { .. } => tonic::Status::not_found(message),
            Error::Unauthenticated(_) => tonic::Status::unauthenticated(message),
            Error::PermissionDenied(_) => tonic::Status::permission_denied(message),
            Error::Database(_) | Error::Migrate(_) => {
                tracing::error!(error = %message, "request failed in the store");
                tonic::Status::internal(message)
            }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
