//! Collectors computed at scrape time: the per-credential book (ready states, time since
//! the last rotation) and the AWS layer's own call counters.

use super::*;

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub(super) struct Credential {
    pub(super) namespace: String,
    pub(super) name: String,
}

impl Credential {
    pub(super) fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReadyLabel {
    pub(super) ready: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ApiCallLabels {
    pub(super) service: String,
    pub(super) operation: String,
    pub(super) outcome: String,
}

/// What the controller last told us about each credential. Kept as one map (rather than
/// inc/dec gauges) so that the per-state counts are always consistent with the set of
/// live credentials, whatever order updates and deletes arrive in.
#[derive(Debug, Default)]
pub(super) struct CredentialBook {
    pub(super) entries: Mutex<BTreeMap<Credential, CredentialEntry>>,
}

#[derive(Debug, Default)]
pub(super) struct CredentialEntry {
    pub(super) ready: Option<&'static str>,
    pub(super) last_rotation: Option<jiff::Timestamp>,
}

impl CredentialBook {
    pub(super) fn lock(&self) -> MutexGuard<'_, BTreeMap<Credential, CredentialEntry>> {
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
pub(super) struct CredentialCollector(pub(super) Arc<CredentialBook>);

pub(super) const READY_STATES: [&str; 3] = ["True", "False", "Unknown"];

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
pub(super) struct ApiCallCollector(pub(super) ApiCalls);

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
