//! The reconcile error: every failure is typed, has a CamelCase `reason` for conditions,
//! Events and metrics, a message a person can act on, and a requeue policy.

use std::time::Duration;

use super::Reason;
use crate::access::AccessError;
use crate::aws::AwsError;
use crate::engine::DbError;
use crate::propagation::PropagationError;
use crate::rotation::RotationError;
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
    Refused { reason: Reason, message: String },
    /// Something this depends on is not ready yet (the RdsDatabase, a rollout).
    #[error("{message}")]
    NotReady { reason: Reason, message: String },
    /// The access policy the spec asks for is not allowed (nothing was changed).
    #[error("{0}")]
    Access(#[from] AccessError),
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
    /// A rotation step failed; the typed error says whether a retry can succeed.
    #[error("rotation step {step} failed: {err}", step = .0.step(), err = .0)]
    Rotation(#[from] RotationError),
}

impl Error {
    pub fn refused(reason: Reason, message: impl Into<String>) -> Error {
        Error::Refused {
            reason,
            message: message.into(),
        }
    }

    pub fn not_ready(reason: Reason, message: impl Into<String>) -> Error {
        Error::NotReady {
            reason,
            message: message.into(),
        }
    }

    /// CamelCase reason for conditions, Events and the error metric: a [`Reason`], or the
    /// reason of the typed error of a lower layer (AWS, engine, access policy).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Aws(e) => e.reason(),
            Error::Db(e) => e.reason(),
            Error::Access(e) => e.reason(),
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => Reason::Conflict.as_str(),
            Error::Kube(_) => Reason::KubernetesApiError.as_str(),
            Error::Refused { reason, .. } | Error::NotReady { reason, .. } => reason.as_str(),
            Error::SecretShape { .. } => Reason::SecretMalformed.as_str(),
            Error::Template { .. } => Reason::InvalidTemplate.as_str(),
            Error::Schedule(_) => Reason::InvalidSchedule.as_str(),
            Error::Password(_) => Reason::InvalidPasswordPolicy.as_str(),
            Error::Rotation(_) => Reason::RotationFailed.as_str(),
        }
    }

    /// Whether nothing changes until a person (or a spec change) acts: a refusal, a malformed
    /// secret or rotation state, a permanent AWS or database error. The rest (a dependency not
    /// ready, a transient blip, a lost race) resolves by itself.
    pub fn needs_person(&self) -> bool {
        match self {
            Error::Refused { reason, .. } | Error::NotReady { reason, .. } => reason.needs_person(),
            Error::Access(_)
            | Error::SecretShape { .. }
            | Error::Template { .. }
            | Error::Schedule(_)
            | Error::Password(_) => true,
            Error::Aws(e) => !e.is_retryable(),
            Error::Db(e) => !e.is_retryable(),
            Error::Kube(_) => false,
            Error::Rotation(e) => !e.is_retryable(),
        }
    }

    /// Longest backoff for this kind of error. Permanent problems wait long (a watch event on
    /// the spec re-triggers at once anyway); transient ones retry quickly.
    pub fn max_backoff(&self) -> Duration {
        match self {
            Error::Refused { .. }
            | Error::Access(_)
            | Error::Template { .. }
            | Error::Schedule(_)
            | Error::Password(_) => Duration::from_secs(600),
            Error::SecretShape { .. } => Duration::from_secs(300),
            Error::NotReady { .. } => Duration::from_secs(30),
            Error::Aws(e) if e.is_retryable() => Duration::from_secs(120),
            Error::Db(e) if e.is_retryable() => Duration::from_secs(120),
            // A transient failure (a login during failover, throttling) is retried like any
            // dependency not ready yet; a state that needs a person (a malformed secret or
            // rotation state, a password policy) waits long, a spec change re-triggers anyway.
            Error::Rotation(e) if e.is_retryable() => Duration::from_secs(30),
            Error::Rotation(RotationError::Malformed { .. } | RotationError::Password { .. }) => {
                Duration::from_secs(600)
            }
            Error::Rotation(_) => Duration::from_secs(300),
            _ => Duration::from_secs(300),
        }
    }

    /// Whether the failure is a lost race (409 Conflict): the object changed since it was read,
    /// the reconcile decides again from a fresh read, and no warning Event is published for it.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.code == 409)
    }
}

/// What a propagation failure means for the credential: a foreign Secret in the way is a
/// refusal (a person must rename the target or remove it), a template that does not render
/// is invalid input, a Kubernetes error is retried like any other.
impl From<PropagationError> for Error {
    fn from(e: PropagationError) -> Error {
        match e {
            PropagationError::Kube(e) => Error::Kube(e),
            e @ PropagationError::TargetSecretNotOwned { .. } => {
                Error::refused(Reason::TargetSecretNotOwned, e.to_string())
            }
            PropagationError::Template { key, source } => Error::Template { key, source },
            // A missing CRD resolves once it is installed (or the kind turned off): retried
            // like a dependency not ready, with the message saying which.
            e @ PropagationError::KindNotServed { .. } => {
                Error::not_ready(Reason::KubernetesApiError, e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotation::Step;

    fn malformed() -> RotationError {
        RotationError::Malformed {
            step: Step::CreateSecret,
            detail: "AWSCURRENT is not the RDS JSON".into(),
        }
    }

    /// The typed rotation error decides the backoff and whether a person is needed; its
    /// message and reason stay what they were.
    #[test]
    fn rotation_errors_back_off_by_what_they_are() {
        let cases: [(RotationError, Duration, bool); 5] = [
            // A login failing right after setSecret (failover, connection limit): soon again.
            (
                RotationError::TestFailed {
                    username: "app_clone".into(),
                    source: DbError::AuthFailed {
                        username: "app_clone".into(),
                    },
                },
                Duration::from_secs(30),
                false,
            ),
            (
                RotationError::Db {
                    step: Step::SetSecret,
                    source: DbError::Timeout,
                },
                Duration::from_secs(30),
                false,
            ),
            // The secret's state cannot be rotated safely: a person has to look.
            (malformed(), Duration::from_secs(600), true),
            (
                RotationError::Db {
                    step: Step::SetSecret,
                    source: DbError::PermissionDenied {
                        detail: "must have CREATEROLE".into(),
                    },
                },
                Duration::from_secs(300),
                true,
            ),
            (
                RotationError::Password {
                    source: PasswordError::AlphabetTooSmall,
                },
                Duration::from_secs(600),
                true,
            ),
        ];
        for (e, backoff, person) in cases {
            let what = e.to_string();
            let e = Error::from(e);
            assert_eq!(e.max_backoff(), backoff, "{what}");
            assert_eq!(e.needs_person(), person, "{what}");
            assert_eq!(e.reason(), "RotationFailed", "{what}");
        }
    }

    #[test]
    fn rotation_message_names_the_step() {
        assert_eq!(
            Error::from(malformed()).to_string(),
            "rotation step createSecret failed: createSecret: AWSCURRENT is not the RDS JSON"
        );
    }

    #[test]
    fn refusals_back_off_long_and_waits_short() {
        let refused = Error::refused(Reason::SecretNotOwned, "x");
        assert!(refused.needs_person());
        assert_eq!(refused.max_backoff(), Duration::from_secs(600));
        assert_eq!(refused.reason(), "SecretNotOwned");
        let waiting = Error::not_ready(Reason::DatabaseNotReady, "x");
        assert!(!waiting.needs_person());
        assert_eq!(waiting.max_backoff(), Duration::from_secs(30));
    }
}
