//! The four-step rotation protocol (`createSecret`, `setSecret`, `testSecret`, `finishSecret`),
//! with the staging labels the Secrets Manager rotation Lambdas use, run by the controller.
//!
//! Everything needed to continue after a crash lives in Secrets Manager: the AWSPENDING version
//! (its `ClientRequestToken` is derived from the credential uid and the AWSCURRENT version it
//! starts from, so a restarted controller recognises its own rotation) and AWSCURRENT. The
//! database state is never trusted to tell where a rotation stopped; every step is idempotent and
//! is simply run again. [`resume_pending`] decides from the labels whether to finish, clean up or
//! roll back; [`rotate`] always resumes first, so two rotations never overlap on one secret.
//!
//! The reconciler decides WHEN to rotate (schedule, annotation, minimum interval, rollouts);
//! this module only knows HOW. No password ever reaches a log line: spans and fields carry step
//! names, version ids and usernames only.

mod resume;
mod steps;

use std::fmt;

use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tracing::{info, instrument};

use crate::aws::{AwsError, Secrets};
use crate::crd::{PasswordSpec, RotationStrategy};
use crate::engine::{ConnectTarget, DbError, Login, UserPlan};
use crate::secret::PasswordError;

/// The four steps, named as in the Secrets Manager rotation Lambda protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    CreateSecret,
    SetSecret,
    TestSecret,
    FinishSecret,
}

impl Step {
    pub const ALL: [Step; 4] = [
        Step::CreateSecret,
        Step::SetSecret,
        Step::TestSecret,
        Step::FinishSecret,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::CreateSecret => "createSecret",
            Step::SetSecret => "setSecret",
            Step::TestSecret => "testSecret",
            Step::FinishSecret => "finishSecret",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything one rotation of one secret needs.
pub struct RotationJob<'a> {
    /// The secret's ARN.
    pub secret_id: &'a str,
    pub secrets: &'a Secrets,
    pub target: &'a ConnectTarget,
    /// The admin login that changes passwords and creates the clone user.
    pub admin: &'a Login,
    pub plan: &'a UserPlan,
    pub strategy: RotationStrategy,
    pub password: &'a PasswordSpec,
    /// The RdsCredential uid: with the AWSCURRENT version id it makes the ClientRequestToken.
    pub token_seed: &'a str,
    /// Tests only: stop (or pause) the rotation right after a step.
    pub crash_point: Option<&'a CrashPoint>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RotationOutcome {
    /// AWSCURRENT is now `version_id`, whose user is `username`.
    Completed {
        version_id: String,
        username: String,
    },
    /// No rotation was in flight (or a foreign/stale one was rolled back; see [`resume_pending`]).
    NothingPending,
}

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("{step}: {source}")]
    Aws { step: Step, source: AwsError },
    #[error("{step}: {source}")]
    Db { step: Step, source: DbError },
    /// single-user: the pending password did not log in; the database is back on AWSCURRENT's
    /// password (proven by a login) and AWSPENDING was removed.
    #[error(
        "testSecret: AWSPENDING does not log in ({source}); the database was put back to AWSCURRENT's password"
    )]
    TestFailedRolledBack { source: DbError },
    /// alternating-users: the pending user did not log in. AWSCURRENT's user was never touched;
    /// AWSPENDING stays so that the next attempt resumes this rotation.
    #[error(
        "testSecret: AWSPENDING user {username} does not log in ({source}); AWSCURRENT is untouched, AWSPENDING kept for a retry"
    )]
    TestFailed { username: String, source: DbError },
    /// The secret's state or value cannot be rotated safely (no AWSCURRENT, not the RDS JSON,
    /// a user this credential does not manage, ...). Needs a person or a spec change.
    #[error("{step}: {detail}")]
    Malformed { step: Step, detail: String },
    #[error("createSecret: {source}")]
    Password { source: PasswordError },
}

