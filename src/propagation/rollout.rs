//! Rolling the workloads that read a credential's Secret, the way `kubectl rollout restart`
//! does (a pod-template annotation), with the AWSCURRENT version id in the annotation so a
//! repeated reconcile is a no-op. Rate-limited cluster-wide.
//!
//! Per kind (see [`kinds`](super::kinds)): Deployments, StatefulSets and DaemonSets get the
//! pod-template annotations; a CronJob its job template's (the next Job starts on the new
//! value; Jobs already running are waited for, not restarted); an Argo Rollout gets
//! `spec.restartAt` (Argo replaces the pods without a new revision, so no canary analysis)
//! with the version recorded in the Rollout's own annotations, never its pod template.
//! Only the kinds enabled in [`WorkloadKinds`] are listed (the chart grants no others).

use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ObjectReference, PodSpec, PodTemplateSpec};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::PropagationError as Error;
use super::discovery::{opted_out, pod_spec_references_secret};
use super::kinds;
use crate::crd::{RdsCredential, RolledWorkload, RolloutPolicy, WorkloadKind};
use crate::limit::Gcra;

/// The field manager of every workload patch (`kubectl get -o yaml --show-managed-fields`
/// names rdscred as the writer of the restart fields).
pub const FIELD_MANAGER: &str = "rdscred";

/// The optional workload kinds the controller lists and rolls (`--cronjobs`,
/// `--argo-rollouts`); Deployments, StatefulSets and DaemonSets always. A disabled kind is
/// never requested (the chart grants it only when enabled), and explicit refs to it are
/// skipped with a warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkloadKinds {
    pub cron_jobs: bool,
    pub argo_rollouts: bool,
}

impl Default for WorkloadKinds {
    /// CronJobs are core and cheap to list; Argo Rollouts need their CRD installed.
    fn default() -> Self {
        WorkloadKinds {
            cron_jobs: true,
            argo_rollouts: false,
        }
    }
}

impl WorkloadKinds {
    pub fn enabled(self, kind: WorkloadKind) -> bool {
        match kind {
            WorkloadKind::Deployment | WorkloadKind::StatefulSet | WorkloadKind::DaemonSet => true,
            WorkloadKind::CronJob => self.cron_jobs,
            WorkloadKind::Rollout => self.argo_rollouts,
        }
    }
}

/// `argoproj.io/v1alpha1` Rollout, read and patched as JSON (no Rust type of it is needed
/// beyond what [`kinds`] reads).
fn rollout_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Rollout"),
        "rollouts",
    )
}

/// Pod-template annotation that records when rdscred restarted the workload.
pub const RESTARTED_AT_ANNOTATION: &str = "rdscred.io/restartedAt";

/// Per-Secret pod-template annotation holding the AWSCURRENT version the pods were started for.
/// Several credentials can roll one workload, so the Secret name is part of the key.
pub fn version_annotation(secret_name: &str) -> String {
    format!("{secret_name}.rdscred.io/version-id")
}

/// Token bucket shared by all credentials: at most `per_minute` rollouts a minute, with
/// bursts up to the same number.
///
/// Reconciles never wait for a token: a credential that finds the bucket empty rolls the rest
/// of its dependents when it is requeued, so a mass rotation does not hold every reconcile
/// worker (and with it every other credential's Secret sync) behind the rollout limit.
pub struct RolloutLimiter {
    origin: Instant,
    /// `per_minute` a minute, all of them at once after a quiet minute.
    bucket: std::sync::Mutex<Gcra>,
}

impl RolloutLimiter {
    pub fn new(per_minute: u32) -> Self {
        let per_minute = per_minute.max(1);
        RolloutLimiter {
            origin: Instant::now(),
            bucket: std::sync::Mutex::new(Gcra::new(f64::from(per_minute) / 60.0, per_minute)),
        }
    }

    /// Takes a token, or says how long until one is available.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        self.try_acquire_at(Instant::now())
    }

    /// [`try_acquire`](Self::try_acquire) at time `now` (tests drive the clock).
    fn try_acquire_at(&self, now: Instant) -> Result<(), Duration> {
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        bucket.try_take(now.saturating_duration_since(self.origin))
    }
}

