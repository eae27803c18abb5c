//! The runtime as users run it: the real `rdscred run` binary (one or two processes) against
//! the Kubernetes API emulator served on loopback, moto and PostgreSQL.
//!
//! - Leader election between two controller processes: only the Lease holder reconciles
//!   (its Events and its `rdscred_reconciles_total`, never the standby's); SIGKILL of the
//!   leader hands over after the lease expires; SIGTERM releases it for an immediate takeover.
//! - `/metrics` serves every series of docs/metrics.md (names, types, labels) after real
//!   reconciles and a rotation; `/healthz` and `/readyz` flip as documented.
//! - SIGTERM: not ready at once, in-flight reconciles finish, exit 0.
//! - Logs are JSON by default, with the credential's namespace/name on every reconcile line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use rdscred::crd::{RdsCredential, RdsDatabase};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::support::{DbServer, Ground, RELEASE_NAMESPACE, unique, wait_for};

const NS_LABEL: (&str, &str) = ("rdscred-test", "yes");
const LEASE: &str = "rdscred-leader";
pub(crate) const LEASE_DURATION: Duration = Duration::from_secs(4);
pub(crate) const RENEW_PERIOD: Duration = Duration::from_millis(500);
/// Process start-up, scheduling and request latency on a loaded 2-core machine.
pub(crate) const SLACK: Duration = Duration::from_secs(2);

// ------------------------------------------------------------------ one rdscred process

/// A running `rdscred run`, its stderr in a file. Killed (SIGKILL) when dropped, so a failing
/// test leaves no process behind.
pub(crate) struct Rdscred {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Rdscred {
    /// `rdscred run` with the test's AWS endpoint and short intervals, plus `extra` args.
    pub(crate) fn start(
        name: &str,
        dir: &Path,
        kubeconfig: &Path,
        g: &Ground,
        extra: &[&str],
    ) -> Rdscred {
        let endpoint = std::env::var("RDSCRED_TEST_AWS_ENDPOINT").expect("test ground is up");
        let mut args = vec![
            "--cluster-name",
            &g.cluster,
            "--aws-endpoint-url",
            &endpoint,
            "--poll-interval",
            "2s",
            "--drift-interval",
            "30s",
            "--min-rotation-interval",
            "1s",
        ];
        args.extend_from_slice(extra);
        Rdscred::spawn(name, dir, kubeconfig, &args)
    }

    /// `rdscred run --http-addr 127.0.0.1:0 ARGS` logging (JSON, info) to `dir/NAME.log`.
    pub(crate) fn spawn(name: &str, dir: &Path, kubeconfig: &Path, args: &[&str]) -> Rdscred {
        let log = dir.join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log).expect("create log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_rdscred"));
        // A heap profile of the controller alone (benches/scale.rs): heaptrack's preload
        // library and its raw output file, for this child only.
        if let Some(raw) = std::env::var_os("RDSCRED_HEAPTRACK_RAW") {
            command
                .env("LD_PRELOAD", "/usr/lib/heaptrack/libheaptrack_preload.so")
                .env("DUMP_HEAPTRACK_OUTPUT", raw);
        }
        let child = command
            .args(["run", "--http-addr", "127.0.0.1:0"])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .env_remove("RDSCRED_LOG_FORMAT")
            .env_remove("RDSCRED_WATCH_NAMESPACES")
            .env_remove("RDSCRED_LEADER_ELECT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start rdscred");
        Rdscred {
            name: name.into(),
            child,
            log,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every stderr line, each of which must be a JSON object (the default log format).
    fn json_lines(&self) -> Vec<Value> {
        self.logs()
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{}: log line is not JSON ({e}): {line}", self.name))
            })
            .collect()
    }

    /// Index of the first log line with this message (and `field == value` if given).
    fn line_index(&self, message: &str, field: Option<(&str, Value)>) -> Option<usize> {
        self.json_lines().iter().position(|l| {
            l["message"] == message && field.as_ref().is_none_or(|(k, v)| &l[*k] == v)
        })
    }

    /// The bound address of /metrics, /healthz and /readyz, from its log line.
    pub(crate) async fn http_addr(&self) -> SocketAddr {
        wait_for(
            &format!("{} serving HTTP", self.name),
            SLACK * 5,
            || async {
                self.logs().lines().find_map(|line| {
                    let line: Value = serde_json::from_str(line).ok()?;
                    (line["message"] == "serving /metrics, /healthz, /readyz")
                        .then(|| line["addr"].as_str()?.parse().ok())?
                })
            },
        )
        .await
    }

    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// Waits for the process to exit by itself.
    pub(crate) async fn exit_status(&mut self, timeout: Duration) -> ExitStatus {
        let name = self.name.clone();
        wait_for(&format!("{name} to exit"), timeout, || {
            let status = self.child.try_wait().expect("try_wait");
            async move { status }
        })
        .await
    }
}

