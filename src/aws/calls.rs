//! Counts of AWS API calls by service, operation and outcome. The telemetry module exports them;
//! tests use them to prove the API-call economy of change detection.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Counter of AWS calls keyed by (service, operation, outcome). Cheap to clone (shared).
///
/// One count per SDK operation invocation: the SDK's own retries of that operation are
/// not counted separately. Outcomes: `ok`, `not_found` (an expected miss such as a
/// DescribeSecret of a name that does not exist), `throttled`, `error`.
#[derive(Clone, Default)]
pub struct ApiCalls {
    inner: Arc<Mutex<BTreeMap<CallKey, u64>>>,
}

/// (service, operation, outcome).
type CallKey = (&'static str, &'static str, &'static str);

impl ApiCalls {
    pub fn record(&self, service: &'static str, operation: &'static str, outcome: &'static str) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((service, operation, outcome)).or_insert(0) += 1;
    }

    /// Every counter, sorted by (service, operation, outcome).
    pub fn snapshot(&self) -> Vec<((String, String, String), u64)> {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|((s, o, r), n)| ((s.to_string(), o.to_string(), r.to_string()), *n))
            .collect()
    }

    /// Calls of `operation` (e.g. `"ListSecrets"`), all services and outcomes together.
    pub fn total(&self, operation: &str) -> u64 {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .filter(|((_, o, _), _)| *o == operation)
            .map(|(_, n)| n)
            .sum()
    }
}

impl std::fmt::Debug for ApiCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiCalls")
            .field("counters", &self.snapshot().len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_key_and_totals_by_operation() {
        let calls = ApiCalls::default();
        let shared = calls.clone();
        calls.record("secretsmanager", "ListSecrets", "ok");
        shared.record("secretsmanager", "ListSecrets", "ok");
        calls.record("secretsmanager", "ListSecrets", "throttled");
        calls.record("rds", "DescribeDBInstances", "error");
        assert_eq!(calls.total("ListSecrets"), 3);
        assert_eq!(calls.total("DescribeDBInstances"), 1);
        assert_eq!(calls.total("GetSecretValue"), 0);
        let snap = calls.snapshot();
        assert_eq!(snap.len(), 3);
        assert!(snap.contains(&(
            ("secretsmanager".into(), "ListSecrets".into(), "ok".into()),
            2
        )));
    }
}
