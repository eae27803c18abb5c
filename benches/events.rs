//! Figures for event-driven change detection: `cargo bench --bench events` with the test ground
//! up (`source .test-env/env`). Prints
//! - outside change → Kubernetes Secret latency (p50/p99) with events (an SQS queue in moto, the
//!   event written to it as EventBridge would) and with the bulk poll only;
//! - Secrets Manager calls per poll with N owned secrets, and per hour for both modes at the
//!   default intervals (poll 5 min; with events a 30 min backstop), plus the SQS calls events
//!   cost and the calls each change costs.
//!
//! Everything runs against the real pieces (moto, PostgreSQL for the database's admin login,
//! the Kubernetes API emulator, the controller). `RDSCRED_BENCH_QUICK=1` takes few samples and
//! a small N (the test command uses it to keep the bench building and running).

#[path = "../tests/it/support.rs"]
mod support;

#[path = "../tests/it/events/fixtures.rs"]
mod fixtures;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fixtures::{
    Queue, admitted_namespace, external_secret, label_updated, new_password, outside_rotate,
    settings_with_events, sync_only, wait_queue_up,
};
use rdscred::aws::NewSecret;
use rdscred::aws::ownership::Owner;
use rdscred::context::Settings;
use serde_json::json;
use support::{DbServer, Ground, secret_key, unique, wait_for};

fn quick() -> bool {
    std::env::var_os("RDSCRED_BENCH_QUICK").is_some()
}

/// The controller's defaults (`--poll-interval`, `--events-backstop-interval`).
const DEFAULT_POLL: Duration = Duration::from_secs(300);
const DEFAULT_BACKSTOP: Duration = Duration::from_secs(1800);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Events,
    Polling(Duration),
}

/// Secrets Manager calls so far, by operation.
fn sm_calls(g: &Ground) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for ((service, op, _), n) in g.calls.snapshot() {
        if service == "secretsmanager" {
            *m.entry(op).or_insert(0) += n;
        }
    }
    m
}

fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(op, n)| (op.clone(), n - before.get(op).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Outside changes to sync-only secrets, one at a time: the time from the change being
/// complete (and, with events, its event on the queue) to the Kubernetes Secret holding it.
/// Returns the sorted latencies and the Secrets Manager calls per change.
async fn latencies(mode: Mode, samples: usize) -> (Vec<Duration>, f64) {
    let server = DbServer::postgres();
    let mut g = Ground::new().await;
    let queue = match mode {
        Mode::Events => Some(Queue::create(&g, 60).await),
        Mode::Polling(_) => None,
    };
    let settings = match (&queue, mode) {
        (Some(q), _) => Settings {
            drift_interval: Duration::from_secs(3600),
            database_recheck_interval: Duration::from_secs(3600),
            ..settings_with_events(&g, q, DEFAULT_POLL)
        },
        (None, Mode::Polling(poll)) => Settings {
            poll_interval: poll,
            drift_interval: Duration::from_secs(3600),
            database_recheck_interval: Duration::from_secs(3600),
            ..g.settings()
        },
        (None, Mode::Events) => unreachable!(),
    };
    g.start_with(settings).await;
    let ns = admitted_namespace(&g).await;
    let (db, prefix) = g.database(&server, json!({})).await;
    let mut creds = Vec::new();
    for i in 0..4 {
        let (meta, value) = external_secret(&g, &format!("{prefix}{}", unique("b")), &server).await;
        sync_only(&g, &ns, &format!("c{i}"), &db, &meta.name, &format!("s{i}")).await;
        creds.push((format!("s{i}"), meta, value));
    }
    for i in 0..creds.len() {
        g.wait_ready(&ns, &format!("c{i}")).await;
    }
    if let Some(q) = &queue {
        wait_queue_up(&g, q, true, Duration::from_secs(10)).await;
    }
    let before = sm_calls(&g);
    let mut out = Vec::new();
    for i in 0..samples {
        if let Mode::Polling(poll) = mode {
            // A random phase against the poll: changes right after a sync would otherwise
            // always wait almost a whole interval.
            tokio::time::sleep(rdscred::limit::jitter(poll / 2, 1.0)).await;
        }
        let (target, meta, value) = &mut creds[i % 4];
        let password = new_password(value);
        let version = outside_rotate(&g, meta, value).await;
        if let Some(q) = &queue {
            q.send(&[label_updated(meta, &version).to_string()]).await;
        }
        let started = Instant::now();
        loop {
            let s = g.k8s_secret(&ns, target).await;
            if s.is_some_and(|s| secret_key(&s, "password").as_deref() == Some(password.as_str())) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no sync in 2 minutes"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        out.push(started.elapsed());
    }
    let spent = delta(&sm_calls(&g), &before);
    // A poll is one ListSecrets page here plus a DescribeSecret per sync-only credential:
    // what remains is what the changes cost.
    let polls = spent.get("ListSecrets").copied().unwrap_or(0);
    let by_polls = polls * (1 + creds.len() as u64);
    let calls = spent.values().sum::<u64>().saturating_sub(by_polls);
    out.sort();
    (out, calls as f64 / samples as f64)
}

/// Secrets Manager calls of one bulk poll with `n` owned secrets (the tags the controller
/// writes; one of them a real managed credential, the others owned by credentials this
/// cluster does not have: ListSecrets pages through all the same), and the SQS calls an idle
/// event consumer makes per hour (ReceiveMessage long polls), measured over `window`.
async fn per_poll_and_idle_sqs(n: usize, window: Duration) -> (BTreeMap<String, u64>, f64) {
    let server = DbServer::postgres();
    let mut g = Ground::new().await;
    let cluster = g.cluster.clone();
    let value = rdscred::secret::SecretString::new("{}");
    let chunks: Vec<Vec<usize>> = (1..n)
        .collect::<Vec<_>>()
        .chunks(25)
        .map(<[usize]>::to_vec)
        .collect();
    for chunk in chunks {
        futures::future::join_all(chunk.into_iter().map(|i| {
            let tags: BTreeMap<String, String> = Owner {
                cluster: cluster.clone(),
                namespace: "elsewhere".into(),
                name: format!("c{i}"),
                uid: unique("uid"),
            }
            .tags()
            .into_iter()
            .collect();
            let name = format!("rdscred/bench/{}", unique("s"));
            let (g, value) = (&g, &value);
            async move {
                g.scope
                    .secrets
                    .create(NewSecret {
                        name: &name,
                        value,
                        description: None,
                        kms_key_id: None,
                        tags: &tags,
                        replica_regions: &[],
                        client_request_token: &format!("{:0>32}", unique("t")),
                    })
                    .await
                    .expect("create owned secret");
            }
        }))
        .await;
    }
    let queue = Queue::create(&g, 60).await;
    let poll = Duration::from_secs(1);
    g.start_with(Settings {
        poll_interval: poll,
        database_recheck_interval: Duration::from_secs(3600),
        ..settings_with_events(&g, &queue, poll)
    })
    .await;
    let ns = admitted_namespace(&g).await;
    let (db, prefix) = g.database(&server, json!({})).await;
    let user = unique("bench_");
    g.credential(
        &ns,
        "managed",
        json!({ "databaseRef": { "name": db }, "username": user, "secret": { "name": format!("{prefix}{user}") } }),
    )
    .await
    .unwrap();
    g.wait_ready(&ns, "managed").await;
    let pages = n.div_ceil(100) as u64;
    // Between poll boundaries: a poll starts with its first ListSecrets page.
    let wait_polls = |k: u64| {
        let start = g.calls.total("ListSecrets");
        let g = &g;
        async move {
            wait_for("polls", Duration::from_secs(120), || async {
                (g.calls.total("ListSecrets") >= start + k * pages).then_some(())
            })
            .await
        }
    };
    wait_polls(1).await;
    let before = sm_calls(&g);
    let polls = 3;
    wait_polls(polls).await;
    let per_poll: BTreeMap<String, u64> = delta(&sm_calls(&g), &before)
        .into_iter()
        .map(|(op, n)| (op, n.div_ceil(polls)))
        .collect();
    let receives = g.calls.total("ReceiveMessage");
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let per_hour = (g.calls.total("ReceiveMessage") - receives) as f64 * 3600.0
        / started.elapsed().as_secs_f64();
    (per_poll, per_hour)
}

fn main() {
    if std::env::var_os("RDSCRED_TEST_AWS_ENDPOINT").is_none() {
        println!("events bench: skipped (test ground not up: source .test-env/env)");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (samples, poll, n, window) = if quick() {
        (3, Duration::from_secs(1), 150, Duration::from_secs(1))
    } else {
        (40, Duration::from_secs(10), 1000, Duration::from_secs(65))
    };
    println!(
        "rdscred event-driven change detection ({} build, {samples} changes per mode)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    let mut per_change = BTreeMap::new();
    for mode in [Mode::Events, Mode::Polling(poll)] {
        let (lat, calls) = rt.block_on(latencies(mode, samples));
        let name = match mode {
            Mode::Events => "events (SQS)".to_string(),
            Mode::Polling(p) => format!("polling only, every {p:?}"),
        };
        println!(
            "{:<48} p50 {:>10.2?}  p99 {:>10.2?}  max {:>10.2?}",
            format!("outside change -> Secret, {name}"),
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat[lat.len() - 1],
        );
        per_change.insert(matches!(mode, Mode::Events), calls);
    }
    let (per_poll, receives_per_hour) = rt.block_on(per_poll_and_idle_sqs(n, window));
    let poll_calls: u64 = per_poll.values().sum();
    println!(
        "{:<48} {poll_calls} ({per_poll:?})",
        format!("Secrets Manager calls per poll, N={n}")
    );
    for (events, interval) in [(false, DEFAULT_POLL), (true, DEFAULT_BACKSTOP)] {
        let polls_per_hour = 3600.0 / interval.as_secs_f64();
        let name = if events {
            format!("with events (backstop {}m)", interval.as_secs() / 60)
        } else {
            format!("polling only ({}m)", interval.as_secs() / 60)
        };
        println!(
            "{:<48} {:>8.0} Secrets Manager calls/hour steady state, +{:.1} per change (sync-only){}",
            format!("N={n}, {name}"),
            polls_per_hour * poll_calls as f64,
            per_change[&events],
            if events {
                format!(", +{receives_per_hour:.0} SQS ReceiveMessage/hour idle")
            } else {
                String::new()
            }
        );
    }
}
