//! Which shard owns a credential (horizontal sharding, as Flux and Argo CD do it).
//!
//! A credential belongs to exactly one of `shards` shards: the one named by its
//! `rdscred.io/shard` label when that is a valid shard number, otherwise the FNV-1a (64-bit)
//! hash of `namespace/name` modulo `shards`. The hash is fixed forever: changing it would move
//! credentials between shards on upgrade, so its outputs are pinned by the tests below.
//!
//! Not wired into the runtime yet (see the issue-15m report): this is the decision only.

use std::collections::BTreeMap;

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

#[cfg(test)]
mod tests {
    use super::*;

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
