//! Rotation end to end (issue 4) through the REAL controller: the emulator, moto and the real
//! PostgreSQL and MariaDB servers. Rotations are requested the way a person does (the
//! `rdscred.io/rotate-requested-at` annotation) and observed from the outside: Secrets Manager,
//! the Kubernetes Secret, the status, Events, metrics and real logins.
//!
//! The figures the issue asks for are printed (run with `--no-capture` to see them):
//! failed logins of simulated pods per strategy, and the median rotation time per engine.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rdscred::aws::{AWSCURRENT, AWSPENDING, AWSPREVIOUS, SecretMeta};
use rdscred::context::Settings;
use rdscred::crd::{PasswordSpec, RdsCredential, RdsCredentialStatus};
use rdscred::engine::{self, Admin, ConnectTarget, Login, UserPlan};
use rdscred::reconcile::credential::ROTATE_ANNOTATION;
use rdscred::rotation::{self, CrashPoint, Step};
use rdscred::secret::{RdsSecretValue, SecretString, generate_password};
use serde_json::json;

use crate::support::{DbServer, Ground, merge, secret_key, unique, wait_for};

const NS_LABEL: (&str, &str) = ("rdscred-test", "yes");
/// Annotation of the Kubernetes Secret naming the AWSCURRENT version it holds.
const SYNCED_VERSION: &str = "rdscred.io/version-id";

// ------------------------------------------------------------------ helpers

pub(crate) async fn admitted_namespace(g: &Ground) -> String {
    let ns = unique("ns-");
    g.namespace(&ns, &[NS_LABEL]).await;
    ns
}

/// One managed credential under test: its namespace/name (also the Kubernetes Secret's name),
/// database user and Secrets Manager secret.
pub(crate) struct Cred {
    pub(crate) ns: String,
    pub(crate) name: String,
    pub(crate) user: String,
    pub(crate) secret: String,
}

/// Creates a managed credential (user `e2e_…`, all privileges on the test database) with
/// `rotation` and the extra spec keys in `extra`, and waits until it is Ready.
pub(crate) async fn new_cred(
    g: &Ground,
    server: &DbServer,
    db: &(String, String),
    ns: &str,
    name: &str,
    rotation: serde_json::Value,
    extra: serde_json::Value,
) -> Cred {
    let user = unique("e2e_");
    let secret = format!("{}{user}", db.1);
    let mut spec = json!({
        "databaseRef": { "name": db.0 },
        "username": user,
        "privileges": [{ "database": server.database, "privileges": ["ALL"] }],
        "secret": { "name": secret },
    });
    if !rotation.is_null() {
        spec["rotation"] = rotation;
    }
    merge(&mut spec, extra);
    g.credential(ns, name, spec)
        .await
        .expect("create credential");
    g.wait_ready(ns, name).await;
    Cred {
        ns: ns.into(),
        name: name.into(),
        user,
        secret,
    }
}

pub(crate) async fn status(g: &Ground, c: &Cred) -> RdsCredentialStatus {
    g.get_credential(&c.ns, &c.name)
        .await
        .expect("credential exists")
        .status
        .unwrap_or_default()
}

fn condition<'a>(s: &'a RdsCredentialStatus, type_: &str) -> Option<&'a Condition> {
    s.conditions.iter().find(|c| c.type_ == type_)
}

pub(crate) fn has_condition(
    s: &RdsCredentialStatus,
    type_: &str,
    status: &str,
    reason: &str,
) -> bool {
    condition(s, type_).is_some_and(|c| c.status == status && c.reason == reason)
}

async fn uid(g: &Ground, c: &Cred) -> String {
    g.get_credential(&c.ns, &c.name)
        .await
        .unwrap()
        .metadata
        .uid
        .expect("uid")
}

