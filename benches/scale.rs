//! Scale figures (issue 15): `cargo bench --bench scale` with the test ground up
//! (`source .test-env/env`). The controller runs as users run it, a separate `rdscred run`
//! process (the release binary under `cargo bench`), against the Kubernetes API emulator served
//! on loopback under the chart's RBAC, moto behind a counting proxy, and the real PostgreSQL and
//! MariaDB servers (half the credentials on each). It creates `RDSCRED_SCALE_N` credentials
//! (default 100; the README's table also has 1000) and prints
//! - time to all Ready and credentials/s;
//! - controller RSS: before the first credential, peak (VmHWM) and steady (VmRSS) after
//!   convergence, and KiB per additional credential; controller CPU seconds (utime + stime);
//! - Secrets Manager calls by operation during provisioning (and per credential) and per
//!   steady poll, counted on the wire between the controller and moto;
//! - propagation of outside changes (PutSecretValue + AWSCURRENT moved by someone else) to the
//!   Kubernetes Secret: p50/p99 over samples spread over the poll phase.
//!
//! - CPU seconds of the ground during provisioning (moto, PostgreSQL's backends together,
//!   mariadbd, and this bench process, which hosts the emulator), so the bottleneck shows.
//!
//! `RDSCRED_SCALE_CREATE_RATE` is passed as `--aws-create-rate` (default: the controller's
//! default, the account's CreateSecret quota; 0 = unlimited, to measure the controller's own
//! capacity apart from the quota).
//!
//! Users and secrets are removed afterwards. `RDSCRED_BENCH_QUICK=1` runs N=20 with a 2 s poll
//! (the test command uses it to keep the bench building and running).
//!
//! Heap profile of the controller alone: `RDSCRED_HEAPTRACK_RAW=/tmp/rdscred.raw` preloads
//! heaptrack into the `rdscred run` child (not the bench); then
//! `/usr/lib/heaptrack/libexec/heaptrack_interpret < /tmp/rdscred.raw | gzip > rdscred.gz` and
//! `heaptrack_print -f rdscred.gz -l 1` list what is still allocated when the bench ends
//! (steady state).

#![allow(dead_code, unused_imports)]

#[path = "../tests/it/support.rs"]
mod support;

#[path = "../tests/it/runtime.rs"]
mod runtime;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use rdscred::crd::{RdsCredential, RdsDatabase};
use rdscred::engine::{Admin, UserPlan};
use rdscred::propagation::sync::VERSION_ANNOTATION;
use runtime::{Rdscred, Workdir, write_kubeconfig};
use serde_json::json;
use support::{AwsProxy, DbServer, Ground, move_awscurrent_to_new_version, unique, wait_for};

fn quick() -> bool {
    std::env::var_os("RDSCRED_BENCH_QUICK").is_some()
}

// ------------------------------------------------------------------ calls

fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(op, n)| (op.clone(), n - before.get(op).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn show(calls: &BTreeMap<String, u64>, per: f64) -> String {
    if calls.is_empty() {
        return "none".into();
    }
    calls
        .iter()
        .map(|(op, n)| format!("{op} {:.2}", *n as f64 / per))
        .collect::<Vec<_>>()
        .join(", ")
}

// ------------------------------------------------------------------ /proc

/// (VmHWM, VmRSS) in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// utime + stime in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    own_cpu_ticks(&stat_fields(pid)) as f64 / clock_ticks()
}

/// utime (field 14) + stime (15) of [`stat_fields`], which start at field 3.
fn own_cpu_ticks(fields: &[u64]) -> u64 {
    fields.get(11).unwrap_or(&0) + fields.get(12).unwrap_or(&0)
}

/// The numeric fields of `/proc/<pid>/stat` from field 3 (state) on (after the command name,
/// which may hold spaces; the state letter reads as 0).
fn stat_fields(pid: u32) -> Vec<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    rest.split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect()
}

/// Every process as (pid, ppid, command line).
fn processes() -> Vec<(u32, u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            // ppid is field 4, index 1 from the state field.
            let ppid = *stat_fields(pid).get(1)? as u32;
            Some((pid, ppid, cmdline))
        })
        .collect()
}

/// CPU seconds so far of the processes on the ground: moto (the one on `moto_port`),
/// PostgreSQL (the postmaster with its reaped children — backends are one per connection and
/// short-lived — plus the live ones), mariadbd, and this process (the emulator runs here).
#[derive(Clone, Copy, Default)]
struct GroundCpu {
    moto: f64,
    postgres: f64,
    mariadb: f64,
    bench: f64,
}

