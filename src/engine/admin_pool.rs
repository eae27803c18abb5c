//! A small pool of admin connections per database server and admin login (issue 15).
//!
//! Every credential reconcile used to log in as the admin afresh, several times (the plan
//! check, "does the user exist", the user and its privileges): a TCP connection, a server
//! backend, a SCRAM exchange or TLS handshake each time. The pool keeps up to
//! [`MAX_IDLE_PER_LOGIN`] idle sessions per (server, database, TLS, admin user) and hands
//! them out again. What keeps it from being laxer than a fresh login each time:
//! - a session is reused only after an operation that succeeded (any error, including a
//!   cancelled or timed-out statement, may leave it mid-transaction: it is closed), and only
//!   after it answers a ping;
//! - the idle sessions of a login are closed as soon as a caller brings a different admin
//!   password (the admin secret changed) and when logging in with it fails;
//! - a session lives at most [`MAX_LIFETIME`], the admin-login cache's time to live: the pool
//!   never relies on an admin login older than the cached login it was opened with;
//! - idle sessions are closed after [`IDLE_TIMEOUT`] by one sweeper task that runs only while
//!   the pool holds any (no task per database or credential).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::{Admin, ConnectTarget, DbError, Login};
use crate::secret::SecretString;

/// Idle sessions kept per (server, admin login). The controller's reconcile slots bound how
/// many are in use at once; this bounds what stays open between bursts.
pub const MAX_IDLE_PER_LOGIN: usize = 4;
/// An idle session is closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// No session is used once this old: the admin-login cache's time to live.
pub const MAX_LIFETIME: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
struct Limits {
    max_idle: usize,
    idle_timeout: Duration,
    max_lifetime: Duration,
}

const LIMITS: Limits = Limits {
    max_idle: MAX_IDLE_PER_LOGIN,
    idle_timeout: IDLE_TIMEOUT,
    max_lifetime: MAX_LIFETIME,
};

struct Idle<C> {
    conn: C,
    opened: Instant,
    since: Instant,
}

impl<C> Idle<C> {
    fn expired(&self, limits: Limits, now: Instant) -> bool {
        now.saturating_duration_since(self.since) >= limits.idle_timeout
            || now.saturating_duration_since(self.opened) >= limits.max_lifetime
    }
}

/// The idle sessions of one (server, admin user) and the password they logged in with.
struct Slot<C> {
    password: SecretString,
    idle: Vec<Idle<C>>,
}

impl<C> Slot<C> {
    /// Removes the expired idle sessions and adds them to `close`.
    fn take_expired(&mut self, limits: Limits, now: Instant, close: &mut Vec<C>) {
        let (old, fresh): (Vec<_>, Vec<_>) =
            self.idle.drain(..).partition(|i| i.expired(limits, now));
        close.extend(old.into_iter().map(|i| i.conn));
        self.idle = fresh;
    }
}

/// Every slot; the pool's decisions, free of I/O (what to hand out, keep, and close).
struct Slots<C> {
    limits: Limits,
    slots: HashMap<String, Slot<C>>,
    sweeper: bool,
}

impl<C> Slots<C> {
    fn new(limits: Limits) -> Slots<C> {
        Slots {
            limits,
            slots: HashMap::new(),
            sweeper: false,
        }
    }

    /// A session for `password` to try (the most recently used one), and the sessions to
    /// close: expired ones, and all of them if they logged in with another password.
    fn checkout(
        &mut self,
        key: &str,
        password: &SecretString,
        now: Instant,
    ) -> (Option<(C, Instant)>, Vec<C>) {
        let limits = self.limits;
        let Some(slot) = self.slots.get_mut(key) else {
            return (None, Vec::new());
        };
        let mut close = Vec::new();
        if slot.password.expose() != password.expose() {
            close.extend(slot.idle.drain(..).map(|i| i.conn));
            self.slots.remove(key);
            return (None, close);
        }
        slot.take_expired(limits, now, &mut close);
        let reuse = slot.idle.pop().map(|i| (i.conn, i.opened));
        (reuse, close)
    }

