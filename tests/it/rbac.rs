//! The chart's RBAC is exactly what the controller needs.
//!
//! Every controller-running test runs as the chart's ServiceAccount under the chart's own
//! rendered Roles (see `support::ChartRbac`): any 403 fails it, and each records the grants it
//! exercised into `$RDSCRED_RBAC_RECORDS`. Here:
//! - the namespaced install end to end (provision, rotation, rollout of every workload kind,
//!   events about a cluster-scoped RdsDatabase, leader election), so that install's grants are
//!   exercised too;
//! - a needed verb removed from the rendered Role: the real 403 reaches the credential's
//!   status, and the no-denial check fails naming it;
//! - the suite-wide unused-grant check (ignored by default: `scripts/test.sh` runs it after the
//!   whole suite, over every test's records).

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{Api, Patch, PatchParams, PostParams};
use rdscred::crd::RdsDatabase;
use rdscred::leader::{LeaderElector, LeaseConfig};
use serde_json::json;

use crate::support::{
    CONTROLLER_USER, ChartRbac, DbServer, Grant, Ground, Install, RBAC_RECORDS_ENV,
    RELEASE_NAMESPACE, unique, wait_for,
};

const NS_LABEL: (&str, &str) = ("rdscred-test", "yes");

/// Grants the chart keeps although the suite cannot exercise them, each with the reason.
/// Keep this empty unless a verb is needed only on a real API server.
const DOCUMENTED_EXCEPTIONS: &[(&str, &str, &str, &str, &str, &str)] = &[
    // (install, role, apiGroup, resource, verb, why)
];

/// A Deployment, a StatefulSet and a DaemonSet named after their kind, reading `secret`.
async fn create_workloads(g: &Ground, ns: &str, secret: &str) {
    let object = |name: &str| {
        json!({
            "metadata": { "name": name, "namespace": ns },
            "spec": {
                "selector": { "matchLabels": { "app": name } },
                "template": {
                    "metadata": { "labels": { "app": name } },
                    "spec": { "containers": [{ "name": "app", "image": "app", "envFrom": [{ "secretRef": { "name": secret } }] }] },
                },
            },
        })
    };
    let pp = PostParams::default();
    let mut sts = object("sts");
    sts["spec"]["serviceName"] = json!("sts");
    Api::<StatefulSet>::namespaced(g.client.clone(), ns)
        .create(&pp, &serde_json::from_value(sts).unwrap())
        .await
        .unwrap();
    Api::<Deployment>::namespaced(g.client.clone(), ns)
        .create(&pp, &serde_json::from_value(object("deploy")).unwrap())
        .await
        .unwrap();
    Api::<DaemonSet>::namespaced(g.client.clone(), ns)
        .create(&pp, &serde_json::from_value(object("ds")).unwrap())
        .await
        .unwrap();
}

/// Whether each workload's pod template carries the restart annotation for the Secret.
async fn rolled(g: &Ground, ns: &str) -> [bool; 3] {
    let restarted = |t: Option<k8s_openapi::api::core::v1::PodTemplateSpec>| {
        t.and_then(|t| t.metadata?.annotations)
            .is_some_and(|a| a.keys().any(|k| k.ends_with("rdscred.io/version-id")))
    };
    let d = Api::<Deployment>::namespaced(g.client.clone(), ns)
        .get("deploy")
        .await
        .unwrap();
    let s = Api::<StatefulSet>::namespaced(g.client.clone(), ns)
        .get("sts")
        .await
        .unwrap();
    let ds = Api::<DaemonSet>::namespaced(g.client.clone(), ns)
        .get("ds")
        .await
        .unwrap();
    [
        restarted(d.spec.map(|s| s.template)),
        restarted(s.spec.map(|s| s.template)),
        restarted(ds.spec.map(|s| s.template)),
    ]
}

