//! What provisioning a new credential costs (issue 15): Secrets Manager calls per credential,
//! counted from the controller's request log against moto, and reconciles per credential.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use kube::api::{Api, ListParams};
use rdscred::context::Settings;
use rdscred::crd::RdsCredential;
use serde_json::json;

use crate::support::{DbServer, Ground, unique, wait_for};

const NS_LABEL: (&str, &str) = ("rdscred-test", "yes");

/// A secret's name from a `SecretId` or `Name` (name or ARN; moto and AWS append `-` and 6
/// characters to the name in the ARN).
fn secret_name(id: &str) -> &str {
    match id.split_once(":secret:") {
        Some((_, rest)) if rest.len() > 7 => &rest[..rest.len() - 7],
        Some((_, rest)) => rest,
        None => id,
    }
}

/// Secrets Manager requests the controller sent about each secret, by secret name and
/// operation (ListSecrets names no secret and is not counted here).
fn calls_by_secret(g: &Ground) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let log = g.calls.request_log().expect("the ground logs requests");
    for r in log.snapshot() {
        if r.service != "secretsmanager" {
            continue;
        }
        let Some(id) = r.params["SecretId"].as_str().or(r.params["Name"].as_str()) else {
            continue;
        };
        *out.entry(secret_name(id).to_string())
            .or_default()
            .entry(r.operation.clone())
            .or_insert(0) += 1;
    }
    out
}