    /// Takes back a session that logged in with `password` at `opened`; returns it when it
    /// is not kept (another password is current now, too old, or the slot is full).
    fn checkin(
        &mut self,
        key: &str,
        password: &SecretString,
        conn: C,
        opened: Instant,
        now: Instant,
    ) -> Option<C> {
        let limits = self.limits;
        if now.saturating_duration_since(opened) >= limits.max_lifetime {
            return Some(conn);
        }
        let slot = self.slots.entry(key.to_owned()).or_insert_with(|| Slot {
            password: password.clone(),
            idle: Vec::new(),
        });
        if slot.password.expose() != password.expose() || slot.idle.len() >= limits.max_idle {
            return Some(conn);
        }
        slot.idle.push(Idle {
            conn,
            opened,
            since: now,
        });
        None
    }

    /// Every idle session of `key` (its login failed).
    fn evict(&mut self, key: &str) -> Vec<C> {
        self.slots
            .remove(key)
            .map(|s| s.idle.into_iter().map(|i| i.conn).collect())
            .unwrap_or_default()
    }

    /// The expired sessions of every slot; empty slots are forgotten.
    fn sweep(&mut self, now: Instant) -> Vec<C> {
        let limits = self.limits;
        let mut close = Vec::new();
        self.slots.retain(|_, slot| {
            slot.take_expired(limits, now, &mut close);
            !slot.idle.is_empty()
        });
        close
    }

    fn idle_count(&self) -> usize {
        self.slots.values().map(|s| s.idle.len()).sum()
    }
}

/// Admin sessions reused across reconciles (see the module's documentation).
pub struct AdminPool {
    inner: Arc<Inner>,
}

struct Inner {
    slots: Mutex<Slots<Admin>>,
    /// Logins made (for tests and the curious: reuse shows as fewer logins).
    logins: std::sync::atomic::AtomicU64,
}

impl Default for AdminPool {
    fn default() -> Self {
        AdminPool {
            inner: Arc::new(Inner {
                slots: Mutex::new(Slots::new(LIMITS)),
                logins: Default::default(),
            }),
        }
    }
}

/// The pool's key: everything a login depends on but the password (compared apart, so that
/// a changed admin password closes the sessions of the old one).
fn key(target: &ConnectTarget, username: &str) -> String {
    format!(
        "{:?}|{}|{}|{:?}|{:?}|{:?}|{username}",
        target.engine,
        target.host,
        target.port,
        target.database,
        target.tls.mode,
        target.tls.ca_bundle_pem
    )
}

async fn close_all(conns: Vec<Admin>) {
    for conn in conns {
        conn.close().await;
    }
}

impl AdminPool {
    fn slots(&self) -> std::sync::MutexGuard<'_, Slots<Admin>> {
        self.inner.slots.lock().expect("admin pool")
    }

    /// An admin session on `target` as `admin`: an idle one that still answers, or a new
    /// login. Give it back with [`PooledAdmin::done`].
    pub async fn get(&self, target: &ConnectTarget, admin: &Login) -> Result<PooledAdmin, DbError> {
        let key = key(target, &admin.username);
        let (reuse, stale) = self.slots().checkout(&key, &admin.password, Instant::now());
        close_all(stale).await;
        if let Some((mut conn, opened)) = reuse {
            if conn.ping().await.is_ok() {
                return Ok(self.pooled(key, admin, conn, opened));
            }
            // The server ended it (restart, idle timeout): log in afresh.
            conn.close().await;
        }
        self.inner
            .logins
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match Admin::connect(target, admin).await {
            Ok(conn) => Ok(self.pooled(key, admin, conn, Instant::now())),
            Err(e) => {
                if matches!(e, DbError::AuthFailed { .. }) {
                    let gone = self.slots().evict(&key);
                    close_all(gone).await;
                }
                Err(e)
            }
        }
    }

    fn pooled(&self, key: String, admin: &Login, conn: Admin, opened: Instant) -> PooledAdmin {
        PooledAdmin {
            pool: Arc::downgrade(&self.inner),
            key,
            password: admin.password.clone(),
            opened,
            conn: Some(conn),
        }
    }

    /// Logins made so far (not reuses).
    pub fn logins(&self) -> u64 {
        self.inner.logins.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Idle sessions held now.
    pub fn idle(&self) -> usize {
        self.slots().idle_count()
    }
}