/// A namespaced install (`watchNamespaces: [ns]`) does its whole job under its own Roles:
/// provisions, rotates on request, rolls a Deployment, a StatefulSet and a DaemonSet, writes
/// Events about its credential and (through the same recorder) repeated ones about the
/// cluster-scoped RdsDatabase into `default`, and holds the leader Lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaced_install_does_everything_under_its_roles() {
    let ns = unique("ns-");
    let mut g = Ground::namespaced(&[&ns]).await;
    g.namespace(&ns, &[NS_LABEL]).await;
    g.start().await;
    let emulator = g.emulator.clone().expect("emulator");
    emulator.simulate_workload_controllers(Duration::from_millis(200));
    let (db, prefix) = g.database(&DbServer::postgres(), json!({})).await;
    create_workloads(&g, &ns, "app-db").await;
    let user = unique("rbac_");
    g.credential(
        &ns,
        "app",
        json!({
            "databaseRef": { "name": db }, "username": user,
            "rotation": { "strategy": "single-user", "minimumInterval": "1s" },
            "secret": { "name": format!("{prefix}{user}") },
            "target": { "name": "app-db" },
        }),
    )
    .await
    .unwrap();
    g.wait_ready(&ns, "app").await;
    let creds: Api<rdscred::crd::RdsCredential> = Api::namespaced(g.client.clone(), &ns);
    creds
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "metadata": { "annotations": { "rdscred.io/rotate-requested-at": "1" } } }),
            ),
        )
        .await
        .unwrap();
    wait_for(
        "all three workloads rolled",
        Duration::from_secs(30),
        || async { rolled(&g, &ns).await.iter().all(|b| *b).then_some(()) },
    )
    .await;

    // The recorder folds a repeated event about an unchanged object into a series (a patch);
    // events about the cluster-scoped RdsDatabase go to `default`.
    let ctx = g.ctx.clone().expect("controller started");
    let db_obj = Api::<RdsDatabase>::all(g.client.clone())
        .get(&db)
        .await
        .unwrap();
    // The same about the credential, in the watched namespace (the namespaced Role): the
    // controller's own series (a rotation's Events) all carry a note of their own.
    let cred_obj = creds.get("app").await.unwrap();
    for _ in 0..2 {
        ctx.event(
            &db_obj,
            kube::runtime::events::EventType::Normal,
            "Checked",
            "Verify",
            "rbac test".into(),
        )
        .await;
        ctx.event(
            &cred_obj,
            kube::runtime::events::EventType::Normal,
            "Checked",
            "Verify",
            "rbac test".into(),
        )
        .await;
    }

    // Leader election on the chart's Lease, as the ServiceAccount.
    let client = g.controller_client().await;
    let elector = LeaderElector::new(
        client,
        LeaseConfig {
            namespace: RELEASE_NAMESPACE.into(),
            name: "rdscred-leader".into(),
            identity: "rbac-test".into(),
            lease_duration: Duration::from_secs(4),
            renew_period: Duration::from_millis(200),
        },
    );
    let mut leading = elector.subscribe();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(elector.run(async move {
        let _ = stopped.await;
    }));
    tokio::time::timeout(Duration::from_secs(10), leading.wait_for(|l| *l))
        .await
        .expect("became leader")
        .expect("elector alive");
    // Renew at least once, then release on shutdown.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop.send(());
    task.await.unwrap();

    let used: BTreeSet<(String, String, String)> = g
        .rbac
        .as_ref()
        .unwrap()
        .used_grants(&emulator)
        .into_iter()
        .map(|gr| (gr.role, gr.resource, gr.verb))
        .collect();
    for (role, resource, verb) in [
        ("Role rdscred", "deployments", "patch"),
        ("Role rdscred", "statefulsets", "get"),
        ("Role rdscred-database-events", "events", "patch"),
        ("Role rdscred-leader-election", "leases", "update"),
        ("ClusterRole rdscred-databases", "namespaces", "get"),
    ] {
        assert!(
            used.contains(&(role.into(), resource.into(), verb.into())),
            "{role} {resource} {verb} not exercised: {used:?}"
        );
    }
}

