//! Prometheus metrics (OpenMetrics text on `/metrics`).
//!
//! Series names are a public interface: docs/metrics.md documents them and the chart's
//! PrometheusRule alerts on them. Label values are identifiers only (namespace, name,
//! kind, strategy, reason, result); a secret value must never become a label.
//!
//! Counters are registered without their `_total` suffix because the OpenMetrics
//! encoder appends it to every counter sample.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::aws::ApiCalls;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindResult {
    kind: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindReason {
    kind: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StrategyResult {
    strategy: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StrategyLabel {
    strategy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeReason {
    r#type: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

/// Detail types of the event source (`type` label), created at 0.
const EVENT_TYPES: [&str; 3] = ["label_updated", "api_call", "service_event"];

mod collectors;
use collectors::*;

struct Inner {
    registry: Registry,
    reconciles: Family<KindResult, Counter>,
    reconcile_errors: Family<KindReason, Counter>,
    reconcile_duration: Family<KindLabel, Histogram, fn() -> Histogram>,
    rotations: Family<StrategyResult, Counter>,
    rotation_duration: Family<StrategyLabel, Histogram, fn() -> Histogram>,
    credentials: Arc<CredentialBook>,
    sync_lag: Histogram,
    secret_syncs: Family<ResultLabel, Counter>,
    drift_lane: Family<ResultLabel, Counter>,
    drift_detected: Family<Credential, Counter>,
    drifted: Family<Credential, Gauge>,
    rollouts: Family<KindLabel, Counter>,
    leader: Gauge,
    shards_held: Gauge,
    events_received: Family<TypeLabel, Counter>,
    events_handled: Family<TypeLabel, Counter>,
    events_ignored: Family<TypeReason, Counter>,
    events_malformed: Counter,
    event_lag: Histogram,
    queue_errors: Family<ReasonLabel, Counter>,
    queue_up: Family<QueueLabel, Gauge>,
}

/// The controller's metrics. Cheap to clone; all clones share one registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// `aws_calls` is the AWS layer's call counter; share the same handle with the AWS
    /// clients so their calls show up in `rdscred_aws_api_calls_total`.
    pub fn new(aws_calls: ApiCalls) -> Self {
        let mut registry = Registry::default();

        let reconciles = Family::<KindResult, Counter>::default();
        registry.register(
            "rdscred_reconciles",
            "Reconciles by kind and result (ok|error)",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<KindReason, Counter>::default();
        registry.register(
            "rdscred_reconcile_errors",
            "Failed reconciles by kind and error reason",
            reconcile_errors.clone(),
        );
        // 5 ms .. ~41 s: a reconcile is a few API calls, but one that waits on a database
        // login or an AWS retry can take tens of seconds.
        let reconcile_duration = Family::<KindLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.005, 2.0, 14))) as fn() -> Histogram,
        );
        registry.register(
            "rdscred_reconcile_duration_seconds",
            "Duration of reconciles by kind",
            reconcile_duration.clone(),
        );

        let rotations = Family::<StrategyResult, Counter>::default();
        registry.register(
            "rdscred_rotations",
            "Rotations by strategy and result (success|failure|rolled_back)",
            rotations.clone(),
        );
        // A rotation spans the four-step protocol including propagation waits: seconds
        // to tens of minutes.
        let rotation_duration = Family::<StrategyLabel, Histogram>::new_with_constructor(
            (|| {
                Histogram::new([
                    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
                ])
            }) as fn() -> Histogram,
        );
        registry.register(
            "rdscred_rotation_duration_seconds",
            "Duration of rotations by strategy",
            rotation_duration.clone(),
        );

        let credentials = Arc::new(CredentialBook::default());
        registry.register_collector(Box::new(CredentialCollector(credentials.clone())));
        registry.register_collector(Box::new(ApiCallCollector(aws_calls)));

        let sync_lag = Histogram::new([
            0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
        ]);
        registry.register(
            "rdscred_sync_lag_seconds",
            "Time from seeing a new AWSCURRENT version to the Kubernetes Secret being written",
            sync_lag.clone(),
        );
        let secret_syncs = Family::<ResultLabel, Counter>::default();
        registry.register(
            "rdscred_secret_syncs",
            "Kubernetes Secret syncs by result",
            secret_syncs.clone(),
        );
        let drift_lane = Family::<ResultLabel, Counter>::default();
        registry.register(
            "rdscred_drift_lane",
            "Periodic drift-check passes by result: run, or deferred to a later slot of the drift lane",
            drift_lane.clone(),
        );

        let drift_detected = Family::<Credential, Counter>::default();
        registry.register(
            "rdscred_drift_detected",
            "Times drift between AWS, the database and the Kubernetes Secret was detected",
            drift_detected.clone(),
        );
        let drifted = Family::<Credential, Gauge>::default();
        registry.register(
            "rdscred_drifted",
            "1 while a credential's last check found drift, else 0",
            drifted.clone(),
        );

        let rollouts = Family::<KindLabel, Counter>::default();
        registry.register(
            "rdscred_rollouts",
            "Workload rollouts triggered after a credential change, by workload kind",
            rollouts.clone(),
        );

        let leader = Gauge::default();
        registry.register(
            "rdscred_leader",
            "1 while this instance holds the leader lease",
            leader.clone(),
        );

        let shards_held = Gauge::default();
        registry.register(
            "rdscred_shards_held",
            "Shard Leases this instance holds and reconciles (with --shards > 1)",
            shards_held.clone(),
        );

        let events_received = Family::<TypeLabel, Counter>::default();
        registry.register(
            "rdscred_events_received",
            "Secrets Manager events received from the event queue, by detail type (unknown: not parsed)",
            events_received.clone(),
        );
        let events_handled = Family::<TypeLabel, Counter>::default();
        registry.register(
            "rdscred_events_handled",
            "Events about followed secrets that were acted on (metadata re-read or found current), by detail type",
            events_handled.clone(),
        );
        let events_ignored = Family::<TypeReason, Counter>::default();
        registry.register(
            "rdscred_events_ignored",
            "Well-formed events that could not matter, by detail type and reason",
            events_ignored.clone(),
        );
        let events_malformed = Counter::default();
        registry.register(
            "rdscred_events_malformed",
            "Queue messages that are not a usable EventBridge envelope (deleted, not retried)",
            events_malformed.clone(),
        );
        let event_lag = Histogram::new([
            0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
        ]);
        registry.register(
            "rdscred_event_lag_seconds",
            "Time from a Secrets Manager event (its time, whole seconds) to the Kubernetes Secret written",
            event_lag.clone(),
        );
        let queue_errors = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "rdscred_events_queue_errors",
            "Failed calls to the event queue, by reason",
            queue_errors.clone(),
        );
        let queue_up = Family::<QueueLabel, Gauge>::default();
        registry.register(
            "rdscred_events_queue_up",
            "1 while the event queue is consumed, 0 while the controller falls back to polling (leader only)",
            queue_up.clone(),
        );
        for r#type in EVENT_TYPES {
            drop(events_received.get_or_create(&TypeLabel { r#type }));
            drop(events_handled.get_or_create(&TypeLabel { r#type }));
            drop(events_ignored.get_or_create(&TypeReason {
                r#type,
                reason: "unmanaged",
            }));
        }
        for reason in ["AwsAccessDenied", "AwsResourceNotFound", "AwsUnavailable"] {
            drop(queue_errors.get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            }));
        }

        // Known label sets start at 0: `increase()`/`rate()` need a sample before the first
        // event, or the first rotation failure (say) would never fire an alert.
        for kind in ["RdsDatabase", "RdsCredential"] {
            for result in ["ok", "error"] {
                drop(reconciles.get_or_create(&KindResult {
                    kind: kind.to_owned(),
                    result,
                }));
            }
        }
        for strategy in ["alternating-users", "single-user"] {
            for result in ["success", "failure", "rolled_back"] {
                drop(rotations.get_or_create(&StrategyResult {
                    strategy: strategy.to_owned(),
                    result: result.to_owned(),
                }));
            }
        }
        for kind in ["Deployment", "StatefulSet", "DaemonSet"] {
            drop(rollouts.get_or_create(&KindLabel {
                kind: kind.to_owned(),
            }));
        }
        drop(secret_syncs.get_or_create(&ResultLabel {
            result: "written".to_owned(),
        }));
        for result in ["run", "deferred"] {
            drop(drift_lane.get_or_create(&ResultLabel {
                result: result.to_owned(),
            }));
        }

        Self {
            inner: Arc::new(Inner {
                registry,
                reconciles,
                reconcile_errors,
                reconcile_duration,
                rotations,
                rotation_duration,
                credentials,
                sync_lag,
                secret_syncs,
                drift_lane,
                drift_detected,
                drifted,
                rollouts,
                leader,
                shards_held,
                events_received,
                events_handled,
                events_ignored,
                events_malformed,
                event_lag,
                queue_errors,
                queue_up,
            }),
        }
    }

    /// One reconcile of `kind` finished; `error_reason` is a short stable reason
    /// (e.g. `AccessDenied`, `DatabaseUnreachable`), `None` on success.
    pub fn reconcile_finished(&self, kind: &str, duration: Duration, error_reason: Option<&str>) {
        let m = &self.inner;
        let result = if error_reason.is_some() {
            "error"
        } else {
            "ok"
        };
        m.reconciles
            .get_or_create(&KindResult {
                kind: kind.to_owned(),
                result,
            })
            .inc();
        if let Some(reason) = error_reason {
            m.reconcile_errors
                .get_or_create(&KindReason {
                    kind: kind.to_owned(),
                    reason: reason.to_owned(),
                })
                .inc();
        }
        m.reconcile_duration
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .observe(duration.as_secs_f64());
    }

    /// One rotation finished; `result` is `success`, `failure` or `rolled_back`.
    pub fn rotation_finished(&self, strategy: &str, result: &str, duration: Duration) {
        let m = &self.inner;
        m.rotations
            .get_or_create(&StrategyResult {
                strategy: strategy.to_owned(),
                result: result.to_owned(),
            })
            .inc();
        m.rotation_duration
            .get_or_create(&StrategyLabel {
                strategy: strategy.to_owned(),
            })
            .observe(duration.as_secs_f64());
    }

    /// Time of the last successful rotation of a credential (from its status, so it
    /// survives restarts); exported as seconds-since at scrape time.
    pub fn record_last_rotation(&self, namespace: &str, name: &str, at: jiff::Timestamp) {
        let mut entries = self.inner.credentials.lock();
        entries
            .entry(Credential::new(namespace, name))
            .or_default()
            .last_rotation = Some(at);
    }

    /// The credential's Ready condition status: `True`, `False` or `Unknown` (anything
    /// else counts as `Unknown`).
    pub fn set_credential_ready(&self, namespace: &str, name: &str, ready: &str) {
        let state = match ready {
            "True" => "True",
            "False" => "False",
            _ => "Unknown",
        };
        let mut entries = self.inner.credentials.lock();
        entries
            .entry(Credential::new(namespace, name))
            .or_default()
            .ready = Some(state);
    }

    /// The credential was deleted: drop every per-credential series so deleted
    /// credentials neither alert nor accumulate.
    pub fn forget_credential(&self, namespace: &str, name: &str) {
        let credential = Credential::new(namespace, name);
        self.inner.credentials.lock().remove(&credential);
        self.inner.drift_detected.remove(&credential);
        self.inner.drifted.remove(&credential);
    }

    /// Time from seeing a new AWSCURRENT version to the Kubernetes Secret written.
    pub fn sync_lag(&self, lag: Duration) {
        self.inner.sync_lag.observe(lag.as_secs_f64());
    }

    /// One Kubernetes Secret sync attempt (`result`: e.g. `written`, `unchanged`, `error`).
    pub fn secret_synced(&self, result: &str) {
        self.inner
            .secret_syncs
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    /// One periodic drift-check pass through the drift lane (`run` or `deferred`).
    pub fn drift_pass(&self, result: &str) {
        self.inner
            .drift_lane
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Outcome of a drift check. Each call with `drifted = true` counts one detection;
    /// the gauge holds the latest state.
    pub fn drift(&self, namespace: &str, name: &str, drifted: bool) {
        let credential = Credential::new(namespace, name);
        // Created at 0 by the first check, so the first detection is an increase.
        let detected = self.inner.drift_detected.get_or_create(&credential);
        if drifted {
            detected.inc();
        }
        self.inner
            .drifted
            .get_or_create(&credential)
            .set(i64::from(drifted));
    }

    /// A workload rollout was triggered (`kind`: `Deployment`, `StatefulSet`, …).
    pub fn rollout(&self, kind: &str) {
        self.inner
            .rollouts
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.inner.leader.set(i64::from(leader));
    }

    /// How many shards this instance holds (sharded operation, docs/sharding.md).
    pub fn set_shards_held(&self, held: usize) {
        self.inner
            .shards_held
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    /// A message arrived on the event queue; `detail_type` is `unknown` when it did not parse.
    pub fn event_received(&self, detail_type: &'static str) {
        self.inner
            .events_received
            .get_or_create(&TypeLabel {
                r#type: detail_type,
            })
            .inc();
    }

    /// An event about a followed secret was acted on.
    pub fn event_handled(&self, detail_type: &'static str) {
        self.inner
            .events_handled
            .get_or_create(&TypeLabel {
                r#type: detail_type,
            })
            .inc();
    }

    /// A well-formed event that could not matter (`reason`: e.g. `unmanaged`, `read_only`).
    pub fn event_ignored(&self, detail_type: &'static str, reason: &'static str) {
        self.inner
            .events_ignored
            .get_or_create(&TypeReason {
                r#type: detail_type,
                reason,
            })
            .inc();
    }

    pub fn event_malformed(&self) {
        self.inner.events_malformed.inc();
    }

    /// The Kubernetes Secret now holds a version an event at `event_time` revealed.
    pub fn event_lag(&self, event_time: jiff::Timestamp) {
        let lag = jiff::Timestamp::now().duration_since(event_time);
        self.inner.event_lag.observe(lag.as_secs_f64().max(0.0));
    }

    /// A call to the event queue failed (`reason`: the AWS error reason).
    pub fn queue_error(&self, reason: &str) {
        self.inner
            .queue_errors
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Whether the event queue at `queue` is being consumed.
    pub fn set_queue_up(&self, queue: &str, up: bool) {
        self.inner
            .queue_up
            .get_or_create(&QueueLabel {
                queue: queue.to_owned(),
            })
            .set(i64::from(up));
    }

    /// The OpenMetrics text exposition (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug in a
        // collector, and a partial scrape is still more useful than none.
        if let Err(error) =
            prometheus_client::encoding::text::encode(&mut out, &self.inner.registry)
        {
            tracing::error!(%error, "encoding metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests;
