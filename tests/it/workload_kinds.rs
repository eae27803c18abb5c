//! CronJobs and Argo Rollouts as dependents (issue 16 item 2), against the emulator serving
//! batch/v1 and the Argo Rollouts CRD (kube_emulator::ARGO_ROLLOUTS_CRD): discovery from the
//! job template / Rollout template, explicit refs, the opt-out, restart by each kind's own
//! field (a Rollout's `spec.restartAt`, never its pod template), the alternating-users wait on
//! Rollout status and on a CronJob's running Jobs, and a disabled kind never requested.

use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use rdscred::context::Settings;
use rdscred::crd::WorkloadKind;
use rdscred::propagation::rollout::WorkloadKinds;
use serde_json::{Value, json};

use crate::rotation_e2e::{
    admitted_namespace, deployment, has_condition, new_cred, request_rotation, status, wait_rotated,
};
use crate::support::{CONTROLLER_USER, ChartRbac, DbServer, Ground, Install, wait_for};

const KEY: &str = "app.rdscred.io/version-id";

fn rollout_api(g: &Ground, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Rollout"));
    Api::namespaced_with(g.client.clone(), ns, &ar)
}

/// A ground whose emulator serves Argo Rollouts; the chart's RBAC rendered with the given
/// kinds enabled, and controller settings to match.
async fn ground(kinds: WorkloadKinds, install: Install) -> (Ground, Settings) {
    let mut g = Ground::stale().await;
    g.install = install;
    g.emulator
        .as_ref()
        .expect("the emulator serves the Argo Rollouts CRD")
        .install_crds_yaml(kube_emulator::ARGO_ROLLOUTS_CRD)
        .expect("install the Rollout CRD");
    g.rbac = Some(ChartRbac::render(
        g.install.clone(),
        json!({ "workloads": {
            "cronJobs": { "enabled": kinds.cron_jobs },
            "argoRollouts": { "enabled": kinds.argo_rollouts },
        } }),
    ));
    let settings = Settings {
        workload_kinds: kinds,
        ..g.settings()
    };
    (g, settings)
}

fn pod_template(name: &str, secret: Option<&str>) -> Value {
    let env = secret.map_or(json!([]), |s| {
        json!([{ "name": "DB_PASSWORD", "valueFrom": { "secretKeyRef": { "name": s, "key": "password" } } }])
    });
    json!({
        "metadata": { "labels": { "app": name } },
        "spec": { "restartPolicy": "Never", "containers": [{ "name": "app", "image": "app:1", "env": env }] },
    })
}

async fn create_rollout(g: &Ground, ns: &str, name: &str, secret: Option<&str>, opt_out: bool) {
    let mut r = json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": { "name": name, "namespace": ns },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": name } },
            "strategy": { "canary": { "steps": [{ "setWeight": 20 }, { "pause": {} }],
                                      "analysis": { "templates": [{ "templateName": "success-rate" }] } } },
            "template": pod_template(name, secret),
        },
    });
    if opt_out {
        r["metadata"]["annotations"] = json!({ "rdscred.io/ignore": "true" });
    }
    rollout_api(g, ns)
        .create(&PostParams::default(), &serde_json::from_value(r).unwrap())
        .await
        .expect("create Rollout");
}

async fn create_cronjob(g: &Ground, ns: &str, name: &str, secret: Option<&str>, opt_out: bool) {
    let mut c = json!({
        "metadata": { "name": name, "namespace": ns },
        "spec": { "schedule": "0 3 * * *",
                  "jobTemplate": { "spec": { "template": pod_template(name, secret) } } },
    });
    if opt_out {
        c["metadata"]["annotations"] = json!({ "rdscred.io/ignore": "true" });
    }
    Api::<CronJob>::namespaced(g.client.clone(), ns)
        .create(&PostParams::default(), &serde_json::from_value(c).unwrap())
        .await
        .expect("create CronJob");
}

