//! Workload-facing conveniences (issue 16): the `refresh` request Argo CD's action sets
//! (deploy/argocd/resource_customizations/rdscred.io/RdsCredential/actions/refresh).

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use rdscred::context::Settings;
use rdscred::crd::RdsCredential;
use rdscred::reconcile::credential::{REFRESH_ANNOTATION, ROTATE_ANNOTATION};
use serde_json::json;

use crate::rotation_e2e::{admitted_namespace, meta, new_cred, status, synced_version};
use crate::support::{DbServer, Ground, move_awscurrent_to_new_version, wait_for};

/// Long enough that nothing but an event wakes the credential during the test: the bulk
/// poller, drift checks and database rechecks all wait this long, so only the refresh
/// annotation can make the controller notice AWSCURRENT moved. Without the refresh the wait
/// below times out (the test fails if annotation changes stop triggering a reconcile).
const QUIET: Duration = Duration::from_secs(3600);

/// `refresh` reconciles now and re-reads AWS (cached metadata older than the request is not
/// used): AWSCURRENT moved outside rdscred reaches the Kubernetes Secret at once, and nothing
/// else happens (no rotation requested or performed).
#[tokio::test]
async fn refresh_annotation_reconciles_now_without_rotating() {
    let server = DbServer::postgres();
    let mut g = Ground::stale().await;
    g.start_with(Settings {
        poll_interval: QUIET,
        drift_interval: QUIET,
        database_recheck_interval: QUIET,
        ..g.settings()
    })
    .await;
    let ns = admitted_namespace(&g).await;
    let db = g.database(&server, json!({})).await;
    let c = new_cred(&g, &server, &db, &ns, "refreshed", json!(null), json!({})).await;
    let before = status(&g, &c).await;
    let (v0, current) = g.current(&c.secret).await;
    assert_eq!(synced_version(&g, &c).await.as_deref(), Some(v0.as_str()));

    // Same password, new version: a login stays valid, only the version id tells.
    let sm = aws_sdk_secretsmanager::Client::new(g.aws.sdk_config());
    let arn = meta(&g, &c).await.arn;
    let moved = move_awscurrent_to_new_version(&sm, &arn, current.to_secret_json().expose()).await;

    // What Argo CD's action writes: now, UTC, second precision.
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let patch = json!({ "metadata": { "annotations": { REFRESH_ANNOTATION: now } } });
    Api::<RdsCredential>::namespaced(g.client.clone(), &c.ns)
        .patch(&c.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotate");
    wait_for(
        "the Secret synced to the moved AWSCURRENT",
        Duration::from_secs(60),
        || async {
            (synced_version(&g, &c).await.as_deref() == Some(moved.as_str())).then_some(())
        },
    )
    .await;

    let after = status(&g, &c).await;
    assert_eq!(
        after.last_rotation_time, before.last_rotation_time,
        "no rotation"
    );
    assert_eq!(after.last_rotation_request, before.last_rotation_request);
    let cred = g.get_credential(&c.ns, &c.name).await.expect("exists");
    assert!(
        !cred
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(ROTATE_ANNOTATION),
        "refresh never turns into a rotate request"
    );
    assert_eq!(
        g.current(&c.secret).await.0,
        moved,
        "AWSCURRENT left where the outside rotator put it"
    );
}
