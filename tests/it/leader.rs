//! Leader election: two electors on one Lease in the Kubernetes API emulator.
//!
//! Properties checked: at most one instance believes it leads at any instant (a monitor
//! watches both channels for the whole test); a crashed leader is replaced after the
//! lease expires, within `lease_duration + renew_period`; a graceful stop hands over at
//! once; a leader cut off from the API server steps down before anyone can take over.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body as AxumBody;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use kube_emulator::Emulator;
use rdscred::leader::{LeaderElector, LeaseConfig};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::support::{ChartRbac, Install, RELEASE_NAMESPACE};

/// Scheduling and request latency allowance on a loaded 2-core CI machine, on top of the
/// protocol's own bounds.
const SLACK: Duration = Duration::from_millis(400);

struct Instance {
    leader: watch::Receiver<bool>,
    task: JoinHandle<()>,
    stop: Option<oneshot::Sender<()>>,
}

impl Instance {
    fn start(client: Client, cfg: LeaseConfig) -> Instance {
        let elector = LeaderElector::new(client, cfg);
        let leader = elector.subscribe();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(elector.run(async move {
            let _ = stopped.await;
        }));
        Instance {
            leader,
            task,
            stop: Some(stop),
        }
    }

    fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Graceful stop: signal shutdown and wait for the lease to be released.
    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .expect("elector stops promptly on shutdown")
            .expect("elector task did not panic");
    }
}

fn config(
    namespace: &str,
    lease: &str,
    identity: &str,
    lease_duration: Duration,
    renew_period: Duration,
) -> LeaseConfig {
    LeaseConfig {
        namespace: namespace.into(),
        name: lease.into(),
        identity: identity.into(),
        lease_duration,
        renew_period,
    }
}

/// An emulator with the chart's RBAC (cluster-wide install) and a client of the chart's
/// ServiceAccount, which the electors use: the Lease is in the release namespace, with the
/// chart's lease name. The guard checks on drop that nothing was denied.
async fn emulator_with_namespace() -> (ChartGuard, Client, String) {
    let emulator = Emulator::new();
    let rbac = ChartRbac::render(Install::ClusterWide, serde_json::json!({}));
    let token = rbac.apply(&emulator).await;
    let client = emulator.client_with_token(&token);
    (
        ChartGuard { emulator, rbac },
        client,
        RELEASE_NAMESPACE.to_string(),
    )
}

struct ChartGuard {
    emulator: Emulator,
    rbac: ChartRbac,
}

impl Drop for ChartGuard {
    fn drop(&mut self) {
        self.rbac.finish(&self.emulator);
    }
}

