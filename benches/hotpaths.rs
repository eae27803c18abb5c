//! Figures for the paths that run per credential and per poll: `cargo bench --bench hotpaths`.
//! Prints time per operation (median of batches) and, for the emulator-backed part, memory.
//! With the test ground up (`source .test-env/env`) it also measures real database logins.
//! `RDSCRED_BENCH_QUICK=1` shortens every measurement (used by the test command to keep the
//! bench compiling and running, not for the figures).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use rdscred::crd::{EngineKind, PasswordSpec, RotationSchedule, TlsMode};
use rdscred::engine::{ConnectTarget, Login, TlsSettings, check_login};
use rdscred::schedule::RotationPlan;
use rdscred::secret::{RdsSecretValue, SecretString, generate_password};
use rdscred::template::{TemplateValues, render};

fn quick() -> bool {
    std::env::var_os("RDSCRED_BENCH_QUICK").is_some()
}

/// Median time per call of `f` over several timed batches.
fn per_op(name: &str, mut f: impl FnMut()) {
    let batches = if quick() { 3 } else { 15 };
    let per_batch = if quick() { 50 } else { 2_000 };
    let mut samples: Vec<Duration> = (0..batches)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_batch {
                f();
            }
            t.elapsed() / per_batch
        })
        .collect();
    samples.sort();
    println!("{name:<48} {:>12.2?} / op", samples[samples.len() / 2]);
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn cpu_paths() {
    let policy = PasswordSpec::default();
    per_op("generate_password (32 chars, OS CSPRNG)", || {
        black_box(generate_password(&policy, EngineKind::Postgres).unwrap());
    });
    let printable = PasswordSpec {
        length: 128,
        exclude_characters: None,
        alphanumeric_only: false,
    };
    per_op("generate_password (128 printable chars)", || {
        black_box(generate_password(&printable, EngineKind::Mysql).unwrap());
    });
    let password = SecretString::new((0x21u8..=0x7e).map(char::from).collect::<String>());
    let values = TemplateValues {
        username: "orders_app",
        password: &password,
        host: "db.internal",
        port: 5432,
        dbname: Some("orders"),
        engine: "postgres",
    };
    let tpl = "postgres://{{ username | urlencode }}:{{ password | urlencode }}@{{ host }}:{{ port }}/{{ dbname }}";
    per_op("template::render DATABASE_URL", || {
        black_box(render(tpl, &values).unwrap());
    });
    let json = r#"{"engine":"postgres","host":"db.internal","port":5432,"username":"orders_app","password":"x0123456789abcdefghijABCDEFGHIJ","dbname":"orders"}"#;
    per_op("RdsSecretValue::parse", || {
        black_box(RdsSecretValue::parse(json).unwrap());
    });
    let cron = RotationSchedule {
        automatically_after_days: None,
        schedule_expression: Some("cron(0 4 ? * SUN#2 *)".into()),
        duration: Some("3h".into()),
    };
    per_op("RotationPlan::from_spec cron (validation)", || {
        black_box(RotationPlan::from_spec(&cron).unwrap());
    });
    let plan = RotationPlan::from_spec(&cron).unwrap();
    let last: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let now: jiff::Timestamp = "2026-11-23T12:00:00Z".parse().unwrap();
    per_op("RotationPlan::due cron", || {
        black_box(plan.due(last, now));
    });
}

/// Objects per second through the Kubernetes API emulator and its memory per Secret: the
/// test ground's own cost, which bounds how large the integration tests can go.
async fn emulator_paths() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, ListParams, ObjectMeta, PostParams};
    let n = if quick() { 50 } else { 2_000 };
    let emulator = kube_emulator::Emulator::new();
    let api: Api<Secret> = Api::namespaced(emulator.client(), "default");
    let before = rss_kib();
    let t = Instant::now();
    for i in 0..n {
        let data: BTreeMap<String, k8s_openapi::ByteString> = [(
            "password".to_string(),
            k8s_openapi::ByteString(vec![b'x'; 32]),
        )]
        .into_iter()
        .collect();
        let s = Secret {
            metadata: ObjectMeta {
                name: Some(format!("s{i}")),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        };
        api.create(&PostParams::default(), &s).await.unwrap();
    }
    let created = t.elapsed();
    let t = Instant::now();
    let listed = api.list(&ListParams::default()).await.unwrap().items.len();
    let list = t.elapsed();
    println!(
        "{:<48} {:>12.2?} / object",
        format!("emulator create Secret (n={n})"),
        created / n
    );
    println!(
        "{:<48} {:>12.2?}",
        format!("emulator list {listed} Secrets"),
        list
    );
    if let (Some(a), Some(b)) = (before, rss_kib()) {
        println!(
            "{:<48} {:>12} KiB ({:.1} KiB / Secret)",
            "emulator RSS growth",
            b.saturating_sub(a),
            b.saturating_sub(a) as f64 / n as f64
        );
    }
}

/// Real logins: the cost of one drift check or testSecret.
async fn login_paths() {
    let engines = [
        (EngineKind::Postgres, "RDSCRED_TEST_PG"),
        (EngineKind::Mariadb, "RDSCRED_TEST_MYSQL"),
    ];
    for (engine, prefix) in engines {
        let var = |k: &str| std::env::var(format!("{prefix}_{k}")).ok();
        let (Some(host), Some(port), Some(user), Some(pw), Some(db)) = (
            var("HOST"),
            var("PORT"),
            var("ADMIN_USER"),
            var("ADMIN_PASSWORD"),
            var("DB"),
        ) else {
            println!("{engine:?} login: skipped (test ground not up: source .test-env/env)");
            continue;
        };
        let login = Login {
            username: user,
            password: SecretString::new(pw),
        };
        for mode in [TlsMode::Prefer, TlsMode::Disable] {
            let target = ConnectTarget {
                engine,
                host: host.clone(),
                port: port.parse().unwrap(),
                database: Some(db.clone()),
                tls: TlsSettings {
                    mode,
                    ca_bundle_pem: None,
                },
            };
            let n = if quick() { 3 } else { 30 };
            let mut samples = Vec::new();
            for _ in 0..n {
                let t = Instant::now();
                check_login(&target, &login).await.unwrap();
                samples.push(t.elapsed());
            }
            samples.sort();
            let name = format!("{engine:?} check_login tls={mode:?} (connect+query+close)");
            println!(
                "{name:<48} {:>12.2?} median, {:.2?} p90",
                samples[n / 2],
                samples[n * 9 / 10]
            );
        }
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "rdscred hot paths ({} build)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    cpu_paths();
    rt.block_on(emulator_paths());
    rt.block_on(login_paths());
}
