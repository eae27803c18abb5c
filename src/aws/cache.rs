//! Secret metadata seen by the bulk poll and by our own Secrets Manager calls. Reconciles read
//! it instead of calling DescribeSecret, which is what makes steady state cost ~N/100 calls.
//!
//! It also remembers a digest of what each target Kubernetes Secret was last written or
//! verified to hold, so a reconcile may trust that Secret's values instead of calling
//! GetSecretValue — but only while nobody has edited it since.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use sha2::{Digest, Sha256};

use crate::aws::SecretMeta;

mod stored;

use stored::StoredMeta;

#[derive(Default)]
pub struct SecretCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// By secret name and by ARN: one shared copy under both keys, the keys themselves shared
    /// with it (it is kept for every credential for the life of the process).
    entries: HashMap<Arc<str>, (Instant, Arc<StoredMeta>)>,
    /// When a new AWSCURRENT version was first seen (for the sync-lag metric).
    change_seen: HashMap<String, Instant>,
    /// When the event that led us to a new AWSCURRENT version happened, by AWS's clock (for
    /// the event-lag metric). Only versions first seen through an event.
    change_event: HashMap<String, jiff::Timestamp>,
    /// Target Secret (`namespace/name`) -> digest of the AWSCURRENT version and the data this
    /// process last wrote or verified it to hold. In memory only: the digest never leaves the
    /// process.
    synced: HashMap<Box<str>, [u8; 32]>,
}

impl SecretCache {
    /// Records what AWS just told us about a secret.
    ///
    /// ListSecrets does not report replication; when an earlier DescribeSecret of the same
    /// secret did, its replica list is carried over, so a reconcile working from the bulk
    /// poll's metadata need not describe the secret to compare replicas. (Replica changes made
    /// outside rdscred are then seen at the next DescribeSecret: spec change, own write, restart.)
    pub fn remember(&self, meta: &SecretMeta) {
        self.remember_after_event(meta, None);
    }

    /// [`remember`](Self::remember) for metadata re-read because of an event that happened at
    /// `event_time`: a new AWSCURRENT version found this way records that time.
    pub fn remember_after_event(&self, meta: &SecretMeta, event_time: Option<jiff::Timestamp>) {
        let mut inner = self.inner.lock().expect("secret cache");
        let now = Instant::now();
        if let Some((at, cached)) = inner.entries.get_mut(meta.arn.as_str())
            && cached.same_as(meta)
        {
            // What every poll finds for almost every secret: the timestamps move, no new copy
            // is made (steady polls do not churn the heap with an allocation per secret).
            *at = now;
            let cached = Arc::clone(cached);
            match inner.entries.get_mut(meta.name.as_str()) {
                Some((at, by_name)) if Arc::ptr_eq(by_name, &cached) => *at = now,
                _ => {
                    inner
                        .entries
                        .insert(Arc::clone(&cached.name), (now, cached));
                }
            }
            return;
        }
        let prev = inner.entries.get(meta.arn.as_str()).map(|(_, m)| m);
        let previous = prev.and_then(|m| m.current_version().map(str::to_owned));
        let stored = StoredMeta::remembering(meta, prev.map(|m| &**m));
        if let Some(current) = stored.current_version()
            && previous.as_deref() != Some(current)
        {
            inner
                .change_seen
                .entry(current.to_owned())
                .or_insert_with(Instant::now);
            if let Some(at) = event_time {
                inner.change_event.entry(current.to_owned()).or_insert(at);
            }
        }
        let stored = Arc::new(stored);
        inner
            .entries
            .insert(Arc::clone(&stored.name), (now, Arc::clone(&stored)));
        inner.entries.insert(Arc::clone(&stored.arn), (now, stored));
        if inner.change_seen.len() > 10_000 {
            inner
                .change_seen
                .retain(|_, at| at.elapsed() < Duration::from_secs(3600));
        }
        if inner.change_event.len() > 10_000 {
            let cutoff = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
            inner.change_event.retain(|_, at| *at > cutoff);
        }
    }

    /// The metadata of `id` (name or ARN) if seen within `max_age` and complete enough to stand
    /// in for a DescribeSecret (replicas known; else the caller describes once, which fills
    /// them in for good).
    pub fn fresh(&self, id: &str, max_age: Duration) -> Option<SecretMeta> {
        let inner = self.inner.lock().expect("secret cache");
        inner
            .entries
            .get(id)
            .filter(|(at, m)| at.elapsed() <= max_age && m.replicas_known())
            .map(|(_, m)| m.to_meta())
    }

