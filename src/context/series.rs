//! Event series: repeats of one Event folded into a count, as kube-runtime's Recorder does it
//! (the first one created, each repeat a patch of `series`), with a note that stays true.
//!
//! Per open series only what continuing it needs is kept, by a digest of the series key: the
//! Event object's name, the count, a digest of the note and when it was last published. The first version kept one Recorder
//! per series (a client, a lock and a hash map holding a full copy of the Event, ~6 KiB each):
//! with a few series per credential that was most of the controller's heap at 5,000
//! credentials, and an idle series was only dropped when some later Event came.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an unused series is remembered: kube-runtime's Recorder starts a new Event after
/// 6 minutes anyway (its cache TTL).
pub(crate) const SERIES_TTL: Duration = Duration::from_secs(6 * 60);

/// How often [`SeriesBook::step`] sweeps expired series on its own (a sweep walks every open
/// series; once per Event would be quadratic while thousands of credentials are provisioned).
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// What a series is aggregated by: kube-runtime's `EventKey` less the reporter (always ours)
/// and the related object (never set). The note is not part of it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SeriesKey {
    /// `kind/namespace/name/uid` of the regarding object.
    pub object: String,
    pub type_: &'static str,
    pub reason: String,
    pub action: String,
}

/// An open series.
#[derive(Debug)]
struct Open {
    note: u64,
    /// The Event object's name (what a repeat patches).
    name: Box<str>,
    count: i32,
    last: Instant,
}

/// What to send for one Event.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// A new Event object: the first of its series, a different note, or past the TTL.
    Create,
    /// The open series' Event `name`, patched to `count`.
    Continue { name: String, count: i32 },
}

/// A digest of an Event's note: series compare notes, they need not keep them.
pub(crate) fn note_digest(note: &str) -> u64 {
    let mut h = DefaultHasher::new();
    note.hash(&mut h);
    h.finish()
}

/// What the book files a series under: 128 bits of SHA-256 over the length-prefixed key. A
/// key's strings (the object's kind, namespace, name and uid, the reason, the action) were most
/// of an open series' size; a collision (~2^-64 at a billion series) would at worst continue
/// the wrong Event's count, and SHA-256 makes one impossible to craft from object names.
type SeriesId = [u8; 16];

fn series_id(key: &SeriesKey) -> SeriesId {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [&*key.object, key.type_, &*key.reason, &*key.action] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let full: [u8; 32] = h.finalize().into();
    let mut id = [0; 16];
    id.copy_from_slice(&full[..16]);
    id
}

/// Whether an Event with note digest `note` continues the open series (`open`: its note digest
/// and how long it has been idle): same note (the count goes up and the note stays true) within
/// the TTL. Otherwise a new Event starts.
pub(crate) fn continues_series(open: Option<(u64, Duration)>, note: u64) -> bool {
    open.is_some_and(|(open_note, idle)| open_note == note && idle < SERIES_TTL)
}

/// The open series of this process.
#[derive(Default)]
pub(crate) struct SeriesBook {
    inner: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    open: HashMap<SeriesId, Open>,
    swept: Option<Instant>,
}

impl Book {
    fn sweep(&mut self, now: Instant) {
        self.open
            .retain(|_, s| now.saturating_duration_since(s.last) < SERIES_TTL);
        self.open.shrink_to_fit();
        self.swept = Some(now);
    }
}