impl GroundCpu {
    fn sample(moto_port: &str) -> GroundCpu {
        let hz = clock_ticks();
        let own = |f: &[u64]| own_cpu_ticks(f) as f64 / hz;
        let reaped = |f: &[u64]| (f.get(13).unwrap_or(&0) + f.get(14).unwrap_or(&0)) as f64 / hz;
        let procs = processes();
        let find = |pred: &dyn Fn(&str) -> bool| -> Vec<u32> {
            procs
                .iter()
                .filter(|(_, _, c)| pred(c))
                .map(|(pid, _, _)| *pid)
                .collect()
        };
        let moto_arg = format!("-p {moto_port}");
        let moto = find(&|c| c.contains("moto") && c.contains(&moto_arg))
            .iter()
            .map(|pid| own(&stat_fields(*pid)))
            .sum();
        let postmasters = find(&|c| {
            c.contains("bin/postgres") && (c.contains(" -D ") || c.contains("config_file"))
        });
        let postgres = postmasters
            .iter()
            .map(|pm| {
                let f = stat_fields(*pm);
                own(&f)
                    + reaped(&f)
                    + procs
                        .iter()
                        .filter(|(_, ppid, _)| ppid == pm)
                        .map(|(pid, _, _)| own(&stat_fields(*pid)))
                        .sum::<f64>()
            })
            .sum();
        let mariadb = find(&|c| c.contains("mariadbd") || c.contains("mysqld"))
            .iter()
            .map(|pid| own(&stat_fields(*pid)))
            .sum();
        GroundCpu {
            moto,
            postgres,
            mariadb,
            bench: cpu_seconds(std::process::id()),
        }
    }

    fn since(self, before: GroundCpu) -> GroundCpu {
        GroundCpu {
            moto: self.moto - before.moto,
            postgres: self.postgres - before.postgres,
            mariadb: self.mariadb - before.mariadb,
            bench: self.bench - before.bench,
        }
    }
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

// ------------------------------------------------------------------ the run

struct Cred {
    name: String,
    user: String,
    secret: String,
    server: DbServer,
}

fn is_ready(c: &RdsCredential) -> bool {
    c.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|x| x.type_ == "Ready" && x.status == "True")
    })
}

/// Outside rotation as a Lambda or a person would do it: a new version with the same value
/// (logins keep working), then AWSCURRENT moved to it. Returns the new version id.
async fn outside_change(sm: &aws_sdk_secretsmanager::Client, id: &str) -> String {
    let value = sm
        .get_secret_value()
        .secret_id(id)
        .version_stage("AWSCURRENT")
        .send()
        .await
        .expect("GetSecretValue");
    let same = value.secret_string().expect("a string secret");
    move_awscurrent_to_new_version(sm, id, same).await
}

