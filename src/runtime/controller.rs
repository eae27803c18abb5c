//! The runtime: kube-runtime controllers for both kinds (watching owned Secrets, the databases
//! credentials depend on, and the bulk poller's triggers), bounded concurrency, error policy.
//!
//! Namespaced installs (`Scope::namespaces` non-empty) run one credential controller per
//! namespace with namespaced watches only, so a Role per namespace is enough; the only
//! cluster-wide reads are RdsDatabases (cluster-scoped) and `get` on the watched namespaces.
//!
//! With shards (`Scope::shard`, docs/sharding.md) one instance of all this runs per held shard:
//! its store keeps every credential (the claims check compares a credential with all others),
//! but only the shard's credentials are reconciled, and only shard 0 reconciles RdsDatabases.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self as kube_controller, Action, Config as ControllerConfig};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::context::{Context, object_key};
use crate::crd::{RdsCredential, RdsDatabase};
use crate::limit::Admit;
use crate::propagation::sync::MANAGED_BY_LABEL;
use crate::reconcile::{self, Error};
use crate::runtime::poller;
use crate::shard::ShardScope;

/// Which namespaces the credential controller watches.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Empty: all namespaces.
    pub namespaces: Vec<String>,
    /// Reconciles running at once per kind (across all watched namespaces).
    pub concurrency: u16,
    /// The shard this instance reconciles (`None`: unsharded, everything).
    pub shard: Option<ShardScope>,
}

impl Scope {
    fn shard(&self) -> ShardScope {
        self.shard.unwrap_or(ShardScope::ALL)
    }
}

/// Whether `cred` belongs to `shard`: checked before anything about it is reconciled.
fn in_shard(shard: ShardScope, cred: &RdsCredential) -> bool {
    shard.owns(
        cred.metadata.namespace.as_deref().unwrap_or_default(),
        cred.metadata.name.as_deref().unwrap_or_default(),
        cred.metadata.labels.as_ref(),
    )
}

/// Runs both controllers and the bulk poller until `shutdown` resolves, then lets in-flight
/// reconciles finish.
pub async fn run(
    ctx: Arc<Context>,
    scope: Scope,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    run_with_readiness(ctx, scope, shutdown, || {}).await
}