pub(crate) async fn request_rotation(g: &Ground, c: &Cred, value: &str) {
    let patch = json!({ "metadata": { "annotations": { ROTATE_ANNOTATION: value } } });
    Api::<RdsCredential>::namespaced(g.client.clone(), &c.ns)
        .patch(&c.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotate");
}

async fn patch_spec(g: &Ground, c: &Cred, spec: serde_json::Value) {
    let patch = json!({ "spec": spec });
    Api::<RdsCredential>::namespaced(g.client.clone(), &c.ns)
        .patch(&c.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch spec");
}

/// The AWSCURRENT version the Kubernetes Secret holds.
pub(crate) async fn synced_version(g: &Ground, c: &Cred) -> Option<String> {
    g.k8s_secret(&c.ns, &c.name)
        .await?
        .metadata
        .annotations?
        .get(SYNCED_VERSION)
        .cloned()
}

pub(crate) async fn meta(g: &Ground, c: &Cred) -> SecretMeta {
    g.scope
        .secrets
        .describe(&c.secret)
        .await
        .unwrap()
        .expect("secret exists")
}

fn login_of(v: &RdsSecretValue) -> Login {
    Login {
        username: v.username.clone(),
        password: v.password.clone(),
    }
}

async fn logs_in(server: &DbServer, v: &RdsSecretValue) -> bool {
    engine::check_login(&server.target(), &login_of(v))
        .await
        .is_ok()
}

/// Like `wait_for`, polling every `every` (for measurements finer than its 100ms).
async fn poll<T, F, Fut>(what: &str, timeout: Duration, every: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(every).await;
    }
}

/// Waits until the rotation requested with `request` is recorded and synced: the status names
/// the request, the Kubernetes Secret holds AWSCURRENT, nothing is pending. Returns the status.
pub(crate) async fn wait_rotated(g: &Ground, c: &Cred, request: &str) -> RdsCredentialStatus {
    wait_for(
        &format!("{}/{} rotated for {request}", c.ns, c.name),
        Duration::from_secs(60),
        || async {
            let s = status(g, c).await;
            let m = meta(g, c).await;
            let settled = s.last_rotation_request.as_deref() == Some(request)
                && m.pending_version().is_none()
                && s.synced_version_id.as_deref() == m.current_version()
                && synced_version(g, c).await.as_deref() == m.current_version()
                && has_condition(&s, "Ready", "True", "Ready");
            settled.then_some(s)
        },
    )
    .await
}

/// Gives a user a random password behind rdscred's back, as the admin.
async fn scramble_password(server: &DbServer, username: &str) {
    let mut admin = Admin::connect(&server.target(), &server.admin)
        .await
        .unwrap();
    admin
        .set_password(
            username,
            &generate_password(&PasswordSpec::default(), server.engine).unwrap(),
        )
        .await
        .unwrap();
    admin.close().await;
}

/// Drops the user, its clone and (PostgreSQL) owner role: the servers are shared.
pub(crate) async fn drop_users(server: &DbServer, c: &Cred) {
    let plan = UserPlan {
        username: c.user.clone(),
        login_users: vec![c.user.clone(), UserPlan::clone_username(&c.user)],
        grants: vec![],
        roles: vec![],
    };
    if let Ok(mut admin) = Admin::connect(&server.target(), &server.admin).await {
        let _ = admin.drop_users(&plan).await;
        admin.close().await;
    }
}

async fn events(g: &Ground, ns: &str, reason: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(g.client.clone(), ns);
    api.list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.note)
        .collect()
}

pub(crate) fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

// ------------------------------------------------------------------ several rotations in a row

/// Three annotation-triggered rotations per strategy. Returns the time from the annotation to
/// the new AWSCURRENT in the Kubernetes Secret, per rotation.
async fn rotations_in_a_row(server: DbServer) {
    let mut g = Ground::stale().await;
    g.start().await;
    let ns = admitted_namespace(&g).await;
    let db = g.database(&server, json!({})).await;
    let mut times = Vec::new();
    for strategy in ["alternating-users", "single-user"] {
        let rotation = json!({ "strategy": strategy, "minimumInterval": "1s", "schedule": { "automaticallyAfterDays": 30 } });
        let c = new_cred(&g, &server, &db, &ns, strategy, rotation, json!({})).await;
        let uid = uid(&g, &c).await;
        let (mut version, mut value) = g.current(&c.secret).await;
        let mut last_rotation: Option<jiff::Timestamp> = None;
        for i in 1..=3 {
            // Measure the rotation, not the minimum interval (the controller enforces it itself).
            if let Some(last) = last_rotation {
                let allowed = last + jiff::SignedDuration::from_millis(1100);
                let wait = Duration::try_from(allowed.duration_since(jiff::Timestamp::now()))
                    .unwrap_or_default();
                tokio::time::sleep(wait).await;
            }
            let request = format!("{strategy}-{i}");
            let started = Instant::now();
            request_rotation(&g, &c, &request).await;
            let new_version = poll(
                "the new AWSCURRENT in the Kubernetes Secret",
                Duration::from_secs(60),
                Duration::from_millis(20),
                || async { synced_version(&g, &c).await.filter(|v| *v != version) },
            )
            .await;
            times.push(started.elapsed());
            let s = wait_rotated(&g, &c, &request).await;

            // Exactly one rotation, from the previous AWSCURRENT, with the deterministic token.
            let (current_version, current) = g.current(&c.secret).await;
            assert_eq!(current_version, new_version);
            assert_eq!(
                current_version,
                rotation::client_request_token(&uid, &version),
                "{strategy} rotation {i}"
            );
            assert_eq!(
                meta(&g, &c).await.previous_version(),
                Some(version.as_str())
            );
            assert!(
                logs_in(&server, &current).await,
                "{strategy} rotation {i}: AWSCURRENT logs in"
            );
            let secret = g.k8s_secret(&c.ns, &c.name).await.unwrap();
            assert_eq!(
                secret_key(&secret, "username").as_deref(),
                Some(current.username.as_str())
            );
            assert_eq!(
                secret_key(&secret, "password").as_deref(),
                Some(current.password.expose())
            );

            // Status: last and next rotation, strategy, current user.
            let last: jiff::Timestamp = s
                .last_rotation_time
                .as_deref()
                .expect("lastRotationTime")
                .parse()
                .unwrap();
            let next: jiff::Timestamp = s
                .next_rotation_time
                .as_deref()
                .expect("nextRotationTime with a schedule")
                .parse()
                .unwrap();
            assert!(last_rotation.is_none_or(|prev| last > prev));
            assert!(
                next > last + jiff::SignedDuration::from_hours(24 * 29),
                "next {next} vs last {last}"
            );
            assert_eq!(s.strategy.as_deref(), Some(strategy));
            assert_eq!(
                s.current_username.as_deref(),
                Some(current.username.as_str())
            );
            assert!(
                has_condition(&s, "Rotating", "False", "Succeeded"),
                "{:?}",
                s.conditions
            );
            if strategy == "alternating-users" {
                assert_ne!(
                    current.username, value.username,
                    "alternating flips the user"
                );
                assert!(
                    logs_in(&server, &value).await,
                    "the previous credential keeps working"
                );
            } else {
                assert_eq!(current.username, c.user);
                assert!(
                    !logs_in(&server, &value).await,
                    "single-user: the old password is gone"
                );
            }
            (version, value, last_rotation) = (current_version, current, Some(last));
        }
        drop_users(&server, &c).await;
    }
    eprintln!(
        "median rotation time {:?} (annotation -> new AWSCURRENT in the Kubernetes Secret): {:?} over {} rotations {times:?}",
        server.engine,
        median(times.clone()),
        times.len()
    );
}