async fn run(n: usize) {
    let poll = if quick() {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(10)
    };
    let moto = std::env::var("RDSCRED_TEST_AWS_ENDPOINT").expect("test ground is up");
    let moto_port = moto
        .rsplit(':')
        .next()
        .unwrap_or("")
        .trim_end_matches('/')
        .to_owned();
    // `--aws-create-rate`: unset keeps the controller's default (the account's quota).
    let create_rate: f64 = std::env::var("RDSCRED_SCALE_CREATE_RATE")
        .ok()
        .map(|v| {
            v.parse()
                .expect("RDSCRED_SCALE_CREATE_RATE: a number of CreateSecret/s")
        })
        .unwrap_or(rdscred::context::defaults::CREATE_SECRETS_PER_SECOND);
    let create_rate_arg = create_rate.to_string();
    // Secrets Manager calls counted on the wire between the controller and moto.
    let proxy = AwsProxy::counting(&moto).await;

    let mut g = Ground::new().await;
    let token = g
        .controller_token()
        .await
        .expect("runs against the emulator");
    let served = g
        .emulator
        .as_ref()
        .expect("runs against the emulator")
        .serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve emulator");
    let dir = Workdir::new();
    let kubeconfig = write_kubeconfig(&dir, &served.url(), &token);
    let ns = unique("ns-");
    g.namespace(&ns, &[("rdscred-test", "yes")]).await;
    let (pg, mariadb) = (DbServer::postgres(), DbServer::mariadb());
    let (pg_db, pg_prefix) = g.database(&pg, json!({})).await;
    let (my_db, my_prefix) = g.database(&mariadb, json!({})).await;

    let poll_arg = format!("{}s", poll.as_secs());
    let controller = Rdscred::spawn(
        "scale",
        &dir,
        &kubeconfig,
        &[
            "--cluster-name",
            &g.cluster,
            "--aws-endpoint-url",
            &proxy.url,
            "--poll-interval",
            &poll_arg,
            "--log-level",
            "warn",
            "--aws-create-rate",
            &create_rate_arg,
        ],
    );
    let pid = controller.pid();
    g.wait_database_ready(&pg_db).await;
    g.wait_database_ready(&my_db).await;
    // Settled before the first credential: the baseline for "per additional credential".
    tokio::time::sleep(poll * 2).await;
    let (_, rss_empty) = memory_kib(pid);
    let cpu_empty = cpu_seconds(pid);

    let run_id = unique("sc");
    let creds: Vec<Cred> = (0..n)
        .map(|i| {
            let (server, prefix) = if i % 2 == 0 {
                (pg.clone(), &pg_prefix)
            } else {
                (mariadb.clone(), &my_prefix)
            };
            let user = format!("{run_id}_{i}");
            Cred {
                name: format!("c{i}"),
                secret: format!("{prefix}{user}"),
                user,
                server,
            }
        })
        .collect();
    let before = proxy.counts();
    let ground_before = GroundCpu::sample(&moto_port);
    let started = Instant::now();
    futures::stream::iter(creds.iter().enumerate())
        .for_each_concurrent(16, |(i, c)| {
            let (g, ns) = (&g, &ns);
            let db = if i % 2 == 0 { &pg_db } else { &my_db };
            let privileges = match c.server.engine {
                rdscred::crd::EngineKind::Postgres => json!([
                    { "database": c.server.database, "schema": "public", "privileges": ["USAGE"] }
                ]),
                _ => json!([{ "database": c.server.database, "privileges": ["SELECT"] }]),
            };
            let spec = json!({
                "databaseRef": { "name": db }, "username": c.user,
                "privileges": privileges,
                "secret": { "name": c.secret },
            });
            async move {
                g.credential(ns, &c.name, spec)
                    .await
                    .expect("create credential");
            }
        })
        .await;
    // Readiness from a watch, not a list every 500 ms: listing N credentials twice a second
    // made the bench (which hosts the emulator) the largest CPU user at N = 5,000.
    let api: Api<RdsCredential> = Api::namespaced(g.client.clone(), &ns);
    let events = kube::runtime::watcher(api, kube::runtime::watcher::Config::default());
    futures::pin_mut!(events);
    let mut ready_names = std::collections::HashSet::new();
    let mut last_progress = Instant::now();
    let stalled = Duration::from_secs(120);
    while ready_names.len() < n {
        let left = stalled.saturating_sub(last_progress.elapsed());
        let event = tokio::time::timeout(left, events.next()).await;
        let before_event = ready_names.len();
        match event {
            Ok(Some(Ok(
                kube::runtime::watcher::Event::Apply(c)
                | kube::runtime::watcher::Event::InitApply(c),
            ))) => {
                if is_ready(&c) {
                    ready_names.insert(c.metadata.name.clone().unwrap_or_default());
                } else {
                    ready_names.remove(c.metadata.name.as_deref().unwrap_or_default());
                }
            }
            Ok(Some(Ok(kube::runtime::watcher::Event::Delete(c)))) => {
                ready_names.remove(c.metadata.name.as_deref().unwrap_or_default());
            }
            Ok(Some(Ok(_))) => {}
            // The watcher starts again by itself; give the emulator a moment.
            Ok(Some(Err(_))) => tokio::time::sleep(Duration::from_millis(200)).await,
            Ok(None) => panic!("the credential watch ended"),
            Err(_) => {}
        }
        if ready_names.len() > before_event {
            last_progress = Instant::now();
        }
        assert!(
            last_progress.elapsed() < stalled,
            "no credential became Ready for 2 minutes: {} of {n} (logs in {})",
            ready_names.len(),
            dir.display()
        );
    }
    let converged = started.elapsed();
    let provisioning = delta(&proxy.counts(), &before);
    let cpu_converged = cpu_seconds(pid);
    let ground = GroundCpu::sample(&moto_port).since(ground_before);

    // Steady state: a few polls after convergence.
    tokio::time::sleep(poll * 2).await;
    let polls = 3u32;
    let before = proxy.counts();
    tokio::time::sleep(poll * polls).await;
    let steady = delta(&proxy.counts(), &before);
    let (hwm, rss) = memory_kib(pid);
    let cpu_steady = cpu_seconds(pid);

    // Outside changes, each at a random phase of the poll, all at once (bounded by the poll).
    let samples = if quick() { 4 } else { 20 }.min(n);
    let sm = aws_sdk_secretsmanager::Client::new(g.aws.sdk_config());
    let secrets: Api<Secret> = Api::namespaced(g.client.clone(), &ns);
    let latencies: Vec<Duration> = futures::future::join_all(creds.iter().take(samples).map(|c| {
        let (sm, secrets) = (&sm, &secrets);
        async move {
            tokio::time::sleep(rdscred::limit::jitter(poll / 2, 1.0)).await;
            let version = outside_change(sm, &c.secret).await;
            let changed = Instant::now();
            wait_for("the outside change in the Secret", poll * 6, || async {
                let s = secrets.get_opt(&c.name).await.ok()??;
                (s.metadata.annotations?.get(VERSION_ANNOTATION) == Some(&version)).then_some(())
            })
            .await;
            changed.elapsed()
        }
    }))
    .await;
    let mut latencies = latencies;
    latencies.sort();

    let secs = converged.as_secs_f64();
    println!(
        "N={n} ({} PostgreSQL, {} MariaDB), poll {poll:?}, concurrency 8, CreateSecret limit {}, {} build",
        n.div_ceil(2),
        n / 2,
        if create_rate > 0.0 {
            format!("{create_rate}/s")
        } else {
            "unlimited".into()
        },
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!(
        "  all Ready after        {secs:.1} s  ({:.1} credentials/s)",
        n as f64 / secs
    );
    println!(
        "  controller CPU         {:.1} s to converge, {:.1} s total",
        cpu_converged - cpu_empty,
        cpu_steady
    );
    println!(
        "  ground CPU             {:.1} s moto, {:.1} s PostgreSQL (all backends), {:.1} s mariadbd, {:.1} s bench + emulator (during provisioning)",
        ground.moto, ground.postgres, ground.mariadb, ground.bench
    );
    println!(
        "  controller RSS         {} before, {} peak (VmHWM), {} steady (VmRSS); {:.1} KiB per additional credential",
        mib(rss_empty),
        mib(hwm),
        mib(rss),
        rss.saturating_sub(rss_empty) as f64 / n as f64
    );
    println!(
        "  SM calls provisioning  {} total = {:.2} per credential: {}",
        provisioning.values().sum::<u64>(),
        provisioning.values().sum::<u64>() as f64 / n as f64,
        show(&provisioning, n as f64)
    );
    println!(
        "  SM calls per poll      {} (over {polls} polls)",
        show(&steady, f64::from(polls))
    );
    println!(
        "  propagation            p50 {:.2?}  p99 {:.2?}  (outside change -> Kubernetes Secret, {} samples, poll {poll:?})",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.len()
    );

    // Clean up: controller first (it would re-create what we remove), then users and secrets.
    drop(controller);
    for server in [&pg, &mariadb] {
        let mut admin = Admin::connect(&server.target(), &server.admin)
            .await
            .expect("admin login for the clean-up");
        for c in creds.iter().filter(|c| c.server.engine == server.engine) {
            let plan = UserPlan {
                username: c.user.clone(),
                login_users: vec![c.user.clone(), UserPlan::clone_username(&c.user)],
                grants: vec![],
                roles: vec![],
            };
            if let Err(e) = admin.drop_users(&plan).await {
                eprintln!("clean-up: dropping {}: {e}", c.user);
            }
        }
        admin.close().await;
    }
    futures::stream::iter(creds.iter())
        .for_each_concurrent(8, |c| async {
            let _ = g.scope.secrets.schedule_deletion(&c.secret, 0).await;
        })
        .await;
}

fn main() {
    if std::env::var_os("RDSCRED_TEST_AWS_ENDPOINT").is_none() {
        println!("scale bench: skipped (test ground not up: source .test-env/env)");
        return;
    }
    let n = if quick() {
        20
    } else {
        std::env::var("RDSCRED_SCALE_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(n));
}