/// What the CronJob controller does when the schedule fires: a Job from the job template as
/// it is now, listed in the CronJob's `status.active`.
async fn start_job(g: &Ground, ns: &str, cronjob: &str, job: &str) {
    let cj = Api::<CronJob>::namespaced(g.client.clone(), ns)
        .get(cronjob)
        .await
        .unwrap();
    let template =
        serde_json::to_value(&cj.spec.unwrap().job_template.spec.unwrap().template).unwrap();
    let j =
        json!({ "metadata": { "name": job, "namespace": ns }, "spec": { "template": template } });
    let jobs = Api::<Job>::namespaced(g.client.clone(), ns);
    jobs.create(&PostParams::default(), &serde_json::from_value(j).unwrap())
        .await
        .expect("create Job");
    jobs.patch_status(
        job,
        &PatchParams::default(),
        &Patch::Merge(
            json!({ "status": { "active": 1, "startTime": jiff::Timestamp::now().to_string() } }),
        ),
    )
    .await
    .unwrap();
    Api::<CronJob>::namespaced(g.client.clone(), ns)
        .patch_status(
            cronjob,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "active": [
                { "apiVersion": "batch/v1", "kind": "Job", "namespace": ns, "name": job } ] } })),
        )
        .await
        .unwrap();
}

async fn finish_job(g: &Ground, ns: &str, job: &str) {
    let now = jiff::Timestamp::now().to_string();
    Api::<Job>::namespaced(g.client.clone(), ns)
        .patch_status(
            job,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "active": 0, "succeeded": 1, "completionTime": now,
                "conditions": [{ "type": "Complete", "status": "True", "lastTransitionTime": now }] } })),
        )
        .await
        .unwrap();
}

/// Plays the Argo Rollouts controller: writes `status` (observedGeneration = the current
/// generation, as a string) through the status subresource.
async fn argo_status(g: &Ground, ns: &str, name: &str, mut status: Value) {
    let api = rollout_api(g, ns);
    let r = api.get(name).await.unwrap();
    status["observedGeneration"] = json!(r.metadata.generation.unwrap_or(0).to_string());
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .unwrap();
}

async fn get_rollout(g: &Ground, ns: &str, name: &str) -> DynamicObject {
    rollout_api(g, ns).get(name).await.unwrap()
}

