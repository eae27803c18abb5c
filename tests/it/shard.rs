//! Horizontal sharding end to end: two real `rdscred run --shards 2` processes against one
//! served emulator, moto and PostgreSQL (docs/sharding.md).
//!
//! Each process authenticates as its own user (same RBAC, the chart's rendered for
//! `shards: 2`), so the emulator's request records say which process touched what. Checked:
//! each replica holds its preferred shard's Lease; every credential (label-pinned, hashed, and
//! one with an out-of-range label) becomes Ready, and every request naming a credential or
//! its Secret came from the one process holding the credential's shard, never the other;
//! RdsDatabase status is written by shard 0's holder only; after SIGKILL of one replica the
//! survivor takes its Lease (not before it expires) and reconciles the dead shard's
//! credentials: a requested rotation completes, a new credential becomes Ready. Relabelling a
//! credential moves it to the other shard's holder.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_emulator::{Emulator, RequestAttributes, UserInfo};
use rdscred::crd::RdsCredential;
use rdscred::shard::{SHARD_LABEL, shard_of};
use serde_json::json;
use tokio::time::Instant;

use crate::runtime::{
    LEASE_DURATION, RENEW_PERIOD, Rdscred, SLACK, Workdir, sample, scrape, scrape_until, total,
    write_kubeconfig,
};
use crate::support::{
    CONTROLLER_USER, ChartRbac, DbServer, Ground, Install, RELEASE_NAMESPACE, unique, wait_for,
};

const NS_LABEL: (&str, &str) = ("rdscred-test", "yes");
const LEASE: &str = "rdscred-leader";
const SHARDS: u32 = 2;
/// The second process's user: bound to copies of the chart's roles.
const USER_B: &str = "rdscred-replica-b";

/// Binds copies of every role in `rbac_yaml` (the chart's rendered RBAC) to the plain user
/// `user`, and returns a token for it: a second controller identity with exactly the
/// chart's permissions, whose requests the emulator records separately.
fn second_identity(emulator: &Emulator, rbac_yaml: &str, user: &str) -> String {
    use serde::Deserialize;
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(rbac_yaml) {
        let mut v = serde_json::Value::deserialize(doc).expect("rendered YAML parses");
        if v.is_null() {
            continue;
        }
        let kind = v["kind"].as_str().unwrap_or_default().to_string();
        let renamed = format!("{}-{user}", v["metadata"]["name"].as_str().unwrap());
        match kind.as_str() {
            "Role" | "ClusterRole" => v["metadata"]["name"] = json!(renamed),
            "RoleBinding" | "ClusterRoleBinding" => {
                v["metadata"]["name"] = json!(renamed);
                let role = format!("{}-{user}", v["roleRef"]["name"].as_str().unwrap());
                v["roleRef"]["name"] = json!(role);
                v["subjects"] = json!([{ "kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user }]);
            }
            _ => continue,
        }
        docs.push(serde_yaml::to_string(&v).expect("YAML"));
    }
    emulator
        .apply_objects_yaml(&docs.join("---\n"))
        .expect("load the second identity's RBAC");
    emulator.issue_token(UserInfo {
        name: user.into(),
        groups: vec!["system:authenticated".into()],
    })
}

async fn holder(client: &Client, lease: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), RELEASE_NAMESPACE)
        .get_opt(lease)
        .await
        .expect("get lease")?
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

async fn wait_shard_holder(client: &Client, shard: u32, who: &str, timeout: Duration) {
    let lease = rdscred::shard::lease_name(LEASE, shard);
    wait_for(&format!("{lease} held by {who}"), timeout, || async {
        (holder(client, &lease).await.as_deref() == Some(who)).then_some(())
    })
    .await
}

/// A PostgreSQL credential `name` with `labels`, rotation configured.
async fn credential(g: &Ground, ns: &str, db: &str, prefix: &str, name: &str, shard: Option<&str>) {
    let server = DbServer::postgres();
    let user = unique("sh_");
    let labels: BTreeMap<&str, &str> = shard.map(|s| (SHARD_LABEL, s)).into_iter().collect();
    let cred: RdsCredential = serde_json::from_value(json!({
        "apiVersion": "rdscred.io/v1alpha1", "kind": "RdsCredential",
        "metadata": { "name": name, "namespace": ns, "labels": labels },
        "spec": {
            "databaseRef": { "name": db }, "username": user,
            "privileges": [{ "database": server.database, "privileges": ["CONNECT"] }],
            "rotation": { "strategy": "alternating-users", "minimumInterval": "1s" },
            "secret": { "name": format!("{prefix}{user}") },
        },
    }))
    .expect("RdsCredential json");
    Api::<RdsCredential>::namespaced(g.client.clone(), ns)
        .create(&PostParams::default(), &cred)
        .await
        .expect("create credential");
}

/// Requests naming `name` in `ns` (the credential, its status, its Secret) among `requests`.
fn about<'a>(
    requests: &'a [RequestAttributes],
    ns: &'a str,
    name: &'a str,
) -> impl Iterator<Item = &'a RequestAttributes> {
    requests.iter().filter(move |r| {
        r.namespace == ns
            && r.name == name
            && matches!(r.resource.as_str(), "rdscredentials" | "secrets")
    })
}

