//! Where did a rotation stop? Decided from the staging labels in Secrets Manager alone, then
//! finished or rolled back.
//!
//! | labels                                  | meaning                              | action                          |
//! |-----------------------------------------|--------------------------------------|---------------------------------|
//! | no AWSPENDING                           | nothing in flight                    | nothing                         |
//! | AWSPENDING on the AWSCURRENT version    | finishSecret moved, did not clean up | remove AWSPENDING               |
//! | AWSPENDING elsewhere, ours and fitting  | stopped after create/set/test        | setSecret, testSecret, finish   |
//! | AWSPENDING elsewhere, anything else     | foreign, stale or no longer fitting  | roll back                       |
//!
//! "Ours" means the version id is one of this credential's tokens for the CURRENT AWSCURRENT
//! version: a pending left over from an older AWSCURRENT (someone else moved AWSCURRENT since)
//! is never finished, since it would overwrite their version.
//! setSecret is re-run rather than skipped: the database cannot say whether it ran, and it is
//! idempotent.

use std::collections::BTreeMap;

use tracing::{info, warn};

use super::steps::{self, Rotation};
use super::{
    RotationError, RotationJob, RotationOutcome, Step, TOKEN_ATTEMPTS, checkpoint, token_attempt,
};
use crate::aws::{AWSCURRENT, AWSPENDING, VersionSelector};
use crate::crd::RotationStrategy;
use crate::engine;
use crate::secret::RdsSecretValue;

/// What resuming did.
pub(super) enum Resumed {
    Nothing,
    Completed(RotationOutcome),
    RolledBack,
}

/// The rotation state the labels describe.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Labels<'m> {
    NoPending,
    /// finishSecret moved AWSCURRENT but did not remove AWSPENDING.
    PendingOnCurrent(&'m str),
    InFlight {
        current: &'m str,
        pending: &'m str,
    },
    /// AWSPENDING without any AWSCURRENT: nothing can be rotated from that.
    NoCurrent,
}

fn holder<'m>(versions: &'m BTreeMap<String, Vec<String>>, stage: &str) -> Option<&'m str> {
    versions
        .iter()
        .find(|(_, stages)| stages.iter().any(|s| s == stage))
        .map(|(v, _)| v.as_str())
}

pub(super) fn classify(versions: &BTreeMap<String, Vec<String>>) -> Labels<'_> {
    match (holder(versions, AWSCURRENT), holder(versions, AWSPENDING)) {
        (_, None) => Labels::NoPending,
        (None, Some(_)) => Labels::NoCurrent,
        (Some(c), Some(p)) if c == p => Labels::PendingOnCurrent(c),
        (Some(current), Some(pending)) => Labels::InFlight { current, pending },
    }
}

/// Whether `pending_version` was made by this credential from AWSCURRENT `current_version`.
pub(super) fn is_ours(token_seed: &str, current_version: &str, pending_version: &str) -> bool {
    (0..TOKEN_ATTEMPTS).any(|n| token_attempt(token_seed, current_version, n) == pending_version)
}

pub(super) async fn resume(job: &RotationJob<'_>) -> Result<Resumed, RotationError> {
    let meta = steps::describe(job, Step::CreateSecret).await?;
    match classify(&meta.versions) {
        Labels::NoPending => Ok(Resumed::Nothing),
        Labels::NoCurrent => Err(RotationError::malformed(
            Step::CreateSecret,
            "AWSPENDING exists but no version is AWSCURRENT",
        )),
        Labels::PendingOnCurrent(version) => {
            let step = Step::FinishSecret;
            steps::remove_pending_label(job, version, step).await?;
            let (version_id, current) = steps::read_current(job, step).await?;
            info!(step = %step, version = %version_id, username = %current.username, "finished an interrupted finishSecret");
            Ok(Resumed::Completed(RotationOutcome::Completed {
                version_id,
                username: current.username.clone(),
            }))
        }
        Labels::InFlight { pending, .. } => resume_in_flight(job, pending).await,
    }
}