async fn job_template_annotation(g: &Ground, ns: &str, name: &str) -> Option<String> {
    let cj = Api::<CronJob>::namespaced(g.client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    cj.spec?
        .job_template
        .spec?
        .template
        .metadata?
        .annotations?
        .get(KEY)
        .cloned()
}

/// Auto-discovery and explicit refs of both kinds, opt-outs respected: the Rollout restarted by
/// `spec.restartAt` with its pod template unchanged (no new revision, so no canary analysis)
/// and the emulated Argo controller finishing the restart; the CronJob's job template
/// annotated. Both patched by field manager `rdscred`, and the rollouts observed complete.
#[tokio::test]
async fn rollouts_and_cronjobs_are_restarted_by_their_own_fields() {
    let server = DbServer::postgres();
    let kinds = WorkloadKinds {
        cron_jobs: true,
        argo_rollouts: true,
    };
    let (mut g, settings) = ground(kinds, Install::ClusterWide).await;
    g.stepped_rollouts(Duration::from_millis(600));
    g.start_with(settings).await;
    let ns = admitted_namespace(&g).await;
    let db = g.database(&server, json!({})).await;
    create_rollout(&g, &ns, "web", Some("app"), false).await;
    create_rollout(&g, &ns, "listed", None, false).await;
    create_rollout(&g, &ns, "quiet", Some("app"), true).await;
    create_cronjob(&g, &ns, "nightly", Some("app"), false).await;
    create_cronjob(&g, &ns, "listed-job", None, false).await;
    create_cronjob(&g, &ns, "skipped", Some("app"), true).await;
    let refs = json!({ "workloads": { "refs": [
        { "kind": "Rollout", "name": "listed" }, { "kind": "CronJob", "name": "listed-job" },
        { "kind": "Rollout", "name": "quiet" } ] } });
    let c = new_cred(
        &g,
        &server,
        &db,
        &ns,
        "app",
        json!({ "minimumInterval": "1s" }),
        refs,
    )
    .await;
    let template_before = get_rollout(&g, &ns, "web").await.data["spec"]["template"].clone();

    request_rotation(&g, &c, "r1").await;
    wait_rotated(&g, &c, "r1").await;
    let (v1, _) = g.current(&c.secret).await;
    let s = wait_for(
        "every rollout observed complete",
        Duration::from_secs(60),
        || async {
            let s = status(&g, &c).await;
            (s.rolled_workloads.len() == 4
                && s.rolled_workloads.iter().all(|w| w.completed_at.is_some()))
            .then_some(s)
        },
    )
    .await;
    let mut rolled: Vec<(WorkloadKind, String)> = s
        .rolled_workloads
        .iter()
        .map(|w| (w.kind, w.name.clone()))
        .collect();
    rolled.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        rolled,
        vec![
            (WorkloadKind::Rollout, "listed".into()),
            (WorkloadKind::CronJob, "listed-job".into()),
            (WorkloadKind::CronJob, "nightly".into()),
            (WorkloadKind::Rollout, "web".into()),
        ],
        "discovered and listed, never the opted-out ones (even when listed)"
    );

    for name in ["web", "listed"] {
        let r = get_rollout(&g, &ns, name).await;
        let at = r.data["spec"]["restartAt"]
            .as_str()
            .expect("spec.restartAt set")
            .to_string();
        assert_eq!(
            r.data["status"]["restartedAt"],
            json!(at),
            "{name}: Argo finished the restart"
        );
        assert_eq!(r.data["status"]["phase"], "Healthy");
        let annotations = r.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations.get(KEY),
            Some(&v1),
            "{name}: the version on the Rollout itself"
        );
        let managers: Vec<_> = r
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter_map(|m| m.manager.clone())
            .collect();
        assert!(
            managers.iter().any(|m| m == "rdscred"),
            "{name}: {managers:?}"
        );
    }
    assert_eq!(
        get_rollout(&g, &ns, "web").await.data["spec"]["template"],
        template_before,
        "the pod template is untouched: no new revision, no canary analysis"
    );
    let quiet = get_rollout(&g, &ns, "quiet").await;
    assert!(quiet.data["spec"].get("restartAt").is_none(), "opted out");
    assert_eq!(
        job_template_annotation(&g, &ns, "nightly").await,
        Some(v1.clone())
    );
    assert_eq!(
        job_template_annotation(&g, &ns, "listed-job").await,
        Some(v1.clone())
    );
    assert_eq!(
        job_template_annotation(&g, &ns, "skipped").await,
        None,
        "opted out"
    );
    // `kubectl describe` on the restarted Rollout and CronJob says why (an Event about each).
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(g.client.clone(), &ns)
        .list(&Default::default())
        .await
        .unwrap();
    for (kind, api_version, name) in [
        ("Rollout", "argoproj.io/v1alpha1", "web"),
        ("CronJob", "batch/v1", "nightly"),
    ] {
        assert!(
            events
                .items
                .iter()
                .any(|e| e.reason.as_deref() == Some("RolledByRdsCredential")
                    && e.regarding
                        .as_ref()
                        .is_some_and(|r| r.kind.as_deref() == Some(kind)
                            && r.api_version.as_deref() == Some(api_version)
                            && r.name.as_deref() == Some(name))),
            "an Event about {kind} {name}"
        );
    }
    let cj = Api::<CronJob>::namespaced(g.client.clone(), &ns)
        .get("nightly")
        .await
        .unwrap();
    assert!(
        cj.metadata
            .managed_fields
            .iter()
            .flatten()
            .any(|m| m.manager.as_deref() == Some("rdscred"))
    );
}

/// Waits until a rotation request `value` was evaluated and held for `workload`.
async fn held_for(g: &Ground, c: &crate::rotation_e2e::Cred, value: &str, workload: &str) {
    request_rotation(g, c, value).await;
    wait_for(
        &format!("{value} held for {workload}"),
        Duration::from_secs(60),
        || async {
            let s = status(g, c).await;
            let cond = s.conditions.iter().find(|c| c.type_ == "Rotating")?;
            (has_condition(&s, "Rotating", "False", "Waiting")
                && cond.message.contains(&format!("{value:?}"))
                && cond
                    .message
                    .contains(&format!("waiting for {workload} to finish rolling out")))
            .then_some(())
        },
    )
    .await;
}

