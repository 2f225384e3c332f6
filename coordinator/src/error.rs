//! The coordinator's one error type and its single mapping to `tonic::Status`, so every RPC
//! reports the same case the same way.

use lanes_proto::limits::Invalid;
use tonic::{Code, Status};

/// What can go wrong in a coordinator operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or out of limits; nothing was changed.
    #[error("{0}")]
    Invalid(String),
    /// Like `Invalid`, about one request field, named in the status's `lanes-field`
    /// metadata so the gateway's 422 can name it too.
    #[error("{message}")]
    InvalidField {
        /// The field, e.g. `callback_url` or `jobs[2].callback_url`.
        field: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// The job (or lane, queue) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The thing to create exists already (a schedule's name).
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but the state forbids it (stale fencing token, finished job…).
    #[error("{0}")]
    Precondition(String),
    /// Backpressure: the queue holds its maximum of pending jobs.
    #[error("{0}")]
    Exhausted(String),
    /// This replica cannot serve the call now (shutting down); another one can.
    #[error("{0}")]
    Unavailable(String),
    /// The database schema or the transition functions could not be set up.
    #[error("{0}")]
    Setup(String),
    /// The database failed or is unreachable.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// Shorthand for coordinator results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Invalid> for Error {
    fn from(e: Invalid) -> Self {
        Error::InvalidField {
            field: e.field,
            message: e.message,
        }
    }
}

impl Error {
    /// A `NOT_FOUND` for a job id.
    pub fn job_not_found(id: i64) -> Self {
        Error::NotFound(format!("job {id} does not exist (or was purged)"))
    }

    /// A `FAILED_PRECONDITION` for a token that no longer holds the job's lease.
    pub fn stale_token(id: i64, token: i64) -> Self {
        Error::Precondition(format!(
            "lease token {token} no longer holds job {id}: the lease expired, was released, \
             or the job was finished by another holder"
        ))
    }

    /// The SQLSTATE of a database error, if it is one.
    fn sqlstate(&self) -> Option<String> {
        match self {
            Error::Db(sqlx::Error::Database(d)) => d.code().map(|c| c.into_owned()),
            _ => None,
        }
    }

    /// True when Postgres aborted the transaction to break a deadlock (40P01) or a
    /// serialization conflict (40001): it rolled back whole, so running it again is safe.
    pub fn is_conflict_abort(&self) -> bool {
        matches!(self.sqlstate().as_deref(), Some("40P01" | "40001"))
    }

    /// True when the database cannot be reached or is restarting: the call may succeed
    /// later, on this replica or another one (UNAVAILABLE / 503).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Unavailable(_) => true,
            Error::Db(
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_),
            ) => true,
            // 08: connection exceptions; 57P01-57P03: the server is shutting down, was
            // terminated by an administrator, or is starting; 53300: too many connections.
            _ => self.sqlstate().is_some_and(|s| {
                s.starts_with("08") || matches!(s.as_str(), "57P01" | "57P02" | "57P03" | "53300")
            }),
        }
    }
}

/// Runs `op` again, up to three tries in all, when Postgres aborted it as a deadlock victim.
pub async fn retry_conflicts<T, F, Fut>(mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut tries = 1;
    loop {
        match op().await {
            Err(e) if e.is_conflict_abort() && tries < 3 => {
                tries += 1;
                tracing::warn!(error = %e, "transaction aborted by a lock conflict; trying again");
            }
            other => return other,
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        // The transitions raise these for a full queue (LN429): a client's condition, not
        // the database's failure.
        if e.sqlstate().as_deref() == Some("LN429")
            && let Error::Db(sqlx::Error::Database(d)) = &e
        {
            return Status::resource_exhausted(d.message().to_owned());
        }
        let code = match &e {
            Error::Invalid(_) | Error::InvalidField { .. } => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::Precondition(_) => Code::FailedPrecondition,
            Error::Exhausted(_) => Code::ResourceExhausted,
            _ if e.is_unavailable() => Code::Unavailable,
            Error::Unavailable(_) | Error::Setup(_) | Error::Db(_) => Code::Internal,
        };
        if code == Code::Internal {
            tracing::error!(error = %e, "internal error");
        }
        let mut status = Status::new(code, e.to_string());
        if let Error::InvalidField { field, .. } = &e
            && let Ok(v) = field.parse()
        {
            status.metadata_mut().insert(lanes_proto::FIELD_METADATA, v);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarting_database_is_unavailable_not_internal() {
        assert_eq!(
            Status::from(Error::Db(sqlx::Error::PoolClosed)).code(),
            Code::Unavailable
        );
        assert_eq!(
            Status::from(Error::Unavailable("shutting down".into())).code(),
            Code::Unavailable
        );
        assert_eq!(
            Status::from(Error::Db(sqlx::Error::RowNotFound)).code(),
            Code::Internal
        );
        let invalid: Error = Invalid::new("lane", "lane is 300 bytes; the limit is 256").into();
        assert_eq!(Status::from(invalid).code(), Code::InvalidArgument);
    }
}
