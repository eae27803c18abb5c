//! The four steps. Each one is idempotent: it reads the state it needs, does only what is not
//! done yet (or repeats what is harmless to repeat), and can be run again after a crash at any
//! instant.

use tracing::{info, warn};

use super::{RotationError, RotationJob, Step, TOKEN_ATTEMPTS, token_attempt};
use crate::aws::{AWSCURRENT, AWSPENDING, AWSPREVIOUS, SecretMeta, VersionSelector};
use crate::crd::RotationStrategy;
use crate::engine::{self, Admin, Login, UserPlan};
use crate::secret::{RdsSecretValue, generate_password};

/// One rotation: the AWSCURRENT version it starts from and the AWSPENDING version it ends on.
pub(super) struct Rotation {
    pub current_version: String,
    pub current: RdsSecretValue,
    pub pending_version: String,
    pub pending: RdsSecretValue,
}

/// The secret's metadata, or `Malformed` if the secret is gone.
pub(super) async fn describe(
    job: &RotationJob<'_>,
    step: Step,
) -> Result<SecretMeta, RotationError> {
    job.secrets
        .describe(job.secret_id)
        .await
        .map_err(RotationError::aws(step))?
        .ok_or_else(|| RotationError::malformed(step, "the secret does not exist"))
}

/// AWSCURRENT's version id and value, read by stage (moto can return a stale version without one).
pub(super) async fn read_current(
    job: &RotationJob<'_>,
    step: Step,
) -> Result<(String, RdsSecretValue), RotationError> {
    let version = job
        .secrets
        .get_value(job.secret_id, VersionSelector::Stage(AWSCURRENT))
        .await
        .map_err(RotationError::aws(step))?
        .ok_or_else(|| RotationError::malformed(step, "the secret has no AWSCURRENT version"))?;
    let value = RdsSecretValue::parse(version.value.expose()).map_err(|e| {
        RotationError::malformed(
            step,
            format!("AWSCURRENT version {}: {e}", version.version_id),
        )
    })?;
    Ok((version.version_id, value))
}

/// The users this credential manages under the plan: the name and, alternating, its clone.
fn managed_users(job: &RotationJob<'_>) -> [String; 2] {
    [
        job.plan.username.clone(),
        UserPlan::clone_username(&job.plan.username),
    ]
}

/// Whether `username` is one of the two users this credential may ever rotate.
pub(super) fn is_managed(job: &RotationJob<'_>, username: &str) -> bool {
    managed_users(job).iter().any(|u| u == username)
}

/// The user AWSPENDING must hold when rotating from `current`: alternating, the user that is NOT
/// current; single-user, the current user. The current user may be the clone under single-user
/// too (the strategy was switched after an alternating rotation): it keeps rotating that user.
pub(super) fn pending_username(
    job: &RotationJob<'_>,
    current: &RdsSecretValue,
) -> Result<String, String> {
    let [name, clone] = managed_users(job);
    let other = if current.username == name {
        clone
    } else if current.username == clone {
        name
    } else {
        return Err(format!(
            "AWSCURRENT holds user {}, which is neither {} nor {}: this credential does not manage it",
            current.username, job.plan.username, clone
        ));
    };
    Ok(match job.strategy {
        RotationStrategy::AlternatingUsers => other,
        RotationStrategy::SingleUser => current.username.clone(),
    })
}

/// Whether `pending` is exactly what createSecret makes from `current`: same JSON except the
/// password, and the expected user.
pub(super) fn pending_fits(
    current: &RdsSecretValue,
    pending: &RdsSecretValue,
    username: &str,
) -> bool {
    let mut expected = current.clone();
    expected.username = username.to_owned();
    expected.password = pending.password.clone();
    *pending == expected
}