/// Credential reconciles finished so far, ok or not (the controller's own metric).
fn credential_reconciles(g: &Ground) -> u64 {
    g.metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with(r#"rdscred_reconciles_total{kind="RdsCredential","#))
        .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// New credentials on both engines: each costs at most 3 Secrets Manager calls (today: a
/// DescribeSecret that finds nothing and the CreateSecret; the metadata and the value of our
/// own write are used instead of DescribeSecret and GetSecretValue after it), and about one
/// reconcile, counting those its own status and Secret writes trigger until the controller is
/// quiet.
#[tokio::test]
async fn a_new_credential_costs_at_most_three_secrets_manager_calls() {
    const PER_ENGINE: usize = 6;
    let mut g = Ground::new().await;
    g.start_with(Settings {
        poll_interval: Duration::from_secs(2),
        // Drift checks cost database logins, not AWS calls; keep them out of the window.
        drift_interval: Duration::from_secs(600),
        database_recheck_interval: Duration::from_secs(600),
        ..g.settings()
    })
    .await;
    let ns = unique("ns-");
    g.namespace(&ns, &[NS_LABEL]).await;
    let mut dbs = Vec::new();
    for server in [DbServer::postgres(), DbServer::mariadb()] {
        let (db, prefix) = g.database(&server, json!({})).await;
        g.wait_database_ready(&db).await;
        dbs.push((db, prefix));
    }
    let reconciles_before = credential_reconciles(&g);
    let run = unique("pc");
    let run = run.as_str();
    let specs: Vec<(String, serde_json::Value)> = dbs
        .iter()
        .flat_map(|(db, prefix)| {
            (0..PER_ENGINE).map(move |i| {
                let user = format!("{run}_{}_{i}", &db[db.len() - 4..]);
                let secret = format!("{prefix}{user}");
                (
                    secret.clone(),
                    json!({ "databaseRef": { "name": db }, "username": user, "secret": { "name": secret } }),
                )
            })
        })
        .collect();
    join_all(specs.iter().enumerate().map(|(i, (_, spec))| {
        let (g, ns) = (&g, &ns);
        async move {
            g.credential(ns, &format!("c{i}"), spec.clone())
                .await
                .unwrap()
        }
    }))
    .await;
    let secrets: Vec<String> = specs.iter().map(|(s, _)| s.clone()).collect();
    for i in 0..specs.len() {
        g.wait_ready(&ns, &format!("c{i}")).await;
    }
    // Two polls go by, so the reconciles triggered by our own status and Secret writes have run
    // and their calls are counted too.
    for _ in 0..2 {
        let start = g.calls.total("ListSecrets");
        wait_for("a poll", Duration::from_secs(30), || async {
            (g.calls.total("ListSecrets") > start).then_some(())
        })
        .await;
    }
    let by_secret = calls_by_secret(&g);
    let n = secrets.len() as f64;
    let mut total = 0u64;
    for s in &secrets {
        let ops = by_secret.get(s).cloned().unwrap_or_default();
        let calls: u64 = ops.values().sum();
        total += calls;
        assert!(
            ops.get("CreateSecret") == Some(&1),
            "{s}: one CreateSecret, got {ops:?}"
        );
        assert!(calls <= 3, "{s}: {calls} Secrets Manager calls: {ops:?}");
        assert_eq!(
            ops.get("GetSecretValue"),
            None,
            "{s}: the value we wrote is not read back"
        );
    }
    let reconciles = credential_reconciles(&g) - reconciles_before;
    let api: Api<RdsCredential> = Api::namespaced(g.client.clone(), &ns);
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        secrets.len()
    );
    // One reconcile does it all: the echoes of its own finalizer patch and Secret create are
    // not news (crate::echo), its status writes pass no predicate, and the poll leaves a
    // credential whose status has not caught up with its generation to its own reconcile
    // (before: 3.00 per credential). Slack for an echo that overtakes the write's record.
    assert!(
        reconciles as f64 <= 1.5 * n,
        "{reconciles} reconciles for {n} new credentials"
    );
    eprintln!(
        "{} new credentials: {:.2} Secrets Manager calls and {:.2} reconciles per credential",
        secrets.len(),
        total as f64 / n,
        reconciles as f64 / n
    );
}

/// Whether `times` (seconds, sorted) ever holds more requests in a window than a bucket of
/// `rate`/s with a burst of one lets start, plus one for the delay between a slot and the log
/// entry of its request. Returns the worst window: (requests, window length in seconds).
fn worst_window(times: &[f64], rate: f64) -> Option<(usize, f64)> {
    let mut worst = None;
    for i in 0..times.len() {
        for j in i..times.len() {
            let (count, window) = (j - i + 1, times[j] - times[i]);
            if count as f64 > 2.0 + rate * window {
                worst = Some((count, window));
            }
        }
    }
    worst
}

#[test]
fn the_window_check_catches_a_burst() {
    let paced: Vec<f64> = (0..20).map(|i| f64::from(i) * 0.2).collect();
    assert_eq!(worst_window(&paced, 5.0), None);
    let burst: Vec<f64> = (0..20).map(|i| f64::from(i) * 0.01).collect();
    assert!(worst_window(&burst, 5.0).is_some());
}

/// With `--aws-create-rate 5` and 20 new credentials at once, the CreateSecret requests never
/// run ahead of the bucket in any window (checked on the request log's own timestamps, not the
/// test's wall time), retries included: the first request of a third of the secrets is
/// answered 500 and of another third throttled (by a proxy in front of moto), and each retry
/// waits for a slot too. Every credential still becomes Ready, with one secret (one client
/// request token) each.
#[tokio::test]
async fn create_secret_never_exceeds_the_client_side_rate() {
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};

    const N: usize = 20;
    const RATE: f64 = 5.0;
    let run = unique("rl");
    // Which secrets' first CreateSecret fails, and how.
    let fails_first = |name: &str| -> Option<(u16, String)> {
        let i: usize = name.rsplit('_').next()?.parse().ok()?;
        match i % 3 {
            0 => Some(crate::aws::injected_500()),
            1 => Some((
                400,
                r#"{"__type":"ThrottlingException","message":"Rate exceeded (injected)"}"#.into(),
            )),
            _ => None,
        }
    };
    let failed: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let proxy = {
        let (failed, run) = (failed.clone(), run.clone());
        let moto = crate::aws::moto_endpoint();
        crate::support::AwsProxy::start(
            &moto,
            Arc::new(move |op: &str, body: &[u8]| {
                if op != "CreateSecret" {
                    return None;
                }
                let params: serde_json::Value = serde_json::from_slice(body).ok()?;
                let name = params["Name"].as_str().filter(|n| n.contains(&run))?;
                let answer = fails_first(name)?;
                failed
                    .lock()
                    .unwrap()
                    .insert(name.to_string())
                    .then_some(answer)
            }),
        )
        .await
    };
    let mut g = Ground::new().await;
    // The controller's AWS access goes through the proxy.
    g.aws = crate::aws::aws_at(&proxy.url, g.calls.clone()).await;
    g.start_with(Settings {
        create_secrets_per_second: RATE,
        drift_interval: Duration::from_secs(600),
        database_recheck_interval: Duration::from_secs(600),
        ..g.settings()
    })
    .await;
    let ns = unique("ns-");
    g.namespace(&ns, &[NS_LABEL]).await;
    let (db, prefix) = g.database(&DbServer::postgres(), json!({})).await;
    g.wait_database_ready(&db).await;
    let secrets: Vec<String> = (0..N).map(|i| format!("{prefix}{run}_{i}")).collect();
    join_all(secrets.iter().enumerate().map(|(i, secret)| {
        let (g, ns, db, run) = (&g, &ns, &db, &run);
        async move {
            let spec = json!({ "databaseRef": { "name": db }, "username": format!("{run}_{i}"), "secret": { "name": secret } });
            g.credential(ns, &format!("c{i}"), spec).await.unwrap()
        }
    }))
    .await;
    for i in 0..N {
        g.wait_ready(&ns, &format!("c{i}")).await;
    }
    let log = g.calls.request_log().expect("the ground logs requests");
    let requests: Vec<_> = log
        .snapshot()
        .into_iter()
        .filter(|r| r.operation == "CreateSecret")
        .filter(|r| {
            r.params["Name"]
                .as_str()
                .is_some_and(|n| secrets.iter().any(|s| s == n))
        })
        .collect();
    let shown = || {
        requests
            .iter()
            .map(|r| {
                (
                    r.params["Name"].as_str().unwrap_or_default().to_string(),
                    r.attempt,
                    r.at.duration_since(requests[0].at).as_millis(),
                )
            })
            .collect::<Vec<_>>()
    };
    let injected = failed.lock().unwrap().len();
    assert_eq!(
        injected,
        (0..N).filter(|i| i % 3 != 2).count(),
        "failures injected"
    );
    let tokens: BTreeSet<&str> = requests
        .iter()
        .filter_map(|r| r.params["ClientRequestToken"].as_str())
        .collect();
    assert_eq!(
        (
            tokens.len(),
            requests.len(),
            metric(
                &g,
                "rdscred_aws_api_calls_total",
                r#"operation="CreateSecret""#
            )
        ),
        (N, N + injected, (N + injected) as f64),
        "one secret (token) per credential; on the wire and in the controller's count, one \
         request per credential and one retry per injected failure; requests (name, SDK \
         attempt, ms after the first): {:?}",
        shown()
    );
    assert!(
        requests.iter().all(|r| r.attempt == 1),
        "the retries are the controller's, each through the bucket, never the SDK's own: {:?}",
        shown()
    );
    let first = requests.iter().map(|r| r.at).min().unwrap();
    let mut times: Vec<f64> = requests
        .iter()
        .map(|r| r.at.duration_since(first).as_secs_f64())
        .collect();
    times.sort_by(f64::total_cmp);
    assert_eq!(
        worst_window(&times, RATE),
        None,
        "CreateSecret (retries included) ran ahead of {RATE}/s: {times:?}"
    );
    eprintln!(
        "{} CreateSecret ({injected} of them retries) at {RATE}/s spread over {:.2} s",
        requests.len(),
        times.last().unwrap()
    );
}