/// Without `create` on Secrets the credential cannot finish: the real 403 message reaches its
/// Ready condition, and the ground's no-denial check (which every test runs on drop) fails
/// naming the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_verb_fails_with_the_real_403() {
    let mut g = Ground::new().await;
    let rendered = ChartRbac::render(Install::ClusterWide, json!({}));
    let secrets_rule = "  - apiGroups: [\"\"]\n    resources: [\"secrets\"]\n    verbs: [\"get\", \"list\", \"watch\", \"create\", \"patch\"]";
    assert!(
        rendered.yaml.contains(secrets_rule),
        "rendered rule changed:\n{}",
        rendered.yaml
    );
    let broken = rendered.yaml.replace(
        secrets_rule,
        "  - apiGroups: [\"\"]\n    resources: [\"secrets\"]\n    verbs: [\"get\", \"list\", \"watch\", \"patch\"]",
    );
    g.rbac = Some(ChartRbac::from_yaml(Install::ClusterWide, broken));
    g.denials_expected = true;
    g.start().await;
    let ns = unique("ns-");
    g.namespace(&ns, &[NS_LABEL]).await;
    let (db, prefix) = g.database(&DbServer::postgres(), json!({})).await;
    let user = unique("rbac_");
    g.credential(
        &ns,
        "app",
        json!({
            "databaseRef": { "name": db }, "username": user,
            "secret": { "name": format!("{prefix}{user}") },
            "target": { "name": "app-db" },
        }),
    )
    .await
    .unwrap();
    let expected = format!(
        r#"secrets is forbidden: User "{CONTROLLER_USER}" cannot create resource "secrets" in API group "" in the namespace "{ns}""#
    );
    wait_for(
        "the 403 in the Ready condition",
        Duration::from_secs(60),
        || async {
            let status = g.get_credential(&ns, "app").await?.status?;
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "False" && c.message.contains(&expected))
                .then_some(())
        },
    )
    .await;
    let emulator = g.emulator.clone().unwrap();
    let check = std::panic::catch_unwind(|| ChartRbac::assert_no_denials(&emulator));
    let message = check
        .expect_err("the no-denial check fails")
        .downcast::<String>()
        .map(|s| *s)
        .unwrap_or_default();
    assert!(message.contains(&expected), "{message}");
}

/// Every verb the chart grants, in both install modes, was needed by some test of the suite.
/// Run by `scripts/test.sh` after the whole suite, over the grants each test recorded into
/// `$RDSCRED_RBAC_RECORDS`: aggregating the real suite (not a dedicated test that would have
/// to re-enact every code path) checks what the controller does, and stays deterministic as
/// long as each grant is exercised by at least one test on every run.
#[test]
#[ignore = "needs the records of a whole suite run: scripts/test.sh runs it last"]
fn chart_grants_nothing_the_suite_did_not_use() {
    let dir = std::env::var(RBAC_RECORDS_ENV)
        .unwrap_or_else(|_| panic!("{RBAC_RECORDS_ENV} is not set: run scripts/test.sh"));
    let mut used = BTreeSet::new();
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {dir}: {e}")) {
        let path = entry.unwrap().path();
        let grants: Vec<Grant> =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        used.extend(grants);
        files += 1;
    }
    let modes = [
        Install::ClusterWide,
        Install::Namespaced(vec!["team-a".into()]),
    ];
    let mut unused = Vec::new();
    for install in modes {
        let label = install.label();
        assert!(
            std::fs::read_dir(&dir).unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(label)),
            "no test recorded grants for the {label} install ({files} records in {dir})"
        );
        // The optional workload kinds (Argo Rollouts is off by default) are checked in the
        // cluster-wide install, where the workload_kinds tests enable them.
        let values = match install {
            Install::ClusterWide => json!({ "workloads": { "argoRollouts": { "enabled": true } } }),
            Install::Namespaced(_) => json!({}),
        };
        for grant in ChartRbac::render(install, values).grants() {
            let excepted = DOCUMENTED_EXCEPTIONS.iter().any(|(i, r, g, res, v, _)| {
                (*i, *r, *g, *res, *v)
                    == (
                        grant.install.as_str(),
                        grant.role.as_str(),
                        grant.api_group.as_str(),
                        grant.resource.as_str(),
                        grant.verb.as_str(),
                    )
            });
            if !used.contains(&grant) && !excepted {
                unused.push(grant);
            }
        }
    }
    let render = |g: &Grant| {
        let group = if g.api_group.is_empty() {
            "core"
        } else {
            &g.api_group
        };
        format!(
            "  {} install, {}: {} {} ({group})",
            g.install, g.role, g.verb, g.resource
        )
    };
    assert!(
        unused.is_empty(),
        "the chart grants verbs no test needed (remove them from charts/rdscred/templates, or add a documented exception):\n{}",
        unused.iter().map(render).collect::<Vec<_>>().join("\n")
    );
}
