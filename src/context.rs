//! The shared runtime context of every reconcile (clients, caches, limiters, settings) and
//! the per-object failure bookkeeping behind exponential backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource};

use crate::aws::Aws;
use crate::aws::cache::SecretCache;
use crate::crd::RdsCredential;
use crate::echo::OwnWrites;
use crate::engine::{AdminLogins, AdminPool};
use crate::limit::{DriftLane, RateLimiter};
use crate::propagation::rollout::{RolloutLimiter, WorkloadKinds};
use crate::telemetry::Metrics;

mod series;

use series::{SeriesBook, SeriesKey, Step, note_digest};

/// Controller-wide settings (from flags/env).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Written into the ownership tags: one AWS account can host several clusters.
    pub cluster_name: String,
    /// Default interval of the bulk AWSCURRENT change poll; with `events`, the backstop
    /// interval used while events flow.
    pub poll_interval: Duration,
    /// Event-driven change detection (an SQS queue fed by EventBridge), if configured.
    pub events: Option<EventsConfig>,
    /// Default drift-check interval.
    pub drift_interval: Duration,
    /// Periodic drift checks started per second, all credentials together (0: no rate limit).
    pub drift_checks_per_second: f64,
    /// Periodic drift checks running at once, on top of the reconcile concurrency (their own
    /// budget: they never take a slot from provisioning).
    pub drift_concurrency: usize,
    /// How often a Ready database re-proves its admin login.
    pub database_recheck_interval: Duration,
    /// Upper bound on concurrent rotations across all credentials.
    pub max_concurrent_rotations: usize,
    /// Cluster-wide workload rollouts per minute.
    pub rollouts_per_minute: u32,
    /// The optional workload kinds listed and rolled (CronJobs, Argo Rollouts).
    pub workload_kinds: WorkloadKinds,
    /// Client-side CreateSecret rate (requests per second, all credentials together; 0:
    /// unlimited). Secrets Manager allows 50/s per account.
    pub create_secrets_per_second: f64,
    /// Minimum time between two rotations of one credential when the spec does not say.
    pub default_min_rotation_interval: Duration,
    /// How long a rotation waits for dependent rollouts when the spec does not say.
    pub default_rollout_timeout: Duration,
    /// The IAM role the controller's own credentials belong to (`--controller-role-arn`):
    /// exempted from the Deny of restricted access policies on databases without a `roleArn`.
    pub controller_role_arn: Option<String>,
    /// Tests only (never set from flags): every rotation this controller starts stops or
    /// pauses right after the given step, to kill the controller there.
    pub crash_point: Option<Arc<crate::rotation::CrashPoint>>,
}

/// Where the events come from and how to behave without them.
#[derive(Clone, Debug)]
pub struct EventsConfig {
    pub queue_url: String,
    /// Region of the queue (default: the one in its URL, else the controller's).
    pub region: Option<String>,
    /// Role to assume for reading the queue (default: the controller's own credentials).
    pub role_arn: Option<String>,
    /// Bulk poll interval while the queue cannot be read (the normal `--poll-interval`;
    /// `Settings::poll_interval` is the backstop interval when events are on).
    pub fallback_poll_interval: Duration,
    /// Longest wait between two attempts to reach an unavailable queue.
    pub retry_max: Duration,
    /// The object "queue unavailable / available again" Events are about (the controller's
    /// Pod). `None`: logs and metrics only.
    pub report_to: Option<ObjectReference>,
}

/// The one place defaults live: `Settings::default()` and the `run` flags' defaults (src/main.rs
/// uses these constants for `default_value_t`) are the same values by construction.
pub mod defaults {
    use std::time::Duration;

    pub const CLUSTER_NAME: &str = "default";
    pub const POLL_INTERVAL: Duration = Duration::from_secs(300);
    pub const DRIFT_INTERVAL: Duration = Duration::from_secs(300);
    /// Keeps up with 6,000 credentials at the default 5-minute drift interval.
    pub const DRIFT_CHECKS_PER_SECOND: f64 = 20.0;
    pub const DRIFT_CONCURRENCY: usize = 2;
    pub const DATABASE_RECHECK_INTERVAL: Duration = Duration::from_secs(300);
    pub const MAX_CONCURRENT_ROTATIONS: usize = 4;
    pub const ROLLOUTS_PER_MINUTE: u32 = 30;
    /// The Secrets Manager CreateSecret quota per account and region.
    pub const CREATE_SECRETS_PER_SECOND: f64 = 50.0;
    pub const MIN_ROTATION_INTERVAL: Duration = Duration::from_secs(3600);
    pub const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(900);
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cluster_name: defaults::CLUSTER_NAME.into(),
            poll_interval: defaults::POLL_INTERVAL,
            events: None,
            drift_interval: defaults::DRIFT_INTERVAL,
            drift_checks_per_second: defaults::DRIFT_CHECKS_PER_SECOND,
            drift_concurrency: defaults::DRIFT_CONCURRENCY,
            database_recheck_interval: defaults::DATABASE_RECHECK_INTERVAL,
            max_concurrent_rotations: defaults::MAX_CONCURRENT_ROTATIONS,
            rollouts_per_minute: defaults::ROLLOUTS_PER_MINUTE,
            workload_kinds: WorkloadKinds::default(),
            create_secrets_per_second: defaults::CREATE_SECRETS_PER_SECOND,
            default_min_rotation_interval: defaults::MIN_ROTATION_INTERVAL,
            default_rollout_timeout: defaults::ROLLOUT_TIMEOUT,
            controller_role_arn: None,
            crash_point: None,
        }
    }
}