/// A counter of the controller's own metrics: the sum over the lines of `family` whose labels
/// contain `label`.
fn metric(g: &Ground, family: &str, label: &str) -> f64 {
    g.metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with(family) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .sum()
}

/// `n` new PostgreSQL credentials `{run}_{i}` in `ns`, all Ready.
async fn ready_credentials(g: &Ground, ns: &str, db: &str, prefix: &str, run: &str, n: usize) {
    join_all((0..n).map(|i| async move {
        let spec = json!({
            "databaseRef": { "name": db },
            "username": format!("{run}_{i}"),
            "secret": { "name": format!("{prefix}{run}_{i}") },
        });
        g.credential(ns, &format!("{run}-{i}"), spec).await.unwrap()
    }))
    .await;
    for i in 0..n {
        g.wait_ready(ns, &format!("{run}-{i}")).await;
    }
}

/// With every Ready credential due for a drift check every second and a drift lane of 2/s
/// (one at a time), the drift checks never run ahead of the lane's rate while a new credential
/// is provisioned, the lane defers the rest, and the new credential becomes Ready: drift
/// checks do not take its slot.
#[tokio::test]
async fn drift_checks_keep_to_their_lane_and_a_new_credential_goes_first() {
    const N: usize = 16;
    const RATE: f64 = 2.0;
    let mut g = Ground::new().await;
    g.start_with(Settings {
        drift_interval: Duration::from_secs(1),
        drift_checks_per_second: RATE,
        drift_concurrency: 1,
        database_recheck_interval: Duration::from_secs(600),
        ..g.settings()
    })
    .await;
    let ns = unique("ns-");
    g.namespace(&ns, &[NS_LABEL]).await;
    let (db, prefix) = g.database(&DbServer::postgres(), json!({})).await;
    g.wait_database_ready(&db).await;
    let run = unique("dl");
    ready_credentials(&g, &ns, &db, &prefix, &run, N).await;
    // Every one of them is due each second from here: 16 drift checks/s wanted, 2/s allowed.
    let (ran_before, deferred_before) = (
        metric(&g, "rdscred_drift_lane_total", r#"result="run""#),
        metric(&g, "rdscred_drift_lane_total", r#"result="deferred""#),
    );
    let started = std::time::Instant::now();
    let fresh = format!("{run}x");
    g.credential(
        &ns,
        "fresh",
        json!({ "databaseRef": { "name": db }, "username": fresh, "secret": { "name": format!("{prefix}{fresh}") } }),
    )
    .await
    .unwrap();
    g.wait_ready(&ns, "fresh").await;
    // Long enough for the lane to be saturated: every credential deferred at least once.
    wait_for("drift checks deferred", Duration::from_secs(60), || async {
        (metric(&g, "rdscred_drift_lane_total", r#"result="deferred""#) - deferred_before
            >= N as f64)
            .then_some(())
    })
    .await;
    let ran = metric(&g, "rdscred_drift_lane_total", r#"result="run""#) - ran_before;
    let window = started.elapsed().as_secs_f64();
    // Every pass counted ran within the window: at most one slot at once plus the rate over it
    // (a pass may start up to 0.5 s ahead of its slot; one more for the pass at the edge).
    assert!(
        ran <= 2.0 + RATE * (window + 0.5),
        "{ran} drift checks in {window:.1} s at {RATE}/s"
    );
    assert!(ran >= 1.0, "drift checks still run: {ran}");
    eprintln!("{ran} drift checks in {window:.1} s at {RATE}/s while {N} were due every second");
}

/// A restart with 30 Ready credentials is no thundering herd: after it, until two polls have
/// gone by, Secrets Manager sees ListSecrets pages and nothing per credential (no
/// GetSecretValue, CreateSecret or PutSecretValue, no DescribeSecret), no credential is
/// reconciled (their first drift checks are spread over the second half of the interval), and
/// a credential created after the restart is still provisioned at once.
#[tokio::test]
async fn a_restart_with_ready_credentials_costs_list_pages_only() {
    const N: usize = 30;
    let mut g = Ground::new().await;
    let settings = Settings {
        poll_interval: Duration::from_secs(2),
        drift_interval: Duration::from_secs(600),
        database_recheck_interval: Duration::from_secs(600),
        ..g.settings()
    };
    g.start_with(settings.clone()).await;
    let ns = unique("ns-");
    g.namespace(&ns, &[NS_LABEL]).await;
    let (db, prefix) = g.database(&DbServer::postgres(), json!({})).await;
    g.wait_database_ready(&db).await;
    let run = unique("rs");
    ready_credentials(&g, &ns, &db, &prefix, &run, N).await;
    g.stop().await;

    let log = g
        .calls
        .request_log()
        .expect("the ground logs requests")
        .clone();
    let mark = log.snapshot().len();
    let reconciles_before = credential_reconciles(&g);
    g.start_with(settings).await;
    for _ in 0..2 {
        let start = g.calls.total("ListSecrets");
        wait_for("a poll", Duration::from_secs(30), || async {
            (g.calls.total("ListSecrets") > start).then_some(())
        })
        .await;
    }
    // Calls about the credentials' secrets, and the rest (ListSecrets; the database's own
    // start-up proof of its admin login reads the admin secret once).
    let (mut ops, mut other): (BTreeMap<String, u64>, BTreeMap<String, u64>) = Default::default();
    let ours = format!("{prefix}{run}_");
    for r in &log.snapshot()[mark..] {
        if r.service != "secretsmanager" {
            continue;
        }
        let id = r.params["SecretId"].as_str().or(r.params["Name"].as_str());
        let about_credential = id.is_some_and(|id| secret_name(id).starts_with(&ours));
        let book = if about_credential || r.operation == "ListSecrets" {
            &mut ops
        } else {
            &mut other
        };
        *book.entry(r.operation.clone()).or_default() += 1;
    }
    assert!(
        other.values().sum::<u64>() <= 1,
        "beyond the credentials: {other:?}"
    );
    let reconciles = credential_reconciles(&g) - reconciles_before;
    assert!(ops.get("ListSecrets").is_some_and(|n| *n >= 2), "{ops:?}");
    for op in [
        "GetSecretValue",
        "CreateSecret",
        "PutSecretValue",
        "DescribeSecret",
    ] {
        assert_eq!(ops.get(op), None, "{op} after a restart: {ops:?}");
    }
    assert_eq!(reconciles, 0, "credentials reconciled after the restart");
    assert!(
        metric(&g, "rdscred_drift_lane_total", r#"result="deferred""#) >= N as f64,
        "every settled credential's first check deferred"
    );
    // The lane holds back settled credentials only.
    let fresh = format!("{run}x");
    g.credential(
        &ns,
        "fresh",
        json!({ "databaseRef": { "name": db }, "username": fresh, "secret": { "name": format!("{prefix}{fresh}") } }),
    )
    .await
    .unwrap();
    g.wait_ready(&ns, "fresh").await;
    eprintln!(
        "after a restart with {N} Ready credentials, two polls: {ops:?} (and {other:?}), {reconciles} reconciles"
    );
}