#[tokio::test]
async fn postgres_rotations_in_a_row() {
    rotations_in_a_row(DbServer::postgres()).await;
}

#[tokio::test]
async fn mariadb_rotations_in_a_row() {
    rotations_in_a_row(DbServer::mariadb()).await;
}

// ------------------------------------------------------------------ zero downtime

/// How long the emulated Deployment controller takes to report a rollout complete. Longer
/// than any simulated pod's restart: Kubernetes reports a rollout complete only once the new
/// pods are up (and the old ones gone).
pub(crate) const ROLLOUT: Duration = Duration::from_millis(2200);
/// Restart delays of the simulated pods (scheduling, image pull, start-up). Longer than the
/// minimum interval between rotations (1s here), so only waiting for the rollouts keeps the
/// next alternating rotation from re-passwording the user old pods still run with.
pub(crate) const POD_RESTARTS: [(&str, Duration); 3] = [
    ("api", Duration::from_millis(1000)),
    ("api", Duration::from_millis(1400)),
    ("worker", Duration::from_millis(1800)),
];
const LOGIN_EVERY: Duration = Duration::from_millis(40);

/// A Deployment whose pods read the Secret `secret` (env and envFrom).
pub(crate) async fn deployment(g: &Ground, ns: &str, name: &str, secret: &str, replicas: i32) {
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name, "namespace": ns },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{
                    "name": "app", "image": "app:1",
                    "env": [{ "name": "DB_PASSWORD", "valueFrom": { "secretKeyRef": { "name": secret, "key": "password" } } }],
                    "envFrom": [{ "secretRef": { "name": secret } }],
                }]},
            },
        },
    }))
    .unwrap();
    Api::<Deployment>::namespaced(g.client.clone(), ns)
        .create(&PostParams::default(), &d)
        .await
        .expect("create Deployment");
}

#[derive(Default)]
pub(crate) struct PodStats {
    pub(crate) ok: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) restarts: AtomicU64,
    /// The AWSCURRENT version the pod started with.
    pub(crate) version: Mutex<String>,
}

/// A simulated pod of Deployment `deploy`: reads the Secret when it starts and keeps those
/// values; logs in (a real login) every LOGIN_EVERY; when the Deployment's pod template
/// changes (a rollout), it keeps running on the old values for `restart` (the replacement
/// pod starting) and then "restarts": re-reads the Secret.
pub(crate) struct Pod {
    pub(crate) client: Client,
    pub(crate) target: ConnectTarget,
    pub(crate) ns: String,
    pub(crate) deploy: String,
    pub(crate) secret: String,
    pub(crate) restart: Duration,
}

pub(crate) async fn run_pod(pod: Pod, stats: Arc<PodStats>, stop: Arc<AtomicBool>) {
    let Pod {
        client,
        target,
        ns,
        deploy,
        secret,
        restart,
    } = pod;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client, &ns);
    let template = async || -> BTreeMap<String, String> {
        let d = deployments.get(&deploy).await.expect("Deployment");
        d.spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .unwrap_or_default()
    };
    let start = async || -> Login {
        let s = secrets.get(&secret).await.expect("Secret");
        *stats.version.lock().unwrap() = s
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SYNCED_VERSION))
            .cloned()
            .unwrap_or_default();
        Login {
            username: secret_key(&s, "username").unwrap(),
            password: SecretString::new(secret_key(&s, "password").unwrap()),
        }
    };
    let mut running = template().await;
    let mut login = start().await;
    let mut restart_at: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        match engine::check_login(&target, &login).await {
            Ok(()) => stats.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => stats.failed.fetch_add(1, Ordering::Relaxed),
        };
        if restart_at.is_none() {
            let now = template().await;
            if now != running {
                running = now;
                restart_at = Some(Instant::now() + restart);
            }
        }
        if restart_at.is_some_and(|at| Instant::now() >= at) {
            login = start().await;
            stats.restarts.fetch_add(1, Ordering::Relaxed);
            restart_at = None;
        }
        tokio::time::sleep(LOGIN_EVERY).await;
    }
}