/// [`run`], calling `on_synced` once the caches of both kinds hold their initial list (the
/// moment the process may report ready). Not called if `shutdown` comes first.
pub async fn run_with_readiness(
    ctx: Arc<Context>,
    scope: Scope,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    on_synced: impl FnOnce() + Send,
) {
    let stop = CancellationToken::new();
    let stopped = || stop.clone().cancelled_owned();
    let concurrency = scope.concurrency.max(1);
    // Drift checks have a budget of their own on top (`crate::limit::DriftLane`).
    let drift_slots = u16::try_from(ctx.settings.drift_concurrency.max(1)).unwrap_or(u16::MAX);
    let config = ControllerConfig::default().concurrency(concurrency.saturating_add(drift_slots));
    let shard = scope.shard();

    // RdsDatabases: shard 0 only (one writer of their status); other shards read them.
    let (databases, database_store) = if shard.owns_databases() {
        let databases = Controller::new(
            Api::<RdsDatabase>::all(ctx.client.clone()),
            watcher::Config::default().any_semantic(),
        )
        .with_config(config.clone());
        let store = databases.store();
        let run = databases
            .graceful_shutdown_on(stopped())
            .run(
                reconcile::database::reconcile,
                error_policy_database,
                ctx.clone(),
            )
            .for_each(|r| async move { log_result("RdsDatabase", r) });
        (futures::future::Either::Left(run), Some(store))
    } else {
        (futures::future::Either::Right(async {}), None)
    };

    let namespaces: Vec<Option<String>> = if scope.namespaces.is_empty() {
        vec![None]
    } else {
        scope.namespaces.iter().cloned().map(Some).collect()
    };
    // kube's `concurrency` bounds each controller; with one controller per namespace this
    // semaphore keeps the bound for the kind as a whole.
    let permits = Arc::new(Semaphore::new(usize::from(concurrency)));
    let mut triggers = poller::Triggers::for_shard(shard);
    let mut stores = Vec::new();
    let mut credential_loops = Vec::new();
    for ns in namespaces {
        let (creds, secrets) = match &ns {
            Some(ns) => (
                Api::<RdsCredential>::namespaced(ctx.client.clone(), ns),
                Api::<PartialObjectMeta<Secret>>::namespaced(ctx.client.clone(), ns),
            ),
            None => (
                Api::<RdsCredential>::all(ctx.client.clone()),
                Api::<PartialObjectMeta<Secret>>::all(ctx.client.clone()),
            ),
        };
        // Only changes of what the user asked for (spec via generation, annotations such as the
        // rotate request, labels, finalizers, deletion) trigger a reconcile: our own status
        // writes must not, or every credential would reconcile again after each of them.
        let (reader, writer) = reflector::store();
        let credentials = watcher(creds, watcher::Config::default().any_semantic())
            .default_backoff()
            // Before the store: it keeps every credential for the life of the process.
            .modify(crate::store::project_credential)
            .reflect(writer)
            .applied_objects()
            .predicate_filter(desired_state_hash, Default::default())
            // After the store (which keeps all shards for the claims check), before reconcile.
            .try_filter(move |c| std::future::ready(in_shard(shard, c)))
            // The echo of our own finalizer patch: that reconcile went on with the patched
            // object (after the predicate, so the predicate has seen its hash).
            .filter({
                let ctx = ctx.clone();
                move |c| futures::future::ready(!is_own_echo(&ctx, "RdsCredential", c))
            });
        let owned_secrets = watcher(
            secrets,
            watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}=rdscred")),
        )
        .default_backoff()
        .filter_map({
            let ctx = ctx.clone();
            move |event| futures::future::ready(owned_secret_trigger(&ctx, event))
        });
        let controller = Controller::for_stream(credentials, reader)
            .with_config(config.clone())
            .owns_stream(owned_secrets);
        stores.push(controller.store());
        let store = controller.store();
        // A database change (Ready, endpoint, policy) re-evaluates every credential using it.
        // Not its initial list: on start every credential is reconciled (or, settled, given its
        // spread first drift check) by its own initial list; the databases' would reconcile
        // them all at once again.
        let database_changes = watcher(
            Api::<RdsDatabase>::all(ctx.client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .filter_map(|event| futures::future::ready(changes_only(event)));
        let controller = controller.watches_stream(database_changes, move |db| {
            let name = db.name_any();
            store
                .state()
                .into_iter()
                .filter(|c| c.spec.database_ref.name == name && in_shard(shard, c))
                .map(|c| ObjectRef::from_obj(c.as_ref()))
                .collect::<Vec<_>>()
        });
        // The bulk poller's triggers for this namespace (or all of them).
        let (tx, rx) = mpsc::unbounded_channel::<ObjectRef<RdsCredential>>();
        triggers.add(ns.clone(), tx);
        let permits = permits.clone();
        let reconcile_credential = move |cred: Arc<RdsCredential>, ctx: Arc<Context>| {
            let permits = permits.clone();
            async move {
                // Owned-Secret events map to any credential: one of another shard is left
                // alone here, before anything is read or written for it.
                if !in_shard(shard, &cred) {
                    debug!(namespace = %cred.namespace().unwrap_or_default(), rdscredential = %cred.name_any(), "not in this shard");
                    return Ok(Action::await_change());
                }
                let key = object_key(cred.as_ref());
                let settled = reconcile::credential::is_settled(&cred);
                let unit = crate::limit::jitter(Duration::from_millis(500), 1.0).as_secs_f64();
                // Held until the reconcile ends: a drift lane permit, or one of `concurrency`.
                let _permit = match ctx.drift_lane.admit(&key, settled, unit) {
                    Admit::Later(wait) => {
                        ctx.metrics.drift_pass("deferred");
                        return Ok(Action::requeue(wait));
                    }
                    Admit::Drift(permit) => {
                        ctx.metrics.drift_pass("run");
                        (Some(permit), None)
                    }
                    // The semaphore is never closed; `ok()` only avoids an unwrap.
                    Admit::Work => (None, permits.acquire_owned().await.ok()),
                };
                observe_status(&cred, &ctx);
                reconcile::credential::reconcile(cred, ctx).await
            }
        };
        credential_loops.push(
            controller
                .reconcile_on(UnboundedReceiverStream::new(rx))
                .graceful_shutdown_on(stopped())
                .run(reconcile_credential, error_policy_credential, ctx.clone())
                .for_each(|r| async move { log_result("RdsCredential", r) }),
        );
    }
    let _ = ctx.credentials.set(stores.clone());

    let synced = {
        let stopped = stopped();
        async move {
            tokio::select! {
                () = caches_synced(database_store, stores) => on_synced(),
                () = stopped => {}
            }
        }
    };
    let poller = poller::run(ctx.clone(), triggers, stopped());
    let shutdown = async move {
        shutdown.await;
        stop.cancel();
    };
    tokio::join!(
        databases,
        futures::future::join_all(credential_loops),
        poller,
        synced,
        shutdown
    );
}

/// Runs `controllers` until they stop by themselves after `shutdown` (in-flight reconciles
/// finish), but gives them at most `limit` once `shutdown` has fired: the kubelet kills the
/// pod at its termination grace period anyway, and stopping first lets us release the lease.
pub async fn drain(
    controllers: impl Future<Output = ()>,
    shutdown: &CancellationToken,
    limit: Duration,
) {
    tokio::pin!(controllers);
    tokio::select! {
        () = &mut controllers => return,
        () = shutdown.cancelled() => {}
    }
    if tokio::time::timeout(limit, controllers).await.is_err() {
        warn!(timeout = ?limit, "in-flight reconciles did not finish in time: cancelling them");
    }
}

/// Whether a watch event shows `obj` exactly as our own latest write left it.
fn is_own_echo<K: kube::Resource>(
    ctx: &Context,
    kind: &str,
    obj: &Result<K, watcher::Error>,
) -> bool {
    let Ok(obj) = obj else { return false };
    let meta = obj.meta();
    ctx.own_writes.is_echo(
        &crate::echo::key(
            kind,
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        ),
        meta.resource_version.as_deref(),
    )
}

/// A watch's events after its initial list (applied or deleted objects), and its errors.
fn changes_only<K>(
    event: Result<watcher::Event<K>, watcher::Error>,
) -> Option<Result<K, watcher::Error>> {
    match event {
        Err(e) => Some(Err(e)),
        Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => Some(Ok(o)),
        Ok(watcher::Event::Init | watcher::Event::InitApply(_) | watcher::Event::InitDone) => None,
    }
}

/// Which owned-Secret watch events reconcile their credential: an edit or a deletion by
/// anyone, not the echo of our own write (that reconcile knows what it wrote), and not the
/// initial list (every credential is reconciled on start by its own initial list already).
fn owned_secret_trigger(
    ctx: &Context,
    event: Result<watcher::Event<PartialObjectMeta<Secret>>, watcher::Error>,
) -> Option<Result<PartialObjectMeta<Secret>, watcher::Error>> {
    match event {
        Err(e) => Some(Err(e)),
        Ok(watcher::Event::Delete(s)) => Some(Ok(s)),
        Ok(watcher::Event::Apply(s)) => {
            let s = Ok(s);
            (!is_own_echo(ctx, "Secret", &s)).then_some(s)
        }
        Ok(watcher::Event::Init | watcher::Event::InitApply(_) | watcher::Event::InitDone) => None,
    }
}

/// Resolves once every store has received its watch's initial list. A store whose writer
/// is gone (its controller stopped) counts as done: there is nothing left to wait for.
async fn caches_synced(
    databases: Option<Store<RdsDatabase>>,
    credentials: Vec<Store<RdsCredential>>,
) {
    if let Some(databases) = databases {
        let _ = databases.wait_until_ready().await;
    }
    for store in credentials {
        let _ = store.wait_until_ready().await;
    }
}

/// Metrics derived from the status as observed, so that a new leader (or a restarted
/// process) exports `rdscred_seconds_since_last_rotation` before its first rotation.
fn observe_status(cred: &RdsCredential, ctx: &Context) {
    let last = cred
        .status
        .as_ref()
        .and_then(|s| s.last_rotation_time.as_deref())
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    if let (Some(at), Some(ns)) = (last, cred.namespace()) {
        ctx.metrics.record_last_rotation(&ns, &cred.name_any(), at);
    }
}

/// Hash of everything in an RdsCredential that expresses intent (uid, generation, labels,
/// annotations, finalizers, deletion), status and resourceVersion excluded: the watch
/// predicate, so our own status writes do not trigger another reconcile.
fn desired_state_hash(c: &RdsCredential) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    c.metadata.uid.hash(&mut h);
    c.metadata.generation.hash(&mut h);
    c.metadata.labels.hash(&mut h);
    c.metadata.annotations.hash(&mut h);
    c.metadata.finalizers.hash(&mut h);
    c.metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .hash(&mut h);
    Some(h.finish())
}

