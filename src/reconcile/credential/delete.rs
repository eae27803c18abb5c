//! Deletion of a credential: with `deletionPolicy: Delete` (managed only), the database user
//! is dropped and the secret scheduled for deletion, if they are still ours.

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::info;

use super::super::database::resolved_from_status;
use super::admission::{database_of, owned_by, owner_of};
use super::{Error, ns_of};
use crate::context::Context;
use crate::crd::{CredentialMode, DeletionPolicy, RdsCredential};
use crate::engine::UserPlan;
use crate::reconcile::Reason;

pub(super) async fn cleanup(cred: &RdsCredential, ctx: &Context) -> Result<Action, Error> {
    let done = delete(cred, ctx).await;
    if done.is_ok() {
        // Last reconcile of this credential (the finalizer goes next): what the process kept
        // about it would otherwise stay for its life.
        ctx.forget_credential(cred);
    }
    done
}

async fn delete(cred: &RdsCredential, ctx: &Context) -> Result<Action, Error> {
    ctx.metrics
        .forget_credential(&ns_of(cred), &cred.name_any());
    let policy = cred.spec.secret.deletion_policy;
    if cred.spec.mode == CredentialMode::SyncOnly || policy == DeletionPolicy::Retain {
        info!("deleted; the AWS secret and the database user are retained");
        return Ok(Action::await_change());
    }
    let db_obj = database_of(cred, ctx).await?;
    let db = resolved_from_status(&db_obj, ctx, true).await?;
    let owner = owner_of(cred, ctx);
    let Some(meta) = db.scope.secrets.describe(&cred.spec.secret.name).await? else {
        return Ok(Action::await_change());
    };
    if !owned_by(&meta, &owner) || meta.owner().is_some_and(|o| o.uid != owner.uid) {
        // Not ours (or taken back by a newer credential of the same name): leave it alone.
        return Ok(Action::await_change());
    }
    if let Some(username) = &cred.spec.username {
        let plan = UserPlan {
            username: username.clone(),
            login_users: vec![username.clone(), UserPlan::clone_username(username)],
            grants: Vec::new(),
            roles: Vec::new(),
        };
        let admin = crate::reconcile::database::admin_login(ctx, &db).await?;
        let mut conn = ctx.admin_pool.get(&db.target(None), &admin).await?;
        let dropped = conn.drop_users(&plan).await;
        conn.done(dropped.is_ok()).await;
        if let Err(e) = dropped {
            let e = Error::from(e);
            ctx.event(
                cred,
                EventType::Warning,
                e.reason(),
                "Delete",
                format!("cannot drop the database user: {e}"),
            )
            .await;
            return Err(e);
        }
    }
    if !meta.is_scheduled_for_deletion() {
        // Secrets Manager refuses DeleteSecret while the secret has replicas ("You can't
        // delete secret ... that still has replica regions"): remove them first. A crash in
        // between leaves a secret without replicas, which the next attempt deletes.
        if !meta.replica_regions.is_empty() {
            db.scope.secrets.sync_replicas(&meta, &[]).await?;
        }
        let days = cred.spec.secret.recovery_window_in_days.unwrap_or(30);
        db.scope.secrets.schedule_deletion(&meta.arn, days).await?;
    }
    let replicas = if meta.replica_regions.is_empty() {
        String::new()
    } else {
        format!(
            ", after removing its replicas in {}",
            meta.replica_regions.join(", ")
        )
    };
    ctx.event(
        cred,
        EventType::Normal,
        Reason::Deleted,
        "Delete",
        format!(
            "dropped the database user and scheduled secret {} for deletion{replicas}",
            meta.name
        ),
    )
    .await;
    Ok(Action::await_change())
}