/// Three back-to-back rotations (each requested as soon as the previous one reached the
/// Secret) while three simulated pods of two Deployments log in. Returns (ok, failed) logins.
async fn rotations_under_load(
    g: &Ground,
    server: &DbServer,
    db: &(String, String),
    strategy: &str,
) -> (u64, u64) {
    let ns = admitted_namespace(g).await;
    let c = new_cred(
        g,
        server,
        db,
        &ns,
        "app",
        json!({ "strategy": strategy, "minimumInterval": "1s" }),
        json!({}),
    )
    .await;
    deployment(g, &ns, "api", "app", 2).await;
    deployment(g, &ns, "worker", "app", 1).await;
    let stop = Arc::new(AtomicBool::new(false));
    let pods: Vec<(Arc<PodStats>, tokio::task::JoinHandle<()>)> = POD_RESTARTS
        .iter()
        .map(|(deploy, restart)| {
            let stats = Arc::new(PodStats::default());
            let pod = Pod {
                client: g.client.clone(),
                target: server.target(),
                ns: ns.clone(),
                deploy: deploy.to_string(),
                secret: "app".into(),
                restart: *restart,
            };
            let task = tokio::spawn(run_pod(pod, stats.clone(), stop.clone()));
            (stats, task)
        })
        .collect();
    let total = |f: fn(&PodStats) -> &AtomicU64| {
        pods.iter()
            .map(|(s, _)| f(s).load(Ordering::Relaxed))
            .sum::<u64>()
    };
    wait_for("pods logging in", Duration::from_secs(30), || async {
        pods.iter()
            .all(|(s, _)| s.ok.load(Ordering::Relaxed) >= 3)
            .then_some(())
    })
    .await;

    let mut version = synced_version(g, &c).await.unwrap();
    for i in 1..=3 {
        request_rotation(g, &c, &format!("{strategy}-{i}")).await;
        version = wait_for(
            "rotation reaches the Secret",
            Duration::from_secs(60),
            || async { synced_version(g, &c).await.filter(|v| *v != version) },
        )
        .await;
    }
    // Every pod restarted onto the last version, then logged in a while longer with it.
    wait_for(
        "pods on the last version",
        Duration::from_secs(30),
        || async {
            pods.iter()
                .all(|(s, _)| *s.version.lock().unwrap() == version)
                .then_some(())
        },
    )
    .await;
    let ok_then = total(|s| &s.ok);
    wait_for("more logins", Duration::from_secs(30), || async {
        (total(|s| &s.ok) >= ok_then + 9).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for (_, task) in &pods {
        task.abort();
    }
    let (ok, failed, restarts) = (
        total(|s| &s.ok),
        total(|s| &s.failed),
        total(|s| &s.restarts),
    );
    eprintln!(
        "{:?} {strategy}: 3 rotations, {} pods, {restarts} restarts: {ok} logins ok, {failed} failed",
        server.engine,
        pods.len()
    );
    assert!(
        restarts >= pods.len() as u64,
        "every pod was restarted by the rollouts"
    );
    drop_users(server, &c).await;
    (ok, failed)
}

async fn zero_downtime(server: DbServer) {
    let mut g = Ground::stale().await;
    g.stepped_rollouts(ROLLOUT);
    g.start().await;
    let db = g.database(&server, json!({})).await;
    let ((alt_ok, alt_failed), (single_ok, single_failed)) = tokio::join!(
        rotations_under_load(&g, &server, &db, "alternating-users"),
        rotations_under_load(&g, &server, &db, "single-user")
    );
    eprintln!(
        "failed logins {:?}: alternating-users {alt_failed} of {}, single-user {single_failed} of {}",
        server.engine,
        alt_ok + alt_failed,
        single_ok + single_failed
    );
    assert_eq!(alt_failed, 0, "alternating-users: zero failed logins");
    assert!(alt_ok > 0 && single_ok > 0);
}

#[tokio::test]
async fn postgres_zero_failed_logins_alternating() {
    zero_downtime(DbServer::postgres()).await;
}

#[tokio::test]
async fn mariadb_zero_failed_logins_alternating() {
    zero_downtime(DbServer::mariadb()).await;
}

// ------------------------------------------------------------------ crash and resume

/// The controller dies right after `step` of an annotation-triggered rotation; a new one
/// starts. The rotation is finished exactly once (no second rotation for the same request),
/// recorded, synced, and AWSCURRENT logs in.
async fn crash_after(server: DbServer, strategy: &str, step: Step) {
    let mut g = Ground::stale().await;
    let crash = Arc::new(CrashPoint::hang(step));
    g.start_with(Settings {
        crash_point: Some(crash.clone()),
        ..g.settings()
    })
    .await;
    let ns = admitted_namespace(&g).await;
    let db = g.database(&server, json!({})).await;
    let c = new_cred(
        &g,
        &server,
        &db,
        &ns,
        "crash",
        json!({ "strategy": strategy, "minimumInterval": "1s" }),
        json!({}),
    )
    .await;
    let uid = uid(&g, &c).await;
    let (v0, cur0) = g.current(&c.secret).await;
    request_rotation(&g, &c, "once").await;
    tokio::time::timeout(Duration::from_secs(60), crash.reached.notified())
        .await
        .unwrap_or_else(|_| panic!("{step} never completed"));
    g.crash();

    g.start().await;
    let s = wait_rotated(&g, &c, "once").await;
    let expected = rotation::client_request_token(&uid, &v0);
    let (version, current) = g.current(&c.secret).await;
    assert_eq!(
        version, expected,
        "{strategy} after {step}: the interrupted rotation, finished once"
    );
    assert_eq!(meta(&g, &c).await.previous_version(), Some(v0.as_str()));
    assert!(logs_in(&server, &current).await, "AWSCURRENT logs in");
    assert!(s.last_rotation_time.is_some());
    assert_eq!(
        s.current_username.as_deref(),
        Some(current.username.as_str())
    );
    match strategy {
        "alternating-users" => {
            assert_ne!(current.username, cur0.username);
            assert!(
                logs_in(&server, &cur0).await,
                "the previous user keeps working"
            );
        }
        _ => assert_eq!(current.username, cur0.username),
    }
    if step != Step::FinishSecret {
        assert!(
            !events(&g, &ns, "RotationResumed").await.is_empty(),
            "a RotationResumed Event"
        );
    }
    drop_users(&server, &c).await;
}

#[tokio::test]
async fn crash_after_create_secret_alternating_postgres() {
    crash_after(
        DbServer::postgres(),
        "alternating-users",
        Step::CreateSecret,
    )
    .await;
}

#[tokio::test]
async fn crash_after_set_secret_alternating_mariadb() {
    crash_after(DbServer::mariadb(), "alternating-users", Step::SetSecret).await;
}

#[tokio::test]
async fn crash_after_test_secret_alternating_postgres() {
    crash_after(DbServer::postgres(), "alternating-users", Step::TestSecret).await;
}

#[tokio::test]
async fn crash_after_finish_secret_alternating_mariadb() {
    crash_after(DbServer::mariadb(), "alternating-users", Step::FinishSecret).await;
}

#[tokio::test]
async fn crash_after_create_secret_single_user_mariadb() {
    crash_after(DbServer::mariadb(), "single-user", Step::CreateSecret).await;
}

#[tokio::test]
async fn crash_after_set_secret_single_user_postgres() {
    crash_after(DbServer::postgres(), "single-user", Step::SetSecret).await;
}

#[tokio::test]
async fn crash_after_test_secret_single_user_mariadb() {
    crash_after(DbServer::mariadb(), "single-user", Step::TestSecret).await;
}

#[tokio::test]
async fn crash_after_finish_secret_single_user_postgres() {
    crash_after(DbServer::postgres(), "single-user", Step::FinishSecret).await;
}

// ------------------------------------------------------------------ testSecret failure

/// single-user: between setSecret and testSecret someone changes the password again, so
/// AWSPENDING cannot log in. The controller puts AWSCURRENT's password back, reports the
/// failure (condition + Event with step and cause) and retries later, successfully.
#[tokio::test]
async fn single_user_test_secret_failure_restores_awscurrent_and_retries() {
    let server = DbServer::postgres();
    let mut g = Ground::stale().await;
    let pause = Arc::new(CrashPoint::pause(Step::SetSecret));
    g.start_with(Settings {
        crash_point: Some(pause.clone()),
        ..g.settings()
    })
    .await;
    let ns = admitted_namespace(&g).await;
    let db = g.database(&server, json!({})).await;
    let c = new_cred(
        &g,
        &server,
        &db,
        &ns,
        "fails",
        json!({ "strategy": "single-user", "minimumInterval": "1s" }),
        json!({}),
    )
    .await;
    let (v0, cur0) = g.current(&c.secret).await;
    request_rotation(&g, &c, "r1").await;

    tokio::time::timeout(Duration::from_secs(60), pause.reached.notified())
        .await
        .expect("setSecret ran");
    assert!(
        !logs_in(&server, &cur0).await,
        "after setSecret the database has the pending password"
    );
    scramble_password(&server, &c.user).await;
    pause.proceed.notify_one();

    let s = g
        .wait_condition(&ns, "fails", "Rotating", "False", Duration::from_secs(30))
        .await
        .status
        .unwrap();
    let s = if has_condition(&s, "Rotating", "False", "RotationTestFailedRolledBack") {
        s
    } else {
        wait_for(
            "Rotating=False RotationTestFailedRolledBack",
            Duration::from_secs(30),
            || async {
                let s = status(&g, &c).await;
                has_condition(&s, "Rotating", "False", "RotationTestFailedRolledBack").then_some(s)
            },
        )
        .await
    };
    assert!(
        condition(&s, "Rotating")
            .unwrap()
            .message
            .contains("testSecret"),
        "{:?}",
        condition(&s, "Rotating")
    );
    let m = meta(&g, &c).await;
    assert_eq!(
        m.current_version(),
        Some(v0.as_str()),
        "AWSCURRENT did not move"
    );
    assert_eq!(m.pending_version(), None, "AWSPENDING removed");
    assert!(
        logs_in(&server, &cur0).await,
        "the database is back on AWSCURRENT's password"
    );
    assert_eq!(synced_version(&g, &c).await.as_deref(), Some(v0.as_str()));
    let notes = wait_for("RotationFailed Event", Duration::from_secs(10), || async {
        let n = events(&g, &ns, "RotationFailed").await;
        (!n.is_empty()).then_some(n)
    })
    .await;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("testSecret") && n.contains("does not log in")),
        "{notes:?}"
    );

    // The retry (backoff) runs the rotation again; this time nobody interferes.
    tokio::time::timeout(Duration::from_secs(60), pause.reached.notified())
        .await
        .expect("retried");
    pause.proceed.notify_one();
    let s = wait_rotated(&g, &c, "r1").await;
    let (version, current) = g.current(&c.secret).await;
    assert_ne!(version, v0);
    assert!(logs_in(&server, &current).await);
    assert!(has_condition(&s, "Rotating", "False", "Succeeded"));
    drop_users(&server, &c).await;
}

