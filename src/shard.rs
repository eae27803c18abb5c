//! Which shard owns a credential (horizontal sharding, as Flux and Argo CD do it).
//!
//! A credential belongs to exactly one of `shards` shards: the one named by its
//! `rdscred.io/shard` label when that is a valid shard number, otherwise the FNV-1a (64-bit)
//! hash of `namespace/name` modulo `shards`. The hash is fixed forever: changing it would move
//! credentials between shards on upgrade, so its outputs are pinned by the tests below.
//!
//! The decisions of sharded operation live here as pure functions (which shard a credential
//! belongs to, which Lease guards a shard, which shard a replica contends for first); the
//! runtime (`runtime::shards`) wires them to Leases and controllers. See docs/sharding.md.

use std::collections::BTreeMap;
use std::time::Duration;

/// The label a user sets to pin a credential to a shard (`"0"`, `"1"`, ...).
pub const SHARD_LABEL: &str = "rdscred.io/shard";

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64-bit, over `bytes`: simple, stable, no dependency, good spread on short keys.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(FNV_PRIME)
    })
}

/// The shard (in `0..shards`) owning the credential `namespace/name` with `labels`.
///
/// `shards` 0 or 1 means no sharding: everything is shard 0 (today's behaviour).
/// A label that is not a number below `shards` (typo, `"-1"`, `"2"` with two shards, spaces)
/// is ignored in favour of the hash, so a bad label never leaves a credential unowned.
pub fn shard_of(
    namespace: &str,
    name: &str,
    labels: Option<&BTreeMap<String, String>>,
    shards: u32,
) -> u32 {
    if shards <= 1 {
        return 0;
    }
    if let Some(pinned) = labels
        .and_then(|l| l.get(SHARD_LABEL))
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|k| *k < shards)
    {
        return pinned;
    }
    let key = format!("{namespace}/{name}");
    // The remainder is < shards ≤ u32::MAX, so the conversion cannot fail.
    u32::try_from(fnv1a64(key.as_bytes()) % u64::from(shards)).unwrap_or(0)
}

/// One shard of `count`: what a controller instance acts on. `count` ≤ 1 means unsharded
/// (the instance owns everything).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardScope {
    pub index: u32,
    pub count: u32,
}

impl ShardScope {
    /// Unsharded: owns every credential and the RdsDatabases.
    pub const ALL: ShardScope = ShardScope { index: 0, count: 1 };

    /// Whether the credential `namespace/name` with `labels` is this shard's to reconcile.
    pub fn owns(
        &self,
        namespace: &str,
        name: &str,
        labels: Option<&BTreeMap<String, String>>,
    ) -> bool {
        shard_of(namespace, name, labels, self.count) == self.index
    }

    /// RdsDatabases are few and cluster-scoped: shard 0 reconciles all of them, so a database's
    /// status has a single writer however many shards there are.
    pub fn owns_databases(&self) -> bool {
        self.index == 0
    }
}

/// The Lease guarding shard `index`: `<base>-shard-<index>` (the leader Lease's name as base).
pub fn lease_name(base: &str, index: u32) -> String {
    format!("{base}-shard-{index}")
}

/// The shard a replica contends for first: a StatefulSet ordinal (`name-2` → 2, modulo the
/// shard count), otherwise a stable hash of the identity (a Deployment's random pod name).
/// Only a preference: every replica contends for every shard, so any live replica takes over
/// a dead one's shard.
pub fn preferred_shard(identity: &str, shards: u32) -> u32 {
    if shards <= 1 {
        return 0;
    }
    let ordinal = identity
        .rsplit_once('-')
        .map(|(_, tail)| tail)
        .filter(|tail| !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|tail| tail.parse::<u64>().ok());
    let n = ordinal.unwrap_or_else(|| fnv1a64(identity.as_bytes()));
    // The remainder is < shards ≤ u32::MAX, so the conversion cannot fail.
    u32::try_from(n % u64::from(shards)).unwrap_or(0)
}

/// When a replica may first contend for a shard that is not its preferred one, in rounds of
/// one lease duration: round `round` (1, 2, …) is at `round × lease + rank × lease / shards`,
/// `rank` being how far the shard comes after the preferred one (1..shards). The replica joins
/// in round `round` only if it holds fewer than `round` shards by then ([`joins_in_round`]).
///
/// So replicas that start together (an install, a rollout) each take their preferred shard
/// first, a replica holding nothing reaches for a free shard a lease duration before one
/// holding a shard (two Deployment pods preferring the same shard still end up with one each),
/// and the rank staggers one replica's attempts so it does not grab every free shard in the
/// same instant. Every shard is contended for by every replica from round `shards` at the
/// latest; from then on a dead holder is replaced within a lease duration as usual.
pub fn contention_round_at(
    index: u32,
    preferred: u32,
    shards: u32,
    round: u32,
    lease_duration: Duration,
) -> Duration {
    if index == preferred || shards <= 1 {
        return Duration::ZERO;
    }
    let rank = (index + shards - preferred % shards) % shards;
    lease_duration * round + lease_duration * rank / shards
}

