//! What the controller keeps of an object in its reflector stores.
//!
//! A store holds every watched object for the life of the process, so each byte it keeps is
//! paid once per credential. `managedFields` and the `kubectl.kubernetes.io/last-applied-configuration`
//! annotation are often larger than the spec itself and no reconcile reads them: they are
//! dropped before the object reaches the store (applied through the watcher stream's `modify`).

use kube::api::ObjectMeta;

use crate::crd::{RdsCredential, RdsCredentialStatus};

/// The annotation `kubectl apply` writes: a full copy of the applied object, unread here.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops from `meta` what no reconcile reads: managed fields and the last-applied copy.
/// Everything else (labels, other annotations, finalizers, owner references, resource
/// version, generation, deletion timestamp) is kept: reconciles and predicates use them.
pub fn strip_metadata(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// The projection for any resource put in a store: [`strip_metadata`] on its metadata.
pub fn project<K: kube::Resource>(obj: &mut K) {
    strip_metadata(obj.meta_mut());
}

/// The projection for the RdsCredential store: [`strip_metadata`], and of the status only what
/// is read from the store — `secretArn` (claims, events), `syncedVersionId` (the poller),
/// `lastRotationTime` (metrics of a credential before its first rotation in this process), and
/// what says whether a credential is settled (`reconcile::credential::is_settled`: the drift
/// lane, and the poller's "observed at its generation"): `observedGeneration`, the `Ready`
/// condition's status (its message is dropped), `rotationClaim`, `nextRotationTime`,
/// `lastRotationRequest`. Of the spec, what the store's readers use (the poller, the event
/// queue, the claims check, the database mapper): `databaseRef`, `mode`, `username`,
/// `secret.name`, `target.name`, `pollInterval`. Every reconcile decides from a fresh read, so
/// the rest of the spec, the other conditions and the rest of the status (the larger part of a
/// credential) are never read from here.
pub fn project_credential(cred: &mut RdsCredential) {
    strip_metadata(&mut cred.metadata);
    let spec = &mut cred.spec;
    spec.privileges = None;
    spec.roles = None;
    spec.rotation = None;
    spec.drift = None;
    spec.secret.description = None;
    spec.secret.tags = Default::default();
    spec.secret.replica_regions = Vec::new();
    spec.secret.readers = Vec::new();
    spec.target.labels = Default::default();
    spec.target.annotations = Default::default();
    spec.target.templates = Default::default();
    spec.workloads.refs = Vec::new();
    if let Some(status) = cred.status.take() {
        let ready = status
            .conditions
            .into_iter()
            .filter(|c| c.type_ == READY_CONDITION)
            .map(|mut c| {
                c.message = String::new();
                c
            })
            .collect();
        cred.status = Some(RdsCredentialStatus {
            secret_arn: status.secret_arn,
            synced_version_id: status.synced_version_id,
            last_rotation_time: status.last_rotation_time,
            observed_generation: status.observed_generation,
            conditions: ready,
            rotation_claim: status.rotation_claim,
            next_rotation_time: status.next_rotation_time,
            last_rotation_request: status.last_rotation_request,
            ..Default::default()
        });
    }
}

/// The `Ready` condition's type (layer 0 cannot name `reconcile::conditions::READY`; a test
/// there keeps the two equal).
pub const READY_CONDITION: &str = "Ready";

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use std::collections::BTreeMap;

    fn annotations(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn strip_metadata_table() {
        let managed = Some(vec![ManagedFieldsEntry {
            manager: Some("kubectl".into()),
            ..Default::default()
        }]);
        // (case, input, expected)
        let cases: Vec<(&str, ObjectMeta, ObjectMeta)> = vec![
            (
                "empty stays empty",
                ObjectMeta::default(),
                ObjectMeta::default(),
            ),
            (
                "managed fields dropped",
                ObjectMeta {
                    name: Some("a".into()),
                    managed_fields: managed.clone(),
                    ..Default::default()
                },
                ObjectMeta {
                    name: Some("a".into()),
                    ..Default::default()
                },
            ),
            (
                "last-applied dropped, other annotations kept",
                ObjectMeta {
                    annotations: annotations(&[
                        (LAST_APPLIED_ANNOTATION, "{\"big\":true}"),
                        ("rdscred.io/rotate", "now"),
                    ]),
                    ..Default::default()
                },
                ObjectMeta {
                    annotations: annotations(&[("rdscred.io/rotate", "now")]),
                    ..Default::default()
                },
            ),
            (
                "only last-applied: annotations become None",
                ObjectMeta {
                    annotations: annotations(&[(LAST_APPLIED_ANNOTATION, "{}")]),
                    ..Default::default()
                },
                ObjectMeta::default(),
            ),
            (
                "almost the annotation name is kept",
                ObjectMeta {
                    annotations: annotations(&[(
                        "kubectl.kubernetes.io/last-applied-configuration-x",
                        "v",
                    )]),
                    ..Default::default()
                },
                ObjectMeta {
                    annotations: annotations(&[(
                        "kubectl.kubernetes.io/last-applied-configuration-x",
                        "v",
                    )]),
                    ..Default::default()
                },
            ),
            (
                "labels, finalizers, generation, resource version kept",
                ObjectMeta {
                    labels: annotations(&[("rdscred.io/shard", "1")]),
                    finalizers: Some(vec!["rdscred.io/cleanup".into()]),
                    generation: Some(3),
                    resource_version: Some("42".into()),
                    managed_fields: managed,
                    ..Default::default()
                },
                ObjectMeta {
                    labels: annotations(&[("rdscred.io/shard", "1")]),
                    finalizers: Some(vec!["rdscred.io/cleanup".into()]),
                    generation: Some(3),
                    resource_version: Some("42".into()),
                    ..Default::default()
                },
            ),
        ];
        for (case, mut input, expected) in cases {
            strip_metadata(&mut input);
            assert_eq!(input, expected, "{case}");
        }
    }
}
