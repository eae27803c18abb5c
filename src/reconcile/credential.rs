//! Reconcile of `RdsCredential`.
//!
//! Order matters for safety: every refusal (namespace not admitted, secret name outside the
//! prefix, a competing claim, a secret or user we do not own) is decided before anything is
//! written anywhere. Then: the Secrets Manager secret, an interrupted rotation (resumed before
//! anything reads AWSCURRENT), the database user and its privileges, drift, a due rotation,
//! the Kubernetes Secret, and the rollout of dependent workloads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, finalizer};
use tracing::{info, instrument, warn};

use super::conditions::{
    self, ACCESS_POLICY_READY, DRIFTED, READY, ROTATING, SECRET_READY, SYNCED, USER_READY,
};
use super::database::{ResolvedDatabase, resolved_from_status};
use super::request::{self, ClaimState, Trigger};
use super::status_write::{self, StatusBase};
use super::{Context, Error, FINALIZER};
use crate::aws::ownership::Owner;
use crate::aws::{AWSCURRENT, NewSecret, SecretMeta, SecretVersion, VersionSelector};
use crate::crd::{
    CredentialMode, DeletionPolicy, DriftPolicy, PasswordSpec, RdsCredential, RdsCredentialStatus,
    RdsDatabase, RotationClaim, RotationSpec, RotationStrategy, Rotator,
};
use crate::engine::{self, Admin, Login, UserPlan};
use crate::propagation::{self, SyncedValue};
use crate::rotation::{self, RotationJob, RotationOutcome};
use crate::schedule::{Due, RotationPlan};
use crate::secret::{RdsSecretValue, generate_password};