/// A workload of one of the kinds, reduced to what rollouts need.
struct Workload {
    kind: WorkloadKind,
    name: String,
    /// The pod spec its pods run (a Rollout with `workloadRef`: the referenced Deployment's).
    pod_spec: Option<PodSpec>,
    /// Where rdscred records what it rolled: the pod template's annotations; for a Rollout its
    /// own metadata annotations (its pod template is left alone).
    recorded: BTreeMap<String, String>,
    opted_out: bool,
    reference: ObjectReference,
    /// Its rollout status says done (see [`deployment_complete`] and siblings). For a
    /// CronJob: patched is done; its running Jobs are checked by [`settled`].
    complete: bool,
    /// A CronJob's `status.active` Jobs.
    active_jobs: Vec<String>,
    /// A Deployment that an Argo Rollout's `workloadRef` uses as its pod template: restarting
    /// the Rollout restarts its pods; patching the Deployment's template would be a new
    /// Rollout revision (a canary), so it is never rolled itself.
    template_of_rollout: bool,
}

impl Workload {
    /// One annotation where rollouts record what they rolled.
    fn recorded_annotation(&self, key: &str) -> Option<&str> {
        self.recorded.get(key).map(String::as_str)
    }
}

/// An object read from the API as JSON (what [`kinds`] decides on); serializing what was
/// just deserialized cannot fail.
fn to_json<T: serde::Serialize>(obj: &T) -> Value {
    serde_json::to_value(obj).unwrap_or_default()
}

fn template_parts(t: Option<PodTemplateSpec>) -> (Option<PodSpec>, BTreeMap<String, String>) {
    let t = t.unwrap_or_default();
    (
        t.spec,
        t.metadata.and_then(|m| m.annotations).unwrap_or_default(),
    )
}

/// A dependent that may still run pods started before AWSCURRENT reached its Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsettled {
    pub kind: WorkloadKind,
    pub name: String,
    /// Its pod template carries AWSCURRENT's version: rolled, the rollout not complete yet.
    /// False: it carries an older version (not rolled onto AWSCURRENT yet).
    pub rolled: bool,
    /// When rdscred last restarted it (the pod-template annotation).
    pub restarted_at: Option<Timestamp>,
}

/// The first dependent whose pods may still hold a credential older than `version_id`, read
/// from the workloads themselves (their pod-template annotations and rollout status), never
/// from status bookkeeping: a dependent carrying an older version annotation, or carrying
/// this one with its rollout not complete. A dependent without our annotation was never
/// rolled by rdscred: it existed at no roll (each roll lists and annotates every dependent
/// after the Secret was written), so its pods started from the Secret holding AWSCURRENT or
/// the version before any rotation, never from the previous user's: it does not hold the
/// rotation, whatever its rollout state.
pub async fn first_unsettled(
    client: &Client,
    kinds: WorkloadKinds,
    cred: &RdsCredential,
    secret_name: &str,
    version_id: &str,
) -> Result<Option<Unsettled>, Error> {
    let ns = cred.namespace().unwrap_or_default();
    let key = version_annotation(secret_name);
    for w in dependents(client, kinds, cred, &ns, secret_name).await? {
        let carried = w.recorded_annotation(&key);
        let restarted_at = w
            .recorded_annotation(RESTARTED_AT_ANNOTATION)
            .and_then(|t| t.parse().ok());
        let complete = w.complete
            && (carried != Some(version_id)
                || settled(client, &ns, &w.active_jobs, &key, version_id).await?);
        if let Some(rolled) = holds_rotation(carried, complete, version_id) {
            return Ok(Some(Unsettled {
                kind: w.kind,
                name: w.name,
                rolled,
                restarted_at,
            }));
        }
    }
    Ok(None)
}

/// A dependent restarted by [`roll_dependents`]: what the reconcile reports (an Event on the
/// workload and one on the credential, the rollout metric).
#[derive(Clone, Debug)]
pub struct Restarted {
    pub kind: WorkloadKind,
    pub name: String,
    /// The workload, for its Event.
    pub reference: ObjectReference,
}

