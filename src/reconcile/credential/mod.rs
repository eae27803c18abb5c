//! Reconcile of `RdsCredential`.
//!
//! Order matters for safety: every refusal (namespace not admitted, secret name outside the
//! prefix, a competing claim, a secret or user we do not own) is decided before anything is
//! written anywhere. Then: the Secrets Manager secret, an interrupted rotation (resumed before
//! anything reads AWSCURRENT), the database user and its privileges, drift, a due rotation,
//! the Kubernetes Secret, and the rollout of dependent workloads.
//!
//! One file per concern: [`admission`] (refusals, decided before any write), [`aws_secret`]
//! (the Secrets Manager secret and AWSCURRENT), [`user`] (the database user and drift),
//! [`rotate`] (resuming and running rotations), [`gate`] (when a rotation may run), [`propagate`] (the Kubernetes Secret
//! and rollouts), [`delete`] (cleanup); this file holds the entry point and the order of steps.

mod admission;
mod aws_secret;
mod delete;
mod gate;
mod propagate;
mod rotate;
pub mod selector;
mod user;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{self, finalizer};
use tracing::{instrument, warn};

use super::conditions::{self, ACCESS_POLICY_READY, READY, SECRET_READY, USER_READY};
use super::database::{ResolvedDatabase, resolved_from_status};
use super::status_write::{self, StatusBase};
use super::{Error, FINALIZER};
use crate::context::Context;
use crate::crd::{
    CredentialMode, RdsCredential, RdsCredentialStatus, RdsDatabase, RotationSpec,
    RotationStrategy, Rotator,
};
use crate::engine::{Login, UserPlan};
use crate::reconcile::Reason;

pub(super) use admission::{check_claims, check_secret_name};
pub use aws_secret::Current;
use delete::cleanup;

/// Annotation that requests a rotation now; any new value triggers one.
pub const ROTATE_ANNOTATION: &str = "rdscred.io/rotate-requested-at";

/// Annotation that asks for a reconcile now (Argo CD's `refresh` action sets it). No code
/// reads its value: any annotation change passes the controller's event filter
/// (`runtime::controller::desired_state_hash`), and a reconcile has no effect beyond
/// re-syncing; it never requests a rotation or a roll by itself.
pub const REFRESH_ANNOTATION: &str = "rdscred.io/refresh-requested-at";

#[instrument(skip_all, fields(namespace = %cred.namespace().unwrap_or_default(), rdscredential = %cred.name_any()))]
pub async fn reconcile(cred: Arc<RdsCredential>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = cred.namespace().unwrap_or_default();
    let api: Api<RdsCredential> = Api::namespaced(ctx.client.clone(), &ns);
    // Decide from a quorum read, not the reflector's copy: right after our own writes (or
    // another replica's) the cache may still hold an older object, and a decision from it
    // (add the finalizer again, rotate again, roll nothing) would be made on a state that no
    // longer exists.
    let cred = match api.get_opt(&cred.name_any()).await {
        Ok(Some(fresh)) if fresh.uid() == cred.uid() => Arc::new(fresh),
        // Gone, or deleted and created again: the watch event for it follows.
        Ok(_) => return Ok(Action::await_change()),
        Err(e) => return Err(Error::Kube(e)),
    };
    // The finalizer is added here, not by `finalizer()` (which adds it and ends the reconcile,
    // leaving the rest to the watch event of its own patch): the reconcile goes on with the
    // patched object and the echo of the patch is dropped (`crate::echo`), so a new credential
    // is reconciled once, not once more per own write.
    let cred = if cred.metadata.deletion_timestamp.is_none()
        && !cred.finalizers().iter().any(|f| f == FINALIZER)
    {
        Arc::new(add_finalizer(&api, &cred, &ctx).await?)
    } else {
        cred
    };
    let result = finalizer(&api, FINALIZER, cred, |event| async {
        match event {
            finalizer::Event::Apply(c) => apply(&c, &ctx).await,
            finalizer::Event::Cleanup(c) => {
                ctx.drift_lane
                    .remove(&crate::context::object_key(c.as_ref()));
                cleanup(&c, &ctx).await
            }
        }
    })
    .await
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => Error::Kube(e),
        other => Error::not_ready(Reason::FinalizerError, other.to_string()),
    });
    ctx.metrics.reconcile_finished(
        "RdsCredential",
        started.elapsed(),
        result.as_ref().err().map(Error::reason),
    );
    result
}

