//! Correct under concurrency (issue 9): zero failed logins and one rotation per request, even
//! when requests come back to back and the controller's caches are stale. Every scenario runs
//! the REAL controller on the stale ground (watch events 50–500 ms late, stepped rollouts),
//! against moto and the real PostgreSQL and MariaDB, with simulated pods that read the Secret
//! when they start and restart 1.0–1.8 s after their Deployment's pod template changes.
//!
//! The scenarios are also run by `cargo bench --bench rotation` (it includes this file), which
//! prints the figures; the tests here assert only on correctness, never on speed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use rdscred::crd::{RdsCredential, RdsCredentialStatus};
use serde_json::json;

use crate::rotation_e2e::{
    Cred, POD_RESTARTS, Pod, PodStats, ROLLOUT, admitted_namespace, deployment, drop_users,
    new_cred, request_rotation, run_pod, status, synced_version,
};
use crate::support::{DbServer, Ground, wait_for};

// ------------------------------------------------------------------ observation

/// Every status the API server held for one credential, in order (a watch of its own).
pub(crate) struct History {
    seen: Arc<Mutex<Vec<RdsCredentialStatus>>>,
    task: tokio::task::JoinHandle<()>,
}

impl History {
    pub(crate) fn record(g: &Ground, c: &Cred) -> History {
        let api: Api<RdsCredential> = Api::namespaced(g.client.clone(), &c.ns);
        let seen = Arc::new(Mutex::new(Vec::<RdsCredentialStatus>::new()));
        let into = seen.clone();
        let cfg = watcher::Config::default().fields(&format!("metadata.name={}", c.name));
        let task = tokio::spawn(async move {
            let mut stream = watcher(api, cfg).applied_objects().boxed();
            while let Some(Ok(obj)) = stream.next().await {
                let s = obj.status.unwrap_or_default();
                let mut v = into.lock().unwrap();
                if v.last() != Some(&s) {
                    v.push(s);
                }
            }
        });
        History { seen, task }
    }

    pub(crate) fn statuses(&self) -> Vec<RdsCredentialStatus> {
        self.seen.lock().unwrap().clone()
    }

    /// No write from an older object ever replaced newer status: `lastRotationTime` never goes
    /// back, `syncedVersionId` never returns to a version it left, and the answered requests
    /// (`lastRotationRequest`) follow the order in which they were sent (`order`).
    pub(crate) fn assert_never_went_back(&self, order: &[String]) {
        let statuses = self.statuses();
        let mut last_time: Option<jiff::Timestamp> = None;
        let mut left: Vec<String> = Vec::new();
        let mut synced: Option<String> = None;
        let mut answered: Option<usize> = None;
        for (i, s) in statuses.iter().enumerate() {
            let t = s.last_rotation_time.as_deref().map(|t| t.parse().unwrap());
            assert!(
                t >= last_time,
                "status #{i}: lastRotationTime went back from {last_time:?} to {t:?}"
            );
            last_time = t;
            if s.synced_version_id != synced {
                if let Some(prev) = synced.take() {
                    left.push(prev);
                }
                if let Some(v) = &s.synced_version_id {
                    assert!(
                        !left.contains(v),
                        "status #{i}: syncedVersionId returned to {v}, which it had left"
                    );
                }
                synced = s.synced_version_id.clone();
            }
            if let Some(r) = &s.last_rotation_request {
                let idx = order.iter().position(|o| o == r);
                assert!(
                    idx >= answered,
                    "status #{i}: lastRotationRequest went back to {r:?}"
                );
                answered = idx;
            } else {
                assert!(
                    answered.is_none(),
                    "status #{i}: lastRotationRequest removed"
                );
            }
        }
    }

    /// Waits until the history (its watch is delayed like every other) has seen `request`
    /// answered.
    pub(crate) async fn wait_answered(&self, request: &str) {
        wait_for(
            "the history to catch up",
            Duration::from_secs(30),
            || async {
                (self.answered().last().map(String::as_str) == Some(request)).then_some(())
            },
        )
        .await;
    }

