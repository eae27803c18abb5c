//! What the secret cache keeps of a [`SecretMeta`]: the same facts in a few allocations.
//!
//! The cache holds one entry per secret for the life of the process, so its layout is paid
//! per credential. A `SecretMeta` spends ~2 KiB on a typical owned secret, most of it on two
//! `BTreeMap`s (a leaf node alone is ~0.5 KiB, however few entries it holds) and one
//! allocation per tag key, tag value, version id and staging label. Here tags and versions
//! are each one byte string of length-prefixed pairs, the ARN and name are shared with the
//! cache's two keys, and the rarely set parts are boxed: ~0.6 KiB. Reads rebuild a
//! `SecretMeta` (a reconcile's worth of allocation, not a resident one).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::aws::SecretMeta;
use crate::aws::secrets::{AWSCURRENT, RotationRules};

/// Pairs of strings in one allocation: for each pair, `len(a)` (u32 LE), `a`, `len(b)`, `b`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Pairs(Box<[u8]>);

impl Pairs {
    pub(super) fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Pairs {
        let mut bytes = Vec::new();
        for (a, b) in pairs {
            for s in [a, b] {
                let len = u32::try_from(s.len()).expect("a string under 4 GiB");
                bytes.extend_from_slice(&len.to_le_bytes());
                bytes.extend_from_slice(s.as_bytes());
            }
        }
        Pairs(bytes.into_boxed_slice())
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let mut rest: &[u8] = &self.0;
        let mut next = move || -> Option<&str> {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let (s, tail) = tail.split_at(u32::from_le_bytes(*len) as usize);
            rest = tail;
            // Only `new` writes the bytes, from `&str`s.
            Some(std::str::from_utf8(s).expect("pairs hold UTF-8"))
        };
        std::iter::from_fn(move || Some((next()?, next()?)))
    }
}

/// Version id -> staging labels, flattened to one pair per label; a version with no label is
/// one pair with an empty label (no staging label is empty).
fn version_pairs(versions: &BTreeMap<String, Vec<String>>) -> impl Iterator<Item = (&str, &str)> {
    versions.iter().flat_map(|(id, stages)| {
        let unlabelled: &[&str] = if stages.is_empty() { &[""] } else { &[] };
        stages
            .iter()
            .map(String::as_str)
            .chain(unlabelled.iter().copied())
            .map(move |stage| (id.as_str(), stage))
    })
}

fn tag_pairs(tags: &BTreeMap<String, String>) -> impl Iterator<Item = (&str, &str)> {
    tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))
}

/// A [`SecretMeta`] as the cache stores it.
#[derive(Debug, PartialEq)]
pub(super) struct StoredMeta {
    pub(super) arn: Arc<str>,
    pub(super) name: Arc<str>,
    description: Option<Box<str>>,
    kms_key_id: Option<Box<str>>,
    tags: Pairs,
    versions: Pairs,
    deleted_date: Option<jiff::Timestamp>,
    rotation_enabled: bool,
    replicas_known: bool,
    rotation_lambda_arn: Option<Box<str>>,
    rotation_rules: Option<Box<RotationRules>>,
    replica_regions: Box<[Box<str>]>,
}

impl StoredMeta {
    pub(super) fn new(meta: &SecretMeta) -> StoredMeta {
        let boxed = |s: &Option<String>| s.as_deref().map(Box::from);
        StoredMeta {
            arn: Arc::from(meta.arn.as_str()),
            name: Arc::from(meta.name.as_str()),
            description: boxed(&meta.description),
            kms_key_id: boxed(&meta.kms_key_id),
            tags: Pairs::new(tag_pairs(&meta.tags)),
            versions: Pairs::new(version_pairs(&meta.versions)),
            deleted_date: meta.deleted_date,
            rotation_enabled: meta.rotation_enabled,
            replicas_known: meta.replicas_known,
            rotation_lambda_arn: boxed(&meta.rotation_lambda_arn),
            rotation_rules: meta.rotation_rules.clone().map(Box::new),
            replica_regions: meta
                .replica_regions
                .iter()
                .map(|r| Box::from(r.as_str()))
                .collect(),
        }
    }