/// Failed reconciles are logged by the error policy; queue errors (a watch failing, e.g.
/// Forbidden when RBAC is missing) are only visible here, so they are warnings.
fn log_result<T: Debug, E: std::error::Error, Q: std::error::Error>(
    kind: &str,
    r: Result<T, kube_controller::Error<E, Q>>,
) {
    match r {
        Ok(obj) => debug!(kind, ?obj, "reconciled"),
        Err(
            e @ (kube_controller::Error::ReconcilerFailed(..)
            | kube_controller::Error::ObjectNotFound(_)),
        ) => {
            debug!(kind, error = %e, "reconcile did not complete")
        }
        Err(e) => warn!(kind, error = %e, "controller error"),
    }
}

fn error_policy_database(db: Arc<RdsDatabase>, err: &Error, ctx: Arc<Context>) -> Action {
    let wait = ctx.backoff_after_failure(object_key(db.as_ref()), err.max_backoff());
    warn!(rdsdatabase = %db.name_any(), reason = err.reason(), retry_in = ?wait, "will retry");
    Action::requeue(wait)
}

fn error_policy_credential(cred: Arc<RdsCredential>, err: &Error, ctx: Arc<Context>) -> Action {
    if err.is_conflict() {
        // A guarded status write lost to a newer one: decide again at once from a fresh read
        // (not a failure of the credential, so no backoff).
        debug!(namespace = %cred.namespace().unwrap_or_default(), rdscredential = %cred.name_any(), "status changed meanwhile; reconciling again");
        return Action::requeue(Duration::from_millis(50));
    }
    let wait = ctx.backoff_after_failure(object_key(cred.as_ref()), err.max_backoff());
    // The same fields as the reconcile span, so the line is found with the rest.
    warn!(namespace = %cred.namespace().unwrap_or_default(), rdscredential = %cred.name_any(), reason = err.reason(), retry_in = ?wait, "will retry");
    Action::requeue(wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LAST_APPLIED_ANNOTATION;

    #[test]
    fn the_store_keeps_what_reconciles_read_and_drops_the_bookkeeping() {
        let mut cred: RdsCredential = serde_json::from_value(serde_json::json!({
            "apiVersion": "rdscred.io/v1alpha1", "kind": "RdsCredential",
            "metadata": {
                "name": "c", "namespace": "ns", "generation": 3,
                "annotations": {
                    LAST_APPLIED_ANNOTATION: "{\"big\": \"copy of the object\"}",
                    "rdscred.io/rotate": "2026-01-01T00:00:00Z",
                },
                "managedFields": [{ "manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": { "f:spec": {} } }],
                "finalizers": ["rdscred.io/cleanup"],
            },
            "spec": {
                "databaseRef": { "name": "db" }, "username": "u", "mode": "managed",
                "privileges": [{ "database": "app", "privileges": ["SELECT"] }],
                "roles": ["reader"],
                "secret": { "name": "s", "description": "d", "tags": { "team": "a" },
                    "replicaRegions": [{ "region": "eu-west-1" }], "readers": ["arn:aws:iam::1:role/app"] },
                "rotation": { "automaticallyAfterDays": 30 },
                "target": { "name": "t", "labels": { "a": "b" }, "templates": { "URL": "x" } },
                "workloads": { "refs": [{ "kind": "Deployment", "name": "app" }] },
                "pollInterval": "5m",
            },
            "status": {
                "secretArn": "arn", "observedGeneration": 3, "syncedVersionId": "v1",
                "lastRotationTime": "2026-01-01T00:00:00Z", "targetSecret": "s",
                "conditions": [{ "type": "Ready", "status": "True", "reason": "Synced",
                    "message": "Secret s holds AWSCURRENT", "lastTransitionTime": "2026-01-01T00:00:00Z" }],
            },
        }))
        .unwrap();
        let before = cred.clone();
        crate::store::project_credential(&mut cred);
        assert_eq!(cred.metadata.managed_fields, None);
        let annotations = cred.metadata.annotations.clone().unwrap();
        assert!(!annotations.contains_key(LAST_APPLIED_ANNOTATION));
        // The rotate request, the finalizers and of the spec what predicates, the poller, the
        // event queue, claims and the database mapper read stay, and of the status what is
        // read from the store.
        assert_eq!(
            annotations.get("rdscred.io/rotate").map(String::as_str),
            Some("2026-01-01T00:00:00Z")
        );
        assert_eq!(cred.metadata.finalizers, before.metadata.finalizers);
        let (spec, was) = (&cred.spec, &before.spec);
        assert_eq!(spec.database_ref, was.database_ref);
        assert_eq!(spec.mode, was.mode);
        assert_eq!(spec.username, was.username);
        assert_eq!(spec.secret.name, was.secret.name);
        assert_eq!(spec.target.name, was.target.name);
        assert_eq!(spec.poll_interval, was.poll_interval);
        assert!(
            was.privileges.is_some() && was.rotation.is_some() && !was.workloads.refs.is_empty()
        );
        assert_eq!(
            (
                &spec.privileges,
                &spec.roles,
                &spec.rotation,
                &spec.secret.description
            ),
            (&None, &None, &None, &None),
            "the rest of the spec: only in fresh reads"
        );
        assert!(spec.secret.tags.is_empty() && spec.secret.readers.is_empty());
        assert!(spec.secret.replica_regions.is_empty() && spec.target.templates.is_empty());
        assert!(spec.target.labels.is_empty() && spec.workloads.refs.is_empty());
        assert_eq!(cred.metadata.generation, before.metadata.generation);
        let status = cred.status.as_ref().unwrap();
        assert_eq!(status.target_secret, None, "the rest: only in fresh reads");
        assert_eq!(status.conditions.len(), 1, "only Ready");
        assert_eq!(status.conditions[0].message, "", "without its message");
        assert_eq!(crate::store::READY_CONDITION, reconcile::conditions::READY);
        // What the store readers use is unchanged.
        let (s, b) = (
            cred.status.as_ref().unwrap(),
            before.status.as_ref().unwrap(),
        );
        assert_eq!(s.secret_arn, b.secret_arn);
        assert_eq!(s.synced_version_id, b.synced_version_id);
        assert_eq!(s.last_rotation_time, b.last_rotation_time);
        assert_eq!(s.observed_generation, b.observed_generation);
    }

    /// The drift lane and the poller decide from the store whether a credential is settled:
    /// the projection must not change that answer, whatever the status says.
    #[test]
    fn the_store_projection_keeps_is_settled() {
        let base = serde_json::json!({
            "apiVersion": "rdscred.io/v1alpha1", "kind": "RdsCredential",
            "metadata": { "name": "c", "namespace": "ns", "generation": 3 },
            "spec": { "databaseRef": { "name": "db" }, "username": "u", "secret": { "name": "s" } },
        });
        let ready = |s: &str| {
            serde_json::json!([{ "type": "Ready", "status": s, "reason": "R",
            "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z" }])
        };
        let statuses = [
            serde_json::json!({ "observedGeneration": 3, "conditions": ready("True") }),
            serde_json::json!({ "observedGeneration": 2, "conditions": ready("True") }),
            serde_json::json!({ "observedGeneration": 3, "conditions": ready("False") }),
            serde_json::json!({ "observedGeneration": 3, "conditions": ready("True"),
                "nextRotationTime": "2020-01-01T00:00:00Z" }),
            serde_json::json!({ "observedGeneration": 3, "conditions": ready("True"),
                "rotationClaim": { "trigger": "annotation", "fromVersion": "v1", "claimedAt": "2026-01-01T00:00:00Z" } }),
            serde_json::json!({ "observedGeneration": 3, "conditions": ready("True"),
                "lastRotationRequest": "a" }),
        ];
        let mut settled = 0;
        for status in statuses {
            let mut v = base.clone();
            v["status"] = status.clone();
            if status.get("lastRotationRequest").is_some() {
                v["metadata"]["annotations"] =
                    serde_json::json!({ reconcile::credential::ROTATE_ANNOTATION: "b" });
            }
            let cred: RdsCredential = serde_json::from_value(v).unwrap();
            let mut projected = cred.clone();
            crate::store::project_credential(&mut projected);
            let want = reconcile::credential::is_settled(&cred);
            settled += usize::from(want);
            assert_eq!(
                reconcile::credential::is_settled(&projected),
                want,
                "{status}"
            );
        }
        assert_eq!(settled, 1, "the table has one settled credential");
    }
}
