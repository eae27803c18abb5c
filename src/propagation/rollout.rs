//! Rolling the workloads that read a credential's Secret, the way `kubectl rollout restart`
//! does (a pod-template annotation), with the AWSCURRENT version id in the annotation so a
//! repeated reconcile is a no-op. Rate-limited cluster-wide.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ObjectReference, PodTemplateSpec};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::info;

use super::PropagationError as Error;
use super::discovery::{opted_out, pod_spec_references_secret};
use crate::crd::{RdsCredential, RolledWorkload, RolloutPolicy, WorkloadKind};

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
    per_minute: u32,
    /// (tokens, when last refilled).
    state: std::sync::Mutex<(f64, Instant)>,
}

impl RolloutLimiter {
    pub fn new(per_minute: u32) -> Self {
        let per_minute = per_minute.max(1);
        RolloutLimiter {
            per_minute,
            state: std::sync::Mutex::new((per_minute as f64, Instant::now())),
        }
    }

    /// Takes a token, or says how long until one is available.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        self.try_acquire_at(Instant::now())
    }

    /// [`try_acquire`](Self::try_acquire) at time `now` (tests drive the clock).
    fn try_acquire_at(&self, now: Instant) -> Result<(), Duration> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let rate = self.per_minute as f64 / 60.0;
        s.0 = (s.0 + now.saturating_duration_since(s.1).as_secs_f64() * rate)
            .min(self.per_minute as f64);
        s.1 = s.1.max(now);
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - s.0) / rate))
        }
    }
}

/// A workload of one of the three kinds, reduced to what rollouts need.
struct Workload {
    kind: WorkloadKind,
    name: String,
    template: PodTemplateSpec,
    opted_out: bool,
    reference: ObjectReference,
    /// Its rollout status says done (see [`deployment_complete`] and siblings).
    complete: bool,
}

impl Workload {
    /// One annotation of its pod template (where rollouts record what they rolled).
    fn template_annotation(&self, key: &str) -> Option<&str> {
        self.template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(key))
            .map(String::as_str)
    }
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
    cred: &RdsCredential,
    secret_name: &str,
    version_id: &str,
) -> Result<Option<Unsettled>, Error> {
    let ns = cred.namespace().unwrap_or_default();
    let key = version_annotation(secret_name);
    for w in dependents(client, cred, &ns, secret_name).await? {
        let carried = w.template_annotation(&key);
        let restarted_at = w
            .template_annotation(RESTARTED_AT_ANNOTATION)
            .and_then(|t| t.parse().ok());
        if let Some(rolled) = holds_rotation(carried, w.complete, version_id) {
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
    limiter: &RolloutLimiter,
    cred: &RdsCredential,
    secret_name: &str,
    version_id: &str,
    rolled: &mut Vec<RolledWorkload>,
) -> Rolls {
    let mut rolls = Rolls::default();
    let ns = cred.namespace().unwrap_or_default();
    let key = version_annotation(secret_name);
    let dependents = match dependents(client, cred, &ns, secret_name).await {
        Ok(d) => d,
        Err(e) => {
            rolls.failed = Some(e);
            return rolls;
        }
    };
    for w in dependents {
        if w.template_annotation(&key) == Some(version_id) {
            continue;
        }
        if let Err(wait) = limiter.try_acquire() {
            info!(kind = ?w.kind, workload = %w.name, retry_in = ?wait, "rollout rate limit reached; rolling later");
            rolls.wait = Some(wait);
            return rolls;
        }
        let now = Timestamp::now().to_string();
        let patch = json!({ "spec": { "template": { "metadata": { "annotations": {
            key.as_str(): version_id,
            RESTARTED_AT_ANNOTATION: now,
        }}}}});
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

/// Whether a dependent holds the next rotation, from its own pod template and rollout
/// status (see [`first_unsettled`]): `Some(rolled)` when it does (`rolled`: it carries
/// `version_id` but has not finished rolling out; not rolled: it carries an older version),
/// `None` when it does not (rolled out on `version_id`, or never rolled by rdscred).
fn holds_rotation(carried: Option<&str>, complete: bool, version_id: &str) -> Option<bool> {
    let carried = carried?;
    let rolled = carried == version_id;
    (!rolled || !complete).then_some(rolled)
}

/// Marks rollouts that finished. Returns true while some are still in progress.
pub async fn observe_completion(
    client: &Client,
    cred: &RdsCredential,
    rolled: &mut [RolledWorkload],
) -> Result<bool, Error> {
    let ns = cred.namespace().unwrap_or_default();
    let mut pending = false;
    for w in rolled.iter_mut().filter(|w| w.completed_at.is_none()) {
        if rollout_complete(client, &ns, w.kind, &w.name).await? {
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
    }
}

/// Discovered (policy auto) plus explicit workloads, minus opted-out ones.
async fn dependents(
    client: &Client,
    cred: &RdsCredential,
    ns: &str,
    secret_name: &str,
) -> Result<Vec<Workload>, Error> {
    let policy = cred.spec.workloads.policy;
    if policy == RolloutPolicy::None {
        return Ok(Vec::new());
    }
    let all = list_workloads(client, ns).await?;
    let explicit = |w: &Workload| {
        cred.spec
            .workloads
            .refs
            .iter()
            .any(|r| r.kind == w.kind && r.name == w.name)
    };
    Ok(all
        .into_iter()
        .filter(|w| !w.opted_out)
        .filter(|w| {
            explicit(w)
                || (policy == RolloutPolicy::Auto
                    && w.template
                        .spec
                        .as_ref()
                        .is_some_and(|s| pod_spec_references_secret(s, secret_name)))
        })
        .collect())
}

async fn list_workloads(client: &Client, ns: &str) -> Result<Vec<Workload>, Error> {
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
    Ok(out)
}

fn workload<K: Resource<DynamicType = ()>>(
    kind: WorkloadKind,
    obj: &K,
    template: Option<PodTemplateSpec>,
    complete: bool,
) -> Workload {
    Workload {
        complete,
        kind,
        name: obj.meta().name.clone().unwrap_or_default(),
        template: template.unwrap_or_default(),
        opted_out: opted_out(obj.meta()),
        reference: obj.object_ref(&()),
    }
}

async fn patch_workload(
    client: &Client,
    ns: &str,
    kind: WorkloadKind,
    name: &str,
    patch: &serde_json::Value,
) -> Result<(), Error> {
    let pp = PatchParams::default();
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
    }
    Ok(())
}

/// Like `kubectl rollout status`: the controller saw the new generation and every replica is
/// updated and available. A workload that no longer exists counts as done.
async fn rollout_complete(
    client: &Client,
    ns: &str,
    kind: WorkloadKind,
    name: &str,
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
        let t0 = limiter.state.lock().unwrap().1;
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
}