    /// The `SecretMeta` this was made from.
    pub(super) fn to_meta(&self) -> SecretMeta {
        let owned = |s: &Option<Box<str>>| s.as_deref().map(str::to_owned);
        let mut versions: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (id, stage) in self.versions.iter() {
            let stages = versions.entry(id.to_owned()).or_default();
            if !stage.is_empty() {
                stages.push(stage.to_owned());
            }
        }
        SecretMeta {
            arn: self.arn.to_string(),
            name: self.name.to_string(),
            description: owned(&self.description),
            kms_key_id: owned(&self.kms_key_id),
            tags: self
                .tags
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            versions,
            deleted_date: self.deleted_date,
            rotation_enabled: self.rotation_enabled,
            rotation_lambda_arn: owned(&self.rotation_lambda_arn),
            rotation_rules: self.rotation_rules.as_deref().cloned(),
            replica_regions: self.replica_regions.iter().map(|r| r.to_string()).collect(),
            replicas_known: self.replicas_known,
        }
    }

    pub(super) fn replicas_known(&self) -> bool {
        self.replicas_known
    }

    pub(super) fn current_version(&self) -> Option<&str> {
        self.versions
            .iter()
            .find(|(_, stage)| *stage == AWSCURRENT)
            .map(|(id, _)| id)
    }

    /// What the cache stores for `new`, replacing `prev`: ListSecrets does not report
    /// replication, so a listing entry (replicas unknown) after a DescribeSecret keeps the
    /// described replicas.
    pub(super) fn remembering(new: &SecretMeta, prev: Option<&StoredMeta>) -> StoredMeta {
        let mut stored = StoredMeta::new(new);
        if let Some(prev) = prev.filter(|p| p.carries_replicas_to(new)) {
            stored.replica_regions = prev.replica_regions.clone();
            stored.replicas_known = true;
        }
        stored
    }

    /// Whether remembering `new` keeps this entry's replicas (see [`Self::remembering`]).
    fn carries_replicas_to(&self, new: &SecretMeta) -> bool {
        !new.replicas_known && self.replicas_known
    }

