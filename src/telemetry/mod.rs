//! Telemetry: structured logs, Prometheus metrics and the HTTP surface (`/metrics`,
//! `/healthz`, `/readyz`).
//!
//! Nothing here ever sees a secret value: metric labels are namespace/name/kind/reason
//! style identifiers only, and the log formatter writes whatever the call sites put in
//! fields, which is why `secret::` types redact their `Debug`/`Display`. Integration
//! tests use [`capture_logs`] to prove no password reaches a log line.

mod http;
mod logging;
mod metrics;

pub use http::{Health, serve};
pub use logging::{LogCapture, LogFormat, LogInitError, capture_logs, init_logging};
pub use metrics::Metrics;