fn writes(r: &RequestAttributes) -> bool {
    matches!(r.verb.as_str(), "create" | "update" | "patch" | "delete")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_each_credential_one_writer_and_takeover_after_a_crash() {
    let mut g = Ground::new().await;
    // The chart's RBAC for two shards: the leader-election Role names exactly the shard Leases.
    g.rbac = Some(ChartRbac::render(
        Install::ClusterWide,
        json!({ "shards": SHARDS }),
    ));
    let token_a = g
        .controller_token()
        .await
        .expect("runs against the emulator");
    let emulator = g.emulator.clone().expect("runs against the emulator");
    let token_b = second_identity(&emulator, &g.rbac.as_ref().unwrap().yaml, USER_B);
    let served = emulator
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .expect("serve emulator");
    let (dir_a, dir_b) = (Workdir::new(), Workdir::new());
    let kube_a = write_kubeconfig(&dir_a, &served.url(), &token_a);
    let kube_b = write_kubeconfig(&dir_b, &served.url(), &token_b);
    let ns = unique("ns-");
    g.namespace(&ns, &[NS_LABEL]).await;
    let (db, prefix) = g.database(&DbServer::postgres(), json!({})).await;

    let lease_duration = format!("{}ms", LEASE_DURATION.as_millis());
    let renew = format!("{}ms", RENEW_PERIOD.as_millis());
    // Ordinal identities, as a StatefulSet's: A prefers shard 0, B shard 1.
    let (id_a, id_b) = ("rdscred-a-0", "rdscred-b-1");
    let args = |identity: &'static str| {
        [
            "--shards",
            "2",
            "--leader-election-namespace",
            RELEASE_NAMESPACE,
            "--identity",
            identity,
            "--lease-duration",
            &lease_duration,
            "--lease-renew-period",
            &renew,
        ]
        .map(str::to_owned)
    };
    let start = |name: &'static str, dir: &Workdir, kubeconfig: &std::path::Path| {
        let a = args(name);
        Rdscred::start(
            name,
            dir,
            kubeconfig,
            &g,
            &a.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    };
    let a = start(id_a, &dir_a, &kube_a);
    let mut b = start(id_b, &dir_b, &kube_b);
    // Each takes its preferred shard first; neither reaches for the other's while it lives.
    wait_shard_holder(&g.client, 0, id_a, SLACK * 5).await;
    wait_shard_holder(&g.client, 1, id_b, SLACK * 5).await;
    let (a_http, b_http) = (a.http_addr().await, b.http_addr().await);

    // Credentials: two pinned to each shard, an out-of-range label (hashed), and hashed ones.
    let mut creds: Vec<(String, u32)> = Vec::new();
    let pinned = [Some("0"), Some("1"), Some("0"), Some("1"), Some("7")];
    for label in pinned.into_iter().chain([None; 5]) {
        let name = unique("cred-");
        credential(&g, &ns, &db, &prefix, &name, label).await;
        let labels: Option<BTreeMap<String, String>> =
            label.map(|l| BTreeMap::from([(SHARD_LABEL.to_string(), l.to_string())]));
        creds.push((name.clone(), shard_of(&ns, &name, labels.as_ref(), SHARDS)));
    }
    assert!(creds.iter().any(|(_, s)| *s == 0) && creds.iter().any(|(_, s)| *s == 1));
    for (name, _) in &creds {
        g.wait_ready(&ns, name).await;
    }

    // Both replicas worked, each on its own shard (a reconcile is counted when it returns, a
    // moment after the status that shows it Ready).
    let worked =
        |m: &str| total(m, "rdscred_reconciles_total", &[r#"kind="RdsCredential""#]) >= 1.0;
    let a_metrics = scrape_until(a_http, "a's reconciles counted", |m| {
        worked(m) && total(m, "rdscred_reconciles_total", &[r#"kind="RdsDatabase""#]) >= 1.0
    })
    .await;
    let b_metrics = scrape_until(b_http, "b's reconciles counted", worked).await;
    for (who, m) in [(id_a, &a_metrics), (id_b, &b_metrics)] {
        assert_eq!(
            sample(m, "rdscred_shards_held", ""),
            Some(1.0),
            "{who}:\n{m}"
        );
        assert_eq!(sample(m, "rdscred_leader", ""), Some(1.0), "{who}");
        assert!(
            total(m, "rdscred_reconciles_total", &[r#"kind="RdsCredential""#]) >= 1.0,
            "{who} reconciled nothing:\n{m}"
        );
    }
    // Shard 0's holder alone reconciles RdsDatabases.
    assert!(
        total(
            &a_metrics,
            "rdscred_reconciles_total",
            &[r#"kind="RdsDatabase""#]
        ) >= 1.0
    );
    assert_eq!(
        total(
            &b_metrics,
            "rdscred_reconciles_total",
            &[r#"kind="RdsDatabase""#]
        ),
        0.0,
        "{b_metrics}"
    );

    // Every request naming a credential or its Secret came from its shard's holder only.
    let requests_a = emulator.authorized_requests(CONTROLLER_USER);
    let requests_b = emulator.authorized_requests(USER_B);
    for (name, shard) in &creds {
        let (mine, theirs) = if *shard == 0 {
            (&requests_a, &requests_b)
        } else {
            (&requests_b, &requests_a)
        };
        let foreign: Vec<_> = about(theirs, &ns, name).collect();
        assert!(
            foreign.is_empty(),
            "{name} (shard {shard}) touched by the other shard's process: {foreign:?}"
        );
        let own_writes: BTreeSet<String> = about(mine, &ns, name)
            .filter(|r| writes(r))
            .map(RequestAttributes::combined_resource)
            .collect();
        assert!(
            own_writes.contains("rdscredentials/status"),
            "{name} (shard {shard}): its holder wrote only {own_writes:?}"
        );
    }
    // Events name the acting instance: each credential's come from its holder alone.
    let events = Api::<Event>::namespaced(g.client.clone(), &ns)
        .list(&Default::default())
        .await
        .expect("list events");
    for (name, shard) in &creds {
        let reporters: BTreeSet<String> = events
            .items
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| e.reporting_instance.clone().unwrap_or_default())
            .collect();
        let holder = if *shard == 0 { id_a } else { id_b };
        assert_eq!(
            reporters,
            BTreeSet::from([holder.to_string()]),
            "{name} (shard {shard}): Events reported by"
        );
    }
    let database_status_writers: Vec<&str> = [(id_a, &requests_a), (id_b, &requests_b)]
        .into_iter()
        .filter(|(_, reqs)| {
            reqs.iter()
                .any(|r| r.resource == "rdsdatabases" && r.subresource == "status" && writes(r))
        })
        .map(|(who, _)| who)
        .collect();
    assert_eq!(
        database_status_writers,
        [id_a],
        "RdsDatabase status writers"
    );
    assert!(
        !a.logs().contains("lost the shard lease") && !b.logs().contains("lost the shard lease"),
        "a shard changed hands while both replicas lived"
    );

    // Relabelling moves a credential: shard 1's holder serves its next rotation request.
    let api: Api<RdsCredential> = Api::namespaced(g.client.clone(), &ns);
    let (moved, _) = creds
        .iter()
        .find(|(_, s)| *s == 0)
        .expect("a credential of shard 0");
    api.patch(
        moved,
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": {
            "labels": { SHARD_LABEL: "1" },
            "annotations": { "rdscred.io/rotate-requested-at": "moved" },
        } })),
    )
    .await
    .unwrap();
    wait_for(
        "the moved credential rotated",
        Duration::from_secs(60),
        || rotated(&api, moved, "moved"),
    )
    .await;
    assert!(
        about(&emulator.authorized_requests(USER_B), &ns, moved)
            .any(|r| writes(r) && r.subresource == "status"),
        "{moved}: shard 1's holder did not take it over"
    );

    // SIGKILL B: A takes shard 1 once its Lease expires (not before), keeping shard 0. A joins
    // the race for a shard it does not prefer only in a later contention round: wait for it.
    wait_for(
        "a contending for shard 1",
        LEASE_DURATION * 3 + SLACK * 5,
        || async { contending(&a, 1).then_some(()) },
    )
    .await;
    b.signal("KILL");
    let killed = Instant::now();
    b.exit_status(SLACK).await;
    wait_shard_holder(&g.client, 1, id_a, LEASE_DURATION + RENEW_PERIOD + SLACK).await;
    let takeover = killed.elapsed();
    assert!(
        takeover >= LEASE_DURATION - RENEW_PERIOD * 2,
        "shard 1 taken over {takeover:?} after the kill: before its lease expired"
    );
    assert_eq!(
        holder(&g.client, &rdscred::shard::lease_name(LEASE, 0))
            .await
            .as_deref(),
        Some(id_a)
    );
    wait_for("a holds both shards", SLACK * 2, || async {
        (sample(&scrape(a_http).await, "rdscred_shards_held", "") == Some(2.0)).then_some(())
    })
    .await;

    // The dead shard's credentials are A's now: a requested rotation completes...
    let (orphan, _) = creds
        .iter()
        .find(|(_, s)| *s == 1)
        .expect("a credential of shard 1");
    let before = api.get(orphan).await.unwrap().status.unwrap_or_default();
    let request = "after-the-crash";
    api.patch(
        orphan,
        &PatchParams::default(),
        &Patch::Merge(
            json!({ "metadata": { "annotations": { "rdscred.io/rotate-requested-at": request } } }),
        ),
    )
    .await
    .unwrap();
    wait_for(
        "rotation of the dead shard's credential",
        Duration::from_secs(60),
        || async {
            let status = api.get(orphan).await.ok()?.status?;
            (status.last_rotation_request.as_deref() == Some(request)
                && status.last_rotation_time.is_some()
                && status.last_rotation_time != before.last_rotation_time)
                .then_some(())
        },
    )
    .await;
    // ...and a new credential pinned to shard 1 becomes Ready.
    let late = unique("cred-");
    credential(&g, &ns, &db, &prefix, &late, Some("1")).await;
    g.wait_ready(&ns, &late).await;
    let requests_a = emulator.authorized_requests(CONTROLLER_USER);
    for name in [orphan, &late] {
        assert!(
            about(&requests_a, &ns, name).any(|r| writes(r) && r.subresource == "status"),
            "{name}: the survivor did not write its status"
        );
    }
    drop(a);
    drop(served);
}

/// Whether `replica` logged that it contends for `shard` (its elector for it runs).
fn contending(replica: &Rdscred, shard: u32) -> bool {
    replica.logs().lines().any(|line| {
        serde_json::from_str::<serde_json::Value>(line)
            .is_ok_and(|l| l["message"] == "contending for the shard" && l["shard"] == json!(shard))
    })
}

/// Whether `metrics` has a per-credential series for `name` (its last rotation).
fn exports(metrics: &str, name: &str) -> bool {
    metrics.lines().any(|l| {
        l.starts_with("rdscred_seconds_since_last_rotation{")
            && l.contains(&format!("name=\"{name}\""))
    })
}

async fn rotated(api: &Api<RdsCredential>, name: &str, request: &str) -> Option<jiff::Timestamp> {
    let status = api.get(name).await.ok()?.status?;
    (status.last_rotation_request.as_deref() == Some(request))
        .then(|| status.last_rotation_time?.parse().ok())?
}

/// One replica holding both shards loses one Lease to another holder: that shard's work stops
/// (its credentials' series are dropped, a rotation requested meanwhile waits) while the
/// other shard goes on; once the Lease is free again the replica takes it back with a fresh
/// start and the waiting rotation completes after the re-acquisition, not before. SIGTERM
/// releases every shard Lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_shard_lease_stops_that_shard_only_until_it_is_held_again() {
    let mut g = Ground::new().await;
    g.rbac = Some(ChartRbac::render(
        Install::ClusterWide,
        json!({ "shards": SHARDS }),
    ));
    let token = g
        .controller_token()
        .await
        .expect("runs against the emulator");
    let emulator = g.emulator.clone().expect("runs against the emulator");
    let served = emulator
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .expect("serve emulator");
    let dir = Workdir::new();
    let kubeconfig = write_kubeconfig(&dir, &served.url(), &token);
    let ns = unique("ns-");
    g.namespace(&ns, &[NS_LABEL]).await;
    let (db, prefix) = g.database(&DbServer::postgres(), json!({})).await;
    let (lease_duration, renew) = (
        format!("{}ms", LEASE_DURATION.as_millis()),
        format!("{}ms", RENEW_PERIOD.as_millis()),
    );
    let id = "rdscred-solo-0";
    let solo = Rdscred::start(
        id,
        &dir,
        &kubeconfig,
        &g,
        &[
            "--shards",
            "2",
            "--leader-election-namespace",
            RELEASE_NAMESPACE,
            "--identity",
            id,
            "--lease-duration",
            &lease_duration,
            "--lease-renew-period",
            &renew,
        ],
    );
    // Alone, it takes its preferred shard at once and the other one in the second contention
    // round (2.5 lease durations: a replica holding nothing would have had it first).
    wait_shard_holder(&g.client, 0, id, SLACK * 5).await;
    wait_shard_holder(&g.client, 1, id, LEASE_DURATION * 3 + SLACK * 5).await;
    let http = solo.http_addr().await;
    let (kept, stolen) = (unique("cred-"), unique("cred-"));
    credential(&g, &ns, &db, &prefix, &kept, Some("0")).await;
    credential(&g, &ns, &db, &prefix, &stolen, Some("1")).await;
    g.wait_ready(&ns, &kept).await;
    g.wait_ready(&ns, &stolen).await;
    let api: Api<RdsCredential> = Api::namespaced(g.client.clone(), &ns);
    let first = "first";
    for name in [&kept, &stolen] {
        request_rotation(&api, name, first).await;
        wait_for("first rotation", Duration::from_secs(60), || {
            rotated(&api, name, first)
        })
        .await;
    }
    wait_for("both credentials exported", SLACK * 5, || async {
        let m = scrape(http).await;
        (exports(&m, &kept) && exports(&m, &stolen)).then_some(())
    })
    .await;

    // Another holder takes shard 1's Lease (valid for an hour): the replica steps down there.
    let leases = Api::<Lease>::namespaced(g.client.clone(), RELEASE_NAMESPACE);
    let shard1 = rdscred::shard::lease_name(LEASE, 1);
    set_holder(&leases, &shard1, Some("thief"), 3600).await;
    wait_for("shard 1 given up", SLACK * 5, || async {
        solo.logs().contains("lost the shard lease").then_some(())
    })
    .await;
    wait_for("one shard held, its series only", SLACK * 5, || async {
        let m = scrape(http).await;
        (sample(&m, "rdscred_shards_held", "") == Some(1.0)
            && exports(&m, &kept)
            && !exports(&m, &stolen))
        .then_some(())
    })
    .await;
    // Shard 0 goes on; shard 1's request waits.
    let second = "second";
    request_rotation(&api, &stolen, second).await;
    request_rotation(&api, &kept, second).await;
    wait_for("shard 0 rotates", Duration::from_secs(60), || {
        rotated(&api, &kept, second)
    })
    .await;
    assert_eq!(holder(&g.client, &shard1).await.as_deref(), Some("thief"));
    assert_eq!(
        rotated(&api, &stolen, second).await,
        None,
        "shard 1's credential rotated while another instance held its Lease"
    );

    // The Lease released: the replica takes it back at its next poll, then rotates.
    set_holder(&leases, &shard1, None, 1).await;
    wait_shard_holder(&g.client, 1, id, RENEW_PERIOD + SLACK * 2).await;
    let reacquired = leases
        .get(&shard1)
        .await
        .unwrap()
        .spec
        .unwrap()
        .acquire_time
        .unwrap()
        .0;
    let at = wait_for("shard 1 rotates", Duration::from_secs(60), || {
        rotated(&api, &stolen, second)
    })
    .await;
    assert!(
        at >= reacquired
            .checked_sub(jiff::SignedDuration::from_secs(1))
            .unwrap(),
        "rotated at {at}, before the Lease was re-acquired at {reacquired}"
    );
    wait_for("both shards held again", SLACK * 5, || async {
        (sample(&scrape(http).await, "rdscred_shards_held", "") == Some(2.0)).then_some(())
    })
    .await;

    // SIGTERM: both shards drain, then both Leases are released (a successor need not wait).
    let mut solo = solo;
    solo.signal("TERM");
    let status = solo.exit_status(SLACK * 5).await;
    assert!(status.success(), "exited with {status}:\n{}", solo.logs());
    for k in 0..SHARDS {
        let lease = rdscred::shard::lease_name(LEASE, k);
        assert_eq!(
            holder(&g.client, &lease).await,
            None,
            "{lease} not released"
        );
    }
    drop(served);
}

async fn request_rotation(api: &Api<RdsCredential>, name: &str, request: &str) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(
            json!({ "metadata": { "annotations": { "rdscred.io/rotate-requested-at": request } } }),
        ),
    )
    .await
    .expect("request rotation");
}

