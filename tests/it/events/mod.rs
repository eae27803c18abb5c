//! Event-driven change detection (issue 12): Secrets Manager events reach the controller
//! through an SQS queue in moto — published with EventBridge PutEvents through a rule that
//! targets the queue (the rule's pattern is the documented one, `examples/06-…`), or written
//! to the queue directly — and an outside change reaches the Kubernetes Secret and rolls its
//! dependents by the event alone while the bulk poll runs only every 30 minutes (how fast —
//! the goal is 2 s — is measured by `cargo bench --bench events`, not asserted here). Duplicates, events out
//! of order, unmanaged secrets, malformed bodies, a burst, a slow handler, a lost queue, and
//! only the leader consuming.
//!
//! moto's differences from AWS are listed in docs/events.md ("Testing it locally"); none of
//! them is relied on where safety depends on it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::ObjectRef;
use rdscred::aws::{AwsError, SecretMeta};
use rdscred::context::Settings;
use rdscred::crd::RdsCredential;
use rdscred::engine::Admin;
use rdscred::runtime::events::{AwsDescribe, DescribeSecret, EventsConfig, consume};
use rdscred::runtime::poller::Triggers;
use rdscred::secret::RdsSecretValue;
use serde_json::json;

use crate::support::{DbServer, Ground, secret_key, unique, wait_for};

mod fixtures;

use fixtures::*;

// ------------------------------------------------------------------ tests