    /// The last known AWSCURRENT version of `id`, however old (without copying the rest).
    pub fn known_current(&self, id: &str) -> Option<String> {
        let inner = self.inner.lock().expect("secret cache");
        inner
            .entries
            .get(id)
            .and_then(|(_, m)| m.current_version().map(str::to_owned))
    }

    /// The last metadata seen of `id` (name or ARN), however old.
    pub fn latest(&self, id: &str) -> Option<SecretMeta> {
        let inner = self.inner.lock().expect("secret cache");
        inner.entries.get(id).map(|(_, m)| m.to_meta())
    }

    /// Forgets the secret `id` (name or ARN; both keys go) and what was recorded of the target
    /// Secret `target` (`namespace/name`): its credential is gone, and nothing else would ever
    /// remove them.
    pub fn forget(&self, id: &str, target: &str) {
        let mut inner = self.inner.lock().expect("secret cache");
        if let Some((_, meta)) = inner.entries.remove(id) {
            inner.entries.remove(&*meta.name);
            inner.entries.remove(&*meta.arn);
        }
        inner.synced.remove(target);
    }

    /// (secrets, target Secrets) remembered: tests of what deletion leaves behind.
    pub fn sizes(&self) -> (usize, usize) {
        let inner = self.inner.lock().expect("secret cache");
        let secrets = inner
            .entries
            .iter()
            .filter(|(key, (_, m))| Arc::ptr_eq(key, &m.arn))
            .count();
        (secrets, inner.synced.len())
    }

    /// When the event behind AWSCURRENT version `version_id` happened, if an event led to it.
    pub fn change_event_time(&self, version_id: &str) -> Option<jiff::Timestamp> {
        self.inner
            .lock()
            .expect("secret cache")
            .change_event
            .get(version_id)
            .copied()
    }

    /// When the AWSCURRENT version `version_id` was first seen.
    pub fn change_seen_at(&self, version_id: &str) -> Option<Instant> {
        self.inner
            .lock()
            .expect("secret cache")
            .change_seen
            .get(version_id)
            .copied()
    }

    /// Records that the target Secret `key` holds exactly `data`, for AWSCURRENT `version_id`.
    pub fn record_synced(&self, key: &str, version_id: &str, data: &BTreeMap<String, ByteString>) {
        let digest = digest(version_id, data);
        self.inner
            .lock()
            .expect("secret cache")
            .synced
            .insert(key.into(), digest);
    }

    /// Whether the target Secret `key` still holds exactly what was recorded for `version_id`.
    pub fn synced_unchanged(
        &self,
        key: &str,
        version_id: &str,
        data: &BTreeMap<String, ByteString>,
    ) -> bool {
        let inner = self.inner.lock().expect("secret cache");
        inner
            .synced
            .get(key)
            .is_some_and(|d| *d == digest(version_id, data))
    }
}

