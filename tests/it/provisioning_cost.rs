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

/// With `--aws-create-rate 5` and 20 new credentials at once, the CreateSecret requests in the
/// request log never run ahead of the bucket in any window (checked on the log's own
/// timestamps, not the test's wall time), and every credential still becomes Ready.
#[tokio::test]
async fn create_secret_never_exceeds_the_client_side_rate() {
    const N: usize = 20;
    const RATE: f64 = 5.0;
    let mut g = Ground::new().await;
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
    let run = unique("rl");
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
    let attempts: Vec<_> = log
        .snapshot()
        .into_iter()
        .filter(|r| r.operation == "CreateSecret")
        .filter(|r| {
            r.params["Name"]
                .as_str()
                .is_some_and(|n| secrets.iter().any(|s| s == n))
        })
        .collect();
    // The bucket paces the controller's calls; the SDK's own retries of one (a connection that
    // failed, a throttle) follow the SDK's backoff and are shown, not paced.
    let creates: Vec<std::time::Instant> = attempts
        .iter()
        .filter(|r| r.attempt == 1)
        .map(|r| r.at)
        .collect();
    let retries: Vec<_> = attempts
        .iter()
        .filter(|r| r.attempt > 1)
        .map(|r| (r.params["Name"].to_string(), r.attempt))
        .collect();
    assert_eq!(
        (
            creates.len(),
            metric(
                &g,
                "rdscred_aws_api_calls_total",
                r#"operation="CreateSecret""#
            )
        ),
        (N, N as f64),
        "one CreateSecret per credential, on the wire and in the controller's count; \
         attempts (name, attempt, ms after the first): {:?}",
        attempts
            .iter()
            .map(|r| (
                r.params["Name"].to_string(),
                r.attempt,
                r.at.duration_since(attempts[0].at).as_millis()
            ))
            .collect::<Vec<_>>(),
    );
    if !retries.is_empty() {
        eprintln!("the SDK retried CreateSecret: {retries:?}");
    }
    let first = *creates.iter().min().unwrap();
    let mut times: Vec<f64> = creates
        .iter()
        .map(|t| t.duration_since(first).as_secs_f64())
        .collect();
    times.sort_by(f64::total_cmp);
    assert_eq!(
        worst_window(&times, RATE),
        None,
        "CreateSecret ran ahead of {RATE}/s: {times:?}"
    );
    eprintln!(
        "{N} CreateSecret at {RATE}/s spread over {:.2} s",
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