// ------------------------------------------------------------------ drift

/// The password is changed directly in the database. With `report`: Drifted=True, an Event,
/// `rdscred_drifted` = 1, and AWSCURRENT stays broken. Switched to `repair`: fixed.
async fn drift(server: DbServer) {
    let mut g = Ground::stale().await;
    g.start().await;
    let ns = admitted_namespace(&g).await;
    let db = g.database(&server, json!({})).await;
    let c = new_cred(
        &g,
        &server,
        &db,
        &ns,
        "drifty",
        serde_json::Value::Null,
        json!({ "drift": { "policy": "report", "interval": "1s" } }),
    )
    .await;
    let (_, current) = g.current(&c.secret).await;
    let gauge = |text: &str| -> Option<String> {
        text.lines()
            .find(|l| {
                l.starts_with("rdscred_drifted{")
                    && l.contains(&format!("namespace=\"{ns}\""))
                    && l.contains("name=\"drifty\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_owned)
    };
    assert_eq!(gauge(&g.metrics.encode()).as_deref(), Some("0"));

    scramble_password(&server, &c.user).await;
    let s = g
        .wait_condition(&ns, "drifty", "Drifted", "True", Duration::from_secs(30))
        .await
        .status
        .unwrap();
    assert_eq!(condition(&s, "Drifted").unwrap().reason, "PasswordChanged");
    assert!(
        !events(&g, &ns, "DriftDetected").await.is_empty(),
        "DriftDetected Event"
    );
    assert_eq!(gauge(&g.metrics.encode()).as_deref(), Some("1"));
    assert!(
        !logs_in(&server, &current).await,
        "report only: nothing repaired"
    );

    patch_spec(&g, &c, json!({ "drift": { "policy": "repair" } })).await;
    g.wait_condition(&ns, "drifty", "Drifted", "False", Duration::from_secs(30))
        .await;
    g.wait_ready(&ns, "drifty").await;
    assert!(
        logs_in(&server, &current).await,
        "repaired: AWSCURRENT logs in again"
    );
    assert!(
        !events(&g, &ns, "DriftRepaired").await.is_empty(),
        "DriftRepaired Event"
    );
    assert_eq!(gauge(&g.metrics.encode()).as_deref(), Some("0"));
    drop_users(&server, &c).await;
}

#[tokio::test]
async fn postgres_drift_reported_then_repaired() {
    drift(DbServer::postgres()).await;
}

#[tokio::test]
async fn mariadb_drift_reported_then_repaired() {
    drift(DbServer::mariadb()).await;
}

// ------------------------------------------------------------------ rotator: lambda

/// Native rotation is configured as the spec says (and kept in sync), the stale AWSPENDING copy
/// moto's RotateSecret leaves is never treated as ours, an AWSCURRENT change made by "the
/// Lambda" reaches the Kubernetes Secret, and switching back to the controller turns native
/// rotation off and rotates normally.
#[tokio::test]
async fn lambda_rotator_configured_followed_and_turned_off() {
    let server = DbServer::postgres();
    let mut g = Ground::stale().await;
    g.start().await;
    let ns = admitted_namespace(&g).await;
    let db = g.database(&server, json!({})).await;
    let lambda = crate::aws::moto_lambda_function(&unique("rdscred-e2e-rotator"));
    let rotation = json!({ "rotator": "lambda", "lambdaArn": lambda, "schedule": { "automaticallyAfterDays": 7 }, "minimumInterval": "1s" });
    let c = new_cred(&g, &server, &db, &ns, "lam", rotation, json!({})).await;
    let (v1, cur1) = g.current(&c.secret).await;

    let m = wait_for("native rotation on", Duration::from_secs(30), || async {
        Some(meta(&g, &c).await).filter(|m| m.rotation_enabled)
    })
    .await;
    assert_eq!(m.rotation_lambda_arn.as_deref(), Some(lambda.as_str()));
    assert_eq!(
        m.rotation_rules
            .as_ref()
            .and_then(|r| r.automatically_after_days),
        Some(7)
    );
    assert_eq!(
        m.current_version(),
        Some(v1.as_str()),
        "configuring does not rotate"
    );

    // moto's RotateSecret leaves an AWSPENDING copy of AWSCURRENT behind: it is the Lambda's.
    let s = g.wait_ready(&ns, "lam").await.status.unwrap();
    assert!(
        condition(&s, "Rotating").is_none(),
        "no controller rotation: {:?}",
        condition(&s, "Rotating")
    );
    assert!(events(&g, &ns, "RotationResumed").await.is_empty());
    assert_eq!(meta(&g, &c).await.current_version(), Some(v1.as_str()));

    // The Lambda rotates: setSecret in the database, then AWSCURRENT moves.
    let mut next = cur1.clone();
    next.password = generate_password(&PasswordSpec::default(), server.engine).unwrap();
    let token = format!("{:0>32}", unique("lambda"));
    g.scope
        .secrets
        .put_pending(&m.arn, &token, &next.to_secret_json())
        .await
        .unwrap();
    let mut admin = Admin::connect(&server.target(), &server.admin)
        .await
        .unwrap();
    admin
        .set_password(&next.username, &next.password)
        .await
        .unwrap();
    admin.close().await;
    g.scope
        .secrets
        .move_stage(&m.arn, AWSCURRENT, &token, Some(&v1))
        .await
        .unwrap();
    if let Some(pending) = meta(&g, &c).await.pending_version() {
        g.scope
            .secrets
            .remove_stage(&m.arn, AWSPENDING, pending)
            .await
            .unwrap();
    }
    wait_for(
        "the Lambda's AWSCURRENT synced",
        Duration::from_secs(30),
        || async { (synced_version(&g, &c).await? == token).then_some(()) },
    )
    .await;
    let secret = g.k8s_secret(&ns, "lam").await.unwrap();
    assert_eq!(
        secret_key(&secret, "password").as_deref(),
        Some(next.password.expose())
    );
    assert!(logs_in(&server, &next).await);

    // The spec changes: the rules follow (moto leaves another AWSPENDING copy, of the new
    // AWSCURRENT, which the controller must not take for an interrupted rotation of its own).
    patch_spec(
        &g,
        &c,
        json!({ "rotation": { "schedule": { "automaticallyAfterDays": 14 } } }),
    )
    .await;
    wait_for("rules follow the spec", Duration::from_secs(30), || async {
        let m = meta(&g, &c).await;
        (m.rotation_rules
            .as_ref()
            .and_then(|r| r.automatically_after_days)
            == Some(14))
        .then_some(())
    })
    .await;
    let stale_pending = meta(&g, &c).await.pending_version().map(str::to_owned);
    eprintln!("AWSPENDING left by moto's RotateSecret: {stale_pending:?}");

    // Back to the controller: native rotation off, and the controller rotates.
    patch_spec(
        &g,
        &c,
        json!({ "rotation": { "rotator": "controller", "lambdaArn": null } }),
    )
    .await;
    wait_for("native rotation off", Duration::from_secs(30), || async {
        (!meta(&g, &c).await.rotation_enabled).then_some(())
    })
    .await;
    g.wait_ready(&ns, "lam").await;
    assert_eq!(
        meta(&g, &c).await.current_version(),
        Some(token.as_str()),
        "the Lambda's stale AWSPENDING was not finished as ours"
    );
    request_rotation(&g, &c, "controller").await;
    wait_rotated(&g, &c, "controller").await;
    let (version, current) = g.current(&c.secret).await;
    assert_eq!(
        version,
        rotation::client_request_token(&uid(&g, &c).await, &token)
    );
    assert!(logs_in(&server, &current).await);
    assert_eq!(
        meta(&g, &c).await.version_with_stage(AWSPREVIOUS),
        Some(token.as_str())
    );
    drop_users(&server, &c).await;
}

// ------------------------------------------------------------------ bounded concurrency

/// `max_concurrent_rotations: 1` and four credentials asked to rotate at once. The first
/// rotation is held after setSecret: the others must report `Queued` and have nothing pending,
/// and a second request for the held credential must not start a second rotation of it. Then
/// everything proceeds; an outside observer polling Secrets Manager never sees two rotations
/// (AWSPENDING) at the same time.
#[tokio::test]
async fn rotations_are_bounded_and_never_overlap() {
    let server = DbServer::postgres();
    let mut g = Ground::stale().await;
    let pause = Arc::new(CrashPoint::pause(Step::SetSecret));
    g.start_with(Settings {
        max_concurrent_rotations: 1,
        crash_point: Some(pause.clone()),
        ..g.settings()
    })
    .await;
    let ns = admitted_namespace(&g).await;
    let db = g.database(&server, json!({})).await;
    let mut creds = Vec::new();
    for i in 0..4 {
        creds.push(
            new_cred(
                &g,
                &server,
                &db,
                &ns,
                &format!("c{i}"),
                json!({ "strategy": "alternating-users", "minimumInterval": "1s" }),
                json!({}),
            )
            .await,
        );
    }
    let mut start = Vec::new();
    for c in &creds {
        start.push((uid(&g, c).await, g.current(&c.secret).await.0));
    }

    // The observer: how many credentials have a rotation in flight (AWSPENDING) at once.
    let stop = Arc::new(AtomicBool::new(false));
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let observer = tokio::spawn({
        let (scope, names, stop, max) = (
            g.scope.clone(),
            creds.iter().map(|c| c.secret.clone()).collect::<Vec<_>>(),
            stop.clone(),
            max_in_flight.clone(),
        );
        async move {
            while !stop.load(Ordering::Relaxed) {
                let mut in_flight = 0;
                for n in &names {
                    if scope
                        .secrets
                        .describe(n)
                        .await
                        .unwrap()
                        .unwrap()
                        .pending_version()
                        .is_some()
                    {
                        in_flight += 1;
                    }
                }
                max.fetch_max(in_flight, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });

    for c in &creds {
        request_rotation(&g, c, "r1").await;
    }
    tokio::time::timeout(Duration::from_secs(60), pause.reached.notified())
        .await
        .expect("a rotation ran");
    let mut held = None;
    for (i, c) in creds.iter().enumerate() {
        if meta(&g, c).await.pending_version().is_some() {
            assert!(held.replace(i).is_none(), "two rotations in flight");
        }
    }
    let held = held.expect("the held rotation has AWSPENDING");
    for (i, c) in creds.iter().enumerate().filter(|(i, _)| *i != held) {
        wait_for(&format!("c{i} Queued"), Duration::from_secs(30), || async {
            has_condition(&status(&g, c).await, "Rotating", "False", "Queued").then_some(())
        })
        .await;
        assert_eq!(meta(&g, c).await.pending_version(), None);
    }
    // A second request for the held credential while its rotation runs.
    request_rotation(&g, &creds[held], "r2").await;
    let m = meta(&g, &creds[held]).await;
    assert_eq!(
        m.versions.len(),
        2,
        "one pending version, no second rotation: {:?}",
        m.versions
    );

    // Let everything go (every later rotation passes the same pause).
    pause.proceed.notify_one();
    let releaser = tokio::spawn({
        let pause = pause.clone();
        async move {
            loop {
                pause.reached.notified().await;
                pause.proceed.notify_one();
            }
        }
    });
    for (i, c) in creds.iter().enumerate() {
        let request = if i == held { "r2" } else { "r1" };
        wait_rotated(&g, c, request).await;
        let (uid, v0) = &start[i];
        let once = rotation::client_request_token(uid, v0);
        let expected = if i == held {
            rotation::client_request_token(uid, &once)
        } else {
            once
        };
        assert_eq!(
            g.current(&c.secret).await.0,
            expected,
            "c{i}: rotations one after another from each AWSCURRENT"
        );
    }
    stop.store(true, Ordering::Relaxed);
    observer.await.unwrap();
    releaser.abort();
    let max = max_in_flight.load(Ordering::Relaxed);
    eprintln!("max rotations in flight with max_concurrent_rotations=1: {max}");
    assert_eq!(max, 1, "rotations overlapped");
    for c in &creds {
        drop_users(&server, c).await;
    }
}

// ------------------------------------------------------------------ rollout timeout

/// alternating-users: a dependent Deployment never finishes rolling out (no Deployment
/// controller here). Past `rolloutTimeout` the next rotation is still held (old pods may be the
/// only ones serving), and the timeout is reported: condition reason and a Warning Event.
#[tokio::test]
async fn stuck_rollout_holds_the_next_alternating_rotation_and_is_reported() {
    let server = DbServer::mariadb();
    let mut g = Ground::stale().await;
    g.start().await;
    let ns = admitted_namespace(&g).await;
    let db = g.database(&server, json!({})).await;
    let c = new_cred(
        &g,
        &server,
        &db,
        &ns,
        "app",
        json!({ "minimumInterval": "1s", "rolloutTimeout": "1s" }),
        json!({}),
    )
    .await;
    deployment(&g, &ns, "api", "app", 1).await;
    request_rotation(&g, &c, "r1").await;
    let s = wait_rotated(&g, &c, "r1").await;
    assert_eq!(s.rolled_workloads.len(), 1, "{:?}", s.rolled_workloads);
    let (v1, _) = g.current(&c.secret).await;
    let previous = g
        .scope
        .secrets
        .get_value(&c.secret, rdscred::aws::VersionSelector::Stage(AWSPREVIOUS))
        .await
        .unwrap()
        .unwrap();
    let previous = RdsSecretValue::parse(previous.value.expose()).unwrap();

    request_rotation(&g, &c, "r2").await;
    let s = wait_for(
        "Rotating=False RolloutTimedOut",
        Duration::from_secs(60),
        || async {
            let s = status(&g, &c).await;
            has_condition(&s, "Rotating", "False", "RolloutTimedOut").then_some(s)
        },
    )
    .await;
    assert!(condition(&s, "Rotating").unwrap().message.contains("api"));
    let notes = events(&g, &ns, "RolloutTimedOut").await;
    assert_eq!(
        notes.len(),
        1,
        "one Warning Event, not one per reconcile: {notes:?}"
    );
    assert_eq!(
        meta(&g, &c).await.current_version(),
        Some(v1.as_str()),
        "no rotation while the rollout is stuck"
    );
    assert!(
        logs_in(&server, &previous).await,
        "the user old pods run with keeps its password"
    );
    // kstatus: the credential works (Ready) and the due rotation is work in progress that
    // ends by itself (Reconciling, with the reason and the workload), not Stalled.
    let s = status(&g, &c).await;
    assert!(has_condition(&s, "Ready", "True", "Ready"), "{s:?}");
    assert!(
        has_condition(&s, "Reconciling", "True", "RolloutTimedOut"),
        "{s:?}"
    );
    assert!(
        condition(&s, "Reconciling")
            .unwrap()
            .message
            .contains("api")
    );
    assert!(has_condition(&s, "Stalled", "False", "Ready"), "{s:?}");

    // The Deployment controller finishes at last (status written as it would write it): the
    // held rotation runs, and nothing is in progress any more.
    let deployments = Api::<Deployment>::namespaced(g.client.clone(), &ns);
    let d = deployments.get("api").await.unwrap();
    deployments
        .patch_status(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": {
                "observedGeneration": d.metadata.generation,
                "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
            }})),
        )
        .await
        .unwrap();
    let s = wait_rotated(&g, &c, "r2").await;
    let s = if has_condition(&s, "Reconciling", "False", "Ready") {
        s
    } else {
        wait_for(
            "Reconciling=False after the held rotation ran",
            Duration::from_secs(60),
            || async {
                let s = status(&g, &c).await;
                has_condition(&s, "Reconciling", "False", "Ready").then_some(s)
            },
        )
        .await
    };
    assert!(has_condition(&s, "Ready", "True", "Ready"), "{s:?}");
    drop_users(&server, &c).await;
}