/// Everything a reconcile needs; shared by all reconciles (cheap to clone through `Arc`).
pub struct Context {
    pub client: Client,
    pub aws: Aws,
    pub metrics: Metrics,
    pub settings: Settings,
    /// Reflector stores of the watched RdsCredentials (claims check, poller), set once the
    /// controllers are built.
    pub credentials: OnceLock<Vec<Store<RdsCredential>>>,
    /// Admin logins read from Secrets Manager, cached briefly.
    pub admin_logins: AdminLogins,
    /// Admin sessions reused across reconciles, a few per database server and admin login.
    pub admin_pool: AdminPool,
    /// Secret metadata seen by the bulk poll and by our own calls.
    pub secrets: SecretCache,
    /// Bounds rotations across all credentials.
    pub rotation_slots: Arc<tokio::sync::Semaphore>,
    pub rollouts: RolloutLimiter,
    /// Paces CreateSecret ([`Settings::create_secrets_per_second`], no burst: spread evenly).
    pub create_secret_rate: RateLimiter,
    /// Periodic drift checks, in a budget of their own (see [`DriftLane`]).
    pub drift_lane: DriftLane,
    /// Our own writes whose watch events carry nothing new (see [`crate::echo`]).
    pub own_writes: OwnWrites,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    reporter: Reporter,
    /// The open Event series per (object, type, reason, action), with the note they report.
    series: SeriesBook,
}

impl Context {
    pub fn new(
        client: Client,
        aws: Aws,
        metrics: Metrics,
        settings: Settings,
        instance: Option<String>,
    ) -> Context {
        let reporter = Reporter {
            controller: "rdscred".into(),
            instance,
        };
        Context {
            rotation_slots: Arc::new(tokio::sync::Semaphore::new(
                settings.max_concurrent_rotations.max(1),
            )),
            rollouts: RolloutLimiter::new(settings.rollouts_per_minute),
            drift_lane: DriftLane::new(
                settings.drift_checks_per_second,
                settings.drift_concurrency,
                settings.drift_interval,
            ),
            create_secret_rate: RateLimiter::new(settings.create_secrets_per_second, 1),
            client,
            aws,
            metrics,
            settings,
            credentials: OnceLock::new(),
            own_writes: OwnWrites::default(),
            admin_logins: AdminLogins::default(),
            admin_pool: AdminPool::default(),
            secrets: SecretCache::default(),
            failures: Mutex::new(HashMap::new()),
            reporter,
            series: SeriesBook::default(),
        }
    }

    /// Every watched RdsCredential (empty until the controllers run).
    pub fn all_credentials(&self) -> Vec<Arc<RdsCredential>> {
        self.credentials
            .get()
            .map(|stores| stores.iter().flat_map(|s| s.state()).collect())
            .unwrap_or_default()
    }