impl RotationError {
    /// The step that failed.
    pub fn step(&self) -> Step {
        match self {
            RotationError::Aws { step, .. }
            | RotationError::Db { step, .. }
            | RotationError::Malformed { step, .. } => *step,
            RotationError::TestFailedRolledBack { .. } | RotationError::TestFailed { .. } => {
                Step::TestSecret
            }
            RotationError::Password { .. } => Step::CreateSecret,
        }
    }

    /// Whether retrying later can succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            RotationError::Aws { source, .. } => source.is_retryable(),
            RotationError::Db { source, .. } => source.is_retryable(),
            // A login can fail for transient reasons (failover, connection limit); the state is
            // safe either way, so a later attempt is worth it.
            RotationError::TestFailedRolledBack { .. } | RotationError::TestFailed { .. } => true,
            RotationError::Malformed { .. } | RotationError::Password { .. } => false,
        }
    }

    /// CamelCase reason for conditions, Events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            RotationError::Aws { source, .. } => source.reason(),
            RotationError::Db { source, .. } => source.reason(),
            RotationError::TestFailedRolledBack { .. } => "RotationTestFailedRolledBack",
            RotationError::TestFailed { .. } => "RotationTestFailed",
            RotationError::Malformed { .. } => "RotationStateMalformed",
            RotationError::Password { .. } => "InvalidPasswordPolicy",
        }
    }

    pub(crate) fn aws(step: Step) -> impl FnOnce(AwsError) -> RotationError {
        move |source| RotationError::Aws { step, source }
    }

    pub(crate) fn db(step: Step) -> impl FnOnce(DbError) -> RotationError {
        move |source| RotationError::Db { step, source }
    }

    pub(crate) fn malformed(step: Step, detail: impl Into<String>) -> RotationError {
        RotationError::Malformed {
            step,
            detail: detail.into(),
        }
    }
}

/// Deterministic ClientRequestToken (and so VersionId) of the rotation that starts from the
/// AWSCURRENT version `current_version`: hex of sha256(seed ":" current_version), 64 characters
/// (Secrets Manager accepts 32–64). A restarted controller recomputes it to recognise its own
/// AWSPENDING, and a repeated PutSecretValue with it is a no-op instead of a second version.
pub fn client_request_token(token_seed: &str, current_version: &str) -> String {
    token_attempt(token_seed, current_version, 0)
}

