//! An in-process Kubernetes API server emulator for tests: serves the API kube-rs clients,
//! kube-runtime watchers/controllers and `kubectl` use, either as the tower service behind
//! a `kube::Client` (no socket) or over HTTP on a loopback port.
//!
//! Requests with a bearer token (`issue_token`, `service_account_token`) are authorized by the
//! RBAC objects in the store; requests without one are the administrator.
//!
//! What it does not do like a real API server is listed in `GAPS.md` next to this crate.
//!
//! ```no_run
//! # async fn demo() {
//! let emu = kube_emulator::Emulator::new();
//! emu.install_crds_yaml(&std::fs::read_to_string("crds/rdscred.io.yaml").unwrap()).unwrap();
//! let client = emu.client();
//! # }
//! ```

mod apply;
mod auth;
pub mod cel_cost;
mod discovery;
mod error;
mod http;
mod objmeta;
mod patch;
mod rbac;
mod registry;
mod selector;
mod store;
mod validation;
mod watch;
mod workloads;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast;

pub use auth::{Denial, RequestAttributes, UserInfo};
pub use error::EmulatorError;
/// Whether one RBAC `PolicyRule` (JSON) allows a request, with the authorizer's semantics.
pub use rbac::rule_allows as rbac_rule_allows;

/// Argo Rollouts' Rollout CRD, trimmed (see the file's header): install it with
/// [`Emulator::install_crds_yaml`] to serve `argoproj.io/v1alpha1` Rollouts; the workload
/// stand-in then also plays the Argo Rollouts controller.
pub const ARGO_ROLLOUTS_CRD: &str = include_str!("../fixtures/argo-rollouts-crd.yaml");

use store::{State, WriteOpts};

/// Watch events kept for resuming watches; older resourceVersions get 410 Gone.
const DEFAULT_HISTORY: usize = 10_000;
/// Capacity of the live-event channel; a watch lagging further behind gets 410 Gone.
const CHANNEL_CAPACITY: usize = 16_384;

pub(crate) struct Inner {
    pub state: Mutex<State>,
    pub bookmark_interval: Mutex<Duration>,
    /// Bumped by `expire_watches`: every open watch ends with a 410 ERROR event.
    pub expire: tokio::sync::watch::Sender<u64>,
    /// Tokens and the record of authorization decisions.
    pub auth: Mutex<auth::Auth>,
    /// `Some((min, max))`: every live watch event reaches its watcher after a random delay in
    /// `min..=max` (see [`Emulator::set_watch_delay`]).
    pub watch_delay: Mutex<Option<(Duration, Duration)>>,
}

/// The emulated API server. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Emulator {
    inner: Arc<Inner>,
}

impl Default for Emulator {
    fn default() -> Self {
        Self::new()
    }
}

impl Emulator {
    /// Built-in kinds registered; namespaces `default`, `kube-system`, `kube-public`,
    /// `kube-node-lease` exist.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        Emulator {
            inner: Arc::new(Inner {
                state: Mutex::new(State::new(tx, DEFAULT_HISTORY)),
                bookmark_interval: Mutex::new(Duration::from_secs(1)),
                expire: tokio::sync::watch::channel(0).0,
                auth: Mutex::new(auth::Auth::default()),
                watch_delay: Mutex::new(None),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Installs (or replaces) every CustomResourceDefinition of a multi-document YAML text.
    /// Documents of other kinds are an error.
    pub fn install_crds_yaml(&self, yaml: &str) -> Result<(), EmulatorError> {
        for v in yaml_documents(yaml)? {
            if v.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition") {
                return Err(EmulatorError::InvalidCrd(format!(
                    "not a CustomResourceDefinition: kind {:?}",
                    v.get("kind")
                )));
            }
            let rt = self
                .state()
                .registry
                .lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
                .expect("built-in");
            self.create_or_replace(&rt, "v1", "", v)
                .map_err(|e| EmulatorError::InvalidCrd(e.message))?;
        }
        Ok(())
    }

    /// Creates `v` as the administrator, or replaces the object of that name.
    fn create_or_replace(
        &self,
        rt: &Arc<registry::ResourceType>,
        version: &str,
        ns: &str,
        mut v: Value,
    ) -> Result<Value, error::ApiError> {
        let name = v
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let opts = WriteOpts {
            manager: "kube-emulator".into(),
            ..Default::default()
        };
        let mut st = self.state();
        match st.get_raw(&rt.key(), ns, &name).cloned() {
            None => st.create(rt, version, ns, v, &opts),
            Some(existing) => {
                v["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"].clone();
                st.update(rt, version, ns, &name, v, store::Sub::Main, &opts, true)
            }
        }
    }

    /// Installs every `*.yaml`/`*.yml` file of a directory (or one file) with
    /// [`install_crds_yaml`](Self::install_crds_yaml).
    pub fn install_crds_path(&self, path: &std::path::Path) -> Result<(), EmulatorError> {
        let mut files = Vec::new();
        if path.is_dir() {
            for e in std::fs::read_dir(path)? {
                let p = e?.path();
                if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                    files.push(p);
                }
            }
            files.sort();
        } else {
            files.push(path.to_path_buf());
        }
        for f in files {
            self.install_crds_yaml(&std::fs::read_to_string(&f)?)?;
        }
        Ok(())
    }