/// The issue's main case: outside changes to a managed and to a sync-only secret, each
/// followed by the events AWS would send — through EventBridge and its rule, and written to
/// the queue directly — reach the Secret and roll the dependents, with the poll 30 minutes
/// away: by the event, not by a poll. Each change rolls each dependent exactly once.
#[tokio::test]
async fn outside_changes_reach_the_secret_by_event_not_by_poll() {
    let server = DbServer::postgres();
    let mut g = Ground::new().await;
    let queue = Queue::create(&g, 30).await;
    let bus = Bus::to(&queue);
    g.start_with(settings_with_events(&g, &queue, Duration::from_secs(2)))
        .await;
    g.emulator
        .as_ref()
        .expect("emulator")
        .simulate_workload_controllers(Duration::from_millis(100));
    let ns = admitted_namespace(&g).await;
    let (db, prefix) = g.database(&server, json!({})).await;
    deployment(&g, &ns, "web", "app-db").await;
    deployment(&g, &ns, "ext-web", "ext-db").await;
    let user = unique("ev_");
    g.credential(
        &ns,
        "app",
        json!({ "databaseRef": { "name": db }, "username": user,
                "secret": { "name": format!("{prefix}{user}") }, "target": { "name": "app-db" } }),
    )
    .await
    .unwrap();
    let (ext, mut ext_value) =
        external_secret(&g, &format!("{prefix}{}", unique("ext")), &server).await;
    sync_only(&g, &ns, "ext", &db, &ext.name, "ext-db").await;
    let app_arn = g
        .wait_ready(&ns, "app")
        .await
        .status
        .unwrap()
        .secret_arn
        .unwrap();
    g.wait_ready(&ns, "ext").await;
    wait_queue_up(&g, &queue, true, Duration::from_secs(10)).await;
    let app = g.scope.secrets.describe(&app_arn).await.unwrap().unwrap();
    let (_, mut app_value) = g.current(&app_arn).await;
    let polls = g.calls.total("ListSecrets");
    let mut latencies = Vec::new();

    // A managed secret, its rotator outside rdscred: database first, then Secrets Manager.
    let outside_managed = async |value: &mut RdsSecretValue| {
        let pw = new_password(value);
        let mut admin = Admin::connect(&server.target(), &server.admin)
            .await
            .unwrap();
        admin.set_password(&user, &value.password).await.unwrap();
        admin.close().await;
        (pw, outside_rotate(&g, &app, value).await)
    };

    // 1. Managed, through EventBridge: the two API calls and the label event.
    rollouts_complete(&g, &ns, "app").await;
    let (pw, v) = outside_managed(&mut app_value).await;
    bus.put(&rotation_events(&app, &v, false));
    latencies.push(synced_and_rolled(&g, &ns, ("app-db", "web"), &pw, &v).await);

    // 2. Sync-only, written to the queue: the API calls name the secret by name.
    rollouts_complete(&g, &ns, "ext").await;
    let pw = new_password(&mut ext_value);
    let v = outside_rotate(&g, &ext, &ext_value).await;
    queue.send(&bodies(&rotation_events(&ext, &v, true))).await;
    latencies.push(synced_and_rolled(&g, &ns, ("ext-db", "ext-web"), &pw, &v).await);

    // 3. Managed, written to the queue: only the service event (a Lambda's RotationSucceeded).
    rollouts_complete(&g, &ns, "app").await;
    let (pw, v) = outside_managed(&mut app_value).await;
    queue
        .send(&bodies(&[service_event("RotationSucceeded", &app.arn)]))
        .await;
    latencies.push(synced_and_rolled(&g, &ns, ("app-db", "web"), &pw, &v).await);

    // 4. Sync-only, through EventBridge: only the label event.
    rollouts_complete(&g, &ns, "ext").await;
    let pw = new_password(&mut ext_value);
    let v = outside_rotate(&g, &ext, &ext_value).await;
    bus.put(&[label_updated(&ext, &v)]);
    latencies.push(synced_and_rolled(&g, &ns, ("ext-db", "ext-web"), &pw, &v).await);
    eprintln!("outside change -> Secret + rollout by event: {latencies:?}");

    queue.wait_drained(Duration::from_secs(10)).await;
    assert_eq!(
        g.calls.total("ListSecrets"),
        polls,
        "no bulk poll ran: events alone carried the changes"
    );
    for deploy in [("web", "app-db"), ("ext-web", "ext-db")] {
        let (generation, _) = rolled(&g, &ns, deploy.0, deploy.1).await;
        assert_eq!(
            generation, 3,
            "{}: rolled exactly once per change",
            deploy.0
        );
    }
    assert!(sample(&g, "rdscred_event_lag_seconds_count", "") >= 4.0);
    assert!(
        sample(
            &g,
            "rdscred_events_handled_total",
            r#"type="label_updated""#
        ) >= 2.0
    );
    assert!(sample(&g, "rdscred_events_handled_total", r#"type="api_call""#) >= 4.0);
    assert!(
        sample(
            &g,
            "rdscred_events_handled_total",
            r#"type="service_event""#
        ) >= 1.0
    );
    assert_eq!(sample(&g, "rdscred_events_malformed_total", ""), 0.0);
}

/// Duplicates roll once; an older event after a newer one changes nothing; events about
/// secrets nobody follows and malformed bodies cost no AWS call and are deleted.
#[tokio::test]
async fn duplicates_reordering_unmanaged_and_malformed_messages() {
    let server = DbServer::postgres();
    let mut g = Ground::new().await;
    let queue = Queue::create(&g, 30).await;
    g.start_with(settings_with_events(&g, &queue, Duration::from_secs(2)))
        .await;
    g.emulator
        .as_ref()
        .expect("emulator")
        .simulate_workload_controllers(Duration::from_millis(100));
    let ns = admitted_namespace(&g).await;
    let (db, prefix) = g.database(&server, json!({})).await;
    deployment(&g, &ns, "ext-web", "ext-db").await;
    let (ext, mut value) =
        external_secret(&g, &format!("{prefix}{}", unique("ext")), &server).await;
    sync_only(&g, &ns, "ext", &db, &ext.name, "ext-db").await;
    g.wait_ready(&ns, "ext").await;
    wait_queue_up(&g, &queue, true, Duration::from_secs(10)).await;
    let synced = async |g: &Ground| {
        g.get_credential(&ns, "ext")
            .await
            .and_then(|c| c.status?.synced_version_id)
    };

    // Duplicates: one change, its events five times over.
    let pw = new_password(&mut value);
    let v2 = outside_rotate(&g, &ext, &value).await;
    let mut dupes = Vec::new();
    for _ in 0..5 {
        dupes.extend(rotation_events(&ext, &v2, false));
    }
    queue.send(&bodies(&dupes)).await;
    synced_and_rolled(&g, &ns, ("ext-db", "ext-web"), &pw, &v2).await;
    queue.wait_drained(Duration::from_secs(10)).await;
    wait_for("v2 recorded as synced", Duration::from_secs(5), || async {
        (synced(&g).await.as_deref() == Some(v2.as_str())).then_some(())
    })
    .await;
    assert_eq!(
        rolled(&g, &ns, "ext-web", "ext-db").await,
        (2, Some(v2.clone())),
        "rolled once"
    );

    // Reordered: the change to v3 is announced, then the (older) events of v2 arrive.
    let pw3 = new_password(&mut value);
    let v3 = outside_rotate(&g, &ext, &value).await;
    queue.send(&bodies(&[label_updated(&ext, &v3)])).await;
    synced_and_rolled(&g, &ns, ("ext-db", "ext-web"), &pw3, &v3).await;
    let handled = sample(
        &g,
        "rdscred_events_handled_total",
        r#"type="label_updated""#,
    );
    queue
        .send(&bodies(&rotation_events(&ext, &v2, false)))
        .await;
    wait_for(
        "the stale events handled",
        Duration::from_secs(10),
        || async {
            (sample(
                &g,
                "rdscred_events_handled_total",
                r#"type="label_updated""#,
            ) > handled)
                .then_some(())
        },
    )
    .await;
    queue.wait_drained(Duration::from_secs(10)).await;
    let s = g.k8s_secret(&ns, "ext-db").await.unwrap();
    assert_eq!(
        secret_key(&s, "password").as_deref(),
        Some(pw3.as_str()),
        "still v3"
    );
    assert_eq!(
        rolled(&g, &ns, "ext-web", "ext-db").await,
        (3, Some(v3.clone())),
        "one rollout for v3, none for the stale v2 events"
    );
    wait_for("v3 recorded as synced", Duration::from_secs(5), || async {
        (synced(&g).await.as_deref() == Some(v3.as_str())).then_some(())
    })
    .await;

    // Unmanaged and malformed: counted, deleted, no DescribeSecret (once the rollout is
    // complete nothing else reconciles within the minute).
    rollouts_complete(&g, &ns, "ext").await;
    let describes = g.calls.total("DescribeSecret");
    let ignored = |g: &Ground| {
        sample(
            g,
            "rdscred_events_ignored_total",
            r#"type="api_call",reason="unmanaged""#,
        ) + sample(
            g,
            "rdscred_events_ignored_total",
            r#"type="label_updated",reason="unmanaged""#,
        )
    };
    let ignored_before = ignored(&g);
    let stranger = SecretMeta {
        name: format!("{prefix}nobody"),
        arn: format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{prefix}nobody-AbC123"),
        ..ext.clone()
    };
    let mut other_region = label_updated(&ext, &v3);
    other_region["resources"] = json!([ext.arn.replace("us-east-1", "eu-west-1")]);
    other_region["region"] = json!("eu-west-1");
    other_region["detail"]["name"] = json!("not-the-same");
    let unmanaged = vec![
        api_call("PutSecretValue", &stranger.name, &stranger.arn),
        label_updated(&stranger, "v-x"),
        api_call("UpdateSecretVersionStage", &prefix, &stranger.arn),
        other_region,
    ];
    let malformed = vec![
        "not json at all".to_string(),
        "{}".to_string(),
        json!({ "source": "aws.secretsmanager", "detail-type": "Secret Label Updated", "detail": "x" }).to_string(),
        json!({ "source": "aws.secretsmanager", "detail-type": "AWS API Call via CloudTrail",
                "detail": { "eventName": "PutSecretValue", "requestParameters": {} } }).to_string(),
    ];
    let other = vec![
        json!({ "source": "aws.rds", "detail-type": "RDS DB Instance Event", "detail": {} })
            .to_string(),
        api_call("GetSecretValue", &ext.arn, &ext.arn).to_string(),
    ];
    let malformed_before = sample(&g, "rdscred_events_malformed_total", "");
    let mut all = bodies(&unmanaged);
    all.extend(malformed.clone());
    all.extend(other);
    queue.send(&all).await;
    queue.wait_drained(Duration::from_secs(10)).await;
    wait_for(
        "ignored and malformed counted",
        Duration::from_secs(5),
        || async {
            (ignored(&g) - ignored_before == unmanaged.len() as f64
                && sample(&g, "rdscred_events_malformed_total", "") - malformed_before
                    == malformed.len() as f64)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        sample(
            &g,
            "rdscred_events_ignored_total",
            r#"type="other",reason="other_source""#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &g,
            "rdscred_events_ignored_total",
            r#"type="api_call",reason="read_only""#
        ),
        1.0
    );
    assert_eq!(
        g.calls.total("DescribeSecret"),
        describes,
        "unmanaged and malformed messages cost no AWS call"
    );
    assert_eq!(rolled(&g, &ns, "ext-web", "ext-db").await.0, 3);
}

/// DescribeSecret through the real AWS clients, counted per secret; the first call for `gate`
/// waits until the test opens it (so a burst is queued up behind the first batch), and the
/// first call for `slow` (if any) takes `slow_for`.
struct Observed<'a> {
    inner: AwsDescribe<'a>,
    gate: (String, tokio::sync::Semaphore),
    slow: Option<(String, Duration)>,
    calls: Mutex<BTreeMap<String, usize>>,
    completed: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl<'a> Observed<'a> {
    fn new(g: &'a Ground, gate: &str, slow: Option<(String, Duration)>) -> Observed<'a> {
        Observed {
            inner: AwsDescribe(&g.aws),
            gate: (gate.to_string(), tokio::sync::Semaphore::new(0)),
            slow,
            calls: Mutex::default(),
            completed: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        }
    }

    fn calls_for(&self, id: &str) -> usize {
        self.calls.lock().unwrap().get(id).copied().unwrap_or(0)
    }
}

/// Decrements `in_flight` however the describe ends (finished or dropped at the deadline).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl DescribeSecret for Observed<'_> {
    async fn describe(
        &self,
        scope: &(String, Option<String>),
        id: &str,
    ) -> Result<Option<SecretMeta>, AwsError> {
        let attempt = {
            let mut calls = self.calls.lock().unwrap();
            let n = calls.entry(id.to_string()).or_insert(0);
            *n += 1;
            *n
        };
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let _guard = InFlight(&self.in_flight);
        if id == self.gate.0 && attempt == 1 {
            let _ = self.gate.1.acquire().await;
        }
        if let Some((slow, delay)) = &self.slow
            && id == slow
            && attempt == 1
        {
            tokio::time::sleep(*delay).await;
        }
        let out = self.inner.describe(scope, id).await;
        self.completed.fetch_add(1, Ordering::SeqCst);
        out
    }
}

/// Fifty sync-only credentials (cheap: no database users), each on its own secret; returns
/// (credential name, secret metadata, value).
async fn many_sync_only(
    g: &Ground,
    ns: &str,
    db: &str,
    prefix: &str,
    n: usize,
    server: &DbServer,
) -> Vec<(String, SecretMeta, RdsSecretValue)> {
    let mut out = Vec::new();
    for i in 0..n {
        let (meta, value) =
            external_secret(g, &format!("{prefix}{}", unique("burst")), server).await;
        let name = format!("c{i}");
        sync_only(g, ns, &name, db, &meta.name, &format!("s{i}")).await;
        out.push((name, meta, value));
    }
    let api: Api<RdsCredential> = Api::namespaced(g.client.clone(), ns);
    wait_for(
        &format!("{n} credentials Ready"),
        Duration::from_secs(120),
        || async {
            let list = api.list(&ListParams::default()).await.ok()?;
            let ready = list
                .items
                .iter()
                .filter(|c| {
                    c.status.as_ref().is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|x| x.type_ == "Ready" && x.status == "True")
                    })
                })
                .count();
            (ready == n).then_some(())
        },
    )
    .await;
    out
}