/// Annotation that requests a rotation now; any new value triggers one.
pub const ROTATE_ANNOTATION: &str = "rdscred.io/rotate-requested-at";

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
    let result = finalizer(&api, FINALIZER, cred, |event| async {
        match event {
            finalizer::Event::Apply(c) => apply(&c, &ctx).await,
            finalizer::Event::Cleanup(c) => cleanup(&c, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => Error::Kube(e),
        other => Error::not_ready("FinalizerError", other.to_string()),
    });
    ctx.metrics.reconcile_finished(
        "RdsCredential",
        started.elapsed(),
        result.as_ref().err().map(Error::reason),
    );
    result
}

/// Status under construction plus the Events to publish once it is written.
struct Progress {
    status: RdsCredentialStatus,
    generation: Option<i64>,
    /// Earliest time something is due again (rotation, drift check, rollout watch, poll).
    requeue: Duration,
    /// What status holds in the API server and at which resourceVersion: every write is
    /// guarded by it.
    base: StatusBase,
}

impl Progress {
    fn condition(&mut self, type_: &str, ok: bool, reason: &str, message: impl Into<String>) {
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
        self.requeue = self.requeue.min(d.max(Duration::from_secs(1)));
    }
    /// Like [`requeue_within`](Self::requeue_within) below one second: only for waits that
    /// end on an outside event (a rollout completing) with a request queued behind them.
    fn requeue_soon(&mut self, d: Duration) {
        self.requeue = self.requeue.min(d.max(Duration::from_millis(100)));
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
        base: StatusBase::of(cred),
    };
    let result = apply_steps(cred, ctx, &mut p).await;
    match &result {
        Ok(()) => {
            p.condition(READY, true, "Ready", ready_message(cred, &p.status));
            ctx.metrics
                .set_credential_ready(&ns_of(cred), &cred.name_any(), "True");
        }
        Err(e) => {
            p.condition(READY, false, e.reason(), e.to_string());
            ctx.metrics
                .set_credential_ready(&ns_of(cred), &cred.name_any(), "False");
            let before = conditions::get(&old.conditions, READY)
                .map(|c| (c.reason.clone(), c.message.clone()));
            if before != Some((e.reason().to_string(), e.to_string())) && !e.is_conflict() {
                ctx.event(cred, true, e.reason(), "Reconcile", e.to_string())
                    .await;
            }
            warn!(reason = e.reason(), error = %e, "reconcile failed");
        }
    }
    p.status.observed_generation = cred.metadata.generation;
    let status = p.status.clone();
    status_write::write(&api, &cred.name_any(), &mut p.base, &status).await?;
    result?;
    ctx.reset_failures(&super::object_key(cred));
    Ok(Action::requeue(super::jitter(p.requeue, 0.1)))
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

async fn apply_steps(cred: &RdsCredential, ctx: &Context, p: &mut Progress) -> Result<(), Error> {
    let db_obj = database_of(cred, ctx).await?;
    admit_namespace(cred, &db_obj, ctx).await?;
    let db = resolved_from_status(&db_obj, ctx, cred.spec.mode == CredentialMode::Managed).await?;
    // Every refusal of the spec is decided here, before anything is written anywhere.
    super::plan::prepare(cred, &db_obj, &db, ctx, &p.status).await?;
    // The bulk poller triggers a reconcile when AWSCURRENT moves; requeue only for a per-credential poll interval shorter than its.
    if poll_interval(cred, ctx) < ctx.settings.poll_interval {
        p.requeue_within(poll_interval(cred, ctx));
    }
    match cred.spec.mode {
        CredentialMode::SyncOnly => {
            super::access::plan(cred, &db_obj, ctx)?;
            apply_sync_only(cred, &db, ctx, p).await
        }
        CredentialMode::Managed => apply_managed(cred, &db_obj, &db, ctx, p).await,
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

// ------------------------------------------------------------------ refusals (no side effects)

async fn database_of(cred: &RdsCredential, ctx: &Context) -> Result<RdsDatabase, Error> {
    let name = &cred.spec.database_ref.name;
    Api::<RdsDatabase>::all(ctx.client.clone())
        .get_opt(name)
        .await?
        .ok_or_else(|| {
            Error::refused(
                "DatabaseNotFound",
                format!("RdsDatabase {name:?} does not exist"),
            )
        })
}

/// A namespace may only use a database whose `namespaceSelector` matches its labels.
async fn admit_namespace(
    cred: &RdsCredential,
    db: &RdsDatabase,
    ctx: &Context,
) -> Result<(), Error> {
    let ns_name = ns_of(cred);
    let db_name = db.name_any();
    let Some(selector) = &db.spec.namespace_selector else {
        return Err(Error::refused(
            "NamespaceNotAdmitted",
            format!(
                "RdsDatabase {db_name} admits no namespace (spec.namespaceSelector is not set)"
            ),
        ));
    };
    let ns = Api::<Namespace>::all(ctx.client.clone())
        .get(&ns_name)
        .await?;
    if propagation::selector::matches(selector, ns.labels()) {
        Ok(())
    } else {
        Err(Error::refused(
            "NamespaceNotAdmitted",
            format!(
                "namespace {ns_name} is not admitted by RdsDatabase {db_name} (its labels do not match spec.namespaceSelector)"
            ),
        ))
    }
}

/// Managed secrets must live under the database's prefix; sync-only may also name the admin
/// secret when the database explicitly allows handing it out.
pub(super) fn check_secret_name(
    cred: &RdsCredential,
    db: &RdsDatabase,
    resolved: &ResolvedDatabase,
) -> Result<(), Error> {
    let name = &cred.spec.secret.name;
    let prefix = &db.spec.secret_name_prefix;
    if name.starts_with(prefix.as_str()) && !name.contains("..") {
        return Ok(());
    }
    let is_admin = secret_id_matches(name, &resolved.admin_secret_id)
        || db.spec.admin_login.secret_id.as_deref() == Some(name.as_str());
    if cred.spec.mode == CredentialMode::SyncOnly && is_admin {
        return if db.spec.allow_admin_secret_sync {
            Ok(())
        } else {
            Err(Error::refused(
                "AdminSecretSyncNotAllowed",
                format!(
                    "secret {name} is the admin secret of RdsDatabase {}; syncing it needs spec.allowAdminSecretSync: true there",
                    db.name_any()
                ),
            ))
        };
    }
    Err(Error::refused(
        "SecretNameOutsidePrefix",
        format!(
            "secret.name {name:?} must start with {prefix:?} (spec.secretNamePrefix of RdsDatabase {})",
            db.name_any()
        ),
    ))
}

/// Whether secret id `id` (name or ARN) names the secret `reference` (name or ARN). A secret's
/// ARN is `arn:…:secret:<name>-<6 random characters>`.
fn secret_id_matches(id: &str, reference: &str) -> bool {
    let name_of = |s: &str| match s.split_once(":secret:") {
        Some((_, rest)) if s.starts_with("arn:") => {
            rest.rsplit_once('-').map_or(rest, |(n, _)| n).to_string()
        }
        _ => s.to_string(),
    };
    id == reference || name_of(id) == name_of(reference)
}

/// Two credentials never claim one secret, nor one database user on one database. The older
/// claim wins (creation time, then uid), so the outcome does not depend on reconcile order.
pub(super) fn check_claims(cred: &RdsCredential, ctx: &Context) -> Result<(), Error> {
    let mine = claimed_names(cred);
    for other in ctx.all_credentials() {
        if other.uid() == cred.uid() || other.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let same_secret = other.spec.secret.name == cred.spec.secret.name;
        let same_db = other.spec.database_ref.name == cred.spec.database_ref.name;
        let user_clash = same_db && claimed_names(&other).iter().any(|n| mine.contains(n));
        if (same_secret || user_clash) && claim_is_older(&other, cred) {
            let what = if same_secret {
                format!("secret {}", cred.spec.secret.name)
            } else {
                format!(
                    "database user {} on RdsDatabase {}",
                    cred.spec.username.clone().unwrap_or_default(),
                    cred.spec.database_ref.name
                )
            };
            return Err(Error::refused(
                "AlreadyClaimed",
                format!(
                    "{what} is already claimed by RdsCredential {}/{}",
                    other.namespace().unwrap_or_default(),
                    other.name_any()
                ),
            ));
        }
    }
    Ok(())
}

/// The database names a managed credential uses: the user, its clone and (PostgreSQL) owner role.
fn claimed_names(cred: &RdsCredential) -> Vec<String> {
    match (&cred.spec.username, cred.spec.mode) {
        (Some(u), CredentialMode::Managed) => vec![
            u.clone(),
            UserPlan::clone_username(u),
            UserPlan::owner_role(u),
        ],
        _ => Vec::new(),
    }
}

/// Whether `a`'s claim precedes `b`'s: a credential already holding its secret (status has
/// the ARN) wins over one that does not; then the older one (creation timestamps have
/// one-second resolution), then the smaller uid, so every replica decides the same way.
fn claim_is_older(a: &RdsCredential, b: &RdsCredential) -> bool {
    let established = |c: &RdsCredential| c.status.as_ref().is_some_and(|s| s.secret_arn.is_some());
    let key = |c: &RdsCredential| {
        (
            !established(c),
            c.metadata.creation_timestamp.as_ref().map(|t| t.0),
            c.uid(),
        )
    };
    key(a) < key(b)
}

fn owner_of(cred: &RdsCredential, ctx: &Context) -> Owner {
    Owner {
        cluster: ctx.settings.cluster_name.clone(),
        namespace: ns_of(cred),
        name: cred.name_any(),
        uid: cred.uid().unwrap_or_default(),
    }
}

/// Ours = written by this cluster for this namespace/name. A credential deleted with Retain and
/// created again (new uid) takes its secret back; anything else is someone else's.
fn owned_by(meta: &SecretMeta, owner: &Owner) -> bool {
    meta.owner().is_some_and(|o| {
        o.cluster == owner.cluster && o.namespace == owner.namespace && o.name == owner.name
    })
}

// ------------------------------------------------------------------ sync-only

async fn apply_sync_only(
    cred: &RdsCredential,
    db: &ResolvedDatabase,
    ctx: &Context,
    p: &mut Progress,
) -> Result<(), Error> {
    let id = &cred.spec.secret.name;
    let meta = match db.scope.secrets.describe(id).await {
        Ok(Some(m)) => m,
        Ok(None) => {
            let e = Error::not_ready(
                "SecretNotFound",
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
        "Found",
        "following AWSCURRENT of an existing secret",
    );
    let current = current_value(cred, &meta, db, ctx).await?;
    sync_and_roll(cred, &current, ctx, p).await
}

// ------------------------------------------------------------------ managed

async fn apply_managed(
    cred: &RdsCredential,
    db_obj: &RdsDatabase,
    db: &ResolvedDatabase,
    ctx: &Context,
    p: &mut Progress,
) -> Result<(), Error> {
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
    let admin = ctx.admin_logins.get(db).await?;

    let meta = ensure_aws_secret(cred, db_obj, db, &plan, &admin, ctx, p)
        .await
        .inspect_err(|e| {
            p.condition(SECRET_READY, false, e.reason(), e.to_string());
        })?;
    p.status.secret_arn = Some(meta.arn.clone());
    p.condition(
        SECRET_READY,
        true,
        "Reconciled",
        "secret exists, is ours and carries the required tags and KMS key",
    );

    // A rotation interrupted by a crash is finished (or rolled back) before anything else
    // reads AWSCURRENT: its state lives in Secrets Manager alone. With a Lambda rotator the
    // pending version is the Lambda's business, never ours.
    let ours = rotation_spec
        .as_ref()
        .is_none_or(|r| r.rotator == Rotator::Controller);
    let meta = if ours {
        resume_rotation(
            cred,
            db,
            &plan,
            &admin,
            &meta,
            rotation_spec.as_ref(),
            ctx,
            p,
        )
        .await?
    } else {
        meta
    };

    let current = current_value(cred, &meta, db, ctx).await?;
    ensure_user(cred, db, &plan, &admin, &current, ctx, p)
        .await
        .inspect_err(|e| {
            p.condition(USER_READY, false, e.reason(), e.to_string());
        })?;
    configure_rotator(cred, &meta, rotation_spec.as_ref(), db, ctx, p).await?;

    let current = match maybe_rotate(
        cred,
        db,
        &plan,
        &admin,
        &meta,
        &current,
        rotation_spec.as_ref(),
        ctx,
        p,
    )
    .await?
    {
        Some(rotated) => rotated,
        None => current,
    };
    p.status.current_username = Some(current.value.username.clone());
    p.status.strategy = Some(strategy_name(strategy).into());
    sync_and_roll(cred, &current, ctx, p).await?;
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
        .clone()
        .or_else(|| db.spec.rotation_defaults.clone())
}

fn user_plan(cred: &RdsCredential, db: &ResolvedDatabase) -> Result<UserPlan, Error> {
    let username = cred
        .spec
        .username
        .clone()
        .ok_or_else(|| Error::refused("InvalidSpec", "username is required"))?;
    let plan = UserPlan {
        login_users: vec![username.clone(), UserPlan::clone_username(&username)],
        username,
        grants: cred.spec.privileges.clone().unwrap_or_default(),
        roles: cred.spec.roles.clone().unwrap_or_default(),
    };
    plan.validate(db.engine)
        .map_err(|e| Error::refused("InvalidUser", e.to_string()))?;
    Ok(plan)
}

/// The secret exists, is ours, and its metadata matches the spec. A missing secret is
/// created (deterministic token: a retry after a crash does not make a second version).
#[allow(clippy::too_many_arguments)]
async fn ensure_aws_secret(
    cred: &RdsCredential,
    db_obj: &RdsDatabase,
    db: &ResolvedDatabase,
    plan: &UserPlan,
    admin: &Login,
    ctx: &Context,
    p: &mut Progress,
) -> Result<SecretMeta, Error> {
    let owner = owner_of(cred, ctx);
    let spec = &cred.spec.secret;
    let secrets = &db.scope.secrets;
    let tags = desired_tags(cred, db_obj, &owner);
    // Cached metadata only while the spec is unchanged: a spec change re-reads AWS.
    let cached = (p.status.observed_generation == cred.metadata.generation)
        .then(|| ctx.secrets.fresh(&spec.name, cache_max_age(cred, ctx)))
        .flatten();
    let meta = match cached {
        Some(m) => Some(m),
        None => secrets.describe(&spec.name).await?,
    };
    let Some(mut meta) = meta else {
        return create_aws_secret(cred, db_obj, db, plan, admin, &tags, ctx).await;
    };
    if !owned_by(&meta, &owner) {
        return Err(Error::refused(
            "SecretNotOwned",
            format!(
                "secret {} exists and is not owned by this RdsCredential (ownership tags differ); rdscred never takes over a secret it did not create",
                meta.name
            ),
        ));
    }
    if meta.is_scheduled_for_deletion() {
        secrets.restore(&meta.arn).await?;
        ctx.event(
            cred,
            false,
            "SecretRestored",
            "Restore",
            format!(
                "secret {} was scheduled for deletion and has been restored",
                meta.name
            ),
        )
        .await;
        meta = refreshed_meta(db, ctx, &meta.arn).await?;
    }
    let kms = db_obj.spec.kms_key_id.as_deref();
    let description = spec.description.as_deref();
    let mut changed = false;
    if meta.description.as_deref() != description
        || (kms.is_some() && !kms_matches(meta.kms_key_id.as_deref(), kms))
    {
        secrets
            .update_description_and_kms(&meta.arn, description, kms)
            .await?;
        changed = true;
    }
    changed |= secrets.sync_tags(&meta, &tags).await?;
    let replicas = replica_regions(spec);
    changed |= secrets.sync_replicas(&meta, &replicas).await?;
    if changed {
        ctx.event(
            cred,
            false,
            "SecretUpdated",
            "Update",
            format!(
                "secret {} metadata brought in line with the spec",
                meta.name
            ),
        )
        .await;
        meta = refreshed_meta(db, ctx, &meta.arn).await?;
    }
    ctx.secrets.remember(&meta);
    Ok(meta)
}

/// DescribeSecret after we changed the secret (restore, metadata update, rotation), recorded in
/// the cache like every metadata we see.
async fn refreshed_meta(
    db: &ResolvedDatabase,
    ctx: &Context,
    arn: &str,
) -> Result<SecretMeta, Error> {
    let meta = db.scope.secrets.describe(arn).await?.ok_or_else(|| {
        Error::not_ready(
            "SecretNotFound",
            format!("secret {arn} vanished after it was changed"),
        )
    })?;
    ctx.secrets.remember(&meta);
    Ok(meta)
}

/// The spec's replica regions as (region, KMS key) pairs.
fn replica_regions(spec: &crate::crd::SecretSpec) -> Vec<(String, Option<String>)> {
    spec.replica_regions
        .iter()
        .map(|r| (r.region.clone(), r.kms_key_id.clone()))
        .collect()
}

/// How old cached secret metadata may be: a bit more than one poll, so a credential between
/// two polls does not describe its secret itself.
fn cache_max_age(cred: &RdsCredential, ctx: &Context) -> Duration {
    match cred.spec.poll_interval {
        Some(d) => Duration::from(d),
        None => ctx.settings.poll_interval.mul_f64(2.5),
    }
}

fn kms_matches(actual: Option<&str>, wanted: Option<&str>) -> bool {
    match (actual, wanted) {
        (Some(a), Some(w)) => {
            a == w || a.ends_with(w.trim_start_matches("alias/")) || w.ends_with(a)
        }
        (None, None) => true,
        _ => false,
    }
}

/// Database tags, then the credential's, then ownership (which always win).
fn desired_tags(
    cred: &RdsCredential,
    db: &RdsDatabase,
    owner: &Owner,
) -> std::collections::BTreeMap<String, String> {
    let mut tags = cred.spec.secret.tags.clone();
    tags.extend(db.spec.tags.clone());
    tags.extend(owner.tags());
    tags
}

#[allow(clippy::too_many_arguments)]
async fn create_aws_secret(
    cred: &RdsCredential,
    db_obj: &RdsDatabase,
    db: &ResolvedDatabase,
    plan: &UserPlan,
    admin: &Login,
    tags: &std::collections::BTreeMap<String, String>,
    ctx: &Context,
) -> Result<SecretMeta, Error> {
    // A user that exists before its secret was never ours: refuse instead of claiming it.
    let mut conn = Admin::connect(&db.target(None), admin).await?;
    let exists = conn.user_exists(&plan.username).await;
    conn.close().await;
    if exists? {
        return Err(Error::refused(
            "UserExists",
            format!(
                "database user {} already exists and no secret of this credential holds it; rdscred never takes over a user it did not create",
                plan.username
            ),
        ));
    }
    let policy = rotation_spec(cred, db_obj)
        .map(|r| r.password)
        .unwrap_or_default();
    let value = initial_value(db, plan, &policy)?;
    let spec = &cred.spec.secret;
    let replicas = replica_regions(spec);
    let token = rotation::client_request_token(&cred.uid().unwrap_or_default(), "initial");
    let json = value.to_secret_json();
    let meta = db
        .scope
        .secrets
        .create(NewSecret {
            name: &spec.name,
            value: &json,
            description: spec.description.as_deref(),
            kms_key_id: db_obj.spec.kms_key_id.as_deref(),
            tags,
            replica_regions: &replicas,
            client_request_token: &token,
        })
        .await?;
    info!(secret = %meta.name, "created Secrets Manager secret");
    ctx.event(
        cred,
        false,
        "SecretCreated",
        "Create",
        format!("created secret {} ({})", meta.name, meta.arn),
    )
    .await;
    ctx.secrets.remember(&meta);
    Ok(meta)
}

fn initial_value(
    db: &ResolvedDatabase,
    plan: &UserPlan,
    policy: &PasswordSpec,
) -> Result<RdsSecretValue, Error> {
    Ok(RdsSecretValue {
        engine: db.engine.as_str().into(),
        host: db.endpoint.host.clone(),
        port: db.endpoint.port,
        username: plan.username.clone(),
        password: generate_password(policy, db.engine)?,
        dbname: db.dbname.clone(),
        db_instance_identifier: db.db_instance_identifier.clone(),
        db_cluster_identifier: db.db_cluster_identifier.clone(),
        masterarn: None,
    })
}

/// AWSCURRENT with its value. Read from the Kubernetes Secret when that already holds this
/// exact version (no GetSecretValue in steady state), else from Secrets Manager by stage.
async fn current_value(
    cred: &RdsCredential,
    meta: &SecretMeta,
    db: &ResolvedDatabase,
    ctx: &Context,
) -> Result<Current, Error> {
    let Some(version) = meta.current_version() else {
        return Err(Error::not_ready(
            "NoCurrentVersion",
            format!("secret {} has no AWSCURRENT version", meta.name),
        ));
    };
    if let Some(value) = propagation::sync::read_synced(ctx, cred, version).await? {
        return Ok(Current {
            version_id: version.to_string(),
            value,
        });
    }
    let v: SecretVersion = db
        .scope
        .secrets
        .get_value(&meta.arn, VersionSelector::Stage(AWSCURRENT))
        .await?
        .ok_or_else(|| {
            Error::not_ready(
                "NoCurrentVersion",
                format!("secret {} has no AWSCURRENT version", meta.name),
            )
        })?;
    let mut value =
        RdsSecretValue::parse(v.value.expose()).map_err(|source| Error::SecretShape {
            id: meta.name.clone(),
            source,
        })?;
    fill_connection_defaults(&mut value, db);
    Ok(Current {
        version_id: v.version_id,
        value,
    })
}

/// RDS's own master secret holds only username and password: complete it from the database.
fn fill_connection_defaults(value: &mut RdsSecretValue, db: &ResolvedDatabase) {
    if value.host.is_empty() {
        value.host = db.endpoint.host.clone();
    }
    if value.port == 0 {
        value.port = db.endpoint.port;
    }
    if value.engine.is_empty() {
        value.engine = db.engine.as_str().into();
    }
    if value.dbname.is_none() {
        value.dbname = db.dbname.clone();
    }
}

/// AWSCURRENT: version id and parsed value.
#[derive(Clone, Debug)]
pub struct Current {
    pub version_id: String,
    pub value: RdsSecretValue,
}

impl Current {
    fn login(&self) -> Login {
        Login {
            username: self.value.username.clone(),
            password: self.value.password.clone(),
        }
    }
}

/// The login users exist, hold exactly the declared privileges, and AWSCURRENT logs in
/// (the drift check). Drift is reported and, with `driftPolicy: repair`, repaired.
#[allow(clippy::too_many_arguments)]
async fn ensure_user(
    cred: &RdsCredential,
    db: &ResolvedDatabase,
    plan: &UserPlan,
    admin: &Login,
    current: &Current,
    ctx: &Context,
    p: &mut Progress,
) -> Result<(), Error> {
    if !plan.login_users.contains(&current.value.username) {
        return Err(Error::refused(
            "UnexpectedUsername",
            format!(
                "AWSCURRENT names user {:?}, which is not {} or its clone",
                current.value.username, plan.username
            ),
        ));
    }
    let mut conn = Admin::connect(&db.target(None), admin).await?;
    let result = async {
        if conn
            .ensure_login_user(plan, &current.value.username, &current.value.password)
            .await?
        {
            ctx.event(
                cred,
                false,
                "UserCreated",
                "Create",
                format!("created database user {}", current.value.username),
            )
            .await;
        }
        let changes = conn.sync_privileges(plan).await?;
        if !changes.granted.is_empty() || !changes.revoked.is_empty() {
            ctx.event(
                cred,
                false,
                "PrivilegesChanged",
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
    conn.close().await;
    result?;
    check_drift(cred, db, admin, current, ctx, p).await?;
    p.condition(
        USER_READY,
        true,
        "LoginVerified",
        format!(
            "user {} has the declared privileges and AWSCURRENT logs in",
            current.value.username
        ),
    );
    Ok(())
}

async fn check_drift(
    cred: &RdsCredential,
    db: &ResolvedDatabase,
    admin: &Login,
    current: &Current,
    ctx: &Context,
    p: &mut Progress,
) -> Result<(), Error> {
    let drift = cred.spec.drift.clone().unwrap_or_default();
    let interval = drift
        .interval
        .map(Duration::from)
        .unwrap_or(ctx.settings.drift_interval);
    p.requeue_within(interval);
    // Stamped at most twice per interval: each status write is a watch event that triggers another reconcile, so a fresh stamp every time would reconcile in a loop.
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
                    false,
                    "DriftResolved",
                    "DriftCheck",
                    "AWSCURRENT logs in again".into(),
                )
                .await;
            }
            p.condition(DRIFTED, false, "InSync", "AWSCURRENT logs in");
            ctx.metrics.drift(&ns_of(cred), &cred.name_any(), false);
            Ok(())
        }
        Err(engine::DbError::AuthFailed { .. }) => {
            ctx.metrics.drift(&ns_of(cred), &cred.name_any(), true);
            let msg = format!(
                "AWSCURRENT no longer logs in as {}: the password was changed outside rdscred",
                login.username
            );
            p.condition(DRIFTED, true, "PasswordChanged", msg.clone());
            ctx.event(cred, true, "DriftDetected", "DriftCheck", msg.clone())
                .await;
            if drift.policy != DriftPolicy::Repair {
                return Err(Error::refused(
                    "Drifted",
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
                    "DriftRepairDeferred",
                    format!(
                        "{msg}; not repaired: AWSCURRENT is no longer version {} (or a rotation is pending), so the next reconcile decides from the new state",
                        current.version_id
                    ),
                ));
            }
            let mut conn = Admin::connect(&target, admin).await?;
            let reset = conn.set_password(&login.username, &login.password).await;
            conn.close().await;
            reset?;
            engine::check_login(&target, &login).await?;
            ctx.event(
                cred,
                false,
                "DriftRepaired",
                "DriftRepair",
                format!("reset the password of {} to AWSCURRENT", login.username),
            )
            .await;
            p.condition(
                DRIFTED,
                false,
                "Repaired",
                "password reset to AWSCURRENT with the admin login",
            );
            ctx.metrics.drift(&ns_of(cred), &cred.name_any(), false);
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

// ------------------------------------------------------------------ rotation

/// Finishes (or rolls back) a rotation interrupted by a crash, then records any rotation of
/// ours that the status does not show yet (one finished by this call, or one whose controller
/// died after finishSecret but before writing the status). Recording it answers the request
/// that started it (annotation, schedule): otherwise the next step would rotate AGAIN at once,
/// before the workloads were rolled onto the resumed version, and under alternating users
/// re-password the user those pods still run with.
#[allow(clippy::too_many_arguments)]
async fn resume_rotation(
    cred: &RdsCredential,
    db: &ResolvedDatabase,
    plan: &UserPlan,
    admin: &Login,
    meta: &SecretMeta,
    spec: Option<&RotationSpec>,
    ctx: &Context,
    p: &mut Progress,
) -> Result<SecretMeta, Error> {
    let uid = cred.uid().unwrap_or_default();
    let meta = if meta.pending_version().is_some() {
        let policy = spec.map(|r| r.password.clone()).unwrap_or_default();
        let target = db.target(None);
        let job = RotationJob {
            secret_id: &meta.arn,
            secrets: &db.scope.secrets,
            target: &target,
            admin,
            plan,
            strategy: spec.map(|r| r.strategy).unwrap_or_default(),
            password: &policy,
            token_seed: &uid,
            crash_point: None,
        };
        let outcome = rotation::resume_pending(&job)
            .await
            .map_err(|e| rotation_error(e, p))?;
        if let RotationOutcome::Completed {
            version_id,
            username,
        } = &outcome
        {
            ctx.event(
                cred,
                false,
                "RotationResumed",
                "Rotate",
                format!(
                    "finished an interrupted rotation: AWSCURRENT is now {version_id} ({username})"
                ),
            )
            .await;
        }
        refreshed_meta(db, ctx, &meta.arn).await?
    } else {
        meta.clone()
    };
    settle_claim(cred, &meta, spec, ctx, p)?;
    Ok(meta)
}

/// What the rotation claim in status says now that AWSCURRENT is known (see
/// [`request::claim_state`]). A completed claim is a rotation whose controller died (or whose
/// status write was lost) after finishSecret, or the one just finished by resuming it: it is
/// recorded as the answer to its request, or the next step would rotate AGAIN for the same
/// request, before the workloads were rolled onto this version, and under alternating users
/// re-password the user those pods still run with.
fn settle_claim(
    cred: &RdsCredential,
    meta: &SecretMeta,
    spec: Option<&RotationSpec>,
    ctx: &Context,
    p: &mut Progress,
) -> Result<(), Error> {
    let Some(current) = meta.current_version() else {
        return Ok(());
    };
    let uid = cred.uid().unwrap_or_default();
    let state = request::claim_state(p.status.rotation_claim.as_ref(), current, |from, to| {
        rotation::made_by_rotation_from(&uid, from, to)
    });
    match state {
        ClaimState::None | ClaimState::Open => {}
        ClaimState::Void => {
            info!(version = %current, "AWSCURRENT moved outside the claimed rotation; claim dropped");
            p.status.rotation_claim = None;
        }
        ClaimState::Completed => {
            let claim = p.status.rotation_claim.take().expect("a completed claim");
            info!(version = %current, from_version = %claim.from_version, trigger = %claim.trigger, "recording a claimed rotation finished earlier");
            let now = Timestamp::now();
            record_rotation(cred, &claim, now, ctx, p);
            p.condition(
                ROTATING,
                false,
                "Succeeded",
                format!("AWSCURRENT is now {current} (a claimed rotation, finished)"),
            );
            if let Some(spec) = spec {
                schedule_next_rotation(spec, now, p)?;
            }
        }
    }
    Ok(())
}

/// A rotation served its claim: the request is answered.
fn record_rotation(
    cred: &RdsCredential,
    claim: &RotationClaim,
    now: Timestamp,
    ctx: &Context,
    p: &mut Progress,
) {
    p.status.last_rotation_time = Some(now.to_string());
    if claim.trigger == Trigger::Annotation.as_str() {
        p.status.last_rotation_request = claim.request.clone();
    }
    ctx.metrics
        .record_last_rotation(&ns_of(cred), &cred.name_any(), now);
}

fn rotation_error(e: rotation::RotationError, p: &mut Progress) -> Error {
    let step = e.step();
    let reason = e.reason();
    p.condition(ROTATING, false, reason, format!("{e}"));
    Error::Rotation {
        step: step.as_str(),
        cause: Box::new(Error::not_ready(reason, e.to_string())),
    }
}

/// Native rotation (`rotator: lambda`) is configured on the secret and kept in sync; turning
/// it off in the spec cancels it. What was applied is remembered in status, so it is applied
/// again only when the spec changes or AWS shows rotation off (some emulators do not echo
/// schedule expressions back, and comparing against them would re-apply it every time).
async fn configure_rotator(
    cred: &RdsCredential,
    meta: &SecretMeta,
    spec: Option<&RotationSpec>,
    db: &ResolvedDatabase,
    ctx: &Context,
    p: &mut Progress,
) -> Result<(), Error> {
    let secrets = &db.scope.secrets;
    match spec {
        Some(r) if r.rotator == Rotator::Lambda => {
            let lambda = r.lambda_arn.clone().unwrap_or_default();
            let rules = lambda_rules(r)?;
            let applied = format!("{lambda} {rules:?}");
            let in_sync = meta.rotation_enabled
                && meta.rotation_lambda_arn.as_deref() == Some(lambda.as_str())
                && p.status.lambda_rotation.as_deref() == Some(applied.as_str());
            if !in_sync {
                secrets
                    .configure_lambda_rotation(&meta.arn, &lambda, &rules, false)
                    .await?;
                ctx.event(
                    cred,
                    false,
                    "LambdaRotationConfigured",
                    "Configure",
                    format!("native rotation with {lambda}"),
                )
                .await;
            }
            p.status.lambda_rotation = Some(applied);
        }
        _ => {
            if meta.rotation_enabled {
                secrets.disable_rotation(&meta.arn).await?;
                ctx.event(
                    cred,
                    false,
                    "LambdaRotationDisabled",
                    "Configure",
                    "native rotation turned off: rdscred rotates".into(),
                )
                .await;
            }
            p.status.lambda_rotation = None;
        }
    }
    Ok(())
}

fn lambda_rules(r: &RotationSpec) -> Result<crate::aws::RotationRules, Error> {
    let s = r
        .schedule
        .clone()
        .ok_or_else(|| Error::refused("InvalidSpec", "rotator: lambda needs rotation.schedule"))?;
    RotationPlan::from_spec(&s)?;
    Ok(crate::aws::RotationRules {
        automatically_after_days: s.automatically_after_days.map(i64::from),
        schedule_expression: s.schedule_expression,
        duration: s.duration,
    })
}

/// Rotates when due (schedule, annotation or rotateImmediately) and allowed (minimum interval,
/// dependents done rolling). Returns the new AWSCURRENT when it rotated.
#[allow(clippy::too_many_arguments)]
async fn maybe_rotate(
    cred: &RdsCredential,
    db: &ResolvedDatabase,
    plan: &UserPlan,
    admin: &Login,
    meta: &SecretMeta,
    current: &Current,
    spec: Option<&RotationSpec>,
    ctx: &Context,
    p: &mut Progress,
) -> Result<Option<Current>, Error> {
    let Some(spec) = spec.filter(|s| s.rotator == Rotator::Controller) else {
        conditions::remove(&mut p.status.conditions, ROTATING);
        return Ok(None);
    };
    let now = Timestamp::now();
    // After settle_claim a claim in status is open (it starts from AWSCURRENT) or gone.
    let open_claim = p
        .status
        .rotation_claim
        .clone()
        .filter(|c| c.from_version == current.version_id);
    let schedule_due = schedule_due(cred, spec, now, p)?;
    let Some(req) = request::due_request(
        cred.annotations()
            .get(ROTATE_ANNOTATION)
            .map(String::as_str),
        p.status.last_rotation_request.as_deref(),
        spec.rotate_immediately,
        p.status.last_rotation_time.is_some(),
        open_claim.as_ref(),
        schedule_due,
    ) else {
        return Ok(None);
    };
    let trigger = req.trigger;
    // Alternating users: the dependents' own pod templates and rollout status say whether
    // the previous user is still in use, not bookkeeping in status that may be stale.
    let unsettled = if spec.strategy == RotationStrategy::AlternatingUsers {
        propagation::rollout::first_unsettled(
            ctx,
            cred,
            &propagation::sync::target_name(cred),
            &current.version_id,
        )
        .await?
    } else {
        None
    };
    if let Some(mut blocked) = rotation_blocked(
        spec,
        &p.status,
        &current.version_id,
        unsettled.as_ref(),
        now,
        ctx,
    ) {
        if let Some(v) = &req.value {
            blocked.message = format!(
                "request {v:?} is queued: {}; requests arriving meanwhile are coalesced into this one rotation",
                blocked.message
            );
        }
        let already_reported = conditions::get(&p.status.conditions, ROTATING)
            .is_some_and(|c| c.reason == blocked.reason);
        if blocked.reason == "RolloutTimedOut" && !already_reported {
            ctx.event(
                cred,
                true,
                blocked.reason,
                "Rotate",
                blocked.message.clone(),
            )
            .await;
        }
        p.condition(ROTATING, false, blocked.reason, blocked.message);
        if blocked.retry < Duration::from_secs(1) {
            p.requeue_soon(blocked.retry);
        } else {
            p.requeue_within(blocked.retry);
        }
        return Ok(None);
    }
    let Ok(_slot) = ctx.rotation_slots.clone().try_acquire_owned() else {
        p.condition(
            ROTATING,
            false,
            "Queued",
            "waiting for a rotation slot (--max-concurrent-rotations)",
        );
        // A rotation takes about a second: look again soon, but not so often that a long
        // queue of credentials turns into a stream of reconciles.
        p.requeue_within(Duration::from_secs(5));
        return Ok(None);
    };
    // Irreversible steps follow: decide from Secrets Manager's labels as they are now, not
    // from metadata a poll cached.
    let labels = refreshed_meta(db, ctx, &meta.arn).await?;
    if labels.current_version() != Some(current.version_id.as_str())
        || labels.pending_version().is_some()
    {
        info!(cached = %current.version_id, "AWSCURRENT moved or a rotation is pending since this reconcile read it; deciding again");
        p.requeue_soon(Duration::from_millis(200));
        return Ok(None);
    }
    // The claim: written (guarded by the resourceVersion this reconcile read) before the
    // first step, so that whoever reconciles next, after a crash or a lost write, serves this
    // same rotation instead of starting another one. A concurrent reconcile (another replica,
    // an older object) fails the precondition and decides again.
    let claim = match open_claim {
        Some(c) if !request::needs_claim(Some(&c), &req, &current.version_id) => c,
        _ => {
            let c = RotationClaim {
                trigger: trigger.as_str().into(),
                request: req.value.clone(),
                from_version: current.version_id.clone(),
                claimed_at: now.to_string(),
            };
            p.status.rotation_claim = Some(c.clone());
            p.condition(
                ROTATING,
                true,
                "InProgress",
                format!(
                    "rotating ({trigger}) from AWSCURRENT version {}",
                    current.version_id
                ),
            );
            p.checkpoint(cred, ctx).await?;
            c
        }
    };
    let started = Instant::now();
    let strategy = strategy_name(spec.strategy);
    let target = db.target(None);
    let uid = cred.uid().unwrap_or_default();
    let job = RotationJob {
        secret_id: &meta.arn,
        secrets: &db.scope.secrets,
        target: &target,
        admin,
        plan,
        strategy: spec.strategy,
        password: &spec.password,
        token_seed: &uid,
        crash_point: ctx.settings.crash_point.as_deref(),
    };
    info!(trigger = %trigger, strategy, from_version = %current.version_id, "rotating");
    match rotation::rotate(&job).await {
        Ok(RotationOutcome::Completed {
            version_id,
            username,
        }) => {
            ctx.metrics
                .rotation_finished(strategy, "success", started.elapsed());
            p.status.rotation_claim = None;
            record_rotation(cred, &claim, now, ctx, p);
            p.condition(
                ROTATING,
                false,
                "Succeeded",
                format!("rotated ({trigger}): AWSCURRENT is now {version_id} ({username})"),
            );
            ctx.event(cred, false, "Rotated", "Rotate", format!("rotated ({trigger}, {strategy}): AWSCURRENT is now version {version_id}, user {username}")).await;
            let fresh = refreshed_meta(db, ctx, &meta.arn).await?;
            let new = current_value(cred, &fresh, db, ctx).await?;
            schedule_next_rotation(spec, now, p)?;
            Ok(Some(new))
        }
        Ok(RotationOutcome::NothingPending) => Ok(None),
        Err(e) => {
            let result = if matches!(e, rotation::RotationError::TestFailedRolledBack { .. }) {
                "rolled_back"
            } else {
                "failure"
            };
            ctx.metrics
                .rotation_finished(strategy, result, started.elapsed());
            Err(rotation_error(e, p))
        }
    }
}

/// Whether the schedule is due now; when it is not, reports the next time in status and
/// requeues for it.
fn schedule_due(
    cred: &RdsCredential,
    spec: &RotationSpec,
    now: Timestamp,
    p: &mut Progress,
) -> Result<bool, Error> {
    let Some(schedule) = &spec.schedule else {
        return Ok(false);
    };
    let last = parse_time(p.status.last_rotation_time.as_deref())
        .or_else(|| cred.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now);
    let plan = RotationPlan::from_spec(schedule)?;
    match plan.due(last, now) {
        Due::Now => Ok(true),
        Due::At(t) => {
            p.status.next_rotation_time = Some(t.to_string());
            p.requeue_within(until(now, t));
            Ok(false)
        }
    }
}

fn schedule_next_rotation(
    spec: &RotationSpec,
    now: Timestamp,
    p: &mut Progress,
) -> Result<(), Error> {
    p.status.next_rotation_time = match &spec.schedule {
        Some(s) => match RotationPlan::from_spec(s)?.due(now, now) {
            Due::At(t) => Some(t.to_string()),
            Due::Now => Some(now.to_string()),
        },
        None => None,
    };
    Ok(())
}

/// Why a due rotation must wait, and when to look again.
struct Blocked {
    reason: &'static str,
    message: String,
    retry: Duration,
}

/// Why a due rotation must wait, if it must: AWSCURRENT not yet in the Kubernetes Secret (its
/// workloads have not even been rolled onto it), the minimum interval between rotations, and
/// (alternating users) dependents still rolling onto the last switch, since the next rotation
/// re-passwords the user their old pods still use. A rollout past its timeout is reported
/// (`RolloutTimedOut`) but still blocks: old pods may be the only ones serving, and
/// re-passwording their user would take them down.
fn rotation_blocked(
    spec: &RotationSpec,
    status: &RdsCredentialStatus,
    current_version: &str,
    unsettled: Option<&propagation::rollout::Unsettled>,
    now: Timestamp,
    ctx: &Context,
) -> Option<Blocked> {
    if status
        .synced_version_id
        .as_deref()
        .is_some_and(|synced| synced != current_version)
    {
        return Some(Blocked {
            reason: "Waiting",
            message: format!(
                "AWSCURRENT version {current_version} is not in the Kubernetes Secret yet; its workloads are rolled first"
            ),
            retry: Duration::from_secs(1),
        });
    }
    let min = spec
        .minimum_interval
        .map(Duration::from)
        .unwrap_or(ctx.settings.default_min_rotation_interval);
    if let Some(last) = parse_time(status.last_rotation_time.as_deref()) {
        let earliest = last + jiff::SignedDuration::try_from(min).unwrap_or_default();
        if earliest > now {
            return Some(Blocked {
                reason: "Waiting",
                message: format!("minimum interval between rotations: next allowed at {earliest}"),
                retry: until(now, earliest),
            });
        }
    }
    if spec.strategy == RotationStrategy::AlternatingUsers {
        let timeout = spec
            .rollout_timeout
            .map(Duration::from)
            .unwrap_or(ctx.settings.default_rollout_timeout);
        if let Some(w) = unsettled {
            // Rolled when its pod template got the version annotation; one not even rolled
            // yet (a rollout cut short) counts from when the Secret got the version.
            let since = w
                .restarted_at
                .or_else(|| parse_time(status.synced_at.as_deref()))
                .unwrap_or(now);
            let waited = until(since, now);
            let what = if w.rolled {
                "to finish rolling out"
            } else {
                "to be rolled onto AWSCURRENT"
            };
            return Some(if waited < timeout {
                Blocked {
                    reason: "Waiting",
                    message: format!(
                        "waiting for {:?} {} {what} before re-passwording the previous user",
                        w.kind, w.name
                    ),
                    // The wait ends with the rollout: look again soon, so the next rotation
                    // starts within about a second of it.
                    retry: (timeout - waited).min(Duration::from_millis(500)),
                }
            } else {
                Blocked {
                    reason: "RolloutTimedOut",
                    message: format!(
                        "{:?} {} has not finished rolling out {}s after the last rotation (rolloutTimeout {}s); the previous user keeps its password until it does",
                        w.kind,
                        w.name,
                        waited.as_secs(),
                        timeout.as_secs()
                    ),
                    retry: Duration::from_secs(30),
                }
            });
        }
    }
    None
}

fn parse_time(s: Option<&str>) -> Option<Timestamp> {
    s.and_then(|s| s.parse().ok())
}

/// Time from `from` to `to` (zero when `to` is not later).
fn until(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or_default()
}

// ------------------------------------------------------------------ propagation

async fn sync_and_roll(
    cred: &RdsCredential,
    current: &Current,
    ctx: &Context,
    p: &mut Progress,
) -> Result<(), Error> {
    let synced = SyncedValue {
        version_id: &current.version_id,
        value: &current.value,
    };
    let outcome = propagation::sync::write_target_secret(ctx, cred, &synced)
        .await
        .inspect_err(|e| {
            p.condition(SYNCED, false, e.reason(), e.to_string());
        })?;
    let previous = p.status.synced_version_id.clone();
    p.status.target_secret = Some(outcome.secret_name.clone());
    if outcome.written {
        ctx.metrics.secret_synced("written");
        if let Some(seen) = ctx.secrets.change_seen_at(&current.version_id) {
            ctx.metrics.sync_lag(seen.elapsed());
        }
        if let Some(event_time) = ctx.secrets.change_event_time(&current.version_id) {
            ctx.metrics.event_lag(event_time);
        }
        ctx.event(
            cred,
            false,
            "SecretSynced",
            "Sync",
            format!(
                "Secret {} now holds AWSCURRENT version {}",
                outcome.secret_name, current.version_id
            ),
        )
        .await;
    }
    // Roll only when the value really changed from one the workloads already ran with: never
    // on first creation (no previous version), never on a no-op reconcile. syncedVersionId
    // moves on only once every dependent is rolled: a rollout cut short (an error, the
    // cluster-wide rate limit, a crash) is finished by the next reconcile, and workloads
    // already annotated with this version are skipped, so nothing restarts twice.
    let changed = previous
        .as_deref()
        .is_some_and(|prev| prev != current.version_id);
    let mut rollout_left = None;
    if changed {
        // Entries for older versions describe rollouts this one supersedes.
        p.status
            .rolled_workloads
            .retain(|w| w.version_id == current.version_id);
        rollout_left = propagation::rollout::roll_dependents(
            ctx,
            cred,
            &outcome.secret_name,
            &current.version_id,
            &mut p.status.rolled_workloads,
        )
        .await
        .inspect_err(|e| {
            p.condition(
                SYNCED,
                false,
                e.reason(),
                format!(
                    "Secret {} holds AWSCURRENT version {}, but rolling its dependents failed: {e}",
                    outcome.secret_name, current.version_id
                ),
            )
        })?;
    }
    match rollout_left {
        Some(wait) => {
            p.condition(SYNCED, true, "RollingOut", format!(
                "Secret {} holds AWSCURRENT version {}; more dependents roll once the cluster-wide rollout limit allows",
                outcome.secret_name, current.version_id
            ));
            p.requeue_within(wait);
        }
        None => {
            if previous.as_deref() != Some(current.version_id.as_str()) {
                p.status.synced_version_id = Some(current.version_id.clone());
                p.status.synced_at = Some(Timestamp::now().to_string());
            }
            p.condition(
                SYNCED,
                true,
                "Synced",
                format!(
                    "Secret {} holds AWSCURRENT version {}",
                    outcome.secret_name, current.version_id
                ),
            );
        }
    }
    let pending =
        propagation::rollout::observe_completion(ctx, cred, &mut p.status.rolled_workloads).await?;
    if pending {
        // Rotation (alternating users) waits for completedAt; a Kubernetes GET per rolling
        // workload is cheap, so look again soon.
        p.requeue_within(Duration::from_secs(2));
    }
    Ok(())
}

// ------------------------------------------------------------------ deletion

async fn cleanup(cred: &RdsCredential, ctx: &Context) -> Result<Action, Error> {
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
        let admin = ctx.admin_logins.get(&db).await?;
        let mut conn = Admin::connect(&db.target(None), &admin).await?;
        let dropped = conn.drop_users(&plan).await;
        conn.close().await;
        if let Err(e) = dropped {
            let e = Error::from(e);
            ctx.event(
                cred,
                true,
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
        false,
        "Deleted",
        "Delete",
        format!(
            "dropped the database user and scheduled secret {} for deletion{replicas}",
            meta.name
        ),
    )
    .await;
    Ok(Action::await_change())
}