/// Whether `cred` (as cached) is settled: its status is current for its generation and Ready,
/// and it is not being deleted. Only a settled credential's periodic pass is a drift check.
pub fn is_settled(cred: &RdsCredential) -> bool {
    let Some(status) = cred.status.as_ref() else {
        return false;
    };
    let rotation_due = status
        .next_rotation_time
        .as_deref()
        .and_then(|t| t.parse::<Timestamp>().ok())
        .is_some_and(|t| t <= Timestamp::now());
    let requested = cred.annotations().get(ROTATE_ANNOTATION);
    cred.metadata.deletion_timestamp.is_none()
        && status.observed_generation.is_some()
        && status.observed_generation == cred.metadata.generation
        && conditions::get(&status.conditions, READY).is_some_and(|c| c.status == "True")
        // A rotation under way (resumed at once after a restart), due, or requested.
        && status.rotation_claim.is_none()
        && !rotation_due
        && (requested.is_none() || requested == status.last_rotation_request.as_ref())
}

/// Adds [`FINALIZER`], guarded like kube-runtime's own (a JSON patch testing the finalizers
/// read), and records the write so its watch event does not reconcile again.
async fn add_finalizer(
    api: &Api<RdsCredential>,
    cred: &RdsCredential,
    ctx: &Context,
) -> Result<RdsCredential, Error> {
    let finalizers = cred.finalizers();
    let ops = if finalizers.is_empty() {
        serde_json::json!([
            { "op": "test", "path": "/metadata/finalizers", "value": null },
            { "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] },
        ])
    } else {
        serde_json::json!([
            { "op": "test", "path": "/metadata/finalizers", "value": finalizers },
            { "op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER },
        ])
    };
    let patch: json_patch::Patch = serde_json::from_value(ops)
        .map_err(|e| Error::not_ready(Reason::FinalizerError, e.to_string()))?;
    let patched = api
        .patch(
            &cred.name_any(),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Json::<()>(patch),
        )
        .await
        .map_err(Error::Kube)?;
    ctx.own_writes.record(
        crate::echo::key("RdsCredential", &ns_of(&patched), &patched.name_any()),
        patched.resource_version(),
    );
    Ok(patched)
}

/// Status under construction plus the Events to publish once it is written.
struct Progress {
    status: RdsCredentialStatus,
    generation: Option<i64>,
    /// Earliest time something is due again (rotation, drift check, rollout watch, poll).
    requeue: Duration,
    /// The earliest thing due is the periodic drift check: the next pass goes through the
    /// drift lane (`crate::limit::DriftLane`).
    requeue_is_drift: bool,
    /// What status holds in the API server and at which resourceVersion: every write is
    /// guarded by it.
    base: StatusBase,
    /// Work in progress that ends by itself while the credential is Ready (a due rotation
    /// waiting for rollouts or a rotation slot): reported as kstatus `Reconciling=True` with
    /// this reason and message.
    in_progress: Option<(Reason, String)>,
}

impl Progress {
    fn condition(
        &mut self,
        type_: &str,
        ok: bool,
        reason: impl AsRef<str>,
        message: impl Into<String>,
    ) {
        conditions::set(
            &mut self.status.conditions,
            type_,
            ok,
            reason,
            message,
            self.generation,
        );
    }
    fn requeue_within(&mut self, d: Duration) {
        let d = d.max(Duration::from_secs(1));
        if d < self.requeue {
            self.requeue = d;
            self.requeue_is_drift = false;
        }
    }
    /// [`requeue_within`](Self::requeue_within) for the periodic drift check.
    fn requeue_for_drift(&mut self, d: Duration) {
        let d = d.max(Duration::from_secs(1));
        if d < self.requeue {
            self.requeue = d;
            self.requeue_is_drift = true;
        }
    }
    /// Like [`requeue_within`](Self::requeue_within) below one second: only for waits that
    /// end on an outside event (a rollout completing) with a request queued behind them.
    fn requeue_soon(&mut self, d: Duration) {
        let d = d.max(Duration::from_millis(100));
        if d < self.requeue {
            self.requeue = d;
            self.requeue_is_drift = false;
        }
    }
    /// Writes the status built so far (guarded), e.g. a rotation claim before its first step.
    async fn checkpoint(&mut self, cred: &RdsCredential, ctx: &Context) -> Result<(), Error> {
        let api: Api<RdsCredential> = Api::namespaced(ctx.client.clone(), &ns_of(cred));
        status_write::write(&api, &cred.name_any(), &mut self.base, &self.status).await
    }
}

async fn apply(cred: &RdsCredential, ctx: &Context) -> Result<Action, Error> {
    // `cred` is a quorum read (see `reconcile`); its resourceVersion guards every status write.
    let api: Api<RdsCredential> = Api::namespaced(ctx.client.clone(), &ns_of(cred));
    let old = cred.status.clone().unwrap_or_default();
    let mut p = Progress {
        status: old.clone(),
        generation: cred.metadata.generation,
        requeue: ctx.settings.drift_interval,
        requeue_is_drift: true,
        base: StatusBase::of(cred),
        in_progress: None,
    };
    let result = apply_steps(cred, ctx, &mut p).await;
    match &result {
        Ok(()) => {
            let message = ready_message(cred, &p.status);
            conditions::set_summary(
                &mut p.status.conditions,
                conditions::Outcome::Ready,
                Reason::Ready,
                message,
                p.generation,
            );
            if let Some((reason, message)) = p.in_progress.take() {
                conditions::set(
                    &mut p.status.conditions,
                    conditions::RECONCILING,
                    true,
                    reason,
                    message,
                    p.generation,
                );
            }
            ctx.metrics
                .set_credential_ready(&ns_of(cred), &cred.name_any(), "True");
        }
        Err(e) => {
            conditions::set_summary(
                &mut p.status.conditions,
                conditions::Outcome::NotReady {
                    needs_person: e.needs_person(),
                },
                e.reason(),
                e.to_string(),
                p.generation,
            );
            ctx.metrics
                .set_credential_ready(&ns_of(cred), &cred.name_any(), "False");
            let before = conditions::get(&old.conditions, READY)
                .map(|c| (c.reason.clone(), c.message.clone()));
            if before != Some((e.reason().to_string(), e.to_string())) && !e.is_conflict() {
                ctx.event(
                    cred,
                    EventType::Warning,
                    e.reason(),
                    "Reconcile",
                    e.to_string(),
                )
                .await;
            }
            warn!(reason = e.reason(), error = %e, "reconcile failed");
        }
    }
    p.status.observed_generation = cred.metadata.generation;
    let status = p.status.clone();
    status_write::write(&api, &cred.name_any(), &mut p.base, &status).await?;
    result?;
    let key = crate::context::object_key(cred);
    ctx.reset_failures(&key);
    let wait = crate::limit::jitter(p.requeue, 0.1);
    ctx.drift_lane
        .finished(&key, p.requeue_is_drift.then_some(wait));
    Ok(Action::requeue(wait))
}

fn ready_message(cred: &RdsCredential, s: &RdsCredentialStatus) -> String {
    let target = s.target_secret.clone().unwrap_or_default();
    match cred.spec.mode {
        CredentialMode::SyncOnly => format!("Secret {target} holds AWSCURRENT"),
        CredentialMode::Managed => format!(
            "user {} logs in with AWSCURRENT; Secret {target} holds it",
            s.current_username.clone().unwrap_or_default()
        ),
    }
}

/// What every step of one reconcile works on: the credential (a quorum read), the shared
/// context, and its database as the API server holds it and as resolved from its status.
#[derive(Clone, Copy)]
struct Step<'a> {
    cred: &'a RdsCredential,
    ctx: &'a Context,
    db_obj: &'a RdsDatabase,
    db: &'a ResolvedDatabase,
}

/// A managed credential's steps also share its user plan, the admin login and its rotation
/// settings (the credential's, or the database's defaults).
#[derive(Clone, Copy)]
struct Managed<'a> {
    step: Step<'a>,
    plan: &'a UserPlan,
    admin: &'a Login,
    rotation: Option<&'a RotationSpec>,
}

