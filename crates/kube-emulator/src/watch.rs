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
    /// Live events held back by the watch delay, with when each is due (non-decreasing, so
    /// the order of events is kept).
    delayed: VecDeque<(Instant, Bytes)>,
    inner: Arc<Inner>,
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

    /// Queues a live event (or a BOOKMARK), behind the watch delay when one is set.
    fn push_live(&mut self, b: Bytes) {
        let delay = *self
            .inner
            .watch_delay
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some((min, max)) = delay else {
            if self.delayed.is_empty() {
                self.queue.push_back(b);
            } else {
                let due = self
                    .delayed
                    .back()
                    .map(|(t, _)| *t)
                    .unwrap_or_else(Instant::now);
                self.delayed.push_back((due, b));
            }
            return;
        };
        let mut r = [0u8; 8];
        getrandom::fill(&mut r).expect("OS randomness");
        let span = max.saturating_sub(min).as_nanos() as u64;
        let extra = if span == 0 {
            0
        } else {
            u64::from_le_bytes(r) % (span + 1)
        };
        let due = Instant::now() + min + Duration::from_nanos(extra);
        // Never before an earlier event: a watch delivers in resourceVersion order.
        let due = self.delayed.back().map_or(due, |(t, _)| due.max(*t));
        self.delayed.push_back((due, b));
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
            let next_due = self.delayed.front().map(|(t, _)| *t);
            tokio::select! {
                biased;
                _ = async { match next_due { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending::<()>().await } } => {
                    let now = Instant::now();
                    while self.delayed.front().is_some_and(|(t, _)| *t <= now) {
                        let (_, b) = self.delayed.pop_front().expect("checked");
                        self.queue.push_back(b);
                    }
                }
                r = self.rx.recv() => match r {
                    Ok(c) => {
                        self.last_rv = c.rv;
                        if let Some(b) = self.render(&c) {
                            self.push_live(b);
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
                        // Behind the delayed events: a BOOKMARK must not announce a
                        // resourceVersion whose events the watcher has not received.
                        let b = self.bookmark_line(false);
                        self.push_live(b);
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
        delayed: VecDeque::new(),
        inner: inner.clone(),
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
