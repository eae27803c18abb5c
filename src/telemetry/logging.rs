//! Log setup: JSON (one object per line, span fields flattened) or human text.
//!
//! JSON lines carry the fields of every enclosing span at the top level, so a line
//! emitted anywhere inside a reconcile span (`namespace`, `name`, `kind`, …) can be
//! found by those keys in a log store without knowing which span set them.
//! tracing-subscriber's own JSON format nests spans as `{"name": <span name>, ..fields}`,
//! which produces duplicate `name` keys when a span has a `name` field, hence the small
//! formatter below.

use std::fmt;
use std::io::{self, IsTerminal};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::ParseError;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// Output format of the process's logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line: for log collectors (the default in the chart).
    #[default]
    Json,
    /// Human-readable lines with span context: for a terminal.
    Text,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogInitError {
    #[error("invalid log filter: {0}")]
    Filter(#[from] ParseError),
    /// A global subscriber is already installed (a second call, or a test harness).
    #[error("a global tracing subscriber is already installed")]
    AlreadyInitialized,
}

/// Installs the global subscriber. `filter` uses `EnvFilter` syntax
/// (`info,rdscred=debug`). Logs go to stderr so that stdout stays clean for command
/// output (`rdscred crd`, `rdscred iam-policy`).
///
/// Returns [`LogInitError::AlreadyInitialized`] instead of panicking when called twice,
/// so tests and embedders can ignore it.
pub fn init_logging(format: LogFormat, filter: &str) -> Result<(), LogInitError> {
    let filter = EnvFilter::try_new(filter)?;
    let result = match format {
        LogFormat::Json => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .with_writer(io::stderr)
            .try_init(),
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(io::stderr().is_terminal())
            .with_writer(io::stderr)
            .try_init(),
    };
    result.map_err(|_| LogInitError::AlreadyInitialized)
}

/// JSON event format: `timestamp`, `level`, `target`, `message`, then `span` (the span
/// path), the fields of every enclosing span (outer first, so inner spans win on a
/// clash) and the event's own fields, all at the top level.
struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut object = Map::new();

        if let Some(scope) = ctx.event_scope() {
            let mut path = Vec::new();
            for span in scope.from_root() {
                path.push(span.name());
                let extensions = span.extensions();
                // The layer is built with `JsonFields`, so span fields are stored as a
                // JSON object; anything else is skipped rather than corrupting the line.
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields)
                {
                    object.extend(fields);
                }
            }
            if !path.is_empty() {
                object.insert("span".into(), Value::String(path.join(":")));
            }
        }

        event.record(&mut JsonVisitor(&mut object));

        // Fixed keys first (what a human scanning `kubectl logs` looks for), then the
        // span and event fields. The fixed keys are taken out of the field map so no
        // field can shadow or duplicate them.
        let meta = event.metadata();
        let message = object.remove("message");
        for reserved in ["timestamp", "level", "target"] {
            object.remove(reserved);
        }
        let mut head = vec![
            (
                "timestamp",
                Value::String(jiff::Timestamp::now().to_string()),
            ),
            ("level", Value::String(meta.level().as_str().to_owned())),
            ("target", Value::String(meta.target().to_owned())),
        ];
        if let Some(message) = message {
            head.push(("message", message));
        }

        let mut line = String::from("{");
        for (key, value) in head
            .iter()
            .map(|(k, v)| (*k, v))
            .chain(object.iter().map(|(k, v)| (k.as_str(), v)))
        {
            if line.len() > 1 {
                line.push(',');
            }
            line.push_str(&serde_json::to_string(key).map_err(|_| fmt::Error)?);
            line.push(':');
            line.push_str(&serde_json::to_string(value).map_err(|_| fmt::Error)?);
        }
        line.push('}');
        writeln!(writer, "{line}")
    }
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.to_owned()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::Bool(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The whole source chain: "connect failed: timed out" is what an operator needs.
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        self.0.insert(field.name().into(), Value::String(text));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
}

/// Handle on the process-wide log capture installed by [`capture_logs`].
#[derive(Clone)]
pub struct LogCapture {
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl LogCapture {
    /// Every line captured so far, from every test in the process.
    pub fn contents(&self) -> String {
        let buffer = self
            .buffer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        String::from_utf8_lossy(&buffer).into_owned()
    }

    /// Whether any captured line contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.contents().contains(needle)
    }
}

