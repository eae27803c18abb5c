//! CRD schema validation, pruning, defaults, CEL rules (incl. transition rules).

use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Api, CustomResourceExt};
use serde_json::json;

use crate::{Widget, api_err, emulator};

fn dyn_api(emu: &kube_emulator::Emulator) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("test.kube-emulator.io", "v1", "Widget"),
        "widgets",
    );
    Api::namespaced_with(emu.client(), "default", &ar)
}

fn obj(name: &str, spec: serde_json::Value) -> DynamicObject {
    serde_json::from_value(json!({"apiVersion": "test.kube-emulator.io/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec})).unwrap()
}

#[tokio::test]
async fn schema_validation_errors_are_422_with_field_paths() {
    let emu = emulator();
    let api = dyn_api(&emu);
    let pp = PostParams::default();

    let e = api_err(
        api.create(&pp, &obj("a", json!({"owner": "Ann1", "size": 101})))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(
        e.message
            .starts_with("Widget.test.kube-emulator.io \"a\" is invalid: ["),
        "{}",
        e.message
    );
    assert!(
        e.message.contains(
            "spec.owner: Invalid value: \"Ann1\": spec.owner in body should match '^[a-z]+$'"
        ),
        "{}",
        e.message
    );
    assert!(
        e.message.contains(
            "spec.size: Invalid value: 101: spec.size in body should be less than or equal to 100"
        ),
        "{}",
        e.message
    );
    let causes = e.details.as_ref().unwrap().causes.clone();
    assert!(causes.iter().any(|c| c.field == "spec.owner"), "{causes:?}");

    let e = api_err(api.create(&pp, &obj("a", json!({"size": 1}))).await);
    assert_eq!(
        e.message,
        "Widget.test.kube-emulator.io \"a\" is invalid: spec.owner: Required value"
    );

    let e = api_err(
        api.create(&pp, &obj("a", json!({"owner": "ann", "tier": "huge"})))
            .await,
    );
    assert!(
        e.message.contains(
            "spec.tier: Unsupported value: \"huge\": supported values: \"small\", \"big\""
        ),
        "{}",
        e.message
    );

    let e = api_err(
        api.create(&pp, &obj("a", json!({"owner": "ann", "size": "three"})))
            .await,
    );
    assert!(
        e.message
            .contains("spec.size in body must be of type integer"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn pruning_defaults_and_strict_field_validation() {
    let emu = emulator();
    let api = dyn_api(&emu);
    let created = api
        .create(
            &PostParams::default(),
            &obj("a", json!({"owner": "ann", "unknown": 1})),
        )
        .await
        .unwrap();
    assert_eq!(
        created.data["spec"],
        json!({"owner": "ann", "size": 1}),
        "pruned and defaulted"
    );

    // fieldValidation=Strict refuses unknown fields instead (400, like the real server).
    let url = "/apis/test.kube-emulator.io/v1/namespaces/default/widgets?fieldValidation=Strict";
    let body = serde_json::to_vec(&obj("b", json!({"owner": "ann", "unknown": 1}))).unwrap();
    let req = axum::http::Request::post(url)
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let e = emu.client().request::<DynamicObject>(req).await;
    assert!(
        matches!(e, Err(kube::Error::Api(ref s)) if s.code == 400 && s.message == "Widget in version \"v1\" cannot be handled as a Widget: strict decoding error: unknown field \"spec.unknown\""),
        "{e:?}"
    );
}

#[tokio::test]
async fn cel_rules_and_transition_rules() {
    let emu = emulator();
    let api = dyn_api(&emu);
    let pp = PostParams::default();

    let e = api_err(
        api.create(&pp, &obj("a", json!({"owner": "ann", "size": 20})))
            .await,
    );
    assert_eq!(e.code, 422);
    assert_eq!(
        e.message,
        "Widget.test.kube-emulator.io \"a\" is invalid: spec: Invalid value: \"object\": size above 10 needs tier big"
    );
    api.create(
        &pp,
        &obj("a", json!({"owner": "ann", "size": 20, "tier": "big"})),
    )
    .await
    .unwrap();

    // oldSelf rules apply on update only.
    let e = api_err(
        api.patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"owner": "bob"}})),
        )
        .await,
    );
    assert!(
        e.message
            .contains("spec: Invalid value: \"object\": owner is immutable"),
        "{}",
        e.message
    );
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 3}})),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn crd_lifecycle_through_the_api() {
    let emu = kube_emulator::Emulator::new();
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> = Api::all(emu.client());
    let crd = crds
        .create(&PostParams::default(), &Widget::crd())
        .await
        .unwrap();
    let established = crd
        .status
        .unwrap()
        .conditions
        .unwrap()
        .iter()
        .any(|c| c.type_ == "Established" && c.status == "True");
    assert!(established);
    let widgets: Api<Widget> = Api::default_namespaced(emu.client());
    widgets
        .create(&PostParams::default(), &crate::widget("w", "ann"))
        .await
        .unwrap();

    // Deleting the CRD deletes its objects and stops serving the type.
    crds.delete("widgets.test.kube-emulator.io", &Default::default())
        .await
        .unwrap();
    crate::wait_until("CRD gone", || async {
        crds.get_opt("widgets.test.kube-emulator.io")
            .await
            .unwrap()
            .is_none()
    })
    .await;
    assert_eq!(api_err(widgets.get("w").await).code, 404);
}
