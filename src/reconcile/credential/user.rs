//! The database user of a managed credential: its login users exist with exactly the declared
//! privileges, and AWSCURRENT logs in (the drift check, repaired with `driftPolicy: repair`).

use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::EventType;

use super::super::conditions::{self, DRIFTED, USER_READY};
use super::aws_secret::Current;
use super::{Error, Managed, Progress, Step, ns_of, parse_time, until};
use crate::crd::DriftPolicy;
use crate::engine;
use crate::reconcile::Reason;

/// The login users exist, hold exactly the declared privileges, and AWSCURRENT logs in
/// (the drift check). Drift is reported and, with `driftPolicy: repair`, repaired.
pub(super) async fn ensure_user(
    m: Managed<'_>,
    current: &Current,
    p: &mut Progress,
) -> Result<(), Error> {
    let Managed {
        step: Step { cred, ctx, db, .. },
        plan,
        admin,
        ..
    } = m;
    if !plan.login_users.contains(&current.value.username) {
        return Err(Error::refused(
            Reason::UnexpectedUsername,
            format!(
                "AWSCURRENT names user {:?}, which is not {} or its clone",
                current.value.username, plan.username
            ),
        ));
    }
    let mut conn = ctx.admin_pool.get(&db.target(None), admin).await?;
    let result = async {
        if conn
            .ensure_login_user(plan, &current.value.username, &current.value.password)
            .await?
        {
            ctx.event(
                cred,
                EventType::Normal,
                Reason::UserCreated,
                "Create",
                format!("created database user {}", current.value.username),
            )
            .await;
        }
        let changes = conn.sync_privileges(plan).await?;
        if !changes.granted.is_empty() || !changes.revoked.is_empty() {
            ctx.event(
                cred,
                EventType::Normal,
                Reason::PrivilegesChanged,
                "Grant",
                format!(
                    "granted [{}], revoked [{}]",
                    changes.granted.join(", "),
                    changes.revoked.join(", ")
                ),
            )
            .await;
        }
        Ok::<_, Error>(())
    }
    .await;
    conn.done(result.is_ok()).await;
    result?;
    check_drift(m, current, p).await?;
    p.condition(
        USER_READY,
        true,
        Reason::LoginVerified,
        format!(
            "user {} has the declared privileges and AWSCURRENT logs in",
            current.value.username
        ),
    );
    Ok(())
}

async fn check_drift(m: Managed<'_>, current: &Current, p: &mut Progress) -> Result<(), Error> {
    let Managed {
        step: Step { cred, ctx, db, .. },
        admin,
        ..
    } = m;
    let drift = cred.spec.drift.clone().unwrap_or_default();
    let interval = drift
        .interval
        .map(Duration::from)
        .unwrap_or(ctx.settings.drift_interval);
    p.requeue_for_drift(interval);
    // Stamped at most twice per interval: status is written only when it changed, and a
    // fresh stamp on every reconcile (bulk-poll triggers, rollout watches every 2 s) would
    // turn each of them into a status write. (Status writes do not trigger reconciles: the
    // watch predicate ignores status.)
    if parse_time(p.status.last_drift_check.as_deref())
        .is_none_or(|t| until(t, Timestamp::now()) >= interval / 2)
    {
        p.status.last_drift_check = Some(Timestamp::now().to_string());
    }
    let login = current.login();
    let target = db.target(None);
    match engine::check_login(&target, &login).await {
        Ok(()) => {
            if conditions::is_true(&p.status.conditions, DRIFTED) {
                ctx.event(
                    cred,
                    EventType::Normal,
                    Reason::DriftResolved,
                    "DriftCheck",
                    "AWSCURRENT logs in again".into(),
                )
                .await;
            }
            p.condition(DRIFTED, false, Reason::InSync, "AWSCURRENT logs in");
            ctx.metrics.drift(&ns_of(cred), &cred.name_any(), false);
            Ok(())
        }
        Err(engine::DbError::AuthFailed { .. }) => {
            ctx.metrics.drift(&ns_of(cred), &cred.name_any(), true);
            let msg = format!(
                "AWSCURRENT no longer logs in as {}: the password was changed outside rdscred",
                login.username
            );
            p.condition(DRIFTED, true, Reason::PasswordChanged, msg.clone());
            ctx.event(
                cred,
                EventType::Warning,
                Reason::DriftDetected,
                "DriftCheck",
                msg.clone(),
            )
            .await;
            if drift.policy != DriftPolicy::Repair {
                return Err(Error::refused(
                    Reason::Drifted,
                    format!("{msg}; set drift.policy: repair to reset it, or rotate"),
                ));
            }
            // Re-passwording is irreversible: reset only to what AWSCURRENT is NOW. Metadata
            // cached by a poll may name a version a rotation has since replaced, and resetting
            // to it would take the password of the new AWSCURRENT's user away from its pods.
            let labels = db.scope.secrets.describe(&cred.spec.secret.name).await?;
            if let Some(labels) = &labels {
                ctx.secrets.remember(labels);
            }
            let still_current = labels.as_ref().is_some_and(|m| {
                m.current_version() == Some(current.version_id.as_str())
                    && m.pending_version().is_none()
            });
            if !still_current {
                return Err(Error::not_ready(
                    Reason::DriftRepairDeferred,
                    format!(
                        "{msg}; not repaired: AWSCURRENT is no longer version {} (or a rotation is pending), so the next reconcile decides from the new state",
                        current.version_id
                    ),
                ));
            }
            let mut conn = ctx.admin_pool.get(&target, admin).await?;
            let reset = conn.set_password(&login.username, &login.password).await;
            conn.done(reset.is_ok()).await;
            reset?;
            engine::check_login(&target, &login).await?;
            ctx.event(
                cred,
                EventType::Normal,
                Reason::DriftRepaired,
                "DriftRepair",
                format!("reset the password of {} to AWSCURRENT", login.username),
            )
            .await;
            p.condition(
                DRIFTED,
                false,
                Reason::Repaired,
                "password reset to AWSCURRENT with the admin login",
            );
            ctx.metrics.drift(&ns_of(cred), &cred.name_any(), false);
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