async fn apply_steps(cred: &RdsCredential, ctx: &Context, p: &mut Progress) -> Result<(), Error> {
    let db_obj = admission::database_of(cred, ctx).await?;
    admission::admit_namespace(cred, &db_obj, ctx).await?;
    let db = resolved_from_status(&db_obj, ctx, cred.spec.mode == CredentialMode::Managed).await?;
    // Every refusal of the spec is decided here, before anything is written anywhere.
    super::plan::prepare(cred, &db_obj, &db, ctx, &p.status).await?;
    // The bulk poller triggers a reconcile when AWSCURRENT moves; requeue only for a per-credential poll interval shorter than its.
    if poll_interval(cred, ctx) < ctx.settings.poll_interval {
        p.requeue_within(poll_interval(cred, ctx));
    }
    let step = Step {
        cred,
        ctx,
        db_obj: &db_obj,
        db: &db,
    };
    match cred.spec.mode {
        CredentialMode::SyncOnly => {
            super::access::plan(cred, &db_obj, ctx)?;
            apply_sync_only(step, p).await
        }
        CredentialMode::Managed => apply_managed(step, p).await,
    }
}

fn ns_of(cred: &RdsCredential) -> String {
    cred.namespace().unwrap_or_default()
}

fn poll_interval(cred: &RdsCredential, ctx: &Context) -> Duration {
    cred.spec
        .poll_interval
        .map(Duration::from)
        .unwrap_or(ctx.settings.poll_interval)
}

