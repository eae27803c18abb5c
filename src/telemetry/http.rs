//! The HTTP surface: `/metrics`, `/healthz`, `/readyz`.
//!
//! `/healthz` is liveness: it answers as long as the tokio runtime serving it is alive,
//! so the kubelet restarts a wedged process but not a busy one. `/readyz` is readiness:
//! the controller flips it once its caches have synced and it is either the leader or
//! a healthy standby. Readiness gates the Service (metrics scraping) and rolling
//! updates; it must not depend on leadership alone, or a standby would never be ready
//! and a rollout would stall.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::Metrics;

/// Readiness shared between the controller (writer) and `/readyz` (reader).
/// Starts not ready.
#[derive(Clone, Debug, Default)]
pub struct Health {
    state: Arc<Mutex<Readiness>>,
}

#[derive(Debug, Default)]
struct Readiness {
    ready: bool,
    reason: String,
}

impl Health {
    /// `reason` says why (shown by `/readyz` when not ready, and logged on change).
    pub fn set_ready(&self, ready: bool, reason: &str) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.ready != ready || state.reason != reason {
            tracing::info!(ready, reason, "readiness changed");
        }
        state.ready = ready;
        state.reason = reason.to_owned();
    }

    pub fn is_ready(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .ready
    }

    /// The reason given with the last [`Health::set_ready`] (empty before the first).
    pub fn reason(&self) -> String {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .reason
            .clone()
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    health: Health,
}

/// OpenMetrics is what prometheus-client emits (counters typed without `_total`,
/// `# EOF` terminator); Prometheus negotiates it natively.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, OPENMETRICS)],
        state.metrics.encode(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.health.is_ready() {
        (StatusCode::OK, "ok").into_response()
    } else {
        let reason = state.health.reason();
        let reason = if reason.is_empty() {
            "starting".to_owned()
        } else {
            reason
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}"),
        )
            .into_response()
    }
}

fn router(metrics: Metrics, health: Health) -> Router {
    Router::new()
        .route("/metrics", get(self::metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, health })
}

/// Binds `addr` (port 0 picks a free port), then serves in a background task until
/// `shutdown` completes. Returns the bound address and the server task.
///
/// Binding happens before returning so that a port conflict fails startup loudly
/// instead of surfacing later as failing probes.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "serving /metrics, /healthz, /readyz");
    let app = router(metrics, health);
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(%error, "telemetry HTTP server failed");
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::ApiCalls;

    /// Minimal HTTP/1.1 GET: (status, content-type, body). `Connection: close` lets us
    /// read to EOF instead of parsing chunked framing. Blocking std I/O on the blocking
    /// pool: tokio's `io-util` is not a feature this crate enables.
    async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let response = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            response
        })
        .await
        .unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("HTTP head");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let content_type = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-type")
                    .then(|| value.trim().to_owned())
            })
            .unwrap_or_default();
        (status, content_type, body.to_owned())
    }

    #[tokio::test]
    async fn endpoints_serve_metrics_and_flip_readiness() {
        let metrics = Metrics::new(ApiCalls::default());
        let health = Health::default();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr, task) = serve(
            "127.0.0.1:0".parse().unwrap(),
            metrics.clone(),
            health.clone(),
            async move {
                let _ = stop_rx.await;
            },
        )
        .await
        .unwrap();
        assert_ne!(addr.port(), 0);

        let (status, _, body) = get(addr, "/healthz").await;
        assert_eq!((status, body.as_str()), (200, "ok"));

        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert_eq!(body, "not ready: starting");

        health.set_ready(false, "caches not synced");
        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!(
            (status, body.as_str()),
            (503, "not ready: caches not synced")
        );

        health.set_ready(true, "leader");
        let (status, _, _) = get(addr, "/readyz").await;
        assert_eq!(status, 200);

        health.set_ready(false, "lost API server connection");
        assert_eq!(get(addr, "/readyz").await.0, 503);

        metrics.reconcile_finished("RdsDatabase", std::time::Duration::from_millis(5), None);
        let (status, content_type, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        assert!(
            body.contains(r#"rdscred_reconciles_total{kind="RdsDatabase",result="ok"} 1"#),
            "{body}"
        );
        assert!(body.ends_with("# EOF\n"));

        assert_eq!(get(addr, "/nope").await.0, 404);

        stop_tx.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("server stops on shutdown")
            .unwrap();
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "listener closed"
        );
    }

    #[tokio::test]
    async fn bind_conflict_is_reported() {
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let result = serve(
            taken.local_addr().unwrap(),
            Metrics::new(ApiCalls::default()),
            Health::default(),
            std::future::pending(),
        )
        .await;
        assert!(result.is_err());
    }
}