    /// Publishes an Event about `obj`. `reason` is a [`Reason`](crate::reconcile::Reason) or
    /// a typed error's reason. Failures to publish are logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: impl AsRef<str>,
        action: &str,
        note: String,
    ) {
        self.event_on(&obj.object_ref(&()), type_, reason, action, note)
            .await;
    }

    /// [`event`](Self::event) on any object (a workload rdscred restarted, so `kubectl
    /// describe deployment` says why).
    ///
    /// Published as kube-runtime's Recorder would (same Event object, name and series rules:
    /// one Event per (object, type, reason, action), repeats patched into its `series`), except
    /// that a repeat continues the series only with the same note, so every note stays true.
    pub async fn event_on(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: impl AsRef<str>,
        action: &str,
        note: String,
    ) {
        let reason = reason.as_ref();
        let note = truncate(note, 1000);
        let key = SeriesKey {
            object: format!(
                "{}/{}/{}/{}",
                regarding.kind.as_deref().unwrap_or_default(),
                regarding.namespace.as_deref().unwrap_or_default(),
                regarding.name.as_deref().unwrap_or_default(),
                regarding.uid.as_deref().unwrap_or_default()
            ),
            type_: match type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            },
            reason: reason.to_string(),
            action: action.to_string(),
        };
        let digest = note_digest(&note);
        let now = std::time::Instant::now();
        let at = MicroTime(jiff::Timestamp::now());
        // Cluster-scoped objects (RdsDatabase) get their Events in `default`, as with Recorder.
        let events: Api<K8sEvent> = Api::namespaced(
            self.client.clone(),
            regarding.namespace.as_deref().unwrap_or("default"),
        );
        let step = self.series.step(&key, digest, now);
        let sent = match &step {
            Step::Create => {
                let event = new_event(
                    &self.reporter,
                    regarding,
                    key.type_,
                    reason,
                    action,
                    note,
                    at,
                );
                let name = event.metadata.name.clone().unwrap_or_default();
                events
                    .create(&PostParams::default(), &event)
                    .await
                    .map(|_| (name, 1))
            }
            Step::Continue { name, count } => {
                // Only the series changes; every other field of an Event is immutable.
                let series = EventSeries {
                    count: *count,
                    last_observed_time: at,
                };
                events
                    .patch(
                        name,
                        &PatchParams::default(),
                        &Patch::Merge(serde_json::json!({ "series": series })),
                    )
                    .await
                    .map(|_| (name.clone(), *count))
            }
        };
        match sent {
            Ok((name, count)) => self.series.published(key, digest, name, count, now),
            Err(e) => {
                self.series.failed(&key);
                tracing::warn!(error = %e, reason, "could not publish event");
            }
        }
    }

    /// Forgets Event series idle for their TTL (called by the poller every cycle).
    pub fn expire_event_series(&self) {
        self.series.expire(std::time::Instant::now());
    }

    /// Records a failure and returns the backoff before the next attempt: exponential from 5s,
    /// capped at `cap` (the error's own: `reconcile::Error::max_backoff`), with ±20% jitter so
    /// failing objects do not line up.
    pub fn backoff_after_failure(&self, key: String, cap: Duration) -> Duration {
        let attempt = {
            let mut f = self.failures.lock().expect("failures lock");
            let n = f.entry(key).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let base = Duration::from_secs(5).saturating_mul(1u32 << (attempt - 1).min(10));
        crate::limit::jitter(base.min(cap), 0.2)
    }

    /// Whether `key` failed and has not succeeded since (it waits out an error backoff).
    pub fn in_backoff(&self, key: &str) -> bool {
        self.failures
            .lock()
            .expect("failures lock")
            .get(key)
            .is_some_and(|n| *n > 0)
    }

    pub fn reset_failures(&self, key: &str) {
        self.failures.lock().expect("failures lock").remove(key);
    }

    /// Drops what this process keeps about `cred` once it is deleted: its failure count, its
    /// metrics, its secret's cached metadata and the digest of its target Secret. (Its Event
    /// series expire on their own after [`series::SERIES_TTL`].)
    pub fn forget_credential(&self, cred: &RdsCredential) {
        use kube::ResourceExt;
        let ns = cred.namespace().unwrap_or_default();
        self.metrics.forget_credential(&ns, &cred.name_any());
        self.reset_failures(&object_key(cred));
        let target = format!("{ns}/{}", crate::propagation::sync::target_name(cred));
        self.secrets.forget(&cred.spec.secret.name, &target);
        if let Some(arn) = cred.status.as_ref().and_then(|s| s.secret_arn.as_deref()) {
            self.secrets.forget(arn, &target);
        }
    }

    /// How many objects have a failure count (tests of what deletion leaves behind).
    pub fn failing_objects(&self) -> usize {
        self.failures.lock().expect("failures lock").len()
    }
}

/// Key for per-object bookkeeping.
pub fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    ObjectRef::from_obj(obj).to_string()
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// A new Event as kube-runtime's Recorder builds it (`Recorder::generate_event`): named
/// `<object name>.<nanoseconds, hex>`, in the object's namespace, reported by `reporter`.
fn new_event(
    reporter: &Reporter,
    regarding: &ObjectReference,
    type_: &str,
    reason: &str,
    action: &str,
    note: String,
    at: MicroTime,
) -> K8sEvent {
    K8sEvent {
        action: Some(action.to_string()),
        reason: Some(reason.to_string()),
        event_time: Some(at.clone()),
        regarding: Some(regarding.clone()),
        note: Some(note),
        metadata: ObjectMeta {
            namespace: regarding.namespace.clone(),
            name: Some(format!(
                "{}.{:x}",
                regarding.name.as_ref().unwrap_or(&reporter.controller),
                at.0.as_nanosecond()
            )),
            ..Default::default()
        },
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(
            reporter
                .instance
                .clone()
                .unwrap_or_else(|| reporter.controller.clone()),
        ),
        type_: Some(type_.to_string()),
        ..Default::default()
    }
}
