//! Watch streams: replay of the history after the requested resourceVersion (or synthetic
//! ADDED events for the current state), then live changes; BOOKMARKs, timeoutSeconds, and
//! 410 Gone (as an ERROR event, like the real server) for a resourceVersion older than the
//! retained history.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::Inner;
use crate::error::ApiError;
use crate::registry::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Change, ChangeKind};

pub struct WatchParams {
    pub rt: Arc<ResourceType>,
    pub version: String,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub resource_version: Option<String>,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
    pub send_initial_events: bool,
    /// `Some(include_object)`: the client asked for `Table`s (`kubectl get -w`).
    pub table: Option<bool>,
}

impl WatchParams {
    fn selects(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }
}

/// Sets the apiVersion of a stored object to the version the client asked for
/// (all versions of a type share one schema-less storage: "None" conversion).
pub fn at_version(mut obj: Value, rt: &ResourceType, version: &str) -> Value {
    obj["apiVersion"] = json!(rt.api_version(version));
    obj
}

fn line(kind: &str, object: Value) -> Bytes {
    let mut s = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("json");
    s.push(b'\n');
    Bytes::from(s)
}

struct Watch {
    p: WatchParams,
    queue: VecDeque<Bytes>,
    rx: broadcast::Receiver<Arc<Change>>,
    /// Every change up to this RV has been considered (what a BOOKMARK may announce).
    last_rv: u64,
    deadline: Option<Instant>,
    bookmark: Interval,
    shutdown: Option<tokio::sync::watch::Receiver<bool>>,
    expire: tokio::sync::watch::Receiver<u64>,
    done: bool,
}

impl Watch {
    fn bookmark_line(&self, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": self.last_rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        line(
            "BOOKMARK",
            json!({"kind": self.p.rt.kind, "apiVersion": self.p.rt.api_version(&self.p.version), "metadata": meta}),
        )
    }

    /// The event a change produces for this watch, if any.
    fn render(&self, c: &Change) -> Option<Bytes> {
        if c.gr != self.p.rt.key() || self.p.namespace.as_ref().is_some_and(|n| *n != c.namespace) {
            return None;
        }
        let now = self.p.selects(&c.object);
        let before = c.old.as_ref().is_some_and(|o| self.p.selects(o));
        let kind = match c.kind {
            ChangeKind::Added if now => "ADDED",
            ChangeKind::Modified if now && before => "MODIFIED",
            ChangeKind::Modified if now => "ADDED",
            ChangeKind::Modified if before => "DELETED",
            ChangeKind::Deleted if now || before => "DELETED",
            _ => return None,
        };
        Some(self.object_line(kind, c.object.clone()))
    }

    fn object_line(&self, kind: &str, obj: Value) -> Bytes {
        let obj = at_version(obj, &self.p.rt, &self.p.version);
        match self.p.table {
            Some(include_object) => {
                let rv = crate::store::rv_of(&obj).to_string();
                line(
                    kind,
                    crate::discovery::table(
                        &self.p.rt,
                        &self.p.version,
                        &[obj],
                        &rv,
                        include_object,
                    ),
                )
            }
            None => line(kind, obj),
        }
    }

    async fn next(mut self) -> Option<(Result<Bytes, Infallible>, Watch)> {
        loop {
            if let Some(b) = self.queue.pop_front() {
                return Some((Ok(b), self));
            }
            if self.done {
                return None;
            }
            let deadline = self.deadline;
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                biased;
                r = self.rx.recv() => match r {
                    Ok(c) => {
                        self.last_rv = c.rv;
                        if let Some(b) = self.render(&c) {
                            self.queue.push_back(b);
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        // The watcher fell too far behind: make it relist, as the real server does.
                        let status = ApiError::gone("watch channel overflowed: too old resource version").to_status();
                        self.queue.push_back(line("ERROR", status));
                        self.done = true;
                    }
                    Err(RecvError::Closed) => self.done = true,
                },
                _ = self.expire.changed() => {
                    let status = ApiError::gone(format!("too old resource version: {} (expired by the emulator)", self.last_rv)).to_status();
                    self.queue.push_back(line("ERROR", status));
                    self.done = true;
                }
                _ = async { match shutdown.as_mut() { Some(s) => { let _ = s.wait_for(|v| *v).await; } None => std::future::pending::<()>().await } } => self.done = true,
                _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending::<()>().await } } => self.done = true,
                _ = self.bookmark.tick() => {
                    if self.p.bookmarks {
                        let b = self.bookmark_line(false);
                        self.queue.push_back(b);
                    }
                }
            }
        }
    }
}

/// Starts a watch. Errors before the stream starts (bad parameters) are returned as such;
/// a too-old resourceVersion yields a stream with one ERROR 410 event.
pub fn start(
    inner: &Arc<Inner>,
    p: WatchParams,
    shutdown: Option<tokio::sync::watch::Receiver<bool>>,
) -> Result<impl Stream<Item = Result<Bytes, Infallible>> + Send + use<>, ApiError> {
    let requested = match p.resource_version.as_deref() {
        None | Some("") | Some("0") => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s}")))?,
        ),
    };
    let bookmark_every = *inner
        .bookmark_interval
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
    let rx = st.subscribe();
    let mut bookmark = tokio::time::interval_at(Instant::now() + bookmark_every, bookmark_every);
    bookmark.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut w = Watch {
        queue: VecDeque::new(),
        rx,
        last_rv: st.rv,
        deadline: p.timeout.map(|t| Instant::now() + t),
        bookmark,
        shutdown,
        expire: inner.expire.subscribe(),
        done: false,
        p,
    };
    match requested {
        Some(rv) if rv < st.history_floor => {
            let status = ApiError::gone(format!(
                "too old resource version: {rv} ({})",
                st.history_floor
            ))
            .to_status();
            w.queue.push_back(line("ERROR", status));
            w.done = true;
        }
        Some(rv) if !w.p.send_initial_events => {
            for c in st.history.iter().filter(|c| c.rv > rv) {
                if let Some(b) = w.render(c) {
                    w.queue.push_back(b);
                }
            }
        }
        _ => {
            // No resourceVersion (or "0"), or sendInitialEvents: the current state as ADDED.
            let objs: Vec<Value> = st
                .iter_objects(&w.p.rt.key(), w.p.namespace.as_deref())
                .filter(|o| w.p.selects(o))
                .cloned()
                .collect();
            for o in objs {
                let b = w.object_line("ADDED", o);
                w.queue.push_back(b);
            }
            if w.p.send_initial_events && w.p.bookmarks {
                let b = w.bookmark_line(true);
                w.queue.push_back(b);
            }
        }
    }
    drop(st);
    Ok(futures::stream::unfold(w, Watch::next))
}