impl Inner {
    /// Closes expired idle sessions every half [`Limits::idle_timeout`] while any are held;
    /// ends (and is started again by the next check-in) once the pool is empty.
    fn start_sweeper(self: &Arc<Self>, slots: &mut Slots<Admin>) {
        if slots.sweeper {
            return;
        }
        slots.sweeper = true;
        let every = slots.limits.idle_timeout / 2;
        let weak: Weak<Inner> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = weak.upgrade() else { return };
                let (gone, keep_sweeping) = {
                    let mut slots = inner.slots.lock().expect("admin pool");
                    let gone = slots.sweep(Instant::now());
                    if slots.slots.is_empty() {
                        slots.sweeper = false;
                    }
                    (gone, slots.sweeper)
                };
                close_all(gone).await;
                if !keep_sweeping {
                    return;
                }
            }
        });
    }
}

/// A session from [`AdminPool::get`]. [`PooledAdmin::done`] returns it to the pool or closes
/// it; dropped without that, it is closed.
pub struct PooledAdmin {
    pool: Weak<Inner>,
    key: String,
    password: SecretString,
    opened: Instant,
    conn: Option<Admin>,
}

impl std::ops::Deref for PooledAdmin {
    type Target = Admin;
    fn deref(&self) -> &Admin {
        self.conn.as_ref().expect("session present until done")
    }
}

impl std::ops::DerefMut for PooledAdmin {
    fn deref_mut(&mut self) -> &mut Admin {
        self.conn.as_mut().expect("session present until done")
    }
}