impl Drop for Rdscred {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------ helpers

/// A fresh directory for the processes' logs and the kubeconfig; removed when the test
/// passes, kept (under target/tmp) for a failing one.
pub(crate) struct Workdir(PathBuf);

impl Workdir {
    pub(crate) fn new() -> Workdir {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique("runtime-"));
        std::fs::create_dir_all(&dir).expect("create workdir");
        Workdir(dir)
    }
}

impl std::ops::Deref for Workdir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("rdscred logs kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A kubeconfig for an API server at `url` (the emulator needs no credentials).
/// A kubeconfig for `url` whose user is the chart's ServiceAccount (`token`).
pub(crate) fn write_kubeconfig(dir: &Path, url: &str, token: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: emulator\n  cluster:\n    server: {url}\ncontexts:\n- name: emulator\n  context:\n    cluster: emulator\n    user: emulator\ncurrent-context: emulator\nusers:\n- name: emulator\n  user:\n    token: {token}\n"
    );
    std::fs::write(&path, yaml).expect("write kubeconfig");
    path
}

/// Minimal HTTP/1.1 GET: (status, body); `None` if nothing listens. Blocking std I/O on the
/// blocking pool keeps this free of an HTTP client dependency.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let response = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream =
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        stream.write_all(request.as_bytes()).ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        Some(response)
    })
    .await
    .expect("GET task")?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    Some((head.split(' ').nth(1)?.parse().ok()?, body.to_owned()))
}

async fn status_of(addr: SocketAddr, path: &str) -> u16 {
    get(addr, path)
        .await
        .unwrap_or_else(|| panic!("GET {path} on {addr}: no answer"))
        .0
}

pub(crate) async fn scrape(addr: SocketAddr) -> String {
    let (status, body) = get(addr, "/metrics").await.expect("scrape /metrics");
    assert_eq!(status, 200);
    body
}

/// Scrapes `addr` until `holds` is true of the text, for at most `SLACK * 5`. For counts of
/// work the status already shows: a reconcile is counted when it returns, a moment after its
/// status write.
pub(crate) async fn scrape_until(
    addr: SocketAddr,
    what: &str,
    holds: impl Fn(&str) -> bool,
) -> String {
    wait_for(what, SLACK * 5, || async {
        let m = scrape(addr).await;
        holds(&m).then_some(m)
    })
    .await
}

/// Value of the sample `series{labels}` (labels in exposition order, without braces; empty
/// for a series without labels).
pub(crate) fn sample(text: &str, series: &str, labels: &str) -> Option<f64> {
    let prefix = if labels.is_empty() {
        format!("{series} ")
    } else {
        format!("{series}{{{labels}}} ")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.parse().expect("numeric sample"))
}

