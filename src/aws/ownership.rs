//! Ownership tags: which RdsCredential (cluster, namespace, name, uid) a Secrets Manager secret
//! belongs to. rdscred only writes secrets whose tags name it.

use std::collections::BTreeMap;

/// Prefix of every tag key rdscred manages.
pub const TAG_PREFIX: &str = "rdscred.io/";
pub const MANAGED_BY_TAG: &str = "rdscred.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "rdscred";
pub const CLUSTER_TAG: &str = "rdscred.io/cluster";
pub const NAMESPACE_TAG: &str = "rdscred.io/namespace";
pub const NAME_TAG: &str = "rdscred.io/name";
pub const UID_TAG: &str = "rdscred.io/uid";

/// The RdsCredential a secret belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    pub cluster: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Owner {
    /// The ownership tags, `rdscred.io/managed-by=rdscred` first.
    pub fn tags(&self) -> Vec<(String, String)> {
        vec![
            (MANAGED_BY_TAG.to_string(), MANAGED_BY_VALUE.to_string()),
            (CLUSTER_TAG.to_string(), self.cluster.clone()),
            (NAMESPACE_TAG.to_string(), self.namespace.clone()),
            (NAME_TAG.to_string(), self.name.clone()),
            (UID_TAG.to_string(), self.uid.clone()),
        ]
    }

    /// The owner named by a secret's tags; `None` unless `managed-by=rdscred` and all four
    /// ownership tags are present and non-empty.
    pub fn from_tags(tags: &BTreeMap<String, String>) -> Option<Owner> {
        if tags.get(MANAGED_BY_TAG).map(String::as_str) != Some(MANAGED_BY_VALUE) {
            return None;
        }
        let get = |key: &str| tags.get(key).filter(|v| !v.is_empty()).cloned();
        Some(Owner {
            cluster: get(CLUSTER_TAG)?,
            namespace: get(NAMESPACE_TAG)?,
            name: get(NAME_TAG)?,
            uid: get(UID_TAG)?,
        })
    }

    /// Same credential object: cluster, namespace, name and uid all equal.
    pub fn same_credential(&self, other: &Owner) -> bool {
        self == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner {
            cluster: "prod".into(),
            namespace: "shop".into(),
            name: "orders".into(),
            uid: "0b3c-uid".into(),
        }
    }

    #[test]
    fn tags_round_trip() {
        let tags: BTreeMap<String, String> = owner().tags().into_iter().collect();
        assert_eq!(tags.len(), 5);
        assert_eq!(tags[MANAGED_BY_TAG], "rdscred");
        assert_eq!(Owner::from_tags(&tags), Some(owner()));
    }

    #[test]
    fn incomplete_or_foreign_tags_are_not_an_owner() {
        let mut tags: BTreeMap<String, String> = owner().tags().into_iter().collect();
        tags.insert(MANAGED_BY_TAG.into(), "someone-else".into());
        assert_eq!(Owner::from_tags(&tags), None);
        let mut tags: BTreeMap<String, String> = owner().tags().into_iter().collect();
        tags.remove(UID_TAG);
        assert_eq!(Owner::from_tags(&tags), None);
        tags.insert(UID_TAG.into(), String::new());
        assert_eq!(Owner::from_tags(&tags), None);
    }

    #[test]
    fn same_credential_needs_all_four() {
        let a = owner();
        assert!(a.same_credential(&owner()));
        let other_uid = Owner {
            uid: "new".into(),
            ..owner()
        };
        assert!(!a.same_credential(&other_uid));
        let other_cluster = Owner {
            cluster: "staging".into(),
            ..owner()
        };
        assert!(!a.same_credential(&other_cluster));
    }
}