/// What [`roll_dependents`] did, also when it stopped half way.
#[derive(Debug, Default)]
pub struct Rolls {
    /// Restarted by this call, in order.
    pub restarted: Vec<Restarted>,
    /// The cluster-wide rate limit left dependents to roll after this long.
    pub wait: Option<Duration>,
    /// The error that stopped it (the dependents before it were restarted).
    pub failed: Option<Error>,
}

/// Rolls every dependent not already running `version_id`, appending what it rolled to
/// `rolled` (also when it fails half way, so status keeps what was done). Workloads already
/// annotated with `version_id` are skipped, which makes a retry safe. Stops at the first
/// failure, or when the cluster-wide rate limit (`limiter`) leaves dependents for later.
pub async fn roll_dependents(
    client: &Client,
    kinds: WorkloadKinds,
    limiter: &RolloutLimiter,
    cred: &RdsCredential,
    secret_name: &str,
    version_id: &str,
    rolled: &mut Vec<RolledWorkload>,
) -> Rolls {
    let mut rolls = Rolls::default();
    let ns = cred.namespace().unwrap_or_default();
    let key = version_annotation(secret_name);
    let dependents = match dependents(client, kinds, cred, &ns, secret_name).await {
        Ok(d) => d,
        Err(e) => {
            rolls.failed = Some(e);
            return rolls;
        }
    };
    for w in dependents {
        if w.recorded_annotation(&key) == Some(version_id) {
            continue;
        }
        if let Err(wait) = limiter.try_acquire() {
            info!(kind = ?w.kind, workload = %w.name, retry_in = ?wait, "rollout rate limit reached; rolling later");
            rolls.wait = Some(wait);
            return rolls;
        }
        let at = Timestamp::now();
        let now = at.to_string();
        let patch = restart_patch(w.kind, &key, version_id, at);
        if let Err(e) = patch_workload(client, &ns, w.kind, &w.name, &patch).await {
            rolls.failed = Some(e);
            return rolls;
        }
        info!(kind = ?w.kind, workload = %w.name, version_id, "rolled workload");
        rolled.push(RolledWorkload {
            kind: w.kind,
            name: w.name.clone(),
            version_id: version_id.into(),
            rolled_at: now,
            completed_at: None,
        });
        rolls.restarted.push(Restarted {
            kind: w.kind,
            name: w.name,
            reference: w.reference,
        });
    }
    rolls
}

/// The patch that restarts a workload of `kind` for `version_id` and records it (the version
/// under `key`, the time under [`RESTARTED_AT_ANNOTATION`]) where [`first_unsettled`] and the
/// next roll read it back.
fn restart_patch(kind: WorkloadKind, key: &str, version_id: &str, at: Timestamp) -> Value {
    let mut annotations = serde_json::Map::new();
    annotations.insert(key.into(), json!(version_id));
    annotations.insert(RESTARTED_AT_ANNOTATION.into(), json!(at.to_string()));
    match kind {
        WorkloadKind::Deployment | WorkloadKind::StatefulSet | WorkloadKind::DaemonSet => {
            json!({ "spec": { "template": { "metadata": { "annotations": annotations } } } })
        }
        WorkloadKind::CronJob => kinds::cronjob_restart_patch(&annotations),
        WorkloadKind::Rollout => {
            let mut p = kinds::rollout_restart_patch(at);
            p["metadata"] = json!({ "annotations": annotations });
            p
        }
    }
}