/// alternating-users: the next rotation would re-password the user the old pods still run
/// with. It waits for the Rollout's restart (half done, degraded with the restart recorded,
/// paused: all not done), then for the Job the CronJob started before the switch, and
/// proceeds once both are done. Each hold is checked on a fresh request, so it is the
/// gate's decision on the status just written.
#[tokio::test]
async fn alternating_rotation_waits_for_the_rollout_restart_and_the_running_job() {
    let server = DbServer::mariadb();
    let kinds = WorkloadKinds {
        cron_jobs: true,
        argo_rollouts: true,
    };
    let (mut g, settings) = ground(kinds, Install::ClusterWide).await;
    g.start_with(settings).await;
    let ns = admitted_namespace(&g).await;
    let db = g.database(&server, json!({})).await;
    create_rollout(&g, &ns, "web", Some("app"), false).await;
    let healthy = json!({ "phase": "Healthy", "replicas": 2, "updatedReplicas": 2,
                          "readyReplicas": 2, "availableReplicas": 2 });
    argo_status(&g, &ns, "web", healthy.clone()).await;
    create_cronjob(&g, &ns, "nightly", Some("app"), false).await;
    let rotation = json!({ "strategy": "alternating-users", "minimumInterval": "1s" });
    let c = new_cred(&g, &server, &db, &ns, "app", rotation, json!({})).await;
    // A nightly Job runs, started from the job template before any roll.
    start_job(&g, &ns, "nightly", "nightly-before").await;

    // Never rolled by rdscred: nothing holds the first rotation.
    request_rotation(&g, &c, "r1").await;
    wait_rotated(&g, &c, "r1").await;
    let restart_at = get_rollout(&g, &ns, "web").await.data["spec"]["restartAt"]
        .as_str()
        .expect("restarted")
        .to_string();
    // The Job started from the job template before the roll still runs.
    held_for(&g, &c, "r2", "CronJob nightly").await;
    let (v1, _) = g.current(&c.secret).await;
    assert_eq!(
        job_template_annotation(&g, &ns, "nightly").await,
        Some(v1.clone())
    );
    // A Job started after the roll carries the version: it holds nothing. The old one ends.
    start_job(&g, &ns, "nightly", "nightly-after").await;
    finish_job(&g, &ns, "nightly-before").await;
    // The Rollout: restart requested, Argo has not done it.
    held_for(&g, &c, "r3", "Rollout web").await;
    let mut half = healthy.clone();
    half["phase"] = json!("Progressing");
    half["availableReplicas"] = json!(1);
    argo_status(&g, &ns, "web", half).await;
    held_for(&g, &c, "r4", "Rollout web").await;
    let mut degraded = healthy.clone();
    degraded["restartedAt"] = json!(restart_at);
    degraded["phase"] = json!("Degraded");
    degraded["availableReplicas"] = json!(1);
    argo_status(&g, &ns, "web", degraded).await;
    held_for(&g, &c, "r5", "Rollout web").await;
    let mut paused = healthy.clone();
    paused["restartedAt"] = json!(restart_at);
    paused["phase"] = json!("Paused");
    argo_status(&g, &ns, "web", paused).await;
    held_for(&g, &c, "r6", "Rollout web").await;
    let mut done = healthy.clone();
    done["restartedAt"] = json!(restart_at);
    argo_status(&g, &ns, "web", done).await;
    let s = wait_rotated(&g, &c, "r6").await;
    assert_ne!(
        g.current(&c.secret).await.0,
        v1,
        "rotated once nothing holds the previous user"
    );
    assert!(
        s.rolled_workloads
            .iter()
            .any(|w| w.kind == WorkloadKind::Rollout && w.name == "web")
    );
}