/// createSecret: the AWSPENDING version for the deterministic token, reused when it exists and
/// still fits, else a new CSPRNG password put with stage AWSPENDING.
pub(super) async fn create_secret(job: &RotationJob<'_>) -> Result<Rotation, RotationError> {
    let step = Step::CreateSecret;
    let (current_version, current) = read_current(job, step).await?;
    let username =
        pending_username(job, &current).map_err(|d| RotationError::malformed(step, d))?;
    for attempt in 0..TOKEN_ATTEMPTS {
        let token = token_attempt(job.token_seed, &current_version, attempt);
        let existing = job
            .secrets
            .get_value(job.secret_id, VersionSelector::Id(&token))
            .await
            .map_err(RotationError::aws(step))?;
        let Some(existing) = existing else {
            let password = generate_password(job.password, job.target.engine)
                .map_err(|source| RotationError::Password { source })?;
            let mut pending = current.clone();
            pending.username = username.clone();
            pending.password = password;
            job.secrets
                .put_pending(job.secret_id, &token, &pending.to_secret_json())
                .await
                .map_err(RotationError::aws(step))?;
            info!(step = %step, from_version = %current_version, version = %token, username = %username, "AWSPENDING created");
            return Ok(Rotation {
                current_version,
                current,
                pending_version: token,
                pending,
            });
        };
        // The version exists: a crash after PutSecretValue, or an attempt rolled back earlier.
        // A version id can never get another value, so reuse it if it fits, else move on.
        match RdsSecretValue::parse(existing.value.expose()) {
            Ok(pending) if pending_fits(&current, &pending, &username) => {
                if !existing.stages.iter().any(|s| s == AWSPENDING) {
                    job.secrets
                        .move_stage(job.secret_id, AWSPENDING, &token, None)
                        .await
                        .map_err(RotationError::aws(step))?;
                }
                info!(step = %step, from_version = %current_version, version = %token, username = %username, "AWSPENDING reused");
                return Ok(Rotation {
                    current_version,
                    current,
                    pending_version: token,
                    pending,
                });
            }
            _ => {
                info!(step = %step, version = %token, "an earlier attempt's version no longer fits the plan; using the next token")
            }
        }
    }
    Err(RotationError::malformed(
        step,
        format!(
            "all {TOKEN_ATTEMPTS} rotation tokens from AWSCURRENT version {current_version} are used by versions that do not fit the plan"
        ),
    ))
}

/// Runs `f` on an admin connection and closes it whatever the outcome.
async fn with_admin<T>(
    job: &RotationJob<'_>,
    step: Step,
    f: impl AsyncFnOnce(&mut Admin) -> Result<T, engine::DbError>,
) -> Result<T, RotationError> {
    let mut admin = Admin::connect(job.target, job.admin)
        .await
        .map_err(RotationError::db(step))?;
    let result = f(&mut admin).await;
    admin.close().await;
    result.map_err(RotationError::db(step))
}

/// setSecret: give the pending user the pending password in the database.
pub(super) async fn set_secret(
    job: &RotationJob<'_>,
    rotation: &Rotation,
) -> Result<(), RotationError> {
    let step = Step::SetSecret;
    let user = rotation.pending.username.as_str();
    let password = &rotation.pending.password;
    match job.strategy {
        RotationStrategy::AlternatingUsers => {
            // Both login users in one plan: sync_privileges then gives the clone exactly the
            // privileges (and, on PostgreSQL, the owner role) of the name, revocations included,
            // before AWSCURRENT can point at it. Run every rotation, not only when the clone is
            // created, so a clone can never be switched to with stale privileges.
            let mut plan = job.plan.clone();
            plan.login_users = managed_users(job).to_vec();
            with_admin(job, step, async |admin| {
                let created = admin.ensure_login_user(&plan, user, password).await?;
                admin.sync_privileges(&plan).await?;
                if !created {
                    admin.set_password(user, password).await?;
                }
                Ok(created)
            })
            .await
            .map(|created| info!(step = %step, username = %user, created, "pending user has the pending password"))
        }
        RotationStrategy::SingleUser => {
            // From here until finishSecret moves AWSCURRENT, clients reading AWSCURRENT fail to
            // log in: the single-user window. Nothing slow happens between here and there.
            with_admin(job, step, async |admin| {
                admin.set_password(user, password).await
            })
            .await?;
            info!(step = %step, username = %user, "user has the pending password");
            Ok(())
        }
    }
}

/// Puts AWSCURRENT's password back on AWSCURRENT's user and proves it logs in.
pub(super) async fn restore_current(
    job: &RotationJob<'_>,
    current: &RdsSecretValue,
    step: Step,
) -> Result<(), RotationError> {
    let user = current.username.as_str();
    with_admin(job, step, async |admin| {
        admin.set_password(user, &current.password).await
    })
    .await?;
    engine::check_login(job.target, &login_of(current))
        .await
        .map_err(RotationError::db(step))?;
    info!(step = %step, username = %user, "database put back to AWSCURRENT's password");
    Ok(())
}