/// Writes the Lease `name` as held by `who` (None: released) for `seconds`, as another
/// candidate would: a read-modify-replace, retried on conflict with the replica's renewals.
async fn set_holder(leases: &Api<Lease>, name: &str, who: Option<&str>, seconds: i32) {
    wait_for(&format!("{name} written"), SLACK * 5, || async {
        let mut lease = leases.get(name).await.ok()?;
        let spec = lease.spec.get_or_insert_with(Default::default);
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(jiff::Timestamp::now());
        spec.holder_identity = who.map(str::to_owned);
        spec.lease_duration_seconds = Some(seconds);
        spec.renew_time = Some(now.clone());
        spec.acquire_time = Some(now);
        leases
            .replace(name, &PostParams::default(), &lease)
            .await
            .ok()
            .map(|_| ())
    })
    .await
}

/// Two replicas preferring the same shard (as two Deployment pods may) still end up with one
/// shard each: the one left without a shard reaches for the free one a round before the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_preferring_one_shard_still_spread_over_both() {
    let mut g = Ground::new().await;
    g.rbac = Some(ChartRbac::render(
        Install::ClusterWide,
        json!({ "shards": SHARDS }),
    ));
    let token = g
        .controller_token()
        .await
        .expect("runs against the emulator");
    let emulator = g.emulator.clone().expect("runs against the emulator");
    let served = emulator
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .expect("serve emulator");
    let dir = Workdir::new();
    let kubeconfig = write_kubeconfig(&dir, &served.url(), &token);
    let (lease_duration, renew) = (
        format!("{}ms", LEASE_DURATION.as_millis()),
        format!("{}ms", RENEW_PERIOD.as_millis()),
    );
    // Ordinals 0 and 2: both prefer shard 0 of two.
    let ids = ["rdscred-x-0", "rdscred-y-2"];
    let replicas: Vec<Rdscred> = ids
        .iter()
        .map(|id| {
            Rdscred::start(
                id,
                &dir,
                &kubeconfig,
                &g,
                &[
                    "--shards",
                    "2",
                    "--leader-election-namespace",
                    RELEASE_NAMESPACE,
                    "--identity",
                    id,
                    "--lease-duration",
                    &lease_duration,
                    "--lease-renew-period",
                    &renew,
                ],
            )
        })
        .collect();
    let leases = [0, 1].map(|k| rdscred::shard::lease_name(LEASE, k));
    let holders = wait_for(
        "both shards held",
        LEASE_DURATION * 2 + SLACK * 5,
        || async {
            let h0 = holder(&g.client, &leases[0]).await?;
            let h1 = holder(&g.client, &leases[1]).await?;
            Some((h0, h1))
        },
    )
    .await;
    assert_ne!(holders.0, holders.1, "one replica holds both shards");
    for r in &replicas {
        let m = scrape(r.http_addr().await).await;
        assert_eq!(sample(&m, "rdscred_shards_held", ""), Some(1.0), "{m}");
    }
    drop(replicas);
    drop(served);
}