/// Kinds not enabled are never requested (no list, get or patch of CronJobs, Jobs or Rollouts
/// in the emulator's request log, no RBAC denial under a chart that grants none of them),
/// also when listed explicitly; Deployments roll as before.
#[tokio::test]
async fn disabled_kinds_are_never_requested() {
    let server = DbServer::postgres();
    let kinds = WorkloadKinds {
        cron_jobs: false,
        argo_rollouts: false,
    };
    let (mut g, settings) = ground(kinds, Install::ClusterWide).await;
    g.start_with(settings).await;
    let ns = admitted_namespace(&g).await;
    let db = g.database(&server, json!({})).await;
    deployment(&g, &ns, "api", "app", 1).await;
    create_rollout(&g, &ns, "web", Some("app"), false).await;
    create_cronjob(&g, &ns, "nightly", Some("app"), false).await;
    let refs = json!({ "workloads": { "refs": [
        { "kind": "Rollout", "name": "web" }, { "kind": "CronJob", "name": "nightly" } ] } });
    let c = new_cred(
        &g,
        &server,
        &db,
        &ns,
        "app",
        json!({ "minimumInterval": "1s" }),
        refs,
    )
    .await;
    request_rotation(&g, &c, "r1").await;
    let s = wait_rotated(&g, &c, "r1").await;
    let rolled: Vec<_> = s
        .rolled_workloads
        .iter()
        .map(|w| (w.kind, w.name.as_str()))
        .collect();
    assert_eq!(rolled, vec![(WorkloadKind::Deployment, "api")]);
    assert!(
        get_rollout(&g, &ns, "web").await.data["spec"]
            .get("restartAt")
            .is_none()
    );
    assert_eq!(job_template_annotation(&g, &ns, "nightly").await, None);
    let emulator = g.emulator.as_ref().unwrap();
    let asked: Vec<_> = emulator
        .authorized_requests(CONTROLLER_USER)
        .into_iter()
        .filter(|r| matches!(r.resource.as_str(), "rollouts" | "cronjobs" | "jobs"))
        .map(|r| format!("{} {}", r.verb, r.resource))
        .collect();
    assert_eq!(asked, Vec::<String>::new());
    assert!(emulator.denied_requests(CONTROLLER_USER).is_empty());
}

/// A namespaced install rolls a CronJob under its Role; the rollout is recorded complete only
/// once the Job started before the roll has finished.
#[tokio::test]
async fn namespaced_cronjob_rollout_completes_when_older_jobs_finish() {
    let server = DbServer::postgres();
    let ns = crate::support::unique("ns-");
    let (mut g, settings) = ground(
        WorkloadKinds::default(),
        Install::Namespaced(vec![ns.clone()]),
    )
    .await;
    g.namespace(&ns, &[("rdscred-test", "yes")]).await;
    g.start_with(settings).await;
    let db = g.database(&server, json!({})).await;
    create_cronjob(&g, &ns, "nightly", Some("app"), false).await;
    start_job(&g, &ns, "nightly", "nightly-1").await;
    let c = new_cred(
        &g,
        &server,
        &db,
        &ns,
        "app",
        json!({ "minimumInterval": "1s" }),
        json!({}),
    )
    .await;
    request_rotation(&g, &c, "r1").await;
    let s = wait_rotated(&g, &c, "r1").await;
    let w = s
        .rolled_workloads
        .iter()
        .find(|w| w.name == "nightly")
        .expect("CronJob rolled");
    assert_eq!(
        w.completed_at, None,
        "its Job from the old template still runs"
    );
    finish_job(&g, &ns, "nightly-1").await;
    wait_for(
        "CronJob rollout complete",
        Duration::from_secs(60),
        || async {
            let s = status(&g, &c).await;
            s.rolled_workloads
                .iter()
                .find(|w| w.name == "nightly")?
                .completed_at
                .clone()
        },
    )
    .await;
}

