//! Finalizers, deletionTimestamp, garbage collection of dependents, preconditions.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::ObjectMeta;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::{Widget, api_err, emulator, wait_until, widget};

#[tokio::test]
async fn finalizers_hold_deletion() {
    let emu = emulator();
    let api: Api<Widget> = Api::default_namespaced(emu.client());
    let mut w = widget("w", "ann");
    w.metadata.finalizers = Some(vec!["test/one".into(), "test/two".into()]);
    api.create(&PostParams::default(), &w).await.unwrap();

    api.delete("w", &DeleteParams::default()).await.unwrap();
    let deleting = api.get("w").await.unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());
    assert_eq!(deleting.metadata.deletion_grace_period_seconds, Some(0));
    assert_eq!(deleting.metadata.generation, Some(2));

    // A second delete changes nothing.
    api.delete("w", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        api.get("w").await.unwrap().resource_version(),
        deleting.resource_version()
    );

    // No new finalizers once deleting.
    let add =
        Patch::Merge(json!({"metadata": {"finalizers": ["test/one", "test/two", "test/three"]}}));
    let e = api_err(api.patch("w", &PatchParams::default(), &add).await);
    assert_eq!(e.code, 422);
    assert!(
        e.message
            .contains("no new finalizers can be added if the object is being deleted"),
        "{}",
        e.message
    );

    // Removing one keeps it; removing the last one removes the object.
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": ["test/two"]}})),
    )
    .await
    .unwrap();
    assert!(api.get_opt("w").await.unwrap().is_some());
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(api.get_opt("w").await.unwrap().is_none());
}

#[tokio::test]
async fn garbage_collection_of_dependents() {
    let emu = emulator();
    let client = emu.client();
    let widgets: Api<Widget> = Api::default_namespaced(client.clone());
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let owner = widgets
        .create(&PostParams::default(), &widget("owner", "ann"))
        .await
        .unwrap();
    let oref = owner.controller_owner_ref(&()).unwrap();

    let owned =
        |name: &str, refs: Vec<OwnerReference>, finalizers: Option<Vec<String>>| ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                owner_references: Some(refs),
                finalizers,
                ..Default::default()
            },
            ..Default::default()
        };
    let cm1 = cms
        .create(
            &PostParams::default(),
            &owned("dep", vec![oref.clone()], None),
        )
        .await
        .unwrap();
    cms.create(
        &PostParams::default(),
        &owned("held", vec![oref.clone()], Some(vec!["test/hold".into()])),
    )
    .await
    .unwrap();
    // A grand-child: removed once its owner (dep) is removed.
    let cm_ref = OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "dep".into(),
        uid: cm1.uid().unwrap(),
        ..Default::default()
    };
    secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("grandchild".into()),
                    owner_references: Some(vec![cm_ref]),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // Two owners, one survives: kept.
    let other = widgets
        .create(&PostParams::default(), &widget("other", "bob"))
        .await
        .unwrap();
    cms.create(
        &PostParams::default(),
        &owned(
            "shared",
            vec![oref.clone(), other.controller_owner_ref(&()).unwrap()],
            None,
        ),
    )
    .await
    .unwrap();

    widgets
        .delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    wait_until("dependents collected", || async {
        cms.get_opt("dep").await.unwrap().is_none()
            && secrets.get_opt("grandchild").await.unwrap().is_none()
    })
    .await;
    let held = cms.get("held").await.unwrap();
    assert!(
        held.metadata.deletion_timestamp.is_some(),
        "finalizers of dependents are honoured"
    );
    assert!(cms.get_opt("shared").await.unwrap().is_some());

    // Orphan propagation keeps dependents and drops the reference.
    let orphaner = widgets
        .create(&PostParams::default(), &widget("orphaner", "cy"))
        .await
        .unwrap();
    cms.create(
        &PostParams::default(),
        &owned(
            "orphan",
            vec![orphaner.controller_owner_ref(&()).unwrap()],
            None,
        ),
    )
    .await
    .unwrap();
    widgets
        .delete("orphaner", &DeleteParams::orphan())
        .await
        .unwrap();
    let orphan = cms.get("orphan").await.unwrap();
    assert!(orphan.owner_references().is_empty());
}

#[tokio::test]
async fn delete_preconditions() {
    let emu = emulator();
    let cms: Api<ConfigMap> = Api::default_namespaced(emu.client());
    let c = cms
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("c".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("wrong".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    assert_eq!(api_err(cms.delete("c", &dp).await).code, 409);
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: c.uid(),
            resource_version: c.resource_version(),
        }),
        ..Default::default()
    };
    cms.delete("c", &dp).await.unwrap();
    assert!(cms.get_opt("c").await.unwrap().is_none());
    let _ = Widget::kind(&());
}
