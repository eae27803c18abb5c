//! Our own writes coming back through the watches.
//!
//! A reconcile that adds its finalizer or creates the owned Secret goes on with the object its
//! write returned, so the watch event for exactly that object (same resourceVersion) brings
//! nothing it has not already handled; passing it on would reconcile every new credential two
//! more times (issue 15: 3.00 reconciles per new credential). Any other resourceVersion of the
//! same object (someone else's edit, a later write) is news and passes, and so does a deletion
//! (the callers never ask about deletions).

use std::collections::HashMap;
use std::sync::Mutex;

/// The resourceVersion of our latest write, per object key (`Kind/namespace/name`).
#[derive(Debug, Default)]
pub struct OwnWrites {
    latest: Mutex<HashMap<String, String>>,
}

impl OwnWrites {
    /// Remembers that our write left `key` at `resource_version`.
    pub fn record(&self, key: String, resource_version: Option<String>) {
        let mut latest = self.latest.lock().expect("own writes lock");
        match resource_version {
            Some(rv) => {
                latest.insert(key, rv);
            }
            // Unknown version: nothing to recognise the echo by, so every event passes.
            None => {
                latest.remove(&key);
            }
        }
    }

    /// Whether a watch event showing `key` at `resource_version` is the echo of our own latest
    /// write. Any event for the key settles it (echo or not, a later event supersedes the
    /// write), so the map holds at most the writes whose echo is still on its way.
    pub fn is_echo(&self, key: &str, resource_version: Option<&str>) -> bool {
        let mut latest = self.latest.lock().expect("own writes lock");
        let Some(written) = latest.remove(key) else {
            return false;
        };
        is_echo_of(&written, resource_version)
    }

    /// Writes whose echo has not been seen yet (for tests and the bound above).
    pub fn pending(&self) -> usize {
        self.latest.lock().expect("own writes lock").len()
    }
}

/// The decision: an event is our write's echo only when it carries exactly the version our
/// write returned.
pub fn is_echo_of(written: &str, seen: Option<&str>) -> bool {
    seen == Some(written)
}

/// The key [`OwnWrites`] uses for an object.
pub fn key(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind}/{namespace}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_version_of_our_write_is_an_echo() {
        // (written, seen, echo)
        let table = [
            ("5", Some("5"), true),
            ("5", Some("6"), false),
            ("5", Some("4"), false),
            ("5", None, false),
        ];
        for (written, seen, want) in table {
            assert_eq!(is_echo_of(written, seen), want, "{written} {seen:?}");
        }
    }

    #[test]
    fn an_echo_is_recognised_once_and_any_event_settles_the_write() {
        let w = OwnWrites::default();
        let k = key("Secret", "ns", "s");
        assert!(!w.is_echo(&k, Some("1")), "nothing written: news");
        w.record(k.clone(), Some("7".into()));
        assert!(w.is_echo(&k, Some("7")));
        assert!(
            !w.is_echo(&k, Some("7")),
            "the same event again is not swallowed"
        );
        w.record(k.clone(), Some("8".into()));
        assert!(!w.is_echo(&k, Some("9")), "someone else's edit after ours");
        assert_eq!(w.pending(), 0, "settled by the event that passed");
        w.record(k.clone(), Some("10".into()));
        w.record(k.clone(), None);
        assert!(
            !w.is_echo(&k, Some("10")),
            "version unknown: nothing swallowed"
        );
        assert_eq!(w.pending(), 0);
    }
}