    fn router(&self, shutdown: Option<tokio::sync::watch::Receiver<bool>>) -> axum::Router {
        http::router(http::AppState {
            inner: self.inner.clone(),
            shutdown,
        })
    }

    /// A client whose transport is the emulator itself (no socket). Default namespace
    /// "default". Must be called inside a tokio runtime (kube's client spawns a buffer task).
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.router(None), "default")
    }

    /// A client authenticated by `token` (see [`issue_token`](Self::issue_token)), whose
    /// requests are authorized by RBAC. Must be called inside a tokio runtime.
    pub fn client_with_token(&self, token: &str) -> kube::Client {
        let value = axum::http::HeaderValue::from_str(&format!("Bearer {token}"))
            .expect("tokens are ASCII");
        let service = tower::ServiceBuilder::new()
            .map_request(move |mut req: axum::http::Request<kube::client::Body>| {
                req.headers_mut()
                    .insert(axum::http::header::AUTHORIZATION, value.clone());
                req
            })
            .service(self.router(None));
        kube::Client::new(service, "default")
    }

    /// Issues a bearer token for `user`. Requests with it are authorized by the RBAC objects
    /// in the store (a user in group `system:masters` is allowed everything) and recorded.
    pub fn issue_token(&self, user: UserInfo) -> String {
        self.auth().issue(user)
    }

    /// A token of the ServiceAccount `namespace/name`: user
    /// `system:serviceaccount:NAMESPACE:NAME`, groups `system:serviceaccounts`,
    /// `system:serviceaccounts:NAMESPACE`, `system:authenticated`.
    pub fn service_account_token(&self, namespace: &str, name: &str) -> String {
        self.issue_token(UserInfo::service_account(namespace, name))
    }

    /// Every distinct resource request `user` was authorized for so far.
    pub fn authorized_requests(&self, user: &str) -> Vec<RequestAttributes> {
        self.auth().authorized(user)
    }

    /// Every request of `user` that was denied (403), in order, with its message.
    pub fn denied_requests(&self, user: &str) -> Vec<Denial> {
        self.auth().denied(user)
    }

    fn auth(&self) -> std::sync::MutexGuard<'_, auth::Auth> {
        self.inner.auth.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates (or replaces) the objects of a multi-document YAML text as the administrator,
    /// e.g. the Roles and RoleBindings a Helm chart renders. Namespaced objects need their
    /// namespace to exist.
    pub fn apply_objects_yaml(&self, yaml: &str) -> Result<(), EmulatorError> {
        for v in yaml_documents(yaml)? {
            let api_version = v.get("apiVersion").and_then(Value::as_str).unwrap_or("");
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
            let kind = v.get("kind").and_then(Value::as_str).unwrap_or("");
            let rt = self
                .state()
                .registry
                .types
                .values()
                .find(|t| t.group == group && t.kind == kind && t.version(version).is_some())
                .cloned()
                .ok_or_else(|| EmulatorError::Api {
                    code: 404,
                    message: format!("no kind {kind:?} is served in {api_version:?}"),
                })?;
            let ns = match v.pointer("/metadata/namespace").and_then(Value::as_str) {
                _ if !rt.namespaced => "",
                Some(ns) => ns,
                None => "default",
            }
            .to_string();
            let version = version.to_string();
            self.create_or_replace(&rt, &version, &ns, v)?;
        }
        Ok(())
    }

    /// Serves the API over plain HTTP on `addr` (use port 0 to pick a free port).
    pub async fn serve(&self, addr: SocketAddr) -> Result<Served, EmulatorError> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        let router = self.router(Some(rx.clone()));
        let mut stop = rx;
        let handle = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                let _ = stop.wait_for(|v| *v).await;
            });
            if let Err(e) = serve.await {
                tracing::warn!("kube-emulator server stopped: {e}");
            }
        });
        Ok(Served {
            addr,
            shutdown: tx,
            handle: Some(handle),
        })
    }

    /// Starts the stand-in Deployment/StatefulSet/DaemonSet controllers (see `workloads`).
    /// Must be called inside a tokio runtime.
    pub fn simulate_workload_controllers(&self, rollout_delay: Duration) {
        workloads::spawn(self.inner.clone(), rollout_delay, false);
    }

    /// Like [`simulate_workload_controllers`](Self::simulate_workload_controllers), but the
    /// rollout progresses in steps as a real one does: at half the delay the status shows the
    /// new generation observed with fewer updated (and available) replicas than desired, and
    /// only after the whole delay all of them. A client that takes "observed the generation"
    /// for "rolled out" is caught by the intermediate state.
    pub fn simulate_stepped_workload_controllers(&self, rollout_delay: Duration) {
        workloads::spawn(self.inner.clone(), rollout_delay, true);
    }

    /// Delays every live watch event (ADDED/MODIFIED/DELETED after the initial state, and the
    /// BOOKMARKs behind them) by a random duration in `min..=max`, keeping their order: the
    /// staleness of informer caches on a busy real cluster, where a controller's cached copy
    /// of an object can trail its own writes and others'. GET and LIST stay current
    /// (quorum reads). `None` (the default) delivers at once. Applies to watches open now and
    /// later.
    pub fn set_watch_delay(&self, delay: Option<(Duration, Duration)>) {
        *self
            .inner
            .watch_delay
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = delay.map(|(a, b)| (a.min(b), a.max(b)));
    }

    /// Test hook: forget the event history, so a watch from any earlier resourceVersion
    /// gets 410 Gone (what etcd compaction does).
    pub fn compact_history(&self) {
        self.state().compact();
    }

    /// Test hook: ends every open watch with an ERROR event carrying a 410 Expired Status
    /// (what a real server does to a watcher that fell behind), so kube-runtime watchers
    /// relist. Combine with [`compact_history`](Self::compact_history) to make their
    /// resumed watches fail too.
    pub fn expire_watches(&self) {
        self.inner.expire.send_modify(|n| *n += 1);
    }

    /// How many watch events are kept for resuming watches (default 10 000).
    pub fn set_history_limit(&self, events: usize) {
        let mut st = self.state();
        st.history_limit = events.max(1);
        while st.history.len() > st.history_limit {
            if let Some(e) = st.history.pop_front() {
                st.history_floor = e.rv;
            }
        }
    }

    /// How often watches with allowWatchBookmarks get a BOOKMARK (default 1s; the real
    /// server sends one about every minute). Applies to watches started afterwards.
    pub fn set_bookmark_interval(&self, every: Duration) {
        *self
            .inner
            .bookmark_interval
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = every.max(Duration::from_millis(10));
    }

    /// The current value of the global resourceVersion counter.
    pub fn resource_version(&self) -> u64 {
        self.state().rv
    }
}