async fn resume_in_flight(
    job: &RotationJob<'_>,
    pending_version: &str,
) -> Result<Resumed, RotationError> {
    let step = Step::SetSecret;
    let (current_version, current) = steps::read_current(job, step).await?;
    let raw = job
        .secrets
        .get_value(job.secret_id, VersionSelector::Id(pending_version))
        .await
        .map_err(RotationError::aws(step))?
        .ok_or_else(|| {
            RotationError::malformed(
                step,
                format!("AWSPENDING version {pending_version} has no value"),
            )
        })?;
    let parsed = RdsSecretValue::parse(raw.value.expose()).ok();

    let verdict = if !is_ours(job.token_seed, &current_version, pending_version) {
        Err("it was not started by this credential from the current AWSCURRENT version".to_owned())
    } else {
        match (&parsed, steps::pending_username(job, &current)) {
            (None, _) => Err("its value is not the RDS credential JSON".to_owned()),
            (Some(_), Err(detail)) => Err(detail),
            (Some(p), Ok(user)) if !steps::pending_fits(&current, p, &user) => Err(format!(
                "it no longer fits the plan (user {}, expected {user} for {:?})",
                p.username, job.strategy
            )),
            (Some(_), Ok(_)) => Ok(()),
        }
    };
    if let Err(why) = verdict {
        rollback(job, &current, parsed.as_ref(), pending_version, &why).await?;
        return Ok(Resumed::RolledBack);
    }

    let pending = parsed.expect("verdict Ok implies a parsed value");
    info!(from_version = %current_version, version = %pending_version, username = %pending.username, "resuming an interrupted rotation");
    let rotation = Rotation {
        current_version,
        current,
        pending_version: pending_version.to_owned(),
        pending,
    };
    steps::set_secret(job, &rotation).await?;
    checkpoint(job, Step::SetSecret).await;
    steps::test_secret(job, &rotation).await?;
    checkpoint(job, Step::TestSecret).await;
    steps::finish_secret(job, &rotation).await?;
    checkpoint(job, Step::FinishSecret).await;
    Ok(Resumed::Completed(RotationOutcome::Completed {
        version_id: rotation.pending_version.clone(),
        username: rotation.pending.username.clone(),
    }))
}

/// Abandons AWSPENDING. The database first: if the abandoned rotation may have re-passworded
/// AWSCURRENT's user (single-user, or a value we cannot read) and AWSCURRENT no longer logs in,
/// AWSCURRENT's password goes back. Only then the label, so a crash in between repeats the
/// rollback instead of forgetting it.
async fn rollback(
    job: &RotationJob<'_>,
    current: &RdsSecretValue,
    pending: Option<&RdsSecretValue>,
    pending_version: &str,
    why: &str,
) -> Result<(), RotationError> {
    let step = Step::TestSecret;
    warn!(version = %pending_version, reason = why, "rolling back AWSPENDING");
    let may_have_touched_current = match pending {
        Some(p) => p.username == current.username,
        None => job.strategy == RotationStrategy::SingleUser,
    };
    // A user this credential does not manage is never re-passworded, even to repair it.
    if may_have_touched_current
        && steps::is_managed(job, &current.username)
        && engine::check_login(job.target, &steps::login_of(current))
            .await
            .is_err()
    {
        steps::restore_current(job, current, step).await?;
    }
    steps::remove_pending_label(job, pending_version, step).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        entries
            .iter()
            .map(|(v, s)| (v.to_string(), s.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn classifies_every_label_layout() {
        assert_eq!(
            classify(&versions(&[("a", &["AWSCURRENT"])])),
            Labels::NoPending
        );
        assert_eq!(
            classify(&versions(&[
                ("a", &["AWSPREVIOUS"]),
                ("b", &["AWSCURRENT"])
            ])),
            Labels::NoPending
        );
        assert_eq!(
            classify(&versions(&[("a", &["AWSCURRENT"]), ("b", &["AWSPENDING"])])),
            Labels::InFlight {
                current: "a",
                pending: "b"
            }
        );
        assert_eq!(
            classify(&versions(&[
                ("a", &["AWSPREVIOUS"]),
                ("b", &["AWSCURRENT", "AWSPENDING"])
            ])),
            Labels::PendingOnCurrent("b")
        );
        assert_eq!(
            classify(&versions(&[("b", &["AWSPENDING"])])),
            Labels::NoCurrent
        );
    }

    #[test]
    fn only_this_credentials_tokens_from_this_current_are_ours() {
        let t = super::super::client_request_token("uid", "v1");
        assert!(is_ours("uid", "v1", &t));
        assert!(is_ours("uid", "v1", &token_attempt("uid", "v1", 2)));
        assert!(!is_ours("uid", "v2", &t));
        assert!(!is_ours("other-uid", "v1", &t));
        assert!(!is_ours("uid", "v1", "0b7a5e43-some-lambda-token"));
    }
}