/// Sum of every sample of `series` whose labels contain all of `labels`.
pub(crate) fn total(text: &str, series: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(series)?;
            let (labelset, value) = rest.rsplit_once(' ')?;
            (labelset.starts_with('{') || labelset.is_empty()).then_some(())?;
            labels
                .iter()
                .all(|want| labelset.contains(want))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

async fn lease_holder(client: &Client, ns: &str) -> Option<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt(LEASE)
        .await
        .expect("get lease")?;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

pub(crate) async fn wait_holder(client: &Client, ns: &str, who: &str, timeout: Duration) {
    wait_for(&format!("lease held by {who}"), timeout, || async {
        (lease_holder(client, ns).await.as_deref() == Some(who)).then_some(())
    })
    .await
}

/// An admitted namespace and a PostgreSQL credential `name` in it (with rotation configured).
async fn credential(g: &Ground, ns: &str, db: &str, prefix: &str, name: &str) {
    let server = DbServer::postgres();
    let user = unique("rt_");
    g.credential(
        ns,
        name,
        json!({
            "databaseRef": { "name": db }, "username": user,
            "privileges": [{ "database": server.database, "privileges": ["CONNECT"] }],
            "rotation": { "strategy": "alternating-users", "minimumInterval": "1s" },
            "secret": { "name": format!("{prefix}{user}") },
        }),
    )
    .await
    .expect("create credential");
}

/// Events in `ns` about the object named `name`: (reportingInstance, eventTime).
async fn events_about(client: &Client, ns: &str, name: &str) -> Vec<(String, jiff::Timestamp)> {
    let events = Api::<Event>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .expect("list events");
    events
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| {
            let at = e
                .event_time
                .map(|t| t.0)
                .or(e.metadata.creation_timestamp.map(|t| t.0))
                .expect("event has a time");
            (e.reporting_instance.unwrap_or_default(), at)
        })
        .collect()
}

// ------------------------------------------------------------------ tests

