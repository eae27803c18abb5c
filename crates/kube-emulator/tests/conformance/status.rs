//! Status subresource and metadata.generation; the workload controller stand-in.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::{Widget, WidgetStatus, emulator, wait_until, widget};

#[tokio::test]
async fn status_subresource_and_generation() {
    let emu = emulator();
    let api: Api<Widget> = Api::default_namespaced(emu.client());
    let pp = PatchParams::default();

    // Status in a create is dropped.
    let mut w = widget("w", "ann");
    w.status = Some(WidgetStatus {
        ready: true,
        message: None,
    });
    let created = api.create(&PostParams::default(), &w).await.unwrap();
    assert!(created.status.is_none());
    assert_eq!(created.metadata.generation, Some(1));

    // Writes to the main resource ignore status.
    let p = api
        .patch("w", &pp, &Patch::Merge(json!({"status": {"ready": true}})))
        .await
        .unwrap();
    assert!(p.status.is_none());
    assert_eq!(
        p.resource_version(),
        created.resource_version(),
        "no-op write"
    );

    // Writes to /status change only status, and do not bump generation.
    let s = api
        .patch_status("w", &pp, &Patch::Merge(json!({"spec": {"size": 5}, "metadata": {"labels": {"x": "y"}}, "status": {"ready": true}})))
        .await
        .unwrap();
    assert!(s.status.as_ref().unwrap().ready);
    assert_eq!(s.spec.size, 1);
    assert!(s.labels().is_empty());
    assert_eq!(s.metadata.generation, Some(1));

    // Metadata changes do not bump generation; spec changes do.
    let m = api
        .patch(
            "w",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(m.metadata.generation, Some(1));
    let g = api
        .patch("w", &pp, &Patch::Merge(json!({"spec": {"size": 2}})))
        .await
        .unwrap();
    assert_eq!(g.metadata.generation, Some(2));
    assert!(g.status.unwrap().ready, "status survives spec writes");

    // replace_status with a stale resourceVersion conflicts.
    let mut stale = created.clone();
    stale.status = Some(WidgetStatus {
        ready: false,
        message: Some("x".into()),
    });
    let e = api
        .replace_status("w", &PostParams::default(), &stale)
        .await;
    assert!(matches!(e, Err(kube::Error::Api(s)) if s.code == 409));
}

#[tokio::test]
async fn simulated_workload_controllers_report_rollouts() {
    let emu = emulator();
    emu.simulate_workload_controllers(Duration::from_millis(50));
    let api: Api<Deployment> = Api::default_namespaced(emu.client());
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "a", "image": "a"}]}}}
    }))
    .unwrap();
    api.create(&PostParams::default(), &d).await.unwrap();
    let rolled = |generation: i64| {
        let api = api.clone();
        async move {
            let d = api.get("web").await.unwrap();
            let s = d.status.unwrap_or_default();
            s.observed_generation == Some(generation)
                && s.updated_replicas == Some(2)
                && s.available_replicas == Some(2)
        }
    };
    wait_until("first rollout", || rolled(1)).await;
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Strategic(json!({"spec": {"template": {"metadata": {"annotations": {"r": "1"}}}}})),
    )
    .await
    .unwrap();
    wait_until("second rollout", || rolled(2)).await;
}

/// Stepped rollouts: the new generation is observed with part of the replicas updated before
/// the rollout completes, as a real rolling update shows it.
#[tokio::test]
async fn stepped_workload_controllers_report_progress_then_completion() {
    let emu = emulator();
    emu.simulate_stepped_workload_controllers(Duration::from_millis(400));
    let api: Api<Deployment> = Api::default_namespaced(emu.client());
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "a", "image": "a"}]}}}
    }))
    .unwrap();
    api.create(&PostParams::default(), &d).await.unwrap();
    let seen = |partial: bool| {
        let api = api.clone();
        async move {
            let s = api.get("web").await.unwrap().status.unwrap_or_default();
            let updated = s.updated_replicas.unwrap_or(0);
            s.observed_generation == Some(1)
                && if partial {
                    updated > 0 && updated < 3
                } else {
                    updated == 3 && s.replicas == Some(3)
                }
        }
    };
    wait_until("part of the replicas updated", || seen(true)).await;
    wait_until("all replicas updated", || seen(false)).await;
}
