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

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct Credential {
    namespace: String,
    name: String,
}

impl Credential {
    fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadyLabel {
    ready: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiCallLabels {
    service: String,
    operation: String,
    outcome: String,
}

/// What the controller last told us about each credential. Kept as one map (rather than
/// inc/dec gauges) so that the per-state counts are always consistent with the set of
/// live credentials, whatever order updates and deletes arrive in.
#[derive(Debug, Default)]
struct CredentialBook {
    entries: Mutex<BTreeMap<Credential, CredentialEntry>>,
}

#[derive(Debug, Default)]
struct CredentialEntry {
    ready: Option<&'static str>,
    last_rotation: Option<jiff::Timestamp>,
}

impl CredentialBook {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<Credential, CredentialEntry>> {
        // A panic while holding this lock cannot leave the map half-updated in a way
        // that matters for metrics; keep serving rather than poisoning every scrape.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `rdscred_credentials{ready}` and `rdscred_seconds_since_last_rotation{namespace,name}`,
/// computed at scrape time from the [`CredentialBook`].
#[derive(Debug)]
struct CredentialCollector(Arc<CredentialBook>);

const READY_STATES: [&str; 3] = ["True", "False", "Unknown"];

impl Collector for CredentialCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = jiff::Timestamp::now();
        let (counts, ages) = {
            let entries = self.0.lock();
            let mut counts = [0i64; 3];
            let mut ages = Vec::new();
            for (credential, entry) in entries.iter() {
                if let Some(ready) = entry.ready {
                    let index = READY_STATES.iter().position(|s| *s == ready).unwrap_or(2);
                    counts[index] += 1;
                }
                if let Some(at) = entry.last_rotation {
                    let age = now.duration_since(at).as_secs_f64().max(0.0);
                    ages.push((credential.clone(), age));
                }
            }
            (counts, ages)
        };

        // All three states are always present so that `rdscred_credentials{ready="False"} > 0`
        // style alerts never depend on a series appearing.
        let mut family = encoder.encode_descriptor(
            "rdscred_credentials",
            "Number of RdsCredentials by Ready condition status.",
            None,
            MetricType::Gauge,
        )?;
        for (state, count) in READY_STATES.iter().zip(counts) {
            ConstGauge::new(count).encode(family.encode_family(&ReadyLabel { ready: state })?)?;
        }

        let mut family = encoder.encode_descriptor(
            "rdscred_seconds_since_last_rotation",
            "Seconds since the last successful rotation of each credential.",
            None,
            MetricType::Gauge,
        )?;
        for (credential, age) in &ages {
            ConstGauge::new(*age).encode(family.encode_family(credential)?)?;
        }
        Ok(())
    }
}

/// `rdscred_aws_api_calls_total{service,operation,outcome}`, read from the AWS layer's
/// own counters at scrape time so the AWS module needs no dependency on Prometheus.
struct ApiCallCollector(ApiCalls);

impl std::fmt::Debug for ApiCallCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiCallCollector")
    }
}

