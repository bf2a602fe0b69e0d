//! The coordinator's one error type, and its mapping to gRPC status codes.
//!
//! Whether an error is worth retrying is decided here too, once: a database that cannot be
//! reached (connection lost, pool timeout, a server restarting or failing over) answers
//! `UNAVAILABLE`, a serialization failure or deadlock `ABORTED`; the request changed nothing a
//! retry would not find, so workers back off and send it again. Every other database error is
//! `INTERNAL`: final for that request.

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
    /// A write with the current token from a worker that does not hold the lease.
    #[error("job {job_id} is leased to another worker than {worker_id}; drop the job")]
    NotLessee { job_id: i64, worker_id: i64 },
    /// A result computed with other weights than its campaign pinned at submission.
    #[error("job {job_id}: the result was computed with other weights than its campaign was submitted with; drop it (the lease names the weights to compute with)")]
    WrongWeights { job_id: i64 },
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
    /// A limit of this coordinator is reached for now (open streams).
    #[error("{what}: {limit} are open, the most this coordinator serves (--max-streams); close one or retry later")]
    Busy { what: &'static str, limit: usize },
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

    /// Whether sending the same request again later can succeed where this one failed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Database(e) if database_code(e) != tonic::Code::Internal)
            || matches!(self, Error::Busy { .. })
    }
}

/// The gRPC code a database error maps to: `UNAVAILABLE` while the database cannot be reached,
/// `ABORTED` for a transaction that lost a race (serialization failure, deadlock, a lock not
/// available), `INTERNAL` for everything else (a bug, a schema that does not match).
pub fn database_code(error: &sqlx::Error) -> tonic::Code {
    use tonic::Code;
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        // a connection cut mid-message (a terminated backend) shows as a protocol error
        | sqlx::Error::Protocol(_) => Code::Unavailable,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some(code) => sqlstate_code(code),
            None => Code::Internal,
        },
        _ => Code::Internal,
    }
}

/// Postgres SQLSTATEs (and SQLite result codes, which are numbers) by what a retry can do.
fn sqlstate_code(code: &str) -> tonic::Code {
    use tonic::Code;
    match code {
        // serialization_failure, deadlock_detected, lock_not_available
        "40001" | "40P01" | "55P03" => Code::Aborted,
        // admin_shutdown (pg_terminate_backend, a restart), crash_shutdown, cannot_connect_now
        // (starting up), read_only_sql_transaction (a standby after a failover)
        "57P01" | "57P02" | "57P03" | "25006" => Code::Unavailable,
        // connection exceptions; insufficient resources (too many connections)
        c if c.starts_with("08") || c.starts_with("53") => Code::Unavailable,
        // SQLite: SQLITE_BUSY and SQLITE_LOCKED with their extended codes (5 | n << 8, ...)
        c => match c.parse::<i64>() {
            Ok(n) if matches!(n & 0xff, 5 | 6) => Code::Unavailable,
            _ => Code::Internal,
        },
    }
}

/// The single place where coordinator errors become gRPC statuses.
impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::Invalid { .. } => tonic::Status::invalid_argument(message),
            Error::StaleLease { .. } | Error::NotLessee { .. } | Error::WrongWeights { .. } => {
                tonic::Status::failed_precondition(message)
            }
            Error::NotFound { .. } => tonic::Status::not_found(message),
            Error::Unauthenticated(_) => tonic::Status::unauthenticated(message),
            Error::PermissionDenied(_) => tonic::Status::permission_denied(message),
            Error::Busy { .. } => tonic::Status::resource_exhausted(message),
            Error::Database(ref db) => match database_code(db) {
                tonic::Code::Internal => {
                    tracing::error!(error = %message, "request failed in the store");
                    tonic::Status::internal(message)
                }
                code => {
                    tracing::warn!(error = %message, ?code, "database unavailable; the client retries");
                    tonic::Status::new(
                        code,
                        format!(
                            "the database is unavailable for now ({db}); retry after a backoff"
                        ),
                    )
                }
            },
            Error::Migrate(_) => {
                tracing::error!(error = %message, "request failed in the store");
                tonic::Status::internal(message)
            }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn lost_connections_and_races_are_transient_the_rest_final() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        for (error, code) in [
            (io, Code::Unavailable),
            (sqlx::Error::PoolTimedOut, Code::Unavailable),
            (sqlx::Error::PoolClosed, Code::Unavailable),
            (sqlx::Error::RowNotFound, Code::Internal),
            (sqlx::Error::ColumnNotFound("x".into()), Code::Internal),
        ] {
            let status = tonic::Status::from(Error::Database(error));
            assert_eq!(status.code(), code, "{status:?}");
        }
        for (state, code) in [
            ("40001", Code::Aborted),
            ("40P01", Code::Aborted),
            ("57P01", Code::Unavailable),
            ("57P03", Code::Unavailable),
            ("08006", Code::Unavailable),
            ("53300", Code::Unavailable),
            ("25006", Code::Unavailable),
            ("5", Code::Unavailable),
            ("517", Code::Unavailable),
            ("6", Code::Unavailable),
            ("23505", Code::Internal),
            ("42P01", Code::Internal),
            ("19", Code::Internal),
        ] {
            assert_eq!(sqlstate_code(state), code, "{state}");
        }
    }

    #[test]
    fn a_write_by_another_worker_or_with_other_weights_is_a_failed_precondition() {
        let status = tonic::Status::from(Error::NotLessee {
            job_id: 3,
            worker_id: 7,
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        let status = tonic::Status::from(Error::WrongWeights { job_id: 3 });
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(!status.message().contains("sha256"), "{}", status.message());
    }
}