/// Receives every credential reference sent so far.
fn drain_triggers(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<ObjectRef<RdsCredential>>,
) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(r) = rx.try_recv() {
        out.push(r.name);
    }
    out
}

/// What running the consumer directly takes: the controller without events (it supplies the
/// credential stores), `n` sync-only credentials whose secrets were then changed outside
/// rdscred (name, secret, value, new version), a queue, and the triggers as a channel.
struct Direct {
    g: Ground,
    creds: Vec<(String, SecretMeta, RdsSecretValue, String)>,
    queue: Queue,
    cfg: EventsConfig,
    triggers: Triggers,
    rx: tokio::sync::mpsc::UnboundedReceiver<ObjectRef<RdsCredential>>,
    up: tokio::sync::watch::Sender<bool>,
}

impl Direct {
    async fn new(n: usize, visibility: u32) -> Direct {
        let server = DbServer::postgres();
        let mut g = Ground::new().await;
        // Nothing of the controller's own is due while a test runs: the consumer's calls are
        // what the tests count (a database recheck that fails under load and then succeeds
        // would reconcile every credential).
        g.start_with(Settings {
            poll_interval: BACKSTOP,
            drift_interval: Duration::from_secs(600),
            database_recheck_interval: Duration::from_secs(600),
            ..g.settings()
        })
        .await;
        let ns = admitted_namespace(&g).await;
        let (db, prefix) = g.database(&server, json!({})).await;
        let mut creds = Vec::new();
        for (name, meta, mut value) in many_sync_only(&g, &ns, &db, &prefix, n, &server).await {
            new_password(&mut value);
            let version = outside_rotate(&g, &meta, &value).await;
            creds.push((name, meta, value, version));
        }
        let queue = Queue::create(&g, visibility).await;
        let cfg = events_config(&queue, Duration::from_secs(300));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut triggers = Triggers::default();
        triggers.add(None, tx);
        let (up, _) = tokio::sync::watch::channel(false);
        Direct {
            g,
            creds,
            queue,
            cfg,
            triggers,
            rx,
            up,
        }
    }
}