/// A CronJob's running Jobs: none of them may still run from a job template older than
/// `version_id` (see [`kinds::job_may_hold_previous`]). A Job already gone has finished.
async fn settled(
    client: &Client,
    ns: &str,
    active_jobs: &[String],
    key: &str,
    version_id: &str,
) -> Result<bool, Error> {
    let api = Api::<Job>::namespaced(client.clone(), ns);
    for name in active_jobs {
        if let Some(job) = api.get_opt(name).await?
            && kinds::job_may_hold_previous(&to_json(&job), key, version_id)
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether a dependent holds the next rotation, from its own pod template and rollout
/// status (see [`first_unsettled`]): `Some(rolled)` when it does (`rolled`: it carries
/// `version_id` but has not finished rolling out; not rolled: it carries an older version),
/// `None` when it does not (rolled out on `version_id`, or never rolled by rdscred).
fn holds_rotation(carried: Option<&str>, complete: bool, version_id: &str) -> Option<bool> {
    let carried = carried?;
    let rolled = carried == version_id;
    (!rolled || !complete).then_some(rolled)
}

/// Marks rollouts that finished (a CronJob: no Job started before its roll still runs).
/// Returns true while some are still in progress. A kind no longer enabled cannot be read
/// (no RBAC for it): it counts as done, like a workload that no longer exists.
pub async fn observe_completion(
    client: &Client,
    kinds: WorkloadKinds,
    cred: &RdsCredential,
    secret_name: &str,
    rolled: &mut [RolledWorkload],
) -> Result<bool, Error> {
    let ns = cred.namespace().unwrap_or_default();
    let key = version_annotation(secret_name);
    let mut pending = false;
    for w in rolled.iter_mut().filter(|w| w.completed_at.is_none()) {
        if !kinds.enabled(w.kind)
            || rollout_complete(client, &ns, w.kind, &w.name, &key, &w.version_id).await?
        {
            w.completed_at = Some(Timestamp::now().to_string());
        } else {
            pending = true;
        }
    }
    Ok(pending)
}

/// The kind's name as Kubernetes spells it.
pub fn kind_name(kind: WorkloadKind) -> &'static str {
    match kind {
        WorkloadKind::Deployment => "Deployment",
        WorkloadKind::StatefulSet => "StatefulSet",
        WorkloadKind::DaemonSet => "DaemonSet",
        WorkloadKind::CronJob => "CronJob",
        WorkloadKind::Rollout => "Rollout",
    }
}

/// Discovered (policy auto) plus explicit workloads, minus opted-out ones.
async fn dependents(
    client: &Client,
    kinds: WorkloadKinds,
    cred: &RdsCredential,
    ns: &str,
    secret_name: &str,
) -> Result<Vec<Workload>, Error> {
    let policy = cred.spec.workloads.policy;
    if policy == RolloutPolicy::None {
        return Ok(Vec::new());
    }
    for r in cred
        .spec
        .workloads
        .refs
        .iter()
        .filter(|r| !kinds.enabled(r.kind))
    {
        warn!(kind = ?r.kind, workload = %r.name, "workload ref of a kind this controller does not roll (not enabled); skipped");
    }
    let all = list_workloads(client, kinds, ns).await?;
    let explicit = |w: &Workload| {
        cred.spec
            .workloads
            .refs
            .iter()
            .any(|r| r.kind == w.kind && r.name == w.name)
    };
    Ok(all
        .into_iter()
        .filter(|w| !w.opted_out && !w.template_of_rollout)
        .filter(|w| {
            explicit(w)
                || (policy == RolloutPolicy::Auto
                    && w.pod_spec
                        .as_ref()
                        .is_some_and(|s| pod_spec_references_secret(s, secret_name)))
        })
        .collect())
}

async fn list_workloads(
    client: &Client,
    kinds: WorkloadKinds,
    ns: &str,
) -> Result<Vec<Workload>, Error> {
    let lp = ListParams::default();
    let mut out = Vec::new();
    for d in Api::<Deployment>::namespaced(client.clone(), ns)
        .list(&lp)
        .await?
    {
        out.push(workload(
            WorkloadKind::Deployment,
            &d,
            d.spec.as_ref().map(|s| s.template.clone()),
            deployment_complete(&d),
        ));
    }
    for s in Api::<StatefulSet>::namespaced(client.clone(), ns)
        .list(&lp)
        .await?
    {
        out.push(workload(
            WorkloadKind::StatefulSet,
            &s,
            s.spec.as_ref().map(|s| s.template.clone()),
            statefulset_complete(&s),
        ));
    }
    for d in Api::<DaemonSet>::namespaced(client.clone(), ns)
        .list(&lp)
        .await?
    {
        out.push(workload(
            WorkloadKind::DaemonSet,
            &d,
            d.spec.as_ref().map(|s| s.template.clone()),
            daemonset_complete(&d),
        ));
    }
    if kinds.cron_jobs {
        for c in Api::<CronJob>::namespaced(client.clone(), ns)
            .list(&lp)
            .await?
        {
            let template = c
                .spec
                .as_ref()
                .and_then(|s| s.job_template.spec.as_ref())
                .map(|s| s.template.clone());
            let mut w = workload(WorkloadKind::CronJob, &c, template, true);
            w.active_jobs = c
                .status
                .as_ref()
                .and_then(|s| s.active.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|r| r.name.clone())
                .collect();
            out.push(w);
        }
    }
    if kinds.argo_rollouts {
        let ar = rollout_resource();
        let rollouts = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
            .list(&lp)
            .await
            .map_err(|e| match e {
                kube::Error::Api(s) if s.code == 404 => Error::KindNotServed {
                    kind: "Argo Rollout",
                    flag: "--argo-rollouts",
                    resource: "argoproj.io/v1alpha1 rollouts",
                    value: "workloads.argoRollouts.enabled",
                },
                e => e.into(),
            })?;
        for r in rollouts {
            let template =
                serde_json::from_value::<PodTemplateSpec>(r.data["spec"]["template"].clone()).ok();
            let mut w = Workload {
                kind: WorkloadKind::Rollout,
                name: r.name_any(),
                pod_spec: template.and_then(|t| t.spec),
                recorded: r.metadata.annotations.clone().unwrap_or_default(),
                opted_out: opted_out(&r.metadata),
                reference: r.object_ref(&ar),
                complete: kinds::rollout_restart_complete(&to_json(&r)),
                active_jobs: Vec::new(),
                template_of_rollout: false,
            };
            let by_ref = &r.data["spec"]["workloadRef"];
            if by_ref["kind"] == "Deployment"
                && let Some(d) = out.iter_mut().find(|d| {
                    d.kind == WorkloadKind::Deployment && by_ref["name"] == d.name.as_str()
                })
            {
                d.template_of_rollout = true;
                w.pod_spec = d.pod_spec.clone();
            }
            out.push(w);
        }
    }
    Ok(out)
}

fn workload<K: Resource<DynamicType = ()>>(
    kind: WorkloadKind,
    obj: &K,
    template: Option<PodTemplateSpec>,
    complete: bool,
) -> Workload {
    let (pod_spec, recorded) = template_parts(template);
    Workload {
        complete,
        kind,
        name: obj.meta().name.clone().unwrap_or_default(),
        pod_spec,
        recorded,
        opted_out: opted_out(obj.meta()),
        reference: obj.object_ref(&()),
        active_jobs: Vec::new(),
        template_of_rollout: false,
    }
}

async fn patch_workload(
    client: &Client,
    ns: &str,
    kind: WorkloadKind,
    name: &str,
    patch: &Value,
) -> Result<(), Error> {
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let p = Patch::Merge(patch);
    match kind {
        WorkloadKind::Deployment => drop(
            Api::<Deployment>::namespaced(client.clone(), ns)
                .patch(name, &pp, &p)
                .await?,
        ),
        WorkloadKind::StatefulSet => drop(
            Api::<StatefulSet>::namespaced(client.clone(), ns)
                .patch(name, &pp, &p)
                .await?,
        ),
        WorkloadKind::DaemonSet => drop(
            Api::<DaemonSet>::namespaced(client.clone(), ns)
                .patch(name, &pp, &p)
                .await?,
        ),
        WorkloadKind::CronJob => drop(
            Api::<CronJob>::namespaced(client.clone(), ns)
                .patch(name, &pp, &p)
                .await?,
        ),
        WorkloadKind::Rollout => drop(
            Api::<DynamicObject>::namespaced_with(client.clone(), ns, &rollout_resource())
                .patch(name, &pp, &p)
                .await?,
        ),
    }
    Ok(())
}

/// Like `kubectl rollout status`: the controller saw the new generation and every replica is
/// updated and available (a Rollout: Argo finished the restart, see
/// [`kinds::rollout_restart_complete`]; a CronJob: no Job started before the roll to
/// `version_id` still runs). A workload that no longer exists counts as done.
async fn rollout_complete(
    client: &Client,
    ns: &str,
    kind: WorkloadKind,
    name: &str,
    key: &str,
    version_id: &str,
) -> Result<bool, Error> {
    let done = match kind {
        WorkloadKind::Deployment => Api::<Deployment>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await?
            .is_none_or(|d| deployment_complete(&d)),
        WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await?
            .is_none_or(|s| statefulset_complete(&s)),
        WorkloadKind::DaemonSet => Api::<DaemonSet>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await?
            .is_none_or(|d| daemonset_complete(&d)),
        WorkloadKind::CronJob => match Api::<CronJob>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await?
        {
            None => true,
            Some(c) => {
                let active: Vec<String> = c
                    .status
                    .and_then(|s| s.active)
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.name)
                    .collect();
                settled(client, ns, &active, key, version_id).await?
            }
        },
        WorkloadKind::Rollout => {
            Api::<DynamicObject>::namespaced_with(client.clone(), ns, &rollout_resource())
                .get_opt(name)
                .await?
                .is_none_or(|r| kinds::rollout_restart_complete(&to_json(&r)))
        }
    };
    Ok(done)
}