impl Collector for ApiCallCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut snapshot = self.0.snapshot();
        if snapshot.is_empty() {
            return Ok(());
        }
        // Stable output order makes scrapes diffable and tests deterministic.
        snapshot.sort();
        let mut family = encoder.encode_descriptor(
            "rdscred_aws_api_calls",
            "AWS API calls by service, operation and outcome.",
            None,
            MetricType::Counter,
        )?;
        for ((service, operation, outcome), count) in snapshot {
            let labels = ApiCallLabels {
                service,
                operation,
                outcome,
            };
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

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
    drift_detected: Family<Credential, Counter>,
    drifted: Family<Credential, Gauge>,
    rollouts: Family<KindLabel, Counter>,
    leader: Gauge,
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
                drift_detected,
                drifted,
                rollouts,
                leader,
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
mod tests {
    use super::*;

    /// The sample line for `series` with exactly these labels (in encoding order).
    fn sample(text: &str, series: &str, labels: &str) -> Option<f64> {
        let prefix = format!("{series}{{{labels}}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map(|value| value.parse().expect("numeric sample"))
    }

    fn plain_sample(text: &str, series: &str) -> Option<f64> {
        let prefix = format!("{series} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map(|v| v.parse().unwrap())
    }

    #[test]
    fn documented_series_and_labels_are_exported() {
        let calls = ApiCalls::default();
        let metrics = Metrics::new(calls.clone());
        metrics.reconcile_finished("RdsCredential", Duration::from_millis(30), None);
        metrics.reconcile_finished(
            "RdsCredential",
            Duration::from_millis(30),
            Some("AccessDenied"),
        );
        metrics.rotation_finished("alternating-users", "success", Duration::from_secs(3));
        metrics.rotation_finished("single-user", "rolled_back", Duration::from_secs(9));
        metrics.record_last_rotation(
            "team-a",
            "orders",
            jiff::Timestamp::now() - jiff::SignedDuration::from_secs(120),
        );
        metrics.set_credential_ready("team-a", "orders", "True");
        metrics.set_credential_ready("team-a", "billing", "False");
        metrics.sync_lag(Duration::from_millis(700));
        metrics.secret_synced("written");
        metrics.drift("team-a", "orders", true);
        metrics.rollout("Deployment");
        metrics.set_leader(true);
        metrics.event_received("label_updated");
        metrics.event_received("unknown");
        metrics.event_handled("label_updated");
        metrics.event_ignored("api_call", "unmanaged");
        metrics.event_malformed();
        metrics.event_lag(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(2));
        metrics.queue_error("AwsAccessDenied");
        metrics.set_queue_up("https://sqs.us-east-1.amazonaws.com/1/q", true);
        calls.record("secretsmanager", "GetSecretValue", "ok");
        calls.record("secretsmanager", "GetSecretValue", "ok");
        calls.record("rds", "DescribeDBInstances", "AccessDenied");

        let text = metrics.encode();
        let t = text.as_str();
        assert_eq!(
            sample(
                t,
                "rdscred_reconciles_total",
                r#"kind="RdsCredential",result="ok""#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                t,
                "rdscred_reconciles_total",
                r#"kind="RdsCredential",result="error""#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                t,
                "rdscred_reconcile_errors_total",
                r#"kind="RdsCredential",reason="AccessDenied""#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                t,
                "rdscred_reconcile_duration_seconds_count",
                r#"kind="RdsCredential""#
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                t,
                "rdscred_rotations_total",
                r#"strategy="alternating-users",result="success""#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                t,
                "rdscred_rotations_total",
                r#"strategy="single-user",result="rolled_back""#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                t,
                "rdscred_rotation_duration_seconds_sum",
                r#"strategy="single-user""#
            ),
            Some(9.0)
        );
        let age = sample(
            t,
            "rdscred_seconds_since_last_rotation",
            r#"namespace="team-a",name="orders""#,
        )
        .unwrap();
        assert!((120.0..130.0).contains(&age), "age {age}");
        assert_eq!(
            sample(t, "rdscred_credentials", r#"ready="True""#),
            Some(1.0)
        );
        assert_eq!(
            sample(t, "rdscred_credentials", r#"ready="False""#),
            Some(1.0)
        );
        assert_eq!(
            sample(t, "rdscred_credentials", r#"ready="Unknown""#),
            Some(0.0)
        );
        assert_eq!(
            sample(
                t,
                "rdscred_aws_api_calls_total",
                r#"service="secretsmanager",operation="GetSecretValue",outcome="ok""#
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                t,
                "rdscred_aws_api_calls_total",
                r#"service="rds",operation="DescribeDBInstances",outcome="AccessDenied""#
            ),
            Some(1.0)
        );
        assert_eq!(plain_sample(t, "rdscred_sync_lag_seconds_count"), Some(1.0));
        assert_eq!(
            sample(t, "rdscred_secret_syncs_total", r#"result="written""#),
            Some(1.0)
        );
        assert_eq!(
            sample(
                t,
                "rdscred_drift_detected_total",
                r#"namespace="team-a",name="orders""#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(t, "rdscred_drifted", r#"namespace="team-a",name="orders""#),
            Some(1.0)
        );
        assert_eq!(
            sample(t, "rdscred_rollouts_total", r#"kind="Deployment""#),
            Some(1.0)
        );
        assert_eq!(plain_sample(t, "rdscred_leader"), Some(1.0));
        assert_eq!(
            sample(
                t,
                "rdscred_events_received_total",
                r#"type="label_updated""#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(t, "rdscred_events_received_total", r#"type="unknown""#),
            Some(1.0)
        );
        assert_eq!(
            sample(t, "rdscred_events_received_total", r#"type="api_call""#),
            Some(0.0)
        );
        assert_eq!(
            sample(t, "rdscred_events_handled_total", r#"type="label_updated""#),
            Some(1.0)
        );
        assert_eq!(
            sample(
                t,
                "rdscred_events_ignored_total",
                r#"type="api_call",reason="unmanaged""#
            ),
            Some(1.0)
        );
        assert_eq!(plain_sample(t, "rdscred_events_malformed_total"), Some(1.0));
        assert_eq!(
            plain_sample(t, "rdscred_event_lag_seconds_count"),
            Some(1.0)
        );
        let lag = plain_sample(t, "rdscred_event_lag_seconds_sum").unwrap();
        assert!((2.0..5.0).contains(&lag), "lag {lag}");
        assert_eq!(
            sample(
                t,
                "rdscred_events_queue_errors_total",
                r#"reason="AwsAccessDenied""#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                t,
                "rdscred_events_queue_up",
                r#"queue="https://sqs.us-east-1.amazonaws.com/1/q""#
            ),
            Some(1.0)
        );
        assert!(t.contains("# TYPE rdscred_reconcile_duration_seconds histogram"));
        assert!(t.contains("# TYPE rdscred_aws_api_calls counter"));
        assert!(t.ends_with("# EOF\n"));
    }

    #[test]
    fn ready_counts_follow_the_latest_state_and_deletes() {
        let metrics = Metrics::new(ApiCalls::default());
        metrics.set_credential_ready("ns", "a", "Unknown");
        metrics.set_credential_ready("ns", "a", "True");
        metrics.set_credential_ready("ns", "a", "True");
        metrics.set_credential_ready("ns", "b", "something-odd");
        let text = metrics.encode();
        assert_eq!(
            sample(&text, "rdscred_credentials", r#"ready="True""#),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "rdscred_credentials", r#"ready="Unknown""#),
            Some(1.0)
        );

        metrics.record_last_rotation("ns", "a", jiff::Timestamp::now());
        metrics.drift("ns", "a", true);
        metrics.drift("ns", "a", false);
        let text = metrics.encode();
        assert_eq!(
            sample(&text, "rdscred_drifted", r#"namespace="ns",name="a""#),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &text,
                "rdscred_drift_detected_total",
                r#"namespace="ns",name="a""#
            ),
            Some(1.0)
        );

        metrics.forget_credential("ns", "a");
        let text = metrics.encode();
        assert_eq!(
            sample(&text, "rdscred_credentials", r#"ready="True""#),
            Some(0.0)
        );
        assert!(
            !text.contains(r#"name="a""#),
            "per-credential series removed:\n{text}"
        );
    }

    #[test]
    fn empty_registry_still_encodes_leader_and_credentials() {
        let text = Metrics::new(ApiCalls::default()).encode();
        assert_eq!(plain_sample(&text, "rdscred_leader"), Some(0.0));
        assert_eq!(
            sample(&text, "rdscred_credentials", r#"ready="True""#),
            Some(0.0)
        );
    }

    #[test]
    fn alerted_counters_exist_at_zero_before_their_first_event() {
        let metrics = Metrics::new(ApiCalls::default());
        let text = metrics.encode();
        let t = text.as_str();
        assert_eq!(
            sample(
                t,
                "rdscred_rotations_total",
                r#"strategy="single-user",result="rolled_back""#
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                t,
                "rdscred_rotations_total",
                r#"strategy="alternating-users",result="failure""#
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                t,
                "rdscred_reconciles_total",
                r#"kind="RdsCredential",result="error""#
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(t, "rdscred_rollouts_total", r#"kind="StatefulSet""#),
            Some(0.0)
        );
        metrics.drift("ns", "a", false);
        assert_eq!(
            sample(
                &metrics.encode(),
                "rdscred_drift_detected_total",
                r#"namespace="ns",name="a""#
            ),
            Some(0.0)
        );
    }
}