/// A running HTTP server. Dropping it (or [`shutdown`](Self::shutdown)) stops it and ends
/// its open watches.
pub struct Served {
    pub addr: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Served {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig (context `kube-emulator`, namespace `default`, no credentials) that
    /// kubectl and `kube::Config` accept.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-emulator\n  cluster:\n    server: {}\ncontexts:\n- name: kube-emulator\n  context:\n    cluster: kube-emulator\n    user: kube-emulator\n    namespace: default\ncurrent-context: kube-emulator\nusers:\n- name: kube-emulator\n  user: {{}}\npreferences: {{}}\n",
            self.url()
        )
    }

    /// A kubeconfig like [`kubeconfig_yaml`](Self::kubeconfig_yaml) whose user authenticates
    /// with `token` (from [`Emulator::issue_token`]), so its requests are authorized by RBAC.
    pub fn kubeconfig_yaml_with_token(&self, token: &str) -> String {
        self.kubeconfig_yaml()
            .replace("  user: {}\n", &format!("  user:\n    token: {token}\n"))
    }

    /// Stops accepting connections and ends open watches.
    pub fn shutdown(self) {
        drop(self);
    }

    /// Stops the server and waits until it has finished.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// The non-empty documents of a multi-document YAML text.
fn yaml_documents(yaml: &str) -> Result<Vec<Value>, EmulatorError> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v = Value::deserialize(doc).map_err(|e| EmulatorError::Yaml(e.to_string()))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}
