//! The admin-login cache: what every credential reconcile of a database needs first.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Login;

/// Admin logins (read from Secrets Manager by the caller), cached briefly so a burst of credential reconciles
/// costs one GetSecretValue, not one each. Single-flight: when an entry is missing or
/// expired, the first caller reads it while the others for the same secret wait on its
/// per-secret lock and then take what it cached (a burst right after expiry still costs one
/// read). After a failed read, each waiter tries once more in turn.
pub struct AdminLogins {
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, Login)>>,
    /// One refresh lock per admin secret id.
    refreshing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

const ADMIN_LOGIN_TTL: Duration = Duration::from_secs(60);

impl Default for AdminLogins {
    fn default() -> Self {
        AdminLogins::with_ttl(ADMIN_LOGIN_TTL)
    }
}

impl AdminLogins {
    pub fn with_ttl(ttl: Duration) -> AdminLogins {
        AdminLogins {
            ttl,
            cache: Mutex::default(),
            refreshing: Mutex::default(),
        }
    }

    fn cached(&self, id: &str) -> Option<Login> {
        let cache = self.cache.lock().expect("admin cache");
        let (at, login) = cache.get(id)?;
        (at.elapsed() < self.ttl).then(|| login.clone())
    }

    /// The cached login for admin secret `id`, or the one `read` returns (then cached).
    pub async fn get_or_read<E, Fut>(
        &self,
        id: &str,
        read: impl FnOnce() -> Fut,
    ) -> Result<Login, E>
    where
        Fut: Future<Output = Result<Login, E>>,
    {
        if let Some(login) = self.cached(id) {
            return Ok(login);
        }
        let lock = self
            .refreshing
            .lock()
            .expect("admin refresh locks")
            .entry(id.to_owned())
            .or_default()
            .clone();
        let _refreshing = lock.lock().await;
        // Whoever held the lock before us may just have read it.
        if let Some(login) = self.cached(id) {
            return Ok(login);
        }
        let login = read().await?;
        self.cache
            .lock()
            .expect("admin cache")
            .insert(id.to_owned(), (Instant::now(), login.clone()));
        Ok(login)
    }

    /// Drops a cached login (after an authentication failure, or to force a fresh read).
    pub fn forget(&self, id: &str) {
        self.cache.lock().expect("admin cache").remove(id);
    }
}