/// Attempt `n > 0` of the rotation from `current_version`. Needed because a version id can never
/// be reused with a different value: if attempt 0's version exists but no longer fits (the
/// strategy changed after a rolled-back attempt), the next attempt gets a fresh, still
/// deterministic token.
pub(crate) fn token_attempt(token_seed: &str, current_version: &str, n: u32) -> String {
    let mut h = Sha256::new();
    h.update(token_seed.as_bytes());
    h.update(b":");
    h.update(current_version.as_bytes());
    if n > 0 {
        h.update(format!(":{n}").as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// How many token attempts one AWSCURRENT version may use (see [`token_attempt`]).
pub(crate) const TOKEN_ATTEMPTS: u32 = 4;

/// Whether `version` is one of the versions this credential's rotation from `from_version`
/// makes: lets a restarted controller recognise a rotation it finished but never recorded.
pub fn made_by_rotation_from(token_seed: &str, from_version: &str, version: &str) -> bool {
    resume::is_ours(token_seed, from_version, version)
}

/// If AWSPENDING is on a version other than AWSCURRENT, finish that rotation (setSecret,
/// testSecret, finishSecret again: each is idempotent) when it is this credential's own and still
/// fits the plan, or roll it back otherwise (remove AWSPENDING; if it may have re-passworded
/// AWSCURRENT's user, put AWSCURRENT's password back). If AWSPENDING sits on the AWSCURRENT
/// version (finishSecret moved AWSCURRENT but did not clean up), remove the label.
///
/// Returns `Completed` when a rotation was finished by this call (including the clean-up case),
/// `NothingPending` when nothing was in flight or a foreign rotation was rolled back.
#[instrument(skip_all, fields(secret = %job.secret_id, strategy = ?job.strategy))]
pub async fn resume_pending(job: &RotationJob<'_>) -> Result<RotationOutcome, RotationError> {
    match resume::resume(job).await? {
        resume::Resumed::Nothing => Ok(RotationOutcome::NothingPending),
        resume::Resumed::Completed(outcome) => Ok(outcome),
        resume::Resumed::RolledBack => Ok(RotationOutcome::NothingPending),
    }
}

/// Runs a whole rotation now: first whatever was in flight ([`resume_pending`]); if that
/// finished a rotation, it IS the rotation asked for (running a second one at once would
/// re-password, under alternating users, the user pods switched away from seconds ago). Else
/// createSecret → setSecret → testSecret → finishSecret.
#[instrument(skip_all, fields(secret = %job.secret_id, strategy = ?job.strategy))]
pub async fn rotate(job: &RotationJob<'_>) -> Result<RotationOutcome, RotationError> {
    if let resume::Resumed::Completed(outcome) = resume::resume(job).await? {
        return Ok(outcome);
    }
    let rotation = steps::create_secret(job).await?;
    checkpoint(job, Step::CreateSecret).await;
    steps::set_secret(job, &rotation).await?;
    checkpoint(job, Step::SetSecret).await;
    steps::test_secret(job, &rotation).await?;
    checkpoint(job, Step::TestSecret).await;
    steps::finish_secret(job, &rotation).await?;
    checkpoint(job, Step::FinishSecret).await;
    info!(version = %rotation.pending_version, username = %rotation.pending.username, "rotation completed");
    Ok(RotationOutcome::Completed {
        version_id: rotation.pending_version.clone(),
        username: rotation.pending.username.clone(),
    })
}

/// What a [`CrashPoint`] does once its step has completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashAction {
    /// Never continue: the test aborts the task, like a controller killed at that instant.
    Hang,
    /// Wait for [`CrashPoint::proceed`], so a test can change the world between two steps
    /// (e.g. break the pending login before testSecret) and then let the rotation go on.
    Pause,
}

/// Test hook: stop a rotation right after `after` has completed (in [`rotate`] and in the
/// resume path alike). `reached` is notified first (it keeps a permit, so awaiting it later is
/// fine).
#[derive(Debug)]
pub struct CrashPoint {
    pub after: Step,
    pub action: CrashAction,
    pub reached: Notify,
    pub proceed: Notify,
}

impl CrashPoint {
    pub fn hang(after: Step) -> Self {
        CrashPoint {
            after,
            action: CrashAction::Hang,
            reached: Notify::new(),
            proceed: Notify::new(),
        }
    }

    pub fn pause(after: Step) -> Self {
        CrashPoint {
            after,
            action: CrashAction::Pause,
            reached: Notify::new(),
            proceed: Notify::new(),
        }
    }
}

pub(crate) async fn checkpoint(job: &RotationJob<'_>, step: Step) {
    let Some(cp) = job.crash_point.filter(|cp| cp.after == step) else {
        return;
    };
    cp.reached.notify_one();
    match cp.action {
        CrashAction::Hang => std::future::pending::<()>().await,
        CrashAction::Pause => cp.proceed.notified().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_deterministic_and_fits_secrets_manager() {
        let a = client_request_token("uid-1", "v1");
        assert_eq!(a, client_request_token("uid-1", "v1"));
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, client_request_token("uid-1", "v2"));
        assert_ne!(a, client_request_token("uid-2", "v1"));
        // Retry attempts get tokens of their own.
        assert_ne!(token_attempt("uid-1", "v1", 1), a);
        assert_ne!(
            token_attempt("uid-1", "v1", 1),
            token_attempt("uid-1", "v1", 2)
        );
    }

    #[test]
    fn step_names_match_the_lambda_protocol() {
        let names: Vec<String> = Step::ALL.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            names,
            ["createSecret", "setSecret", "testSecret", "finishSecret"]
        );
    }
}