/// A Rollout with `spec.workloadRef` runs the pod template of a Deployment (scaled to zero by
/// Argo): discovered from that template and restarted by `spec.restartAt`; the Deployment is
/// not rolled (a change to its template would be a new Rollout revision: a canary).
#[tokio::test]
async fn rollout_with_workload_ref_is_restarted_not_its_deployment() {
    let server = DbServer::postgres();
    let kinds = WorkloadKinds {
        cron_jobs: true,
        argo_rollouts: true,
    };
    let (mut g, settings) = ground(kinds, Install::ClusterWide).await;
    g.stepped_rollouts(Duration::from_millis(400));
    g.start_with(settings).await;
    let ns = admitted_namespace(&g).await;
    let db = g.database(&server, json!({})).await;
    deployment(&g, &ns, "base", "app", 0).await;
    let r = json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": { "name": "by-ref", "namespace": ns },
        "spec": {
            "replicas": 2,
            "workloadRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "base", "scaleDown": "onsuccess" },
            "strategy": { "canary": { "steps": [{ "setWeight": 20 }, { "pause": {} }] } },
        },
    });
    rollout_api(&g, &ns)
        .create(&PostParams::default(), &serde_json::from_value(r).unwrap())
        .await
        .expect("create Rollout");
    let c = new_cred(
        &g,
        &server,
        &db,
        &ns,
        "app",
        json!({ "minimumInterval": "1s" }),
        json!({}),
    )
    .await;
    let deployments =
        Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(g.client.clone(), &ns);
    let template_before = deployments
        .get("base")
        .await
        .unwrap()
        .spec
        .unwrap()
        .template;

    request_rotation(&g, &c, "r1").await;
    wait_rotated(&g, &c, "r1").await;
    let s = wait_for(
        "the Rollout's restart complete",
        Duration::from_secs(60),
        || async {
            let s = status(&g, &c).await;
            s.rolled_workloads
                .iter()
                .all(|w| w.completed_at.is_some())
                .then_some(s)
        },
    )
    .await;
    let rolled: Vec<_> = s
        .rolled_workloads
        .iter()
        .map(|w| (w.kind, w.name.as_str()))
        .collect();
    assert_eq!(rolled, vec![(WorkloadKind::Rollout, "by-ref")]);
    let by_ref = get_rollout(&g, &ns, "by-ref").await;
    assert!(by_ref.data["spec"]["restartAt"].is_string());
    assert_eq!(
        deployments
            .get("base")
            .await
            .unwrap()
            .spec
            .unwrap()
            .template,
        template_before,
        "the referenced Deployment's template is untouched"
    );
}

/// `--argo-rollouts` on a cluster without the Argo Rollouts CRDs: the alternating-users gate
/// cannot tell whether a Rollout still runs the previous user, so the rotation is held (fail
/// closed), and Ready=False / Reconciling=True say what to do (not a bare 404).
#[tokio::test]
async fn rollouts_enabled_without_their_crd_say_so() {
    let server = DbServer::postgres();
    let mut g = Ground::stale().await;
    g.rbac = Some(ChartRbac::render(
        g.install.clone(),
        json!({ "workloads": { "argoRollouts": { "enabled": true } } }),
    ));
    g.start_with(Settings {
        workload_kinds: WorkloadKinds {
            cron_jobs: true,
            argo_rollouts: true,
        },
        ..g.settings()
    })
    .await;
    let ns = admitted_namespace(&g).await;
    let db = g.database(&server, json!({})).await;
    deployment(&g, &ns, "api", "app", 1).await;
    let rotation = json!({ "strategy": "alternating-users", "minimumInterval": "1s" });
    let c = new_cred(&g, &server, &db, &ns, "app", rotation, json!({})).await;
    let (before, _) = g.current(&c.secret).await;
    request_rotation(&g, &c, "r1").await;
    let message = wait_for(
        "Ready=False naming the missing CRDs",
        Duration::from_secs(60),
        || async {
            let s = status(&g, &c).await;
            let ready = s.conditions.iter().find(|x| x.type_ == "Ready")?;
            let reconciling = has_condition(&s, "Reconciling", "True", "KubernetesApiError");
            (ready.status == "False"
                && reconciling
                && ready
                    .message
                    .contains("does not serve argoproj.io/v1alpha1 rollouts"))
            .then(|| ready.message.clone())
        },
    )
    .await;
    assert!(
        message.contains("workloads.argoRollouts.enabled: false"),
        "{message}"
    );
    assert_eq!(g.current(&c.secret).await.0, before, "no rotation");
    assert_eq!(status(&g, &c).await.last_rotation_request, None);
}