/// Waits until `instance` reads `want`, polling every 10 ms, at most `within`.
/// Returns how long it took.
async fn until_leader_is(
    instance: &Instance,
    want: bool,
    within: Duration,
    what: &str,
) -> Duration {
    let start = Instant::now();
    loop {
        if instance.is_leader() == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() <= within,
            "timed out after {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Records whether both instances ever read `true` at the same time: reacts to every
/// change on either channel and also samples every 2 ms.
struct OverlapMonitor {
    overlap: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl OverlapMonitor {
    fn start(a: &Instance, b: &Instance) -> OverlapMonitor {
        let (mut a, mut b) = (a.leader.clone(), b.leader.clone());
        let overlap = Arc::new(AtomicBool::new(false));
        let seen = overlap.clone();
        let task = tokio::spawn(async move {
            // A channel whose elector task is gone reports errors on `changed`; stop
            // selecting on it (it reads `false` by then) instead of spinning.
            let (mut a_open, mut b_open) = (true, true);
            loop {
                if *a.borrow_and_update() && *b.borrow_and_update() {
                    seen.store(true, Ordering::SeqCst);
                }
                tokio::select! {
                    changed = a.changed(), if a_open => a_open = changed.is_ok(),
                    changed = b.changed(), if b_open => b_open = changed.is_ok(),
                    () = tokio::time::sleep(Duration::from_millis(2)) => {}
                }
            }
        });
        OverlapMonitor { overlap, task }
    }

    fn assert_never_both(self) {
        self.task.abort();
        assert!(
            !self.overlap.load(Ordering::SeqCst),
            "both instances believed they were leader at the same time"
        );
    }
}

async fn lease(client: &Client, namespace: &str, name: &str) -> Lease {
    Api::<Lease>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .expect("lease exists")
}

fn holder(lease: &Lease) -> Option<String> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .filter(|h| !h.is_empty())
}

fn transitions(lease: &Lease) -> i32 {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_transitions)
        .unwrap_or(0)
}

/// Waits until the lease's renewTime has advanced `times` times while `standby` stays a
/// standby: proof that the leader keeps renewing and the standby respects it.
async fn leader_renews_while_standby_waits(
    client: &Client,
    namespace: &str,
    name: &str,
    standby: &Instance,
    times: usize,
    within: Duration,
) {
    let start = Instant::now();
    let renew_time = |lease: &Lease| lease.spec.as_ref().and_then(|s| s.renew_time.clone());
    let mut last = renew_time(&lease(client, namespace, name).await);
    let mut advanced = 0;
    while advanced < times {
        assert!(
            start.elapsed() <= within,
            "leader did not renew {times} times within {within:?}"
        );
        assert!(
            !standby.is_leader(),
            "standby took over a lease that is being renewed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = renew_time(&lease(client, namespace, name).await);
        if now != last {
            advanced += 1;
            last = now;
        }
    }
}

#[tokio::test]
async fn crashed_leader_is_replaced_after_lease_expiry_and_never_two_leaders() {
    let (_emulator, client, ns) = emulator_with_namespace().await;
    let (lease_duration, renew_period) = (Duration::from_secs(1), Duration::from_millis(200));
    let name = "rdscred-leader";

    let a = Instance::start(
        client.clone(),
        config(&ns, name, "a", lease_duration, renew_period),
    );
    until_leader_is(
        &a,
        true,
        Duration::from_secs(5),
        "first instance acquires the free lease",
    )
    .await;
    let b = Instance::start(
        client.clone(),
        config(&ns, name, "b", lease_duration, renew_period),
    );
    let monitor = OverlapMonitor::start(&a, &b);

    // Several lease durations of renewals: the standby never takes over a live lease.
    leader_renews_while_standby_waits(&client, &ns, name, &b, 8, Duration::from_secs(5)).await;
    assert_eq!(
        holder(&lease(&client, &ns, name).await).as_deref(),
        Some("a")
    );

    // Crash: abort without releasing. The lease still names "a" until it expires.
    a.task.abort();
    let took = until_leader_is(
        &b,
        true,
        lease_duration + renew_period + SLACK,
        "standby takes over the crashed leader's lease",
    )
    .await;
    assert!(!a.is_leader(), "an aborted elector publishes false");
    // Not earlier than the lease allows: the last renewal was at most one renew period
    // (plus the request) before the crash.
    assert!(
        took >= lease_duration - 2 * renew_period,
        "took over after {took:?}, before the lease expired"
    );

    let lease = lease(&client, &ns, name).await;
    assert_eq!(holder(&lease).as_deref(), Some("b"));
    assert_eq!(transitions(&lease), 1);
    monitor.assert_never_both();
}

#[tokio::test]
async fn graceful_stop_releases_the_lease_for_immediate_takeover() {
    let (_emulator, client, ns) = emulator_with_namespace().await;
    // A long lease: a takeover well before it could expire proves the release worked.
    let (lease_duration, renew_period) = (Duration::from_secs(10), Duration::from_millis(200));
    let name = "rdscred-leader";

    let mut a = Instance::start(
        client.clone(),
        config(&ns, name, "a", lease_duration, renew_period),
    );
    until_leader_is(
        &a,
        true,
        Duration::from_secs(5),
        "first instance acquires the free lease",
    )
    .await;
    let b = Instance::start(
        client.clone(),
        config(&ns, name, "b", lease_duration, renew_period),
    );
    let monitor = OverlapMonitor::start(&a, &b);
    leader_renews_while_standby_waits(&client, &ns, name, &b, 3, Duration::from_secs(5)).await;

    a.stop().await;
    assert!(!a.is_leader());
    // Released (empty holder) or already taken by "b", whose poll may have run since.
    let released = lease(&client, &ns, name).await;
    assert_ne!(
        holder(&released).as_deref(),
        Some("a"),
        "graceful stop releases the lease"
    );

    until_leader_is(
        &b,
        true,
        renew_period + SLACK,
        "standby takes the released lease on its next poll",
    )
    .await;
    let lease = lease(&client, &ns, name).await;
    assert_eq!(holder(&lease).as_deref(), Some("b"));
    assert_eq!(transitions(&lease), 1);
    monitor.assert_never_both();
}

#[tokio::test]
async fn simultaneous_candidates_elect_exactly_one() {
    let (_emulator, client, ns) = emulator_with_namespace().await;
    let (lease_duration, renew_period) = (Duration::from_secs(1), Duration::from_millis(100));
    let name = "rdscred-leader";

    // Both start against a missing lease: one create wins, the other gets 409.
    let a = Instance::start(
        client.clone(),
        config(&ns, name, "a", lease_duration, renew_period),
    );
    let b = Instance::start(
        client.clone(),
        config(&ns, name, "b", lease_duration, renew_period),
    );
    let monitor = OverlapMonitor::start(&a, &b);
    let start = Instant::now();
    while !(a.is_leader() || b.is_leader()) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "nobody became leader"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let expected = if a.is_leader() { "a" } else { "b" };
    let standby = if a.is_leader() { &b } else { &a };
    leader_renews_while_standby_waits(&client, &ns, name, standby, 10, Duration::from_secs(5))
        .await;
    assert_eq!(
        holder(&lease(&client, &ns, name).await).as_deref(),
        Some(expected)
    );
    monitor.assert_never_both();
}

/// A pass-through proxy to the emulator that can be cut: while `cut` is set, requests
/// hang, like packets dropped by a network partition.
async fn partitionable_client(upstream: Client) -> (Client, Arc<AtomicBool>) {
    #[derive(Clone)]
    struct Proxy {
        upstream: Client,
        cut: Arc<AtomicBool>,
    }

    async fn forward(State(proxy): State<Proxy>, request: Request) -> Response {
        if proxy.cut.load(Ordering::SeqCst) {
            return std::future::pending().await;
        }
        let (parts, body) = request.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, 16 << 20).await else {
            return StatusCode::BAD_REQUEST.into_response();
        };
        let request =
            axum::http::Request::from_parts(parts, kube::client::Body::from(bytes.to_vec()));
        match proxy.upstream.send(request).await {
            Ok(response) => response.map(AxumBody::new).into_response(),
            Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
        }
    }

    let cut = Arc::new(AtomicBool::new(false));
    let app = axum::Router::new().fallback(forward).with_state(Proxy {
        upstream,
        cut: cut.clone(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    (Client::try_from(config).expect("client for the proxy"), cut)
}

#[tokio::test]
async fn partitioned_leader_steps_down_before_the_standby_takes_over() {
    let (_emulator, client, ns) = emulator_with_namespace().await;
    let (lease_duration, renew_period) = (Duration::from_secs(2), Duration::from_millis(200));
    let name = "rdscred-leader";

    let (cut_client, cut) = partitionable_client(client.clone()).await;
    let a = Instance::start(
        cut_client,
        config(&ns, name, "a", lease_duration, renew_period),
    );
    until_leader_is(
        &a,
        true,
        Duration::from_secs(5),
        "first instance acquires the free lease",
    )
    .await;
    let b = Instance::start(
        client.clone(),
        config(&ns, name, "b", lease_duration, renew_period),
    );
    let monitor = OverlapMonitor::start(&a, &b);
    leader_renews_while_standby_waits(&client, &ns, name, &b, 3, Duration::from_secs(5)).await;

    // Requests from "a" now hang. It must stop acting on its own clock, without any
    // answer from the API server, before its lease can expire for others.
    cut.store(true, Ordering::SeqCst);
    let stepped_down = until_leader_is(
        &a,
        false,
        lease_duration,
        "partitioned leader steps down within the lease duration",
    )
    .await;
    assert!(
        !b.is_leader(),
        "the standby cannot take over before the lease expires"
    );
    until_leader_is(
        &b,
        true,
        lease_duration + renew_period + SLACK,
        "standby takes over the expired lease",
    )
    .await;
    assert!(
        stepped_down < lease_duration,
        "stepped down after {stepped_down:?}"
    );

    // Healing the partition does not bring back a second leader.
    cut.store(false, Ordering::SeqCst);
    leader_renews_while_standby_waits(&client, &ns, name, &a, 5, Duration::from_secs(5)).await;
    assert!(b.is_leader());
    let lease = lease(&client, &ns, name).await;
    assert_eq!(holder(&lease).as_deref(), Some("b"));
    assert_eq!(transitions(&lease), 1);
    monitor.assert_never_both();
}