/// Removes AWSPENDING from `version` if it is still there (idempotent: moto rejects removing a
/// label that is not on the version).
pub(super) async fn remove_pending_label(
    job: &RotationJob<'_>,
    version: &str,
    step: Step,
) -> Result<(), RotationError> {
    let meta = describe(job, step).await?;
    if has_stage(&meta, version, AWSPENDING) {
        job.secrets
            .remove_stage(job.secret_id, AWSPENDING, version)
            .await
            .map_err(RotationError::aws(step))?;
    }
    Ok(())
}

fn has_stage(meta: &SecretMeta, version: &str, stage: &str) -> bool {
    meta.versions
        .get(version)
        .is_some_and(|stages| stages.iter().any(|s| s == stage))
}

pub(super) fn login_of(value: &RdsSecretValue) -> Login {
    Login {
        username: value.username.clone(),
        password: value.password.clone(),
    }
}

/// testSecret: AWSPENDING must log in. On failure, single-user puts the database back to
/// AWSCURRENT's password (and removes AWSPENDING) before reporting; alternating has nothing to
/// undo (AWSCURRENT's user was never touched) and keeps AWSPENDING for a retry.
pub(super) async fn test_secret(
    job: &RotationJob<'_>,
    rotation: &Rotation,
) -> Result<(), RotationError> {
    let step = Step::TestSecret;
    let user = rotation.pending.username.as_str();
    let Err(source) = engine::check_login(job.target, &login_of(&rotation.pending)).await else {
        info!(step = %step, username = %user, version = %rotation.pending_version, "AWSPENDING logs in");
        return Ok(());
    };
    warn!(step = %step, username = %user, version = %rotation.pending_version, error = %source, "AWSPENDING does not log in");
    match job.strategy {
        RotationStrategy::AlternatingUsers => Err(RotationError::TestFailed {
            username: user.to_owned(),
            source,
        }),
        RotationStrategy::SingleUser => {
            // If the restore fails, AWSPENDING stays: the next resume re-runs setSecret and
            // testSecret, which converges either way.
            restore_current(job, &rotation.current, step).await?;
            remove_pending_label(job, &rotation.pending_version, step).await?;
            Err(RotationError::TestFailedRolledBack { source })
        }
    }
}

/// finishSecret: AWSCURRENT → the pending version (AWSPREVIOUS follows), then AWSPENDING removed.
pub(super) async fn finish_secret(
    job: &RotationJob<'_>,
    rotation: &Rotation,
) -> Result<(), RotationError> {
    let step = Step::FinishSecret;
    let (old, new) = (
        rotation.current_version.as_str(),
        rotation.pending_version.as_str(),
    );
    let mut meta = describe(job, step).await?;
    if meta.current_version() != Some(new) {
        if meta.current_version() != Some(old) {
            // Someone else moved AWSCURRENT since this rotation read it: switching now would
            // throw their version away. Resume will see a pending that is no longer ours.
            return Err(RotationError::malformed(
                step,
                format!("AWSCURRENT moved away from {old} during the rotation"),
            ));
        }
        job.secrets
            .move_stage(job.secret_id, AWSCURRENT, new, Some(old))
            .await
            .map_err(RotationError::aws(step))?;
        info!(step = %step, from_version = %old, version = %new, username = %rotation.pending.username, "AWSCURRENT moved");
        meta = describe(job, step).await?;
    }
    // Secrets Manager (and moto 5.2.5, checked) moves AWSPREVIOUS to the old AWSCURRENT by
    // itself; repair it only if an implementation did not.
    if meta.version_with_stage(AWSPREVIOUS) != Some(old) && meta.versions.contains_key(old) {
        let holder = meta.version_with_stage(AWSPREVIOUS).map(str::to_owned);
        job.secrets
            .move_stage(job.secret_id, AWSPREVIOUS, old, holder.as_deref())
            .await
            .map_err(RotationError::aws(step))?;
    }
    if has_stage(&meta, new, AWSPENDING) {
        job.secrets
            .remove_stage(job.secret_id, AWSPENDING, new)
            .await
            .map_err(RotationError::aws(step))?;
    }
    Ok(())
}