/// Two controller processes on one Lease: the holder acts, the standby does not; SIGKILL of
/// the leader hands over once the lease expires; SIGTERM releases it for an immediate takeover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_one_leader_crash_and_graceful_handover() {
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
    let lease_ns = RELEASE_NAMESPACE;
    let ns = unique("ns-");
    g.namespace(&ns, &[NS_LABEL]).await;
    let (db, prefix) = g.database(&DbServer::postgres(), json!({})).await;

    let lease_duration = format!("{}ms", LEASE_DURATION.as_millis());
    let renew = format!("{}ms", RENEW_PERIOD.as_millis());
    let elect = |identity: &'static str| {
        [
            "--leader-elect",
            "--leader-election-namespace",
            lease_ns,
            "--identity",
            identity,
            "--lease-duration",
            &lease_duration,
            "--lease-renew-period",
            &renew,
        ]
        .map(str::to_owned)
    };
    let start = |name: &'static str| {
        let args = elect(name);
        Rdscred::start(
            name,
            &dir,
            &kubeconfig,
            &g,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    };

    // A leads; B, started after, is a ready standby that reconciles nothing.
    let mut a = start("a");
    wait_holder(&g.client, lease_ns, "a", SLACK * 5).await;
    let b = start("b");
    let (a_http, b_http) = (a.http_addr().await, b.http_addr().await);
    wait_for("standby b ready", SLACK * 5, || async {
        (status_of(b_http, "/readyz").await == 200).then_some(())
    })
    .await;
    credential(&g, &ns, &db, &prefix, "one").await;
    g.wait_ready(&ns, "one").await;
    let a_metrics = scrape_until(a_http, "a's reconcile of one counted", |m| {
        total(m, "rdscred_reconciles_total", &[r#"kind="RdsCredential""#]) >= 1.0
    })
    .await;
    let b_metrics = scrape(b_http).await;
    assert_eq!(sample(&a_metrics, "rdscred_leader", ""), Some(1.0));
    assert_eq!(sample(&b_metrics, "rdscred_leader", ""), Some(0.0));
    assert!(
        total(
            &a_metrics,
            "rdscred_reconciles_total",
            &[r#"kind="RdsCredential""#]
        ) >= 1.0,
        "{a_metrics}"
    );
    assert_eq!(
        total(&b_metrics, "rdscred_reconciles_total", &[]),
        0.0,
        "the standby reconciled:\n{b_metrics}"
    );
    assert_eq!(
        lease_holder(&g.client, lease_ns).await.as_deref(),
        Some("a")
    );
    assert!(
        b.line_index("became leader", None).is_none(),
        "b led while a held the lease"
    );

    // SIGKILL the leader: B takes over once the lease expires (not before), then reconciles.
    a.signal("KILL");
    let killed = Instant::now();
    let killed_at = jiff::Timestamp::now();
    a.exit_status(SLACK).await;
    credential(&g, &ns, &db, &prefix, "two").await;
    wait_holder(
        &g.client,
        lease_ns,
        "b",
        LEASE_DURATION + RENEW_PERIOD + SLACK,
    )
    .await;
    let takeover = killed.elapsed();
    assert!(
        takeover >= LEASE_DURATION - RENEW_PERIOD * 2,
        "b took over {takeover:?} after the kill: before the lease expired"
    );
    g.wait_ready(&ns, "two").await;
    let b_metrics = scrape_until(b_http, "b's reconcile of two counted", |m| {
        total(m, "rdscred_reconciles_total", &[r#"kind="RdsCredential""#]) >= 1.0
    })
    .await;
    assert_eq!(sample(&b_metrics, "rdscred_leader", ""), Some(1.0));
    assert!(
        total(
            &b_metrics,
            "rdscred_reconciles_total",
            &[r#"kind="RdsCredential""#]
        ) >= 1.0,
        "{b_metrics}"
    );

    // Events name the acting instance: only A before the kill, only B after it.
    let one = events_about(&g.client, &ns, "one").await;
    assert!(
        one.iter().any(|(who, _)| who == "a"),
        "a published events about one: {one:?}"
    );
    let two = events_about(&g.client, &ns, "two").await;
    assert!(!two.is_empty(), "events about two");
    for (who, at) in one.iter().chain(&two) {
        match who.as_str() {
            "a" => assert!(*at <= killed_at, "event from a after it was killed"),
            "b" => assert!(*at >= killed_at, "event from b while a led"),
            other => panic!("event from unexpected instance {other:?}"),
        }
    }

    // SIGTERM: B drains, releases the lease and exits 0; C takes over at once (a renew
    // period), far sooner than the expiry B's last renewal would imply.
    let c = start("c");
    let c_http = c.http_addr().await;
    wait_for("standby c ready", SLACK * 5, || async {
        (status_of(c_http, "/readyz").await == 200).then_some(())
    })
    .await;
    let mut b = b;
    b.signal("TERM");
    let status = b.exit_status(SLACK * 5).await;
    assert!(status.success(), "b exited with {status}:\n{}", b.logs());
    let exited = Instant::now();
    wait_holder(&g.client, lease_ns, "c", RENEW_PERIOD + SLACK).await;
    assert!(
        exited.elapsed() < LEASE_DURATION - RENEW_PERIOD,
        "takeover waited for expiry, not the release"
    );
    let released = b
        .line_index("released leader lease", None)
        .expect("b released the lease");
    let unready = b
        .line_index("readiness changed", Some(("ready", json!(false))))
        .expect("b became unready");
    assert!(
        unready < released,
        "b must stop being ready before handing over"
    );
    wait_for("c leads", SLACK * 2, || async {
        (sample(&scrape(c_http).await, "rdscred_leader", "") == Some(1.0)).then_some(())
    })
    .await;
    drop(served);
}

/// One process watching two namespaces: /readyz is 503 until the caches synced, then 200;
/// credentials outside the watched namespaces are left alone; /metrics serves every
/// documented series with its labels after reconciles, a failure and a rotation; logs are
/// JSON with the credential on every reconcile line; SIGTERM lets an in-flight reconcile
/// finish while /readyz already says 503, then exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_logs_and_graceful_shutdown() {
    // A namespaced install watching two namespaces (one credential controller each), under
    // the chart's RBAC for exactly those.
    let (ns, ns2, unwatched) = (unique("ns-"), unique("ns-"), unique("ns-"));
    let mut g = Ground::namespaced(&[&ns, &ns2]).await;
    for namespace in [&ns, &ns2, &unwatched] {
        g.namespace(namespace, &[NS_LABEL]).await;
    }
    let token = g
        .controller_token()
        .await
        .expect("runs against the emulator");
    let emulator = g.emulator.as_ref().expect("runs against the emulator");
    // The API server's address, not served yet: the controller cannot sync its caches.
    let api_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let dir = Workdir::new();
    let kubeconfig = write_kubeconfig(&dir, &format!("http://{api_addr}"), &token);
    let mut p = Rdscred::start(
        "solo",
        &dir,
        &kubeconfig,
        &g,
        &["--watch-namespaces", &format!("{ns},{ns2}")],
    );
    let http = p.http_addr().await;
    assert_eq!(get(http, "/healthz").await, Some((200, "ok".into())));
    let (status, body) = get(http, "/readyz").await.expect("readyz answers");
    assert_eq!((status, body.as_str()), (503, "not ready: starting"));

    // The API server appears: ready once the watches listed (the watcher retries with backoff).
    let served = emulator
        .serve(api_addr)
        .await
        .expect("serve emulator on the reserved port");
    wait_for("ready after sync", Duration::from_secs(20), || async {
        (status_of(http, "/readyz").await == 200).then_some(())
    })
    .await;
    assert_eq!(status_of(http, "/healthz").await, 200);

    // A credential that provisions and rotates, one that fails (unknown database), and one
    // outside the watched namespaces.
    let (db, prefix) = g.database(&DbServer::postgres(), json!({})).await;
    credential(&g, &ns, &db, &prefix, "app").await;
    credential(&g, &ns2, "no-such-db", &prefix, "broken").await;
    credential(&g, &unwatched, &db, &prefix, "ignored").await;
    g.wait_ready(&ns, "app").await;
    let broken = g
        .wait_condition(&ns2, "broken", "Ready", "False", Duration::from_secs(30))
        .await;
    let broken_reason = broken
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .reason;
    let creds: Api<RdsCredential> = Api::namespaced(g.client.clone(), &ns);
    creds
        .patch("app", &PatchParams::default(), &Patch::Merge(json!({ "metadata": { "annotations": { "rdscred.io/rotate-requested-at": "now" } } })))
        .await
        .expect("request rotation");
    wait_for("rotation recorded", Duration::from_secs(60), || async {
        g.get_credential(&ns, "app")
            .await?
            .status?
            .last_rotation_time
            .map(drop)
    })
    .await;

    let ignored = g
        .get_credential(&unwatched, "ignored")
        .await
        .expect("ignored exists");
    assert!(
        ignored.status.is_none() && ignored.metadata.finalizers.is_none(),
        "a credential outside --watch-namespaces was reconciled"
    );

    // The status shows the rotation before the reconcile that wrote it has returned and been
    // counted: wait for that count too (the provisioning pass and the rotating one).
    let m = scrape_until(http, "rotation metrics", |m| {
        let series = format!(r#"namespace="{ns}",name="app""#);
        sample(m, "rdscred_seconds_since_last_rotation", &series).is_some()
            && total(
                m,
                "rdscred_reconciles_total",
                &[r#"kind="RdsCredential""#, r#"result="ok""#],
            ) >= 2.0
    })
    .await;
    documented_series_are_served(&m);
    let t = m.as_str();
    assert!(
        total(
            t,
            "rdscred_reconciles_total",
            &[r#"kind="RdsCredential""#, r#"result="ok""#]
        ) >= 2.0,
        "{t}"
    );
    assert!(
        total(
            t,
            "rdscred_reconciles_total",
            &[r#"kind="RdsDatabase""#, r#"result="ok""#]
        ) >= 1.0,
        "{t}"
    );
    assert!(
        total(
            t,
            "rdscred_reconciles_total",
            &[r#"kind="RdsCredential""#, r#"result="error""#]
        ) >= 1.0,
        "{t}"
    );
    let reason = format!(r#"reason="{broken_reason}""#);
    assert!(
        total(
            t,
            "rdscred_reconcile_errors_total",
            &[r#"kind="RdsCredential""#, &reason]
        ) >= 1.0,
        "errors by the Ready reason:\n{t}"
    );
    assert!(
        sample(
            t,
            "rdscred_reconcile_duration_seconds_count",
            r#"kind="RdsCredential""#
        )
        .unwrap_or(0.0)
            >= 3.0,
        "{t}"
    );
    assert!(
        sample(
            t,
            "rdscred_reconcile_duration_seconds_bucket",
            r#"le="+Inf",kind="RdsCredential""#
        )
        .is_some(),
        "{t}"
    );
    assert_eq!(
        sample(
            t,
            "rdscred_rotations_total",
            r#"strategy="alternating-users",result="success""#
        ),
        Some(1.0),
        "{t}"
    );
    assert_eq!(
        sample(
            t,
            "rdscred_rotation_duration_seconds_count",
            r#"strategy="alternating-users""#
        ),
        Some(1.0),
        "{t}"
    );
    let age = sample(
        t,
        "rdscred_seconds_since_last_rotation",
        &format!(r#"namespace="{ns}",name="app""#),
    )
    .unwrap();
    assert!(
        (0.0..60.0).contains(&age),
        "seconds since last rotation: {age}"
    );
    assert!(
        sample(t, "rdscred_credentials", r#"ready="True""#).unwrap() >= 1.0,
        "{t}"
    );
    assert!(
        sample(t, "rdscred_credentials", r#"ready="False""#).unwrap() >= 1.0,
        "{t}"
    );
    assert!(
        sample(t, "rdscred_credentials", r#"ready="Unknown""#).is_some(),
        "{t}"
    );
    for op in [
        "CreateSecret",
        "GetSecretValue",
        "PutSecretValue",
        "UpdateSecretVersionStage",
    ] {
        let labels = format!(r#"service="secretsmanager",operation="{op}",outcome="ok""#);
        assert!(
            sample(t, "rdscred_aws_api_calls_total", &labels).unwrap_or(0.0) >= 1.0,
            "{op} calls:\n{t}"
        );
    }
    assert!(
        sample(t, "rdscred_sync_lag_seconds_count", "").is_some(),
        "{t}"
    );
    assert!(
        sample(t, "rdscred_secret_syncs_total", r#"result="written""#).unwrap_or(0.0) >= 2.0,
        "{t}"
    );
    assert_eq!(
        sample(t, "rdscred_leader", ""),
        Some(1.0),
        "an instance without leader election acts"
    );

    // An RdsDatabase whose endpoint accepts connections and never answers: its reconcile
    // hangs in the login until the engine's connect timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("silent listener");
    let silent_port = silent.local_addr().unwrap().port();
    let (connected_tx, mut connected) = tokio::sync::mpsc::unbounded_channel();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
            let _ = connected_tx.send(());
        }
    });
    let (slow_db, _) = g
        .database(
            &DbServer::postgres(),
            json!({ "endpoint": { "host": "127.0.0.1", "port": silent_port } }),
        )
        .await;
    tokio::time::timeout(Duration::from_secs(30), connected.recv())
        .await
        .expect("the reconcile connects to the silent database");

    // SIGTERM mid-reconcile: not ready at once, the reconcile runs to its end (it writes the
    // status), then a clean exit.
    p.signal("TERM");
    // The signal is handled asynchronously: poll (bounded) until the process flips readiness,
    // and it must still be serving while it drains.
    let (status, body) = wait_for(
        "/readyz to report shutting down",
        Duration::from_secs(5),
        || async {
            let (status, body) = get(http, "/readyz")
                .await
                .expect("still serving while draining");
            (status == 503).then_some((status, body))
        },
    )
    .await;
    assert_eq!((status, body.as_str()), (503, "not ready: shutting down"));
    let exit = p
        .exit_status(rdscred::engine::CONNECT_TIMEOUT + SLACK * 5)
        .await;
    assert!(exit.success(), "exit status {exit}:\n{}", p.logs());
    let slow = Api::<RdsDatabase>::all(g.client.clone())
        .get(&slow_db)
        .await
        .expect("get database");
    let ready = slow
        .status
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"));
    assert_eq!(
        ready.map(|c| c.status).as_deref(),
        Some("False"),
        "the in-flight reconcile finished and wrote its status"
    );
    assert!(
        get(http, "/healthz").await.is_none(),
        "HTTP stopped with the process"
    );
    hold.abort();

    // Logs: JSON, in order, and every line of a credential reconcile names the credential.
    let lines = p.json_lines();
    let order = ["shutdown requested", "readiness changed", "stopped"].map(|m| {
        lines
            .iter()
            .rposition(|l| l["message"] == m)
            .unwrap_or_else(|| panic!("no {m:?} line"))
    });
    assert!(order.is_sorted(), "shutdown log order {order:?}");
    let mut ours = 0;
    for line in lines.iter().filter(|l| {
        l["span"]
            .as_str()
            .is_some_and(|s| s.split(':').any(|s| s == "reconcile"))
    }) {
        if line.get("rdsdatabase").is_some() {
            continue;
        }
        assert!(
            line["namespace"].is_string() && line["rdscredential"].is_string(),
            "reconcile line without the credential: {line}"
        );
        ours += usize::from(line["namespace"] == ns.as_str() && line["rdscredential"] == "app");
    }
    assert!(ours >= 1, "no reconcile line of {ns}/app");
    let retry = lines
        .iter()
        .find(|l| l["message"] == "will retry" && l["rdscredential"] == "broken")
        .expect("retry line of the broken credential");
    assert_eq!(retry["namespace"], ns2.as_str());
    drop(served);
}

/// Every series in docs/metrics.md's table is exported with its documented type, and every
/// exported `rdscred_` family is documented.
fn documented_series_are_served(scrape: &str) {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md"))
        .expect("docs/metrics.md");
    // Rows saying "Only exported with …" describe series of an optional feature.
    let optional = |line: &str| line.contains("Only exported with");
    let documented: Vec<(String, String)> = docs
        .lines()
        .filter_map(|line| {
            let mut cells = line.split('|').map(str::trim).skip(1);
            let name = cells.next()?.strip_prefix("`rdscred_")?.strip_suffix('`')?;
            let kind = cells.next()?;
            // OpenMetrics names a counter family without its `_total` suffix.
            let family = name
                .strip_suffix("_total")
                .filter(|_| kind == "counter")
                .unwrap_or(name);
            Some((format!("rdscred_{family}"), kind.to_owned()))
        })
        .collect();
    assert!(
        documented.len() >= 10,
        "parsed the metrics table: {documented:?}"
    );
    let exported: Vec<(String, String)> = scrape
        .lines()
        .filter_map(|l| {
            let (name, kind) = l.strip_prefix("# TYPE ")?.split_once(' ')?;
            name.starts_with("rdscred_")
                .then(|| (name.to_owned(), kind.to_owned()))
        })
        .collect();
    let required: Vec<&(String, String)> = documented
        .iter()
        .filter(|(name, _)| {
            !docs
                .lines()
                .any(|l| optional(l) && l.contains(&format!("`{name}`")))
        })
        .collect();
    for series in required {
        assert!(
            exported.contains(series),
            "documented {series:?} is not served; served: {exported:?}"
        );
    }
    for series in &exported {
        assert!(
            documented.contains(series),
            "served {series:?} is not in docs/metrics.md"
        );
    }
}