/// The controller's credential reconciles so far, by result; what a failed one was about
/// (`rdscred_reconcile_errors_total` lines, credentials and databases) for the failure message.
#[derive(Debug, Default, PartialEq)]
struct ControllerPasses {
    ok: u64,
    failed: u64,
    errors: Vec<String>,
}

impl ControllerPasses {
    fn now(g: &Ground) -> ControllerPasses {
        let count = |result: &str| {
            let labels = format!(r#"kind="RdsCredential",result="{result}""#);
            sample(g, "rdscred_reconciles_total", &labels) as u64
        };
        ControllerPasses {
            ok: count("ok"),
            failed: count("error"),
            errors: g
                .metrics
                .encode()
                .lines()
                .filter(|l| l.starts_with("rdscred_reconcile_errors_total{"))
                .map(str::to_string)
                .collect(),
        }
    }

    /// What happened after `before`; the error lines are the current ones when any changed.
    fn since(self, before: &ControllerPasses) -> ControllerPasses {
        ControllerPasses {
            ok: self.ok - before.ok,
            failed: self.failed - before.failed,
            errors: if self.errors == before.errors {
                Vec::new()
            } else {
                self.errors
            },
        }
    }
}

/// 500 events for 50 changed secrets, queued up behind the first batch: one DescribeSecret per
/// secret, every changed credential handed to its controller, every message deleted.
#[tokio::test]
async fn burst_of_500_events_for_50_secrets_is_one_describe_per_secret() {
    const SECRETS: usize = 50;
    // moto needs ~0.4 s per ReceiveMessage with 500 messages waiting (AWS: milliseconds), so
    // draining the burst takes ~20 s: a visibility timeout that leaves time to gather it.
    let Direct {
        g,
        mut creds,
        queue,
        cfg,
        triggers,
        mut rx,
        up,
    } = Direct::new(SECRETS + 1, 300).await;
    // The last one's event goes first and holds the consumer until the burst is queued.
    let (gate_name, gate, _, _) = creds.pop().unwrap();
    let versions: BTreeMap<String, String> = creds
        .iter()
        .map(|(name, _, _, v)| (name.clone(), v.clone()))
        .collect();
    let ctx = g.ctx.clone().unwrap();
    let describer = Observed::new(&g, &gate.arn, None);

    let test = async {
        // The gate's event is the first batch; its DescribeSecret holds the consumer.
        queue.send(&bodies(&[label_updated(&gate, "v-gate")])).await;
        wait_for(
            "the consumer busy with the gate",
            Duration::from_secs(30),
            || async { (describer.calls_for(&gate.arn) == 1).then_some(()) },
        )
        .await;
        // Ten events per secret, interleaved: label events, API calls by name and by ARN,
        // service events, and repeats.
        let mut burst = Vec::new();
        for round in 0..10 {
            for (name, meta, _, _) in &creds {
                let v = &versions[name];
                burst.push(match round % 5 {
                    0 | 3 => label_updated(meta, v),
                    1 => api_call("PutSecretValue", &meta.name, &meta.arn),
                    2 => api_call("UpdateSecretVersionStage", &meta.arn, &meta.arn),
                    _ => service_event("RotationSucceeded", &meta.arn),
                });
            }
        }
        assert_eq!(burst.len(), 500);
        let describes_before = g.calls.total("DescribeSecret");
        let controller_before = ControllerPasses::now(&g);
        queue.send(&bodies(&burst)).await;
        describer.gate.1.add_permits(1);
        queue.wait_drained(Duration::from_secs(120)).await;
        let mut triggered = BTreeSet::new();
        wait_for(
            "every changed credential triggered",
            Duration::from_secs(10),
            || {
                triggered.extend(drain_triggers(&mut rx));
                let done = triggered.len() > SECRETS;
                async move { done.then_some(()) }
            },
        )
        .await;
        let describes = g.calls.total("DescribeSecret") - describes_before;
        (
            triggered,
            describes,
            ControllerPasses::now(&g).since(&controller_before),
        )
    };
    let (triggered, describes, controller) = tokio::select! {
        () = consume(&ctx, &cfg, &triggers, &up, &describer) => unreachable!("the consumer runs until dropped"),
        out = test => out,
    };
    let per_secret: Vec<(String, usize)> = creds
        .iter()
        .map(|(_, m, _, _)| (m.name.clone(), describer.calls_for(&m.arn)))
        .collect();
    eprintln!(
        "burst: 500 events for {SECRETS} secrets -> {describes} DescribeSecret calls (consumer: {})",
        per_secret.iter().map(|(_, n)| n).sum::<usize>()
    );
    assert!(
        per_secret.iter().all(|(_, n)| *n == 1),
        "one DescribeSecret per changed secret: {per_secret:?}"
    );
    let consumer: usize = per_secret.iter().map(|(_, n)| n).sum();
    // The controller is quiet in the window (no poll, drift check or database recheck falls in
    // it), but a credential it reconciles anyway (a watch event) costs one DescribeSecret of
    // its own (sync-only: an ok pass describes once, a failed one at most once): counted apart.
    let by_controller = describes.saturating_sub(consumer as u64 + 1);
    if controller != ControllerPasses::default() {
        eprintln!("the controller reconciled meanwhile: {controller:?}");
    }
    assert!(
        describes > consumer as u64
            && (controller.ok..=controller.ok + controller.failed).contains(&by_controller),
        "the AWS layer counted the consumer's calls, the gate's and the controller's own \
         passes, nothing else: {describes} DescribeSecret, consumer {consumer} + 1, \
         controller {controller:?}"
    );
    assert!(
        consumer <= SECRETS,
        "at most {SECRETS} DescribeSecret for the burst: {consumer}"
    );
    let mut want: BTreeSet<String> = creds.iter().map(|(n, _, _, _)| n.clone()).collect();
    want.insert(gate_name);
    assert_eq!(triggered, want, "exactly the changed credentials");
    assert_eq!(
        sample(
            &g,
            "rdscred_events_received_total",
            r#"type="label_updated""#
        ),
        201.0,
        "the gate's label event and the burst's 200"
    );
}

/// A handler slower than the queue's visibility timeout: the work is abandoned at the deadline
/// (never run twice at once), the message is not deleted, comes back, and is handled once.
#[tokio::test]
async fn handling_longer_than_the_visibility_timeout_is_abandoned_and_redone_once() {
    // Two seconds of visibility; the first DescribeSecret takes four.
    let Direct {
        g,
        creds,
        queue,
        cfg,
        triggers,
        mut rx,
        up,
    } = Direct::new(1, 2).await;
    let (_, meta, _, v2) = &creds[0];
    let ctx = g.ctx.clone().unwrap();
    let describer = Observed::new(&g, "-", Some((meta.arn.clone(), Duration::from_secs(4))));
    let test = async {
        queue.send(&bodies(&[label_updated(meta, v2)])).await;
        let mut triggered = Vec::new();
        wait_for("the credential triggered", Duration::from_secs(20), || {
            triggered.extend(drain_triggers(&mut rx));
            let done = !triggered.is_empty();
            async move { done.then_some(()) }
        })
        .await;
        queue.wait_drained(Duration::from_secs(10)).await;
        triggered.extend(drain_triggers(&mut rx));
        triggered
    };
    let triggered = tokio::select! {
        () = consume(&ctx, &cfg, &triggers, &up, &describer) => unreachable!(),
        out = test => out,
    };
    assert_eq!(triggered, vec!["c0".to_string()], "handled once");
    assert_eq!(
        describer.calls_for(&meta.arn),
        2,
        "abandoned once, redone once"
    );
    assert_eq!(
        describer.completed.load(Ordering::SeqCst),
        1,
        "the slow describe never finished"
    );
    assert_eq!(
        describer.max_in_flight.load(Ordering::SeqCst),
        1,
        "never twice at once"
    );
}

/// The queue deleted mid-run: reported (metric, Warning Event on the controller's Pod), the
/// poll falls back to its normal interval and carries changes; the queue back: reported,
/// events carry changes again and the poll returns to the backstop.
#[tokio::test]
async fn lost_queue_falls_back_to_polling_and_recovers() {
    let server = DbServer::postgres();
    let fallback = Duration::from_secs(1);
    let mut g = Ground::new().await;
    let mut queue = Queue::create(&g, 30).await;
    g.start_with(settings_with_events(&g, &queue, fallback))
        .await;
    g.emulator
        .as_ref()
        .expect("emulator")
        .simulate_workload_controllers(Duration::from_millis(100));
    // POD_NS is the release namespace, which the chart's RBAC setup already created.
    let ns = admitted_namespace(&g).await;
    let (db, prefix) = g.database(&server, json!({})).await;
    deployment(&g, &ns, "ext-web", "ext-db").await;
    let (ext, mut value) =
        external_secret(&g, &format!("{prefix}{}", unique("ext")), &server).await;
    sync_only(&g, &ns, "ext", &db, &ext.name, "ext-db").await;
    g.wait_ready(&ns, "ext").await;
    wait_queue_up(&g, &queue, true, Duration::from_secs(10)).await;

    // By event, no poll.
    let polls = g.calls.total("ListSecrets");
    let pw = new_password(&mut value);
    let v = outside_rotate(&g, &ext, &value).await;
    queue.send(&bodies(&[label_updated(&ext, &v)])).await;
    synced_and_rolled(&g, &ns, ("ext-db", "ext-web"), &pw, &v).await;
    assert_eq!(g.calls.total("ListSecrets"), polls);

    // Queue gone: said so, and the poll (every second now) carries an unannounced change.
    queue.delete().await;
    wait_queue_up(&g, &queue, false, Duration::from_secs(30)).await;
    let warning = pod_event(&g, "EventQueueUnavailable").await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    let note = warning.note.unwrap_or_default();
    assert!(
        note.contains(&queue.url) && note.contains("polling"),
        "{note}"
    );
    assert!(
        sample(
            &g,
            "rdscred_events_queue_errors_total",
            r#"reason="AwsResourceNotFound""#
        ) >= 1.0
    );
    // Nothing else looks at the secret: the rollout's completion watch is over.
    rollouts_complete(&g, &ns, "ext").await;
    let polls = g.calls.total("ListSecrets");
    let pw = new_password(&mut value);
    let v = outside_rotate(&g, &ext, &value).await;
    wait_for(
        "the fallback poll carries the change",
        Duration::from_secs(15),
        || async {
            let s = g.k8s_secret(&ns, "ext-db").await?;
            (secret_key(&s, "password").as_deref() == Some(pw.as_str())).then_some(())
        },
    )
    .await;
    assert!(g.calls.total("ListSecrets") > polls, "a poll did it");
    wait_for(
        "rolled to the polled version",
        Duration::from_secs(10),
        || async {
            (rolled(&g, &ns, "ext-web", "ext-db").await.1.as_deref() == Some(v.as_str()))
                .then_some(())
        },
    )
    .await;

    // Queue back (moto allows the name again at once; AWS after 60 s).
    queue.recreate().await;
    wait_queue_up(&g, &queue, true, Duration::from_secs(30)).await;
    let back = pod_event(&g, "EventQueueAvailable").await;
    assert_eq!(back.type_.as_deref(), Some("Normal"));
    // A poll may have begun before the queue answered again; after it, polls stop.
    let settled = g.calls.total("ListSecrets");
    tokio::time::sleep(fallback * 2).await;
    let polls = g.calls.total("ListSecrets");
    assert!(
        polls <= settled + 1,
        "at most the poll already under way: {settled} -> {polls}"
    );
    let pw = new_password(&mut value);
    let v = outside_rotate(&g, &ext, &value).await;
    queue.send(&bodies(&[label_updated(&ext, &v)])).await;
    synced_and_rolled(&g, &ns, ("ext-db", "ext-web"), &pw, &v).await;
    // Several fallback intervals without a poll: the backstop interval is in force again.
    tokio::time::sleep(fallback * 3).await;
    assert_eq!(
        g.calls.total("ListSecrets"),
        polls,
        "no poll while events flow"
    );
}

/// Waits for an Event with `reason` about the controller's Pod.
async fn pod_event(g: &Ground, reason: &str) -> Event {
    wait_for(
        &format!("a {reason} Event on the Pod"),
        Duration::from_secs(10),
        || async {
            Api::<Event>::namespaced(g.client.clone(), POD_NS)
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| {
                    let r = e.regarding.as_ref();
                    e.reason.as_deref() == Some(reason)
                        && r.and_then(|r| r.kind.as_deref()) == Some("Pod")
                        && r.and_then(|r| r.name.as_deref()) == Some(POD)
                })
        },
    )
    .await
}