impl PooledAdmin {
    /// `reusable`: every operation on it succeeded (after an error the session's state is
    /// unknown — an open transaction, a statement cut by a timeout — so it is closed).
    pub async fn done(mut self, reusable: bool) {
        let Some(conn) = self.conn.take() else { return };
        let pool = self.pool.upgrade().filter(|_| reusable);
        let Some(pool) = pool else {
            conn.close().await;
            return;
        };
        let rejected = {
            let mut slots = pool.slots.lock().expect("admin pool");
            let rejected =
                slots.checkin(&self.key, &self.password, conn, self.opened, Instant::now());
            if rejected.is_none() {
                pool.start_sweeper(&mut slots);
            }
            rejected
        };
        if let Some(conn) = rejected {
            conn.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIM: Limits = Limits {
        max_idle: 2,
        idle_timeout: Duration::from_secs(30),
        max_lifetime: Duration::from_secs(60),
    };

    fn pw(s: &str) -> SecretString {
        SecretString::new(s)
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_returned_session_is_handed_out_again_most_recent_first() {
        let t0 = Instant::now();
        let mut slots = Slots::new(LIM);
        assert_eq!(slots.checkout("a", &pw("p"), t0).0, None);
        assert_eq!(slots.checkin("a", &pw("p"), 1, t0, t0), None);
        assert_eq!(slots.checkin("a", &pw("p"), 2, t0, t0 + s(1)), None);
        assert_eq!(
            slots.checkout("a", &pw("p"), t0 + s(2)),
            (Some((2, t0)), vec![])
        );
        assert_eq!(
            slots.checkout("a", &pw("p"), t0 + s(2)),
            (Some((1, t0)), vec![])
        );
        assert_eq!(slots.checkout("a", &pw("p"), t0 + s(2)).0, None);
        // Another server or admin user shares nothing.
        slots.checkin("a", &pw("p"), 3, t0, t0);
        assert_eq!(slots.checkout("b", &pw("p"), t0).0, None);
    }

    #[test]
    fn bounded_per_login() {
        let t0 = Instant::now();
        let mut slots = Slots::new(LIM);
        assert_eq!(slots.checkin("a", &pw("p"), 1, t0, t0), None);
        assert_eq!(slots.checkin("a", &pw("p"), 2, t0, t0), None);
        // Full: the third is not kept (the caller closes it).
        assert_eq!(slots.checkin("a", &pw("p"), 3, t0, t0), Some(3));
        assert_eq!(slots.checkin("b", &pw("p"), 4, t0, t0), None);
        assert_eq!(slots.idle_count(), 3);
    }

    #[test]
    fn a_changed_admin_password_closes_the_old_sessions() {
        let t0 = Instant::now();
        let mut slots = Slots::new(LIM);
        slots.checkin("a", &pw("old"), 1, t0, t0);
        slots.checkin("a", &pw("old"), 2, t0, t0);
        assert_eq!(slots.checkout("a", &pw("new"), t0), (None, vec![1, 2]));
        // A session of the new login is kept; one of the old login coming back late is not.
        assert_eq!(slots.checkin("a", &pw("new"), 3, t0, t0), None);
        assert_eq!(slots.checkin("a", &pw("old"), 4, t0, t0), Some(4));
        assert_eq!(slots.checkout("a", &pw("new"), t0).0, Some((3, t0)));
    }

    #[test]
    fn a_failed_login_evicts_every_idle_session_of_it() {
        let t0 = Instant::now();
        let mut slots = Slots::new(LIM);
        slots.checkin("a", &pw("p"), 1, t0, t0);
        slots.checkin("a", &pw("p"), 2, t0, t0);
        slots.checkin("b", &pw("p"), 3, t0, t0);
        let mut gone = slots.evict("a");
        gone.sort();
        assert_eq!(gone, vec![1, 2]);
        assert_eq!(slots.checkout("a", &pw("p"), t0).0, None);
        assert_eq!(slots.checkout("b", &pw("p"), t0).0, Some((3, t0)));
    }

    #[test]
    fn idle_and_old_sessions_expire() {
        let t0 = Instant::now();
        let mut slots = Slots::new(LIM);
        // Opened at t0, idle since t0 + 40 s: idle 25 s at t0 + 65 s, but 65 s old.
        slots.checkin("a", &pw("p"), 1, t0, t0 + s(40));
        assert_eq!(slots.checkout("a", &pw("p"), t0 + s(65)), (None, vec![1]));
        // Opened at t0 + 10 s, idle since t0 + 10 s: idle 30 s at t0 + 40 s.
        slots.checkin("a", &pw("p"), 2, t0 + s(10), t0 + s(10));
        slots.checkin("a", &pw("p"), 3, t0 + s(20), t0 + s(20));
        assert_eq!(
            slots.checkout("a", &pw("p"), t0 + s(40)),
            (Some((3, t0 + s(20))), vec![2])
        );
        // Too old to keep when it comes back.
        assert_eq!(slots.checkin("a", &pw("p"), 4, t0, t0 + s(60)), Some(4));
    }

    #[test]
    fn the_sweep_closes_expired_sessions_and_forgets_empty_slots() {
        let t0 = Instant::now();
        let mut slots = Slots::new(LIM);
        slots.checkin("a", &pw("p"), 1, t0, t0);
        slots.checkin("a", &pw("p"), 2, t0 + s(20), t0 + s(20));
        slots.checkin("b", &pw("p"), 3, t0, t0);
        let mut gone = slots.sweep(t0 + s(31));
        gone.sort();
        assert_eq!(gone, vec![1, 3]);
        assert_eq!(slots.slots.len(), 1);
        assert_eq!(slots.sweep(t0 + s(51)), vec![2]);
        assert!(slots.slots.is_empty());
    }
}