/// Whether a replica holding `held` shards starts contending for another one in `round`.
/// Always by round `shards`, whatever it holds (every shard must have candidates).
pub fn joins_in_round(round: u32, held: usize, shards: u32) -> bool {
    round >= shards || held < round as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn shard_scope_owns_exactly_its_share() {
        let labels = label("1");
        // (case, scope, namespace, name, labels, owns)
        type Case<'a> = (
            &'a str,
            ShardScope,
            &'a str,
            Option<&'a BTreeMap<String, String>>,
            bool,
        );
        let cases: Vec<Case> = vec![
            ("unsharded owns all", ShardScope::ALL, "team-b", None, true),
            (
                "unsharded ignores labels",
                ShardScope::ALL,
                "team-b",
                Some(&labels),
                true,
            ),
            (
                "hash says 1: shard 1",
                ShardScope { index: 1, count: 2 },
                "team-b",
                None,
                true,
            ),
            (
                "hash says 1: not shard 0",
                ShardScope { index: 0, count: 2 },
                "team-b",
                None,
                false,
            ),
            (
                "hash says 0, label pins 1: shard 1",
                ShardScope { index: 1, count: 2 },
                "team-a",
                Some(&labels),
                true,
            ),
            (
                "hash says 0, label pins 1: not shard 0",
                ShardScope { index: 0, count: 2 },
                "team-a",
                Some(&labels),
                false,
            ),
        ];
        for (case, scope, ns, labels, want) in cases {
            assert_eq!(scope.owns(ns, "orders-rw", labels), want, "{case}");
        }
        // Every credential has exactly one owner among the shards.
        for count in 1..=5 {
            for i in 0..100 {
                let name = format!("cred-{i}");
                let owners = (0..count)
                    .filter(|&index| ShardScope { index, count }.owns("ns", &name, None))
                    .count();
                assert_eq!(owners, 1, "{name} with {count} shards");
            }
        }
        assert!(ShardScope::ALL.owns_databases());
        assert!(ShardScope { index: 0, count: 3 }.owns_databases());
        assert!(!ShardScope { index: 2, count: 3 }.owns_databases());
    }

    #[test]
    fn lease_names() {
        assert_eq!(lease_name("rdscred-leader", 0), "rdscred-leader-shard-0");
        assert_eq!(lease_name("x", 12), "x-shard-12");
    }

    #[test]
    fn preferred_shard_table() {
        // (identity, shards, preferred)
        let cases: &[(&str, u32, u32)] = &[
            ("rdscred-0", 2, 0),
            ("rdscred-1", 2, 1),
            ("rdscred-2", 2, 0),
            ("rdscred-5", 3, 2),
            ("anything", 1, 0),
            ("rdscred-1", 0, 0),
            // Not an ordinal: hashed (pinned: changing it reshuffles running replicas).
            ("rdscred-7d9f8b6c5-x2x4q", 2, 1),
            ("rdscred-7d9f8b6c5-abcde", 2, 1),
            ("host", 3, 2),
            ("trailing-", 2, 0),
            ("rdscred--1", 2, 1),
        ];
        for (identity, shards, want) in cases {
            assert_eq!(
                preferred_shard(identity, *shards),
                *want,
                "{identity} with {shards} shards"
            );
        }
        // Hashed identities stay in range.
        for shards in 1..=7 {
            for i in 0..50 {
                assert!(preferred_shard(&format!("pod-{i}x"), shards) < shards.max(1));
            }
        }
    }

    #[test]
    fn contention_rounds() {
        let lease = Duration::from_secs(12);
        let s = Duration::from_secs;
        // (index, preferred, shards, round, at)
        let cases: &[(u32, u32, u32, u32, Duration)] = &[
            (1, 1, 2, 1, Duration::ZERO),
            (0, 0, 3, 5, Duration::ZERO),
            (0, 0, 1, 1, Duration::ZERO),
            (1, 0, 2, 1, s(18)),
            (0, 1, 2, 1, s(18)),
            (1, 0, 2, 2, s(30)),
            (1, 0, 3, 1, s(16)),
            (2, 0, 3, 1, s(20)),
            (0, 2, 3, 1, s(16)),
            (1, 2, 3, 1, s(20)),
            (2, 0, 3, 2, s(32)),
        ];
        for (index, preferred, shards, round, at) in cases {
            assert_eq!(
                contention_round_at(*index, *preferred, *shards, *round, lease),
                *at,
                "shard {index}, preferred {preferred}, {shards} shards, round {round}"
            );
        }
        // One replica's attempts at the free shards are spread within a round.
        let at: BTreeSet<Duration> = (1..4)
            .map(|k| contention_round_at(k, 0, 4, 1, lease))
            .collect();
        assert_eq!(at.len(), 3);
        // (round, held, shards, joins)
        let joins: &[(u32, usize, u32, bool)] = &[
            (1, 0, 2, true),
            (1, 1, 3, false),
            (2, 1, 3, true),
            (2, 2, 3, false),
            (3, 2, 3, true),
            (3, 3, 3, true),
            (1, 1, 2, false),
            (2, 1, 2, true),
            (2, 7, 2, true),
        ];
        for (round, held, shards, want) in joins {
            assert_eq!(
                joins_in_round(*round, *held, *shards),
                *want,
                "round {round}, holding {held} of {shards}"
            );
        }
    }

    #[test]
    fn fnv1a64_pinned_outputs() {
        // Published FNV-1a test vectors, plus keys of the shape we hash: these must never change.
        let cases: &[(&str, u64)] = &[
            ("", 0xcbf2_9ce4_8422_2325),
            ("a", 0xaf63_dc4c_8601_ec8c),
            ("foobar", 0x8594_4171_f739_67e8),
            ("default/app", 0x0181_a307_ccbd_4756),
            ("team-a/orders-rw", 0xa1f4_ae42_1739_1606),
            ("team-b/orders-rw", 0xf1aa_06e7_deb3_d0a3),
        ];
        for (input, expected) in cases {
            assert_eq!(fnv1a64(input.as_bytes()), *expected, "{input:?}");
        }
    }

    fn label(v: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(SHARD_LABEL.to_string(), v.to_string())])
    }

    #[test]
    fn shard_of_table() {
        let other = BTreeMap::from([("app".to_string(), "x".to_string())]);
        // (case, namespace, name, labels, shards, expected)
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a str,
            Option<BTreeMap<String, String>>,
            u32,
            u32,
        );
        let cases: Vec<Case> = vec![
            ("one shard: always 0", "team-b", "orders-rw", None, 1, 0),
            (
                "zero shards treated as one",
                "team-b",
                "orders-rw",
                None,
                0,
                0,
            ),
            (
                "one shard ignores the label",
                "team-b",
                "orders-rw",
                Some(label("3")),
                1,
                0,
            ),
            ("hash, 2 shards", "team-b", "orders-rw", None, 2, 1),
            (
                "hash, 2 shards, other key",
                "team-a",
                "orders-rw",
                None,
                2,
                0,
            ),
            ("hash, 3 shards", "default", "app", None, 3, 1),
            (
                "namespace is part of the key",
                "team-a",
                "orders-rw",
                None,
                3,
                0,
            ),
            (
                "other labels do not matter",
                "team-b",
                "orders-rw",
                Some(other),
                2,
                1,
            ),
            ("label pins", "team-b", "orders-rw", Some(label("0")), 2, 0),
            (
                "label pins, 3 shards",
                "default",
                "app",
                Some(label("2")),
                3,
                2,
            ),
            (
                "label out of range: hash",
                "team-b",
                "orders-rw",
                Some(label("2")),
                2,
                1,
            ),
            (
                "negative label: hash",
                "team-b",
                "orders-rw",
                Some(label("-1")),
                2,
                1,
            ),
            (
                "label with spaces: hash",
                "team-a",
                "orders-rw",
                Some(label(" 1")),
                2,
                0,
            ),
            (
                "empty label: hash",
                "team-b",
                "orders-rw",
                Some(label("")),
                2,
                1,
            ),
        ];
        for (case, ns, name, labels, shards, expected) in cases {
            assert_eq!(
                shard_of(ns, name, labels.as_ref(), shards),
                expected,
                "{case}"
            );
        }
    }

    #[test]
    fn every_key_lands_in_range() {
        for shards in 1..=7 {
            for i in 0..200 {
                let k = shard_of("ns", &format!("cred-{i}"), None, shards);
                assert!(k < shards.max(1), "{shards} shards gave {k}");
            }
        }
    }
}