fn deployment_complete(d: &Deployment) -> bool {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let st = d.status.clone().unwrap_or_default();
    st.observed_generation >= d.metadata.generation
        && st.updated_replicas.unwrap_or(0) >= want
        && st.available_replicas.unwrap_or(0) >= want
        && st.replicas.unwrap_or(0) <= want
}

fn statefulset_complete(s: &StatefulSet) -> bool {
    let want = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let st = s.status.clone().unwrap_or_default();
    st.observed_generation >= s.metadata.generation
        && st.updated_replicas.unwrap_or(0) >= want
        && st.ready_replicas.unwrap_or(0) >= want
}

fn daemonset_complete(d: &DaemonSet) -> bool {
    let st = d.status.clone().unwrap_or_default();
    st.observed_generation >= d.metadata.generation
        && st.updated_number_scheduled.unwrap_or(0) >= st.desired_number_scheduled
        && st.number_available.unwrap_or(0) >= st.desired_number_scheduled
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic clock: the bucket refills at `per_minute / 60` tokens a second.
    #[test]
    fn limiter_allows_a_burst_then_the_rate() {
        let limiter = RolloutLimiter::new(6);
        let t0 = limiter.origin;
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        for _ in 0..6 {
            limiter.try_acquire_at(at(0)).expect("burst of per_minute");
        }
        let wait = limiter.try_acquire_at(at(0)).expect_err("bucket empty");
        assert!(
            (9_990..=10_000).contains(&wait.as_millis()),
            "one token every 10s, got {wait:?}"
        );
        let wait = limiter.try_acquire_at(at(5)).expect_err("half a token");
        assert!((4_990..=5_000).contains(&wait.as_millis()), "{wait:?}");
        limiter.try_acquire_at(at(10)).expect("a token after 10s");
        assert!(limiter.try_acquire_at(at(10)).is_err());
        // Idle for an hour: the bucket holds at most one burst.
        for _ in 0..6 {
            limiter.try_acquire_at(at(3610)).expect("refilled burst");
        }
        assert!(
            limiter.try_acquire_at(at(3610)).is_err(),
            "never more than per_minute at once"
        );
        // A clock reading older than the last refill adds nothing (and does not panic).
        assert!(limiter.try_acquire_at(at(0)).is_err());
    }

    #[test]
    fn which_dependents_hold_the_next_rotation() {
        let cases = [
            // (version annotation on the template, rollout complete, holds?)
            (Some("v2"), true, None),
            (Some("v2"), false, Some(true)),
            (Some("v1"), true, Some(false)),
            (Some("v1"), false, Some(false)),
            // Never rolled by rdscred: its pods never held the previous user's password.
            (None, false, None),
            (None, true, None),
        ];
        for (carried, complete, want) in cases {
            assert_eq!(
                holds_rotation(carried, complete, "v2"),
                want,
                "{carried:?} complete={complete}"
            );
        }
    }

    #[test]
    fn version_annotation_is_per_secret() {
        assert_eq!(version_annotation("app-db"), "app-db.rdscred.io/version-id");
    }
    /// `kubectl rollout status` semantics, one row per reason a rollout is not yet done.
    #[test]
    fn when_a_deployment_rollout_is_complete() {
        // (generation, observedGeneration, spec.replicas, replicas, updated, available, complete?)
        let cases = [
            (2, 2, Some(3), 3, 3, 3, true),
            (2, 1, Some(3), 3, 3, 3, false), // controller has not seen the new template
            (2, 2, Some(3), 3, 2, 3, false), // one replica still on the old template
            (2, 2, Some(3), 3, 3, 2, false), // updated but not yet available
            (2, 2, Some(3), 4, 3, 3, false), // an old replica is still terminating
            (2, 2, None, 1, 1, 1, true),     // replicas default to 1
            (2, 2, Some(0), 0, 0, 0, true),  // scaled to zero: nothing to wait for
        ];
        for (generation, observed, want, replicas, updated, available, complete) in cases {
            let d: Deployment = serde_json::from_value(json!({
                "metadata": { "name": "d", "generation": generation },
                "spec": { "replicas": want, "selector": {}, "template": {} },
                "status": { "observedGeneration": observed, "replicas": replicas,
                            "updatedReplicas": updated, "availableReplicas": available },
            }))
            .unwrap();
            assert_eq!(
                deployment_complete(&d),
                complete,
                "gen={generation} observed={observed} want={want:?} \
                 replicas={replicas} updated={updated} available={available}"
            );
        }
    }

    #[test]
    fn when_a_statefulset_rollout_is_complete() {
        // (generation, observedGeneration, spec.replicas, updated, ready, complete?)
        let cases = [
            (3, 3, Some(2), 2, 2, true),
            (3, 2, Some(2), 2, 2, false), // new generation not observed
            (3, 3, Some(2), 1, 2, false), // one pod still on the old revision
            (3, 3, Some(2), 2, 1, false), // updated pod not ready yet
            (3, 3, None, 1, 1, true),     // replicas default to 1
        ];
        for (generation, observed, want, updated, ready, complete) in cases {
            let s: StatefulSet = serde_json::from_value(json!({
                "metadata": { "name": "s", "generation": generation },
                "spec": { "replicas": want, "selector": {}, "serviceName": "s", "template": {} },
                "status": { "observedGeneration": observed, "replicas": updated,
                            "updatedReplicas": updated, "readyReplicas": ready },
            }))
            .unwrap();
            assert_eq!(
                statefulset_complete(&s),
                complete,
                "gen={generation} observed={observed} want={want:?} updated={updated} ready={ready}"
            );
        }
    }

    #[test]
    fn when_a_daemonset_rollout_is_complete() {
        // (generation, observedGeneration, desired, updatedScheduled, available, complete?)
        let cases = [
            (4, 4, 3, 3, 3, true),
            (4, 3, 3, 3, 3, false), // new generation not observed
            (4, 4, 3, 2, 3, false), // one node still runs the old pod
            (4, 4, 3, 3, 2, false), // updated pod not available yet
            (4, 4, 0, 0, 0, true),  // no eligible node: nothing to wait for
        ];
        for (generation, observed, desired, updated, available, complete) in cases {
            let d: DaemonSet = serde_json::from_value(json!({
                "metadata": { "name": "ds", "generation": generation },
                "spec": { "selector": {}, "template": {} },
                "status": { "observedGeneration": observed, "desiredNumberScheduled": desired,
                            "currentNumberScheduled": desired, "numberMisscheduled": 0,
                            "numberReady": available, "updatedNumberScheduled": updated,
                            "numberAvailable": available },
            }))
            .unwrap();
            assert_eq!(
                daemonset_complete(&d),
                complete,
                "gen={generation} observed={observed} desired={desired} \
                 updated={updated} available={available}"
            );
        }
    }
}