/// Turning sharding on by a rolling update: while an unsharded leader still holds the leader
/// Lease, a sharded replica holds its shard Leases but reconciles nothing; once that Lease is
/// released, it reconciles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_shard_runs_while_an_unsharded_leader_holds_the_leader_lease() {
    let mut g = Ground::new().await;
    g.rbac = Some(ChartRbac::render(
        Install::ClusterWide,
        json!({ "shards": SHARDS }),
    ));
    let token = g
        .controller_token()
        .await
        .expect("runs against the emulator");
    let emulator = g.emulator.clone().expect("runs against the emulator");
    let served = emulator
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .expect("serve emulator");
    let dir = Workdir::new();
    let kubeconfig = write_kubeconfig(&dir, &served.url(), &token);
    let ns = unique("ns-");
    g.namespace(&ns, &[NS_LABEL]).await;
    let (db, prefix) = g.database(&DbServer::postgres(), json!({})).await;
    // The old, unsharded leader's Lease, renewed just now for an hour.
    let leases = Api::<Lease>::namespaced(g.client.clone(), RELEASE_NAMESPACE);
    let old: Lease = serde_json::from_value(json!({
        "metadata": { "name": LEASE, "namespace": RELEASE_NAMESPACE },
        "spec": { "holderIdentity": "rdscred-old-leader" },
    }))
    .unwrap();
    leases.create(&PostParams::default(), &old).await.unwrap();
    set_holder(&leases, LEASE, Some("rdscred-old-leader"), 3600).await;
    let cred = unique("cred-");
    credential(&g, &ns, &db, &prefix, &cred, Some("0")).await;

    let id = "rdscred-new-0";
    let (lease_duration, renew) = (
        format!("{}ms", LEASE_DURATION.as_millis()),
        format!("{}ms", RENEW_PERIOD.as_millis()),
    );
    let new = Rdscred::start(
        id,
        &dir,
        &kubeconfig,
        &g,
        &[
            "--shards",
            "2",
            "--leader-election-namespace",
            RELEASE_NAMESPACE,
            "--identity",
            id,
            "--lease-duration",
            &lease_duration,
            "--lease-renew-period",
            &renew,
        ],
    );
    wait_shard_holder(&g.client, 0, id, SLACK * 5).await;
    wait_for("the unsharded leader noticed", SLACK * 5, || async {
        new.logs()
            .contains("an unsharded rdscred holds the leader lease")
            .then_some(())
    })
    .await;
    // Both shard Leases held (the second one 1.5 lease durations after start): time enough
    // for any reconcile of the credential, had a shard run.
    wait_shard_holder(&g.client, 1, id, LEASE_DURATION * 3 + SLACK * 5).await;
    let http = new.http_addr().await;
    let m = scrape(http).await;
    assert_eq!(sample(&m, "rdscred_shards_held", ""), Some(0.0), "{m}");
    assert_eq!(total(&m, "rdscred_reconciles_total", &[]), 0.0, "{m}");
    let api: Api<RdsCredential> = Api::namespaced(g.client.clone(), &ns);
    assert_eq!(
        api.get(&cred).await.unwrap().status,
        None,
        "reconciled meanwhile"
    );

    // The old leader goes away (releases its Lease): the shard runs.
    let released = jiff::Timestamp::now();
    set_holder(&leases, LEASE, None, 1).await;
    let ready = g.wait_ready(&ns, &cred).await;
    let since = ready
        .status
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.last_transition_time.0)
        .expect("a Ready condition");
    assert!(
        since
            >= released
                .checked_sub(jiff::SignedDuration::from_secs(1))
                .unwrap(),
        "Ready at {since}, before the unsharded leader let go at {released}"
    );
    drop(new);
    drop(served);
}
