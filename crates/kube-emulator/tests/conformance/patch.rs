//! Merge, JSON and strategic merge patches; server-side apply.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::{Widget, api_err, emulator, widget};

fn deployment() -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [
                    {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]},
                    {"name": "sidecar", "image": "side:1"}
                ]}
            }
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn merge_json_and_strategic_patches() {
    let emu = emulator();
    let api: Api<Deployment> = Api::default_namespaced(emu.client());
    api.create(&PostParams::default(), &deployment())
        .await
        .unwrap();
    let pp = PatchParams::default();

    // `kubectl rollout restart`-style strategic patch plus a container merged by name.
    let restarted = api
        .patch("web", &pp, &Patch::Strategic(json!({"spec": {"template": {
            "metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"}},
            "spec": {"containers": [{"name": "app", "env": [{"name": "B", "value": "2"}]}]}
        }}})))
        .await
        .unwrap();
    assert_eq!(restarted.metadata.generation, Some(2));
    let tpl = restarted.spec.unwrap().template;
    assert_eq!(
        tpl.metadata.unwrap().annotations.unwrap()["kubectl.kubernetes.io/restartedAt"],
        "2025-01-01T00:00:00Z"
    );
    let containers = tpl.spec.unwrap().containers;
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[0].image.as_deref(), Some("app:1"));
    assert_eq!(containers[0].env.as_ref().unwrap().len(), 2);

    // JSON merge patch replaces lists.
    let merged = api
        .patch("web", &pp, &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}, "spec": {"template": {"spec": {"containers": [{"name": "only", "image": "i"}]}}}})))
        .await
        .unwrap();
    assert_eq!(merged.labels()["x"], "y");
    assert_eq!(
        merged.spec.unwrap().template.spec.unwrap().containers.len(),
        1
    );

    // JSON patch, including a failing `test` op (422, nothing written).
    let p: json_patch::Patch = serde_json::from_value(
        json!([{"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}]),
    )
    .unwrap();
    let patched = api.patch("web", &pp, &Patch::<()>::Json(p)).await.unwrap();
    assert_eq!(patched.annotations()["a"], "b");
    let p: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/annotations/a", "value": "nope"},
        {"op": "remove", "path": "/metadata/annotations"}
    ]))
    .unwrap();
    assert_eq!(
        api_err(api.patch("web", &pp, &Patch::<()>::Json(p)).await).code,
        422
    );
    assert_eq!(api.get("web").await.unwrap().annotations()["a"], "b");

    // A resourceVersion in a patch is a precondition.
    let stale = Patch::Merge(json!({"metadata": {"resourceVersion": "1", "labels": {"z": "z"}}}));
    assert_eq!(api_err(api.patch("web", &pp, &stale).await).code, 409);

    // Strategic merge is not available for custom resources.
    let widgets: Api<Widget> = Api::default_namespaced(emu.client());
    widgets
        .create(&PostParams::default(), &widget("w", "ann"))
        .await
        .unwrap();
    assert_eq!(
        api_err(
            widgets
                .patch("w", &pp, &Patch::Strategic(json!({"spec": {"size": 2}})))
                .await
        )
        .code,
        415
    );
}

#[tokio::test]
async fn server_side_apply_creates_merges_and_tracks_ownership() {
    let emu = emulator();
    let api: Api<ConfigMap> = Api::default_namespaced(emu.client());
    let apply = |m: &str| PatchParams::apply(m);
    let cfg = |data: serde_json::Value| {
        Patch::Apply(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data}),
        )
    };

    // Create-if-absent.
    let created = api
        .patch("c", &apply("alice"), &cfg(json!({"a": "1", "b": "2"})))
        .await
        .unwrap();
    assert_eq!(created.data.as_ref().unwrap().len(), 2);
    assert_eq!(
        created.managed_fields()[0].manager.as_deref(),
        Some("alice")
    );
    assert_eq!(
        created.managed_fields()[0].operation.as_deref(),
        Some("Apply")
    );

    // Another manager adds a field: merged, not replaced.
    let merged = api
        .patch("c", &apply("bob"), &cfg(json!({"c": "3"})))
        .await
        .unwrap();
    assert_eq!(
        merged.data.as_ref().unwrap().keys().collect::<Vec<_>>(),
        ["a", "b", "c"]
    );

    // Changing alice's field conflicts unless forced.
    let e = api_err(
        api.patch("c", &apply("bob"), &cfg(json!({"c": "3", "a": "9"})))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(
        e.message.contains("conflict with \"alice\""),
        "{}",
        e.message
    );
    let forced = api
        .patch(
            "c",
            &apply("bob").force(),
            &cfg(json!({"c": "3", "a": "9"})),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.as_ref().unwrap()["a"], "9");

    // alice stops applying b: it is removed (she was its only owner); a is bob's now and stays.
    let dropped = api
        .patch("c", &apply("alice"), &cfg(json!({})))
        .await
        .unwrap();
    assert_eq!(
        dropped.data.as_ref().unwrap().keys().collect::<Vec<_>>(),
        ["a", "c"]
    );

    // Apply without fieldManager is refused.
    let e = api_err(
        api.patch("c", &PatchParams::default(), &cfg(json!({})))
            .await,
    );
    assert_eq!(e.code, 422);
}

#[tokio::test]
async fn server_side_apply_on_custom_resource_and_status() {
    let emu = emulator();
    let api: Api<Widget> = Api::default_namespaced(emu.client());
    let body = json!({"apiVersion": "test.kube-emulator.io/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"owner": "ann", "tags": ["a"]}});
    let w = api
        .patch("w", &PatchParams::apply("ctl"), &Patch::Apply(&body))
        .await
        .unwrap();
    assert_eq!(w.spec.size, 1, "default applied");
    let st = json!({"apiVersion": "test.kube-emulator.io/v1", "kind": "Widget", "status": {"ready": true}});
    let w = api
        .patch_status("w", &PatchParams::apply("ctl").force(), &Patch::Apply(&st))
        .await
        .unwrap();
    assert!(w.status.unwrap().ready);
    assert_eq!(w.spec.tags.unwrap(), ["a"]);
}