    /// The distinct request values status ever recorded as answered.
    pub(crate) fn answered(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in self.statuses() {
            if let Some(r) = s.last_rotation_request
                && out.last() != Some(&r)
            {
                out.push(r);
            }
        }
        out
    }
}

impl Drop for History {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every version the secret ever had (ListSecretVersionIds, deprecated ones included): one
/// per rotation plus the initial one.
pub(crate) async fn versions(g: &Ground, c: &Cred) -> usize {
    let sm = aws_sdk_secretsmanager::Client::new(g.aws.sdk_config());
    // One page: a scenario makes at most a few dozen versions (moto may still hand back a
    // NextToken, which would page forever).
    let out = sm
        .list_secret_version_ids()
        .secret_id(&c.secret)
        .include_deprecated(true)
        .max_results(100)
        .send()
        .await
        .expect("ListSecretVersionIds");
    let n = out.versions().len();
    assert!(n < 100, "more versions than one page holds");
    n
}

// ------------------------------------------------------------------ load: pods logging in

/// Three simulated pods of two Deployments (`api` ×2, `worker`) reading Secret `app`.
pub(crate) struct Load {
    pods: Vec<(Arc<PodStats>, tokio::task::JoinHandle<()>)>,
    stop: Arc<AtomicBool>,
}

impl Load {
    pub(crate) async fn start(g: &Ground, server: &DbServer, ns: &str) -> Load {
        deployment(g, ns, "api", "app", 2).await;
        deployment(g, ns, "worker", "app", 1).await;
        let stop = Arc::new(AtomicBool::new(false));
        let pods: Vec<_> = POD_RESTARTS
            .iter()
            .map(|(deploy, restart)| {
                let stats = Arc::new(PodStats::default());
                let pod = Pod {
                    client: g.client.clone(),
                    target: server.target(),
                    ns: ns.into(),
                    deploy: deploy.to_string(),
                    secret: "app".into(),
                    restart: *restart,
                };
                let task = tokio::spawn(run_pod(pod, stats.clone(), stop.clone()));
                (stats, task)
            })
            .collect();
        let load = Load { pods, stop };
        wait_for("pods logging in", Duration::from_secs(30), || async {
            load.pods
                .iter()
                .all(|(s, _)| s.ok.load(Ordering::Relaxed) >= 3)
                .then_some(())
        })
        .await;
        load
    }

    fn total(&self, f: fn(&PodStats) -> &AtomicU64) -> u64 {
        self.pods
            .iter()
            .map(|(s, _)| f(s).load(Ordering::Relaxed))
            .sum()
    }