/// Test helper: routes every log line of the process (JSON, same format as production)
/// into one shared in-memory buffer and returns a handle on it.
///
/// A tracing subscriber is process-global as far as tokio worker threads are
/// concerned, so the capture is global too: the first call installs it, later calls
/// return the same buffer. Tests running in parallel all write into it; each test
/// searches the whole buffer for its own (unique) password, which only makes the
/// check stricter. The level is `debug` (`trace` for rdscred) so that lines an operator
/// would see after turning on debug logging are covered; override with
/// `RDSCRED_TEST_LOG`.
///
/// Panics if another global subscriber was installed first: a capture that silently
/// records nothing would make "no password in the logs" pass vacuously.
pub fn capture_logs() -> LogCapture {
    static CAPTURE: OnceLock<LogCapture> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let capture = LogCapture {
                buffer: Arc::default(),
            };
            let filter = std::env::var("RDSCRED_TEST_LOG")
                .unwrap_or_else(|_| "debug,rdscred=trace".to_owned());
            tracing_subscriber::fmt()
                .with_env_filter(
                    EnvFilter::try_new(filter).expect("RDSCRED_TEST_LOG is not a valid filter"),
                )
                .fmt_fields(JsonFields::new())
                .event_format(FlatJson)
                .with_writer(CaptureWriter(capture.buffer.clone()))
                .try_init()
                .expect("capture_logs: another global tracing subscriber is already installed");
            capture
        })
        .clone()
}

#[derive(Clone)]
struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

/// One writer per event; the line is appended in a single `write_all` under the lock,
/// so lines from concurrent threads never interleave.
struct LineWriter {
    target: Arc<Mutex<Vec<u8>>>,
    line: Vec<u8>,
}

impl<'a> MakeWriter<'a> for CaptureWriter {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            target: self.0.clone(),
            line: Vec::new(),
        }
    }
}

impl io::Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        let mut target = self
            .target
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        target.extend_from_slice(&self.line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// Runs `f` under a thread-local JSON subscriber writing into a fresh buffer.
    fn json_lines(f: impl FnOnce()) -> Vec<Value> {
        let buffer: Arc<Mutex<Vec<u8>>> = Arc::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(JsonFields::new())
                .event_format(FlatJson)
                .with_writer(CaptureWriter(buffer.clone())),
        );
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str(line).expect("each line is JSON"))
            .collect()
    }

    #[test]
    fn json_lines_carry_every_enclosing_span_field_at_top_level() {
        let lines = json_lines(|| {
            let reconcile = tracing::info_span!(
                "reconcile",
                namespace = "team-a",
                name = "orders-db",
                kind = "RdsCredential"
            );
            let _outer = reconcile.enter();
            let step = tracing::info_span!("aws", operation = "GetSecretValue");
            let _inner = step.enter();
            tracing::info!(attempt = 2u64, ok = true, "called AWS");
        });
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert_eq!(line["namespace"], "team-a");
        assert_eq!(line["name"], "orders-db");
        assert_eq!(line["kind"], "RdsCredential");
        assert_eq!(line["operation"], "GetSecretValue");
        assert_eq!(line["span"], "reconcile:aws");
        assert_eq!(line["message"], "called AWS");
        assert_eq!(line["attempt"], 2);
        assert_eq!(line["ok"], true);
        assert_eq!(line["level"], "INFO");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn fields_recorded_later_and_error_chains_are_included() {
        #[derive(Debug, thiserror::Error)]
        #[error("connect failed")]
        struct Outer(#[source] io::Error);

        let lines = json_lines(|| {
            let span =
                tracing::info_span!("reconcile", namespace = "ns", name = tracing::field::Empty);
            span.record("name", "late");
            let _guard = span.enter();
            let err = Outer(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
            tracing::warn!(error = &err as &dyn std::error::Error, "retrying");
        });
        assert_eq!(lines[0]["name"], "late");
        assert_eq!(lines[0]["error"], "connect failed: timed out");
        assert_eq!(lines[0]["level"], "WARN");
    }

    #[test]
    fn reserved_keys_cannot_be_overwritten_by_fields() {
        let lines = json_lines(|| tracing::info!(level = "fake", "x"));
        assert_eq!(lines[0]["level"], "INFO");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn capture_sees_lines_from_worker_threads_and_is_shared() {
        let capture = capture_logs();
        let marker = format!("marker-{}", std::process::id());
        let m = marker.clone();
        tokio::spawn(async move {
            let span = tracing::info_span!("reconcile", namespace = "ns", name = "cred");
            let _guard = span.enter();
            tracing::info!(value = %m, "captured");
        })
        .await
        .unwrap();
        let line = capture_logs()
            .contents()
            .lines()
            .find(|line| line.contains(&marker))
            .map(str::to_owned)
            .expect("line captured through a second handle");
        let line: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(line["name"], "cred");
        assert!(capture.contains(&marker));
    }

    #[test]
    fn bad_filter_is_an_error() {
        assert!(matches!(
            init_logging(LogFormat::Json, "=[bad"),
            Err(LogInitError::Filter(_))
        ));
    }
}