/// SHA-256 over the length-prefixed version id, keys and values (a BTreeMap iterates in key
/// order).
fn digest(version_id: &str, data: &BTreeMap<String, ByteString>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((version_id.len() as u64).to_le_bytes());
    h.update(version_id.as_bytes());
    for (k, v) in data {
        h.update((k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
        h.update((v.0.len() as u64).to_le_bytes());
        h.update(&v.0);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect()
    }

    fn meta(current: &str) -> SecretMeta {
        SecretMeta {
            arn: "arn:aws:secretsmanager:us-east-1:1:secret:s-AbCdEf".into(),
            name: "s".into(),
            description: None,
            kms_key_id: None,
            tags: BTreeMap::new(),
            versions: [(
                current.to_string(),
                vec![crate::aws::AWSCURRENT.to_string()],
            )]
            .into(),
            deleted_date: None,
            rotation_enabled: false,
            rotation_lambda_arn: None,
            rotation_rules: None,
            replica_regions: Vec::new(),
            replicas_known: true,
        }
    }

    #[test]
    fn event_time_is_kept_only_for_versions_an_event_revealed() {
        let cache = SecretCache::default();
        let t1: jiff::Timestamp = "2026-01-01T00:00:01Z".parse().unwrap();
        let t2: jiff::Timestamp = "2026-01-01T00:00:09Z".parse().unwrap();
        cache.remember(&meta("v1"));
        cache.remember_after_event(&meta("v1"), Some(t1));
        assert_eq!(cache.change_event_time("v1"), None, "the poll saw v1 first");
        cache.remember_after_event(&meta("v2"), Some(t1));
        cache.remember_after_event(&meta("v2"), Some(t2));
        assert_eq!(
            cache.change_event_time("v2"),
            Some(t1),
            "the first event counts"
        );
        assert_eq!(cache.latest("s").unwrap().current_version(), Some("v2"));
        assert_eq!(
            cache.latest(&meta("v2").arn).unwrap().current_version(),
            Some("v2")
        );
        assert!(cache.latest("other").is_none());
    }

    #[test]
    fn one_copy_under_both_keys_and_forget_removes_both() {
        let cache = SecretCache::default();
        let written = data(&[("password", "pw")]);
        cache.remember(&meta("v1"));
        cache.record_synced("ns/app", "v1", &written);
        cache.record_synced("ns/other", "v1", &written);
        assert_eq!(
            cache.sizes(),
            (1, 2),
            "one secret however many keys find it"
        );
        {
            let inner = cache.inner.lock().unwrap();
            let (by_name, by_arn) = (
                &inner.entries["s"].1,
                &inner.entries[meta("v1").arn.as_str()].1,
            );
            assert!(Arc::ptr_eq(by_name, by_arn), "shared, not copied");
        }
        // By name or by ARN: both keys go, and only the named target Secret.
        cache.forget("s", "ns/app");
        assert_eq!(cache.sizes(), (0, 1));
        assert!(cache.latest(&meta("v1").arn).is_none());
        assert!(cache.synced_unchanged("ns/other", "v1", &written));
        cache.remember(&meta("v2"));
        cache.forget(&meta("v2").arn, "ns/other");
        assert_eq!(cache.sizes(), (0, 0));
        assert!(cache.latest("s").is_none());
        cache.forget("never-seen", "ns/none");
    }

    #[test]
    fn an_unchanged_listing_entry_keeps_the_cached_copy() {
        let cache = SecretCache::default();
        let arn = meta("v1").arn;
        let copy =
            |cache: &SecretCache| Arc::clone(&cache.inner.lock().unwrap().entries[arn.as_str()].1);
        let mut described = meta("v1");
        described.replica_regions = vec!["eu-west-1".into()];
        cache.remember(&described);
        let first = copy(&cache);
        // A listing entry (replicas unknown) of the same secret: nothing new, same copy.
        let mut listed = meta("v1");
        listed.replicas_known = false;
        cache.remember(&listed);
        assert!(Arc::ptr_eq(&first, &copy(&cache)), "not copied again");
        assert_eq!(cache.latest("s").unwrap().replica_regions, ["eu-west-1"]);
        // Anything different is stored anew (replicas still carried over).
        cache.remember(&SecretMeta {
            replicas_known: false,
            ..meta("v2")
        });
        let second = copy(&cache);
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(second.current_version(), Some("v2"));
        assert_eq!(second.to_meta().replica_regions, ["eu-west-1"]);
        let mut tagged = second.to_meta();
        tagged.tags.insert("team".into(), "a".into());
        cache.remember(&tagged);
        assert_eq!(
            cache
                .latest(&arn)
                .unwrap()
                .tags
                .get("team")
                .map(String::as_str),
            Some("a")
        );
        assert!(cache.change_seen_at("v2").is_some());
    }

    #[test]
    fn synced_data_is_trusted_only_unchanged_and_for_its_version() {
        let cache = SecretCache::default();
        let written = data(&[("username", "app"), ("password", "pw-1")]);
        assert!(
            !cache.synced_unchanged("ns/app", "v1", &written),
            "nothing recorded yet (e.g. after a restart)"
        );
        cache.record_synced("ns/app", "v1", &written);
        assert!(cache.synced_unchanged("ns/app", "v1", &written));
        assert!(!cache.synced_unchanged("ns/app", "v2", &written));
        assert!(!cache.synced_unchanged("ns/other", "v1", &written));
        assert!(!cache.synced_unchanged(
            "ns/app",
            "v1",
            &data(&[("username", "app"), ("password", "tampered")])
        ));
        // Length prefixes: moving bytes between key and value changes the digest.
        assert_ne!(
            digest("v1", &data(&[("ab", "c")])),
            digest("v1", &data(&[("a", "bc")]))
        );
        assert_ne!(
            digest("v1", &data(&[("1a", "b")])),
            digest("v11", &data(&[("a", "b")]))
        );
    }
}