async fn apply_sync_only(s: Step<'_>, p: &mut Progress) -> Result<(), Error> {
    let Step { cred, ctx, db, .. } = s;
    let id = &cred.spec.secret.name;
    let meta = match db.scope.secrets.describe(id).await {
        Ok(Some(m)) => m,
        Ok(None) => {
            let e = Error::not_ready(
                Reason::SecretNotFound,
                format!("secret {id} does not exist (sync-only follows an existing secret)"),
            );
            p.condition(SECRET_READY, false, e.reason(), e.to_string());
            return Err(e);
        }
        Err(e) => {
            let e = Error::from(e);
            p.condition(SECRET_READY, false, e.reason(), e.to_string());
            return Err(e);
        }
    };
    ctx.secrets.remember(&meta);
    p.status.secret_arn = Some(meta.arn.clone());
    p.condition(
        SECRET_READY,
        true,
        Reason::Found,
        "following AWSCURRENT of an existing secret",
    );
    let current = aws_secret::current_value(s, &meta).await?;
    propagate::sync_and_roll(s, &current, p).await
}

// ------------------------------------------------------------------ managed

async fn apply_managed(s: Step<'_>, p: &mut Progress) -> Result<(), Error> {
    let Step {
        cred,
        ctx,
        db_obj,
        db,
    } = s;
    let rotation_spec = rotation_spec(cred, db_obj);
    let strategy = rotation_spec
        .as_ref()
        .map(|r| r.strategy)
        .unwrap_or_default();
    let plan = user_plan(cred, db)?;
    // Who may read the secret: refused here, before anything is written.
    let access = super::access::plan(cred, db_obj, ctx).inspect_err(|e| {
        p.condition(ACCESS_POLICY_READY, false, e.reason(), e.to_string());
    })?;
    let admin = crate::reconcile::database::admin_login(ctx, db).await?;
    let m = Managed {
        step: s,
        plan: &plan,
        admin: &admin,
        rotation: rotation_spec.as_ref(),
    };

    let aws_secret::Ensured { meta, written } =
        aws_secret::ensure_aws_secret(m, p).await.inspect_err(|e| {
            p.condition(SECRET_READY, false, e.reason(), e.to_string());
        })?;
    p.status.secret_arn = Some(meta.arn.clone());
    p.condition(
        SECRET_READY,
        true,
        Reason::Reconciled,
        "secret exists, is ours and carries the required tags and KMS key",
    );

    // A rotation interrupted by a crash is finished (or rolled back) before anything else
    // reads AWSCURRENT: its state lives in Secrets Manager alone. With a Lambda rotator the
    // pending version is the Lambda's business, never ours.
    let ours = rotation_spec
        .as_ref()
        .is_none_or(|r| r.rotator == Rotator::Controller);
    let meta = if ours {
        rotate::resume_rotation(m, &meta, p).await?
    } else {
        meta
    };

    // A secret this reconcile created holds the value we wrote, unless AWSCURRENT moved since.
    let current = match written.filter(|w| meta.current_version() == Some(w.version_id.as_str())) {
        Some(written) => written,
        None => aws_secret::current_value(s, &meta).await?,
    };
    user::ensure_user(m, &current, p).await.inspect_err(|e| {
        p.condition(USER_READY, false, e.reason(), e.to_string());
    })?;
    rotate::configure_rotator(s, &meta, m.rotation, p).await?;

    let current = match rotate::maybe_rotate(m, &meta, &current, p).await? {
        Some(rotated) => rotated,
        None => current,
    };
    p.status.current_username = Some(current.value.username.clone());
    p.status.strategy = Some(strategy_name(strategy).into());
    propagate::sync_and_roll(s, &current, p).await?;
    // Last: a policy Secrets Manager refuses must not hold up rotation or the sync.
    let due = super::access::sync(cred, &access, db, &meta, ctx, &mut p.status, p.generation)
        .await
        .inspect_err(|e| {
            p.condition(ACCESS_POLICY_READY, false, e.reason(), e.to_string());
        })?;
    if let Some(due) = due {
        p.requeue_within(due);
    }
    Ok(())
}

