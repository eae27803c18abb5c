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

/// The Argo Rollouts stand-in: a restart requested by `spec.restartAt` is half done first
/// (`restartedAt` still the earlier one, one replica unavailable, phase Progressing), then
/// done (`restartedAt` = `restartAt`, Healthy, observedGeneration a string). A paused Rollout
/// does not finish its restart.
#[tokio::test]
async fn rollout_restart_is_stepped_and_waits_while_paused() {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let emu = emulator();
    emu.install_crds_yaml(kube_emulator::ARGO_ROLLOUTS_CRD)
        .unwrap();
    emu.simulate_stepped_workload_controllers(Duration::from_millis(400));
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Rollout"));
    let api: Api<DynamicObject> = Api::default_namespaced_with(emu.client(), &ar);
    let r: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "a", "image": "a"}]}}}
    }))
    .unwrap();
    api.create(&PostParams::default(), &r).await.unwrap();
    let status = |api: Api<DynamicObject>| async move {
        api.get("web").await.unwrap().data["status"].clone()
    };
    wait_until("healthy", || {
        let api = api.clone();
        async move { status(api).await["phase"] == "Healthy" }
    })
    .await;
    let s = status(api.clone()).await;
    assert_eq!(s["observedGeneration"], "1", "a string, as Argo writes it");
    assert!(s.get("restartedAt").is_none());

    let at = "2026-12-02T13:00:00Z";
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"restartAt": at}})),
    )
    .await
    .unwrap();
    wait_until("restart half way", || {
        let api = api.clone();
        async move {
            let s = status(api).await;
            s["observedGeneration"] == "2"
                && s["phase"] == "Progressing"
                && s["availableReplicas"] == 2
                && s.get("restartedAt").is_none()
        }
    })
    .await;
    wait_until("restart done", || {
        let api = api.clone();
        async move {
            let s = status(api).await;
            s["phase"] == "Healthy" && s["restartedAt"] == at && s["availableReplicas"] == 3
        }
    })
    .await;

    // Paused: a later restart is held, however long one waits for it.
    let later = "2026-12-02T14:00:00Z";
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"paused": true, "restartAt": later}})),
    )
    .await
    .unwrap();
    wait_until("paused, restart not finished", || {
        let api = api.clone();
        async move {
            let s = status(api).await;
            s["observedGeneration"] == "3" && s["phase"] == "Paused" && s["restartedAt"] == at
        }
    })
    .await;
    // Invalid restartAt is refused by the schema, as the real CRD does.
    let bad = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"restartAt": "soon"}})),
        )
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("restartAt"), "{bad}");
}

/// batch/v1 CronJobs are served with their pod-template annotations validated like the
/// object's own (the real server's `ValidatePodTemplateSpec`), at the real error path.
#[tokio::test]
async fn cronjob_job_template_annotations_are_validated() {
    use k8s_openapi::api::batch::v1::CronJob;
    let emu = emulator();
    let api: Api<CronJob> = Api::default_namespaced(emu.client());
    let cj: CronJob = serde_json::from_value(json!({
        "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "a", "image": "a"}]}}}}}
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &cj).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let ok = json!({"spec": {"jobTemplate": {"spec": {"template": {"metadata": {"annotations": {
        "app-db.rdscred.io/version-id": "v2"}}}}}}});
    let patched = api
        .patch("nightly", &PatchParams::default(), &Patch::Merge(ok))
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    let bad = json!({"spec": {"jobTemplate": {"spec": {"template": {"metadata": {"annotations": {
        "not a key/x": "v"}}}}}}});
    let err = api
        .patch("nightly", &PatchParams::default(), &Patch::Merge(bad))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("spec.jobTemplate.spec.template.metadata.annotations"),
        "{err}"
    );
}
