//! The reconcile error: every failure is typed, has a CamelCase `reason` for conditions,
//! Events and metrics, a message a person can act on, and a requeue policy.

use std::time::Duration;

use crate::aws::AwsError;
use crate::engine::DbError;
use crate::schedule::ScheduleError;
use crate::secret::{PasswordError, SecretParseError};
use crate::template::TemplateError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("AWS: {0}")]
    Aws(#[from] AwsError),
    #[error("database: {0}")]
    Db(#[from] DbError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The spec (or the database's policy) does not allow this; nothing was changed.
    /// Retried slowly: it takes a change of the spec, the database or the namespace to fix.
    #[error("{message}")]
    Refused {
        reason: &'static str,
        message: String,
    },
    /// Something this depends on is not ready yet (the RdsDatabase, a rollout).
    #[error("{message}")]
    NotReady {
        reason: &'static str,
        message: String,
    },
    #[error("secret {id}: {source}")]
    SecretShape {
        id: String,
        source: SecretParseError,
    },
    #[error("target.templates[{key}]: {source}")]
    Template { key: String, source: TemplateError },
    #[error("rotation schedule: {0}")]
    Schedule(#[from] ScheduleError),
    #[error("password generation: {0}")]
    Password(#[from] PasswordError),
    #[error("rotation step {step} failed: {cause}")]
    Rotation {
        step: &'static str,
        cause: Box<Error>,
    },
}

impl Error {
    pub fn refused(reason: &'static str, message: impl Into<String>) -> Error {
        Error::Refused {
            reason,
            message: message.into(),
        }
    }

    pub fn not_ready(reason: &'static str, message: impl Into<String>) -> Error {
        Error::NotReady {
            reason,
            message: message.into(),
        }
    }

    /// CamelCase reason for conditions, Events and the error metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Aws(e) => e.reason(),
            Error::Db(e) => e.reason(),
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "Conflict",
            Error::Kube(_) => "KubernetesApiError",
            Error::Refused { reason, .. } | Error::NotReady { reason, .. } => reason,
            Error::SecretShape { .. } => "SecretMalformed",
            Error::Template { .. } => "InvalidTemplate",
            Error::Schedule(_) => "InvalidSchedule",
            Error::Password(_) => "InvalidPasswordPolicy",
            Error::Rotation { .. } => "RotationFailed",
        }
    }

    /// Longest backoff for this kind of error. Permanent problems wait long (a watch event on
    /// the spec re-triggers at once anyway); transient ones retry quickly.
    pub fn max_backoff(&self) -> Duration {
        match self {
            Error::Refused { .. }
            | Error::Template { .. }
            | Error::Schedule(_)
            | Error::Password(_) => Duration::from_secs(600),
            Error::SecretShape { .. } => Duration::from_secs(300),
            Error::NotReady { .. } => Duration::from_secs(30),
            Error::Aws(e) if e.is_retryable() => Duration::from_secs(120),
            Error::Db(e) if e.is_retryable() => Duration::from_secs(120),
            Error::Rotation { cause, .. } => cause.max_backoff(),
            _ => Duration::from_secs(300),
        }
    }

    /// Whether the failure is a warning-level Event (everything but a transient conflict).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.code == 409)
    }
}