impl SeriesBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        // Bookkeeping only: a panic elsewhere while holding it leaves nothing half-done that
        // matters (at worst one Event starts a new series).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What to publish for an Event of series `key` with note digest `note`.
    pub(crate) fn step(&self, key: &SeriesKey, note: u64, now: Instant) -> Step {
        let mut book = self.lock();
        if book
            .swept
            .is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_EVERY)
        {
            book.sweep(now);
        }
        match book.open.get(&series_id(key)) {
            Some(s)
                if continues_series(
                    Some((s.note, now.saturating_duration_since(s.last))),
                    note,
                ) =>
            {
                Step::Continue {
                    name: s.name.to_string(),
                    count: s.count.saturating_add(1),
                }
            }
            _ => Step::Create,
        }
    }

    /// Records a published Event: the series `key` is now at `count` in Event `name`.
    pub(crate) fn published(
        &self,
        key: SeriesKey,
        note: u64,
        name: String,
        count: i32,
        now: Instant,
    ) {
        self.lock().open.insert(
            series_id(&key),
            Open {
                note,
                name: name.into(),
                count,
                last: now,
            },
        );
    }

    /// Forgets series `key` after a failed publish: the next Event creates a new one (a
    /// failed create left nothing to patch; a failed patch may mean the Event is gone).
    pub(crate) fn failed(&self, key: &SeriesKey) {
        self.lock().open.remove(&series_id(key));
    }

    /// Drops every series idle for the TTL (the poller calls this each cycle, so series of
    /// credentials that went quiet or were deleted do not stay until the next Event).
    pub(crate) fn expire(&self, now: Instant) {
        self.lock().sweep(now);
    }

    /// Open series.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_ids_tell_keys_apart() {
        let key = |object: &str, reason: &str, action: &str| SeriesKey {
            object: object.into(),
            type_: "Normal",
            reason: reason.into(),
            action: action.into(),
        };
        let base = key("RdsCredential/ns/a/u1", "Synced", "Sync");
        assert_eq!(series_id(&base), series_id(&base.clone()));
        for other in [
            key("RdsCredential/ns/a/u2", "Synced", "Sync"),
            key("RdsCredential/ns/a/u1", "Synced", "Rotate"),
            key("RdsCredential/ns/a/u1Synced", "", "Sync"),
            key("RdsCredential/ns/a/u1", "SyncedSync", ""),
            SeriesKey {
                type_: "Warning",
                ..base.clone()
            },
        ] {
            assert_ne!(series_id(&base), series_id(&other), "{other:?}");
        }
    }

    #[test]
    fn a_series_continues_only_with_the_same_note_within_its_ttl() {
        let fresh = Duration::from_secs(1);
        let stale = SERIES_TTL + Duration::from_secs(1);
        let d = note_digest;
        // (open series: note and idle time, new note, continues)
        type Row<'a> = (Option<(&'a str, Duration)>, &'a str, bool);
        let table: [Row; 6] = [
            (None, "synced version v1", false),
            (
                Some(("synced version v1", fresh)),
                "synced version v1",
                true,
            ),
            (
                Some(("synced version v1", fresh)),
                "synced version v2",
                false,
            ),
            (
                Some(("synced version v1", stale)),
                "synced version v1",
                false,
            ),
            (
                Some(("synced version v1", SERIES_TTL)),
                "synced version v1",
                false,
            ),
            (
                Some(("rotated to app_clone", fresh)),
                "rotated to app",
                false,
            ),
        ];
        for (open, note, continues) in table {
            assert_eq!(
                continues_series(open.map(|(n, idle)| (d(n), idle)), d(note)),
                continues,
                "{open:?} {note}"
            );
        }
    }

    fn key(object: &str, reason: &str) -> SeriesKey {
        SeriesKey {
            object: object.into(),
            type_: "Normal",
            reason: reason.into(),
            action: "Sync".into(),
        }
    }

    #[test]
    fn the_book_counts_up_restarts_on_a_new_note_or_failure_and_expires_idle_series() {
        let book = SeriesBook::default();
        let t0 = Instant::now();
        let (a, b) = (
            key("RdsCredential/ns/a/1", "SecretSynced"),
            key("RdsCredential/ns/b/2", "SecretSynced"),
        );
        let (v1, v2) = (note_digest("synced v1"), note_digest("synced v2"));

        assert_eq!(book.step(&a, v1, t0), Step::Create);
        book.published(a.clone(), v1, "a.1".into(), 1, t0);
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(
            book.step(&a, v1, t1),
            Step::Continue {
                name: "a.1".into(),
                count: 2
            },
            "same note: the series counts up"
        );
        book.published(a.clone(), v1, "a.1".into(), 2, t1);
        assert_eq!(
            book.step(&a, v1, t1),
            Step::Continue {
                name: "a.1".into(),
                count: 3
            }
        );
        assert_eq!(
            book.step(&a, v2, t1),
            Step::Create,
            "a new note: a new Event"
        );
        assert_eq!(
            book.step(&b, v1, t1),
            Step::Create,
            "another object: its own series"
        );

        book.failed(&a);
        assert_eq!(
            book.step(&a, v1, t1),
            Step::Create,
            "after a failure: created again"
        );
        book.published(a.clone(), v1, "a.2".into(), 1, t1);
        book.published(b.clone(), v1, "b.1".into(), 1, t0);
        assert_eq!(book.len(), 2);

        // b is idle for the TTL, a is not: only b goes, also without any further Event.
        book.expire(t0 + SERIES_TTL + Duration::from_secs(1));
        assert_eq!(book.len(), 1);
        assert_eq!(
            book.step(&b, v1, t0 + SERIES_TTL + Duration::from_secs(1)),
            Step::Create
        );
        book.expire(t1 + SERIES_TTL);
        assert_eq!(book.len(), 0, "every series expires once idle for the TTL");
    }
}