/// Two controller processes on one Lease, both configured with the queue: only the leader
/// reads it (the standby's queue metrics stay absent); after a graceful handover the new
/// leader does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_consumes_the_queue() {
    use crate::runtime::{
        LEASE_DURATION, RENEW_PERIOD, Rdscred, SLACK, Workdir, sample as scraped, scrape,
        wait_holder, write_kubeconfig,
    };
    let mut g = Ground::new().await;
    let token = g
        .controller_token()
        .await
        .expect("runs against the emulator");
    let served = g
        .emulator
        .as_ref()
        .expect("runs against the emulator")
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .expect("serve emulator");
    let dir = Workdir::new();
    let kubeconfig = write_kubeconfig(&dir, &served.url(), &token);
    // The chart's leader-election Role lives in the release namespace.
    let lease_ns = crate::support::RELEASE_NAMESPACE;
    // A short visibility timeout: the old leader's last long poll, still open at the server
    // when the process exits, may take messages with it until it expires.
    let queue = Queue::create(&g, 3).await;
    let (lease, renew) = (
        format!("{}ms", LEASE_DURATION.as_millis()),
        format!("{}ms", RENEW_PERIOD.as_millis()),
    );
    let start = |name: &str| {
        let args = [
            "--leader-elect",
            "--leader-election-namespace",
            lease_ns,
            "--identity",
            name,
            "--lease-duration",
            &lease,
            "--lease-renew-period",
            &renew,
            "--events-queue-url",
            &queue.url,
        ];
        Rdscred::start(name, &dir, &kubeconfig, &g, &args)
    };
    let malformed = |text: &str| scraped(text, "rdscred_events_malformed_total", "");
    let up = format!(r#"queue="{}""#, queue.url);

    let mut a = start("a");
    wait_holder(&g.client, lease_ns, "a", SLACK * 5).await;
    let b = start("b");
    let (a_http, b_http) = (a.http_addr().await, b.http_addr().await);
    // Messages nobody can use: cheap, and counted by whoever reads them.
    queue.send(&vec!["not an event".to_string(); 3]).await;
    queue.wait_drained(SLACK * 10).await;
    wait_for("a counted them", SLACK * 2, || async {
        (malformed(&scrape(a_http).await) == Some(3.0)).then_some(())
    })
    .await;
    let b_metrics = scrape(b_http).await;
    assert_eq!(
        malformed(&b_metrics),
        Some(0.0),
        "the standby read the queue"
    );
    assert_eq!(scraped(&b_metrics, "rdscred_events_queue_up", &up), None);
    assert_eq!(
        scraped(&scrape(a_http).await, "rdscred_events_queue_up", &up),
        Some(1.0)
    );

    a.signal("TERM");
    a.exit_status(SLACK * 5).await;
    wait_holder(&g.client, lease_ns, "b", RENEW_PERIOD + SLACK * 2).await;
    queue.send(&vec!["{}".to_string(); 2]).await;
    queue.wait_drained(SLACK * 10).await;
    wait_for("b counted them", SLACK * 2, || async {
        (malformed(&scrape(b_http).await) == Some(2.0)).then_some(())
    })
    .await;
    drop(served);
}
