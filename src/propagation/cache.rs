//! Secret metadata seen by the bulk poll and by our own Secrets Manager calls. Reconciles read
//! it instead of calling DescribeSecret, which is what makes steady state cost ~N/100 calls.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::aws::SecretMeta;

#[derive(Default)]
pub struct SecretCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// By secret name and by ARN.
    entries: HashMap<String, (Instant, SecretMeta)>,
    /// When a new AWSCURRENT version was first seen (for the sync-lag metric).
    change_seen: HashMap<String, Instant>,
}

impl SecretCache {
    /// Records what AWS just told us about a secret.
    pub fn remember(&self, meta: &SecretMeta) {
        let mut inner = self.inner.lock().expect("secret cache");
        let previous = inner.entries.get(&meta.arn).and_then(|(_, m)| m.current_version().map(str::to_owned));
        if let Some(current) = meta.current_version()
            && previous.as_deref() != Some(current)
        {
            inner.change_seen.entry(current.to_owned()).or_insert_with(Instant::now);
        }
        let now = Instant::now();
        inner.entries.insert(meta.arn.clone(), (now, meta.clone()));
        inner.entries.insert(meta.name.clone(), (now, meta.clone()));
        if inner.change_seen.len() > 10_000 {
            inner.change_seen.retain(|_, at| at.elapsed() < Duration::from_secs(3600));
        }
    }

    /// The metadata of `id` (name or ARN) if seen within `max_age`.
    pub fn fresh(&self, id: &str, max_age: Duration) -> Option<SecretMeta> {
        let inner = self.inner.lock().expect("secret cache");
        inner.entries.get(id).filter(|(at, _)| at.elapsed() <= max_age).map(|(_, m)| m.clone())
    }

    /// The last known AWSCURRENT version of `id`, however old.
    pub fn known_current(&self, id: &str) -> Option<String> {
        let inner = self.inner.lock().expect("secret cache");
        inner.entries.get(id).and_then(|(_, m)| m.current_version().map(str::to_owned))
    }

    /// When the AWSCURRENT version `version_id` was first seen.
    pub fn change_seen_at(&self, version_id: &str) -> Option<Instant> {
        self.inner.lock().expect("secret cache").change_seen.get(version_id).copied()
    }
}