fn strategy_name(s: RotationStrategy) -> &'static str {
    match s {
        RotationStrategy::AlternatingUsers => "alternating-users",
        RotationStrategy::SingleUser => "single-user",
    }
}

/// The credential's rotation settings, or the database's defaults.
fn rotation_spec(cred: &RdsCredential, db: &RdsDatabase) -> Option<RotationSpec> {
    cred.spec
        .rotation
        .as_deref()
        .cloned()
        .or_else(|| db.spec.rotation_defaults.clone())
}

fn user_plan(cred: &RdsCredential, db: &ResolvedDatabase) -> Result<UserPlan, Error> {
    let username = cred
        .spec
        .username
        .clone()
        .ok_or_else(|| Error::refused(Reason::InvalidSpec, "username is required"))?;
    let plan = UserPlan {
        login_users: vec![username.clone(), UserPlan::clone_username(&username)],
        username,
        grants: cred.spec.privileges.clone().unwrap_or_default(),
        roles: cred.spec.roles.clone().unwrap_or_default(),
    };
    // One reason per kind of problem: a grant or role the engine refuses is InvalidPrivileges
    // (as the plan's own check says), a name InvalidUser.
    plan.validate(db.engine).map_err(|e| {
        let reason = match e {
            crate::engine::DbError::InvalidGrant { .. } => Reason::InvalidPrivileges,
            _ => Reason::InvalidUser,
        };
        Error::refused(reason, e.to_string())
    })?;
    Ok(plan)
}

pub(super) fn parse_time(s: Option<&str>) -> Option<Timestamp> {
    s.and_then(|s| s.parse().ok())
}

/// Time from `from` to `to` (zero when `to` is not later).
pub(super) fn until(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or_default()
}

#[cfg(test)]
mod settled_tests {
    use super::*;

    fn cred(edit: impl FnOnce(&mut serde_json::Value)) -> RdsCredential {
        let mut v = serde_json::json!({
            "apiVersion": "rdscred.io/v1alpha1", "kind": "RdsCredential",
            "metadata": { "name": "c", "namespace": "ns", "generation": 2 },
            "spec": { "databaseRef": { "name": "db" }, "username": "u", "secret": { "name": "s" } },
            "status": {
                "observedGeneration": 2,
                "conditions": [{ "type": "Ready", "status": "True", "reason": "Ready", "message": "",
                                 "lastTransitionTime": "2026-01-01T00:00:00Z" }],
            },
        });
        edit(&mut v);
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn only_a_ready_current_idle_credential_is_settled() {
        type Edit = fn(&mut serde_json::Value);
        let table: [(&str, Edit, bool); 8] = [
            ("Ready at its generation", |_| {}, true),
            (
                "new: no status",
                |v| v["status"] = serde_json::Value::Null,
                false,
            ),
            (
                "spec changed",
                |v| v["metadata"]["generation"] = 3.into(),
                false,
            ),
            (
                "not Ready",
                |v| v["status"]["conditions"][0]["status"] = "False".into(),
                false,
            ),
            (
                "being deleted",
                |v| v["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into(),
                false,
            ),
            (
                "rotation due",
                |v| v["status"]["nextRotationTime"] = "2026-01-01T00:00:00Z".into(),
                false,
            ),
            (
                "rotation requested, not answered",
                |v| v["metadata"]["annotations"] = serde_json::json!({ ROTATE_ANNOTATION: "now" }),
                false,
            ),
            (
                "rotation request answered",
                |v| {
                    v["metadata"]["annotations"] = serde_json::json!({ ROTATE_ANNOTATION: "now" });
                    v["status"]["lastRotationRequest"] = "now".into();
                },
                true,
            ),
        ];
        for (why, edit, want) in table {
            assert_eq!(is_settled(&cred(edit)), want, "{why}");
        }
    }
}