    /// Waits until every pod restarted onto `version` and logged in a while longer, then stops
    /// them. Returns (ok, failed) logins.
    pub(crate) async fn finish(self, version: &str) -> (u64, u64) {
        wait_for(
            "pods on the last version",
            Duration::from_secs(60),
            || async {
                self.pods
                    .iter()
                    .all(|(s, _)| *s.version.lock().unwrap() == version)
                    .then_some(())
            },
        )
        .await;
        let ok_then = self.total(|s| &s.ok);
        wait_for("more logins", Duration::from_secs(30), || async {
            (self.total(|s| &s.ok) >= ok_then + 9).then_some(())
        })
        .await;
        self.stop.store(true, Ordering::Relaxed);
        for (_, task) in &self.pods {
            task.abort();
        }
        (self.total(|s| &s.ok), self.total(|s| &s.failed))
    }
}

// ------------------------------------------------------------------ scenarios

/// What one scenario measured (the bench prints all of it).
#[allow(dead_code)]
#[derive(Debug, Default)]
pub(crate) struct Figures {
    pub(crate) requests: usize,
    /// Requests answered by their own rotation (the others were coalesced).
    pub(crate) answered: usize,
    pub(crate) new_versions: usize,
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    /// Per answered request: request sent → status records it answered.
    pub(crate) rotation_times: Vec<Duration>,
    /// With the probe on: per rotation that followed a rollout, the time from the last
    /// dependent's rollout completing (its status, as the emulator wrote it) to the next
    /// rotation's AWSPENDING appearing (createSecret; setSecret follows within milliseconds).
    pub(crate) rollout_to_next: Vec<Duration>,
}

/// Watches (polling every 20 ms) when all dependents are rolled out and when an AWSPENDING
/// version first appears, for [`Figures::rollout_to_next`].
struct Probe {
    gaps: Arc<Mutex<Vec<Duration>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Probe {
    fn start(g: &Ground, c: &Cred) -> Probe {
        let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
            Api::namespaced(g.client.clone(), &c.ns);
        let secrets = g.scope.secrets.clone();
        let id = c.secret.clone();
        let gaps = Arc::new(Mutex::new(Vec::new()));
        let into = gaps.clone();
        let task = tokio::spawn(async move {
            let mut complete_since: Option<Instant> = None;
            let mut seen_pending: Option<String> = None;
            loop {
                let mut all_done = true;
                for name in ["api", "worker"] {
                    let Ok(d) = deployments.get(name).await else {
                        all_done = false;
                        continue;
                    };
                    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    let st = d.status.clone().unwrap_or_default();
                    all_done &= st.observed_generation >= d.metadata.generation
                        && st.updated_replicas.unwrap_or(0) >= want
                        && st.replicas.unwrap_or(0) <= want;
                }
                match (all_done, complete_since) {
                    (true, None) => complete_since = Some(Instant::now()),
                    (false, Some(_)) => complete_since = None,
                    _ => {}
                }
                if let Ok(Some(m)) = secrets.describe(&id).await {
                    let pending = m.pending_version().map(str::to_string);
                    if pending.is_some() && pending != seen_pending {
                        if let Some(t) = complete_since {
                            into.lock().unwrap().push(t.elapsed());
                        }
                        seen_pending = pending;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Probe { gaps, task }
    }

    fn stop(self) -> Vec<Duration> {
        self.task.abort();
        self.gaps.lock().unwrap().clone()
    }
}

/// How the requests of a scenario are sent (`Spaced`: the bench).
#[allow(dead_code)]
#[derive(Clone, Copy, Debug)]
pub(crate) enum Pace {
    /// Each as soon as the previous one is answered in status.
    BackToBack,
    /// Each once the previous one is answered and its rollouts completed (nothing waits).
    Spaced,
    /// At random intervals in 0..max, regardless of answers; with a controller handover
    /// (a new controller process, fresh caches) half way.
    Random { max: Duration },
}

async fn ground(server: &DbServer) -> (Ground, (String, String)) {
    let mut g = Ground::stale().await;
    g.stepped_rollouts(ROLLOUT);
    g.start().await;
    let db = g.database(server, json!({})).await;
    (g, db)
}

async fn answered_in_status(g: &Ground, c: &Cred, value: String) -> Option<()> {
    (status(g, c).await.last_rotation_request.as_deref() == Some(value.as_str())).then_some(())
}

fn random_below(max: Duration) -> Duration {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).unwrap();
    max.mul_f64(u32::from_le_bytes(b) as f64 / u32::MAX as f64)
}

/// `n` rotation requests at `pace` on an alternating-users credential with pods logging in.
pub(crate) async fn requests_under_load(
    server: DbServer,
    n: usize,
    pace: Pace,
    probe: bool,
) -> Figures {
    let (mut g, db) = ground(&server).await;
    let ns = admitted_namespace(&g).await;
    let c = new_cred(
        &g,
        &server,
        &db,
        &ns,
        "app",
        json!({ "strategy": "alternating-users", "minimumInterval": "1s" }),
        json!({}),
    )
    .await;
    let history = History::record(&g, &c);
    let load = Load::start(&g, &server, &ns).await;
    let before = versions(&g, &c).await;
    let probe = probe.then(|| Probe::start(&g, &c));
    let order: Vec<String> = (1..=n).map(|i| format!("req-{i}")).collect();
    let mut times = Vec::new();
    let mut sent_at = Vec::new();
    for (i, value) in order.iter().enumerate() {
        if let Pace::Random { max } = pace {
            if i == n / 2 {
                // The leader hands over: this controller stops, a new one (empty caches,
                // nothing in memory) takes over with requests still arriving.
                g.stop().await;
                g.start().await;
            }
            request_rotation(&g, &c, value).await;
            sent_at.push(Instant::now());
            tokio::time::sleep(random_below(max)).await;
            continue;
        }
        let sent = Instant::now();
        request_rotation(&g, &c, value).await;
        wait_for(
            &format!("{value} answered"),
            Duration::from_secs(90),
            || answered_in_status(&g, &c, value.clone()),
        )
        .await;
        times.push(sent.elapsed());
        if matches!(pace, Pace::Spaced) {
            wait_for("rollouts done", Duration::from_secs(60), || async {
                let s = status(&g, &c).await;
                s.rolled_workloads
                    .iter()
                    .all(|w| w.completed_at.is_some())
                    .then_some(())
            })
            .await;
        }
    }
    let last = order.last().expect("n > 0").clone();
    wait_for(
        "the last request answered",
        Duration::from_secs(120),
        || answered_in_status(&g, &c, last.clone()),
    )
    .await;
    let version = wait_for(
        "the Secret on AWSCURRENT",
        Duration::from_secs(60),
        || async {
            let s = status(&g, &c).await;
            let synced = synced_version(&g, &c).await;
            (s.synced_version_id.is_some()
                && s.synced_version_id == synced
                && s.rotation_claim.is_none())
            .then_some(synced)
            .flatten()
        },
    )
    .await;
    let rollout_to_next = probe.map(Probe::stop).unwrap_or_default();
    let (ok, failed) = load.finish(&version).await;
    let new_versions = versions(&g, &c).await - before;
    history.wait_answered(&last).await;
    let answered = history.answered();
    history.assert_never_went_back(&order);
    drop_users(&server, &c).await;
    eprintln!(
        "{:?} {pace:?}: {n} requests, {} answered by a rotation ({} coalesced), {new_versions} new versions; logins {ok} ok, {failed} failed",
        server.engine,
        answered.len(),
        n - answered.len()
    );
    Figures {
        requests: n,
        answered: answered.len(),
        new_versions,
        ok,
        failed,
        rotation_times: times,
        rollout_to_next,
    }
}

fn assert_one_rotation_per_answered_request(f: &Figures) {
    assert_eq!(
        f.failed, 0,
        "zero failed logins under alternating-users: {f:?}"
    );
    assert!(f.ok > 0);
    assert_eq!(
        f.new_versions, f.answered,
        "every answered request made exactly one rotation, every other one was coalesced: {f:?}"
    );
}

async fn back_to_back(server: DbServer) {
    let f = requests_under_load(server, 10, Pace::BackToBack, false).await;
    assert_eq!(
        f.answered, 10,
        "back to back, each request is answered by its own rotation"
    );
    assert_one_rotation_per_answered_request(&f);
}

#[tokio::test]
async fn postgres_ten_back_to_back_requests_zero_failed_logins() {
    back_to_back(DbServer::postgres()).await;
}

#[tokio::test]
async fn mariadb_ten_back_to_back_requests_zero_failed_logins() {
    back_to_back(DbServer::mariadb()).await;
}

async fn random_timing(server: DbServer) {
    let f = requests_under_load(
        server,
        30,
        Pace::Random {
            max: Duration::from_secs(3),
        },
        false,
    )
    .await;
    assert!(f.answered >= 1 && f.answered <= f.requests);
    assert_one_rotation_per_answered_request(&f);
}

#[tokio::test]
async fn postgres_thirty_random_requests_with_a_handover() {
    random_timing(DbServer::postgres()).await;
}

#[tokio::test]
async fn mariadb_thirty_random_requests_with_a_handover() {
    random_timing(DbServer::mariadb()).await;
}

/// `rotateImmediately`: exactly one rotation in the credential's lifetime, however many
/// reconciles (its own status writes, the Secret it writes, the drift checks) follow.
async fn rotate_immediately_once(server: DbServer) {
    let (g, db) = ground(&server).await;
    let ns = admitted_namespace(&g).await;
    let c = new_cred(
        &g,
        &server,
        &db,
        &ns,
        "app",
        json!({ "rotateImmediately": true, "minimumInterval": "1s" }),
        json!({}),
    )
    .await;
    deployment(&g, &ns, "api", "app", 1).await;
    let s = wait_for(
        "the immediate rotation",
        Duration::from_secs(60),
        || async {
            let s = status(&g, &c).await;
            (s.last_rotation_time.is_some() && s.synced_version_id == synced_version(&g, &c).await)
                .then_some(s)
        },
    )
    .await;
    // Let several reconciles pass (each drift check, every 2 s here, is one).
    let checked = s.last_drift_check.clone();
    for _ in 0..2 {
        let prev = status(&g, &c).await.last_drift_check;
        wait_for("another drift check", Duration::from_secs(30), || async {
            (status(&g, &c).await.last_drift_check != prev).then_some(())
        })
        .await;
    }
    assert_ne!(status(&g, &c).await.last_drift_check, checked);
    assert_eq!(
        versions(&g, &c).await,
        2,
        "the initial version plus exactly one rotation"
    );
    drop_users(&server, &c).await;
}

#[tokio::test]
async fn postgres_rotate_immediately_makes_exactly_two_versions() {
    rotate_immediately_once(DbServer::postgres()).await;
}

#[tokio::test]
async fn mariadb_rotate_immediately_makes_exactly_two_versions() {
    rotate_immediately_once(DbServer::mariadb()).await;
}

/// A deliberately stale informer (watch events 0.8–1.5 s late: longer than a rotation) and
/// reconcile concurrency 4: reconciles keep starting from old cached objects. None of them
/// may overwrite newer status (asserted on the status history), and each request makes one
/// rotation.
#[tokio::test]
async fn stale_informer_never_overwrites_newer_status() {
    let server = DbServer::mariadb();
    let (g, db) = ground(&server).await;
    g.emulator
        .as_ref()
        .expect("emulator")
        .set_watch_delay(Some((
            Duration::from_millis(800),
            Duration::from_millis(1500),
        )));
    let ns = admitted_namespace(&g).await;
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
    deployment(&g, &ns, "api", "app", 1).await;
    let history = History::record(&g, &c);
    let before = versions(&g, &c).await;
    let order: Vec<String> = (1..=4).map(|i| format!("stale-{i}")).collect();
    for value in &order {
        request_rotation(&g, &c, value).await;
        wait_for(
            &format!("{value} answered"),
            Duration::from_secs(60),
            || async {
                (status(&g, &c).await.last_rotation_request.as_deref() == Some(value.as_str()))
                    .then_some(())
            },
        )
        .await;
    }
    // Settled: the last version synced, no claim left.
    wait_for("settled", Duration::from_secs(60), || async {
        let s = status(&g, &c).await;
        (s.rotation_claim.is_none() && s.synced_version_id == synced_version(&g, &c).await)
            .then_some(())
    })
    .await;
    history.wait_answered(order.last().unwrap()).await;
    history.assert_never_went_back(&order);
    assert_eq!(history.answered(), order, "each request answered, in order");
    assert_eq!(
        versions(&g, &c).await - before,
        order.len(),
        "one rotation per request"
    );
    drop_users(&server, &c).await;
}