    /// Whether remembering `new` would store what this already holds (replicas this entry
    /// carries over are not compared). Allocates nothing (every poll asks this of every
    /// secret).
    pub(super) fn same_as(&self, new: &SecretMeta) -> bool {
        let replicas = self.carries_replicas_to(new)
            || (new.replicas_known == self.replicas_known
                && new
                    .replica_regions
                    .iter()
                    .map(String::as_str)
                    .eq(self.replica_regions.iter().map(|r| &**r)));
        replicas
            && *self.arn == *new.arn
            && *self.name == *new.name
            && self.versions.iter().eq(version_pairs(&new.versions))
            && self.tags.iter().eq(tag_pairs(&new.tags))
            && self.description.as_deref() == new.description.as_deref()
            && self.kms_key_id.as_deref() == new.kms_key_id.as_deref()
            && self.deleted_date == new.deleted_date
            && self.rotation_enabled == new.rotation_enabled
            && self.rotation_lambda_arn.as_deref() == new.rotation_lambda_arn.as_deref()
            && self.rotation_rules.as_deref() == new.rotation_rules.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> SecretMeta {
        SecretMeta {
            arn: "arn:aws:secretsmanager:us-east-1:1:secret:app/db-AbCdEf".into(),
            name: "app/db".into(),
            description: Some("the app's login".into()),
            kms_key_id: Some("arn:aws:kms:us-east-1:1:key/k".into()),
            tags: [
                ("rdscred.io/owner-name", "app"),
                ("team", "payments"),
                ("empty", ""),
                ("ünïcode ✓", "välue"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            versions: [
                ("v1", vec!["AWSPREVIOUS"]),
                ("v2", vec!["AWSCURRENT", "custom"]),
                ("v3", vec![]),
                ("v4", vec!["AWSPENDING"]),
            ]
            .into_iter()
            .map(|(id, stages)| {
                (
                    id.to_string(),
                    stages.into_iter().map(str::to_string).collect(),
                )
            })
            .collect(),
            deleted_date: Some("2026-01-01T00:00:00Z".parse().unwrap()),
            rotation_enabled: true,
            rotation_lambda_arn: Some("arn:aws:lambda:us-east-1:1:function:rotate".into()),
            rotation_rules: Some(RotationRules {
                automatically_after_days: Some(30),
                schedule_expression: None,
                duration: Some("2h".into()),
            }),
            replica_regions: vec!["eu-west-1".into(), "eu-central-1".into()],
            replicas_known: true,
        }
    }

    fn empty() -> SecretMeta {
        SecretMeta {
            arn: String::new(),
            name: String::new(),
            description: None,
            kms_key_id: None,
            tags: BTreeMap::new(),
            versions: BTreeMap::new(),
            deleted_date: None,
            rotation_enabled: false,
            rotation_lambda_arn: None,
            rotation_rules: None,
            replica_regions: Vec::new(),
            replicas_known: false,
        }
    }

    fn same(a: &SecretMeta, b: &SecretMeta) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }

    #[test]
    fn round_trips_what_it_stores() {
        for (case, meta) in [("every field set", full()), ("nothing set", empty())] {
            let stored = StoredMeta::new(&meta);
            assert!(same(&stored.to_meta(), &meta), "{case}");
            assert!(stored.same_as(&meta), "{case}: same as its source");
        }
        assert_eq!(StoredMeta::new(&full()).current_version(), Some("v2"));
        assert_eq!(StoredMeta::new(&empty()).current_version(), None);
    }

    #[test]
    fn pairs_keep_boundaries() {
        // Moving bytes between the two halves, or between pairs, is a different list.
        let cases: [&[(&str, &str)]; 4] = [
            &[("ab", "c")],
            &[("a", "bc")],
            &[("a", ""), ("bc", "")],
            &[],
        ];
        for (i, a) in cases.iter().enumerate() {
            let pairs = Pairs::new(a.iter().copied());
            assert!(pairs.iter().eq(a.iter().copied()), "case {i} round trip");
            for (j, b) in cases.iter().enumerate().filter(|(j, _)| *j != i) {
                assert_ne!(pairs, Pairs::new(b.iter().copied()), "{i} vs {j}");
            }
        }
    }

    #[test]
    fn same_as_sees_every_difference() {
        let base = StoredMeta::new(&full());
        // (case, change)
        type Change = fn(&mut SecretMeta);
        let changes: Vec<(&str, Change)> = vec![
            ("arn", |m| m.arn.push('x')),
            ("name", |m| m.name.push('x')),
            ("description", |m| m.description = None),
            ("kms key", |m| m.kms_key_id = Some("other".into())),
            ("tag value", |m| {
                m.tags.insert("team".into(), "other".into());
            }),
            ("tag added", |m| {
                m.tags.insert("new".into(), String::new());
            }),
            ("stage moved", |m| {
                m.versions.get_mut("v4").unwrap().push("AWSCURRENT".into());
                m.versions
                    .get_mut("v2")
                    .unwrap()
                    .retain(|s| s != "AWSCURRENT");
            }),
            ("unlabelled version dropped", |m| {
                m.versions.remove("v3");
            }),
            ("label on the unlabelled version", |m| {
                m.versions.get_mut("v3").unwrap().push("x".into());
            }),
            ("deleted date", |m| m.deleted_date = None),
            ("rotation enabled", |m| m.rotation_enabled = false),
            ("lambda", |m| m.rotation_lambda_arn = None),
            ("rules", |m| {
                m.rotation_rules.as_mut().unwrap().automatically_after_days = Some(7)
            }),
            ("replica", |m| {
                m.replica_regions.pop().map(drop).unwrap_or(())
            }),
        ];
        for (case, change) in changes {
            let mut changed = full();
            change(&mut changed);
            assert!(!base.same_as(&changed), "{case}");
        }
        // A listing entry (no replicas) of the same secret is the same: replicas carry over.
        let mut listed = full();
        listed.replica_regions.clear();
        listed.replicas_known = false;
        assert!(base.same_as(&listed));
        // A DescribeSecret after a listing is news (replicas now known), whatever it reports.
        let from_listing = StoredMeta::new(&listed);
        assert!(!from_listing.same_as(&full()), "replicas now known");
        let mut no_replicas = full();
        no_replicas.replica_regions.clear();
        assert!(!from_listing.same_as(&no_replicas), "known to be none");
    }

    #[test]
    fn a_listing_entry_keeps_the_described_replicas() {
        let described = StoredMeta::new(&full());
        let mut listed = full();
        listed.replica_regions.clear();
        listed.replicas_known = false;
        listed.versions.remove("v4");
        let stored = StoredMeta::remembering(&listed, Some(&described));
        let meta = stored.to_meta();
        assert_eq!(meta.replica_regions, full().replica_regions);
        assert!(meta.replicas_known);
        assert!(
            !meta.versions.contains_key("v4"),
            "the rest is the listing's"
        );
        // Nothing to carry: no earlier entry, or one that did not know the replicas either.
        assert!(!StoredMeta::remembering(&listed, None).replicas_known());
        let unknown = StoredMeta::new(&listed);
        assert!(!StoredMeta::remembering(&listed, Some(&unknown)).replicas_known());
        // A describe reporting none replaces what was carried.
        let mut none = full();
        none.replica_regions.clear();
        let stored = StoredMeta::remembering(&none, Some(&described)).to_meta();
        assert!(stored.replica_regions.is_empty() && stored.replicas_known);
    }
}
