//! Counts of AWS API calls by service, operation and outcome. The telemetry module exports them;
//! tests use them to prove the API-call economy of change detection.
//!
//! Optionally (tests) also a log of every request as sent ([`RequestLog`]): operation, region,
//! role and the request parameters from the wire, for evaluating them against the IAM policy.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use serde_json::Value;

/// Counter of AWS calls keyed by (service, operation, outcome). Cheap to clone (shared).
///
/// One count per SDK operation invocation: the SDK's own retries of that operation are
/// not counted separately. CreateSecret's retries are the controller's own (each waits for the
/// client-side rate limit), so each of its requests is counted, with its outcome. Outcomes:
/// `ok`, `not_found` (an expected miss such as a DescribeSecret of a name that does not
/// exist), `throttled`, `error`.
#[derive(Clone, Default)]
pub struct ApiCalls {
    inner: Arc<Mutex<BTreeMap<CallKey, u64>>>,
    requests: Option<RequestLog>,
}

/// (service, operation, outcome).
type CallKey = (&'static str, &'static str, &'static str);

impl ApiCalls {
    /// Counters plus a log of every request sent (memory grows with every call: tests only).
    pub fn with_request_log() -> ApiCalls {
        ApiCalls {
            requests: Some(RequestLog::default()),
            ..ApiCalls::default()
        }
    }

    /// The request log, if enabled.
    pub fn request_log(&self) -> Option<&RequestLog> {
        self.requests.as_ref()
    }

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

/// One request as sent to AWS, with what IAM authorizes it on. Never holds a secret value:
/// `SecretString`/`SecretBinary` are dropped from the parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedRequest {
    /// `secretsmanager`, `rds`, `sts`.
    pub service: String,
    /// `CreateSecret`, `DescribeDBInstances`, `AssumeRole`.
    pub operation: String,
    pub region: String,
    /// The role the credentials belong to (`None`: the controller's own identity).
    pub role_arn: Option<String>,
    /// The request's parameters: the JSON body (Secrets Manager) or the query form (RDS).
    pub params: Value,
    /// When it was sent (rate limits are checked against these).
    pub at: std::time::Instant,
    /// Which attempt of its SDK invocation this is: 1, then 2, 3 for the SDK's own retries
    /// (after a throttle, a 5xx, a connection that failed or timed out). Always 1 for
    /// CreateSecret, whose retries are new invocations (with the same ClientRequestToken).
    pub attempt: u32,
}

/// The requests sent by every client of an [`Aws`](super::Aws) whose counters have a log.
#[derive(Clone, Default)]
pub struct RequestLog {
    entries: Arc<Mutex<Vec<RecordedRequest>>>,
}

impl RequestLog {
    pub fn push(&self, request: RecordedRequest) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(request);
    }

    /// Everything sent so far, in order.
    pub fn snapshot(&self) -> Vec<RecordedRequest> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// An SDK interceptor that logs each request of a `service` client for `region` acting
    /// as `role`.
    pub(crate) fn interceptor(
        &self,
        service: &'static str,
        region: &str,
        role_arn: Option<&str>,
    ) -> LogRequests {
        LogRequests {
            log: self.clone(),
            service,
            region: region.to_string(),
            role_arn: role_arn.map(str::to_string),
        }
    }
}

impl std::fmt::Debug for RequestLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestLog").finish_non_exhaustive()
    }
}

/// Reads each request just before it is sent (every attempt: AWS authorizes each).
#[derive(Debug)]
pub(crate) struct LogRequests {
    log: RequestLog,
    service: &'static str,
    region: String,
    role_arn: Option<String>,
}

impl Intercept for LogRequests {
    fn name(&self) -> &'static str {
        "rdscred-request-log"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let attempt = cfg
            .load::<RequestAttempts>()
            .map_or(1, RequestAttempts::attempts);
        let request = context.request();
        let body = request.body().bytes().unwrap_or_default();
        let (service, operation, params) = match request.headers().get("x-amz-target") {
            // awsJson: `secretsmanager.CreateSecret` and a JSON body.
            Some(target) => {
                let (service, operation) = target.split_once('.').unwrap_or(("", target));
                let mut params: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                if let Some(p) = params.as_object_mut() {
                    p.remove("SecretString");
                    p.remove("SecretBinary");
                }
                (service.to_string(), operation.to_string(), params)
            }
            // awsQuery (RDS): a form with `Action`.
            None => {
                let form: serde_json::Map<String, Value> = form_urlencoded::parse(body)
                    .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                    .collect();
                let operation = form
                    .get("Action")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                (self.service.to_string(), operation, Value::Object(form))
            }
        };
        self.log.push(RecordedRequest {
            service,
            operation,
            region: self.region.clone(),
            role_arn: self.role_arn.clone(),
            params,
            at: std::time::Instant::now(),
            attempt,
        });
        Ok(())
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
