//! Test ground for the controller-level tests: the real services from `scripts/test-env.sh`
//! plus an in-process Kubernetes API emulator with the CRDs from `crds/`, and the real
//! controller running against them.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use kube_emulator::Emulator;
use rdscred::aws::{AWSCURRENT, ApiCalls, Aws, AwsScope, AwsSettings, NewSecret, VersionSelector};
use rdscred::context::{Context, Settings};
use rdscred::crd::{EngineKind, RdsCredential, RdsDatabase};
use rdscred::engine::{ConnectTarget, Login, TlsSettings};
use rdscred::secret::{RdsSecretValue, SecretString};
use rdscred::telemetry::Metrics;
use serde_json::json;
use tokio::task::JoinHandle;

const SETUP: &str =
    "run `bash scripts/test-env.sh up && source .test-env/env` (or the README's test command)";

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: the test ground is not up; {SETUP}"))
}

/// Connection facts of one engine's test server.
#[derive(Clone, Debug)]
pub struct DbServer {
    pub engine: EngineKind,
    pub host: String,
    pub port: u16,
    pub admin: Login,
    pub database: String,
}

impl DbServer {
    pub fn postgres() -> DbServer {
        DbServer {
            engine: EngineKind::Postgres,
            host: env("RDSCRED_TEST_PG_HOST"),
            port: env("RDSCRED_TEST_PG_PORT").parse().expect("port"),
            admin: Login {
                username: env("RDSCRED_TEST_PG_ADMIN_USER"),
                password: SecretString::new(env("RDSCRED_TEST_PG_ADMIN_PASSWORD")),
            },
            database: env("RDSCRED_TEST_PG_DB"),
        }
    }

    pub fn mariadb() -> DbServer {
        DbServer {
            engine: EngineKind::Mariadb,
            host: env("RDSCRED_TEST_MYSQL_HOST"),
            port: env("RDSCRED_TEST_MYSQL_PORT").parse().expect("port"),
            admin: Login {
                username: env("RDSCRED_TEST_MYSQL_ADMIN_USER"),
                password: SecretString::new(env("RDSCRED_TEST_MYSQL_ADMIN_PASSWORD")),
            },
            database: env("RDSCRED_TEST_MYSQL_DB"),
        }
    }

    pub fn target(&self) -> ConnectTarget {
        ConnectTarget {
            engine: self.engine,
            host: self.host.clone(),
            port: self.port,
            database: Some(self.database.clone()),
            tls: TlsSettings::default(),
        }
    }
}

/// A name unique to this process and call: moto and the databases are shared by all tests.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    // PIDs are reused (pid_max is 32768 here) while moto and the databases keep what earlier
    // test processes left: the pid alone once gave a second process an admin secret name an
    // earlier one had created. Three base-36 characters from the process's start time make
    // such a reuse collide once in 46,656.
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
            .unwrap_or_default();
        let mut r = nanos % 46_656;
        let mut out = String::new();
        for _ in 0..3 {
            out.push(char::from_digit(r % 36, 36).expect("below 36"));
            r /= 36;
        }
        out
    });
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}{run}x{n}", std::process::id() % 100_000)
}

/// A rotator outside rdscred, the way a rotation Lambda finishes: PutSecretValue of
/// `secret_string` (AWSPENDING), then UpdateSecretVersionStage moving AWSCURRENT to it, through
/// the given raw SDK client (the controller's call counters see only the controller). Returns
/// the new version id.
pub async fn move_awscurrent_to_new_version(
    sm: &aws_sdk_secretsmanager::Client,
    id: &str,
    secret_string: &str,
) -> String {
    let described = sm
        .describe_secret()
        .secret_id(id)
        .send()
        .await
        .expect("DescribeSecret");
    let old = described
        .version_ids_to_stages()
        .and_then(|m| {
            m.iter()
                .find(|(_, stages)| stages.iter().any(|s| s == "AWSCURRENT"))
        })
        .map(|(v, _)| v.clone())
        .expect("an AWSCURRENT version");
    let token = format!("{:0>36}", unique("v"));
    sm.put_secret_value()
        .secret_id(id)
        .client_request_token(&token)
        .secret_string(secret_string)
        .version_stages("AWSPENDING")
        .send()
        .await
        .expect("PutSecretValue");
    sm.update_secret_version_stage()
        .secret_id(id)
        .version_stage("AWSCURRENT")
        .move_to_version_id(&token)
        .remove_from_version_id(old)
        .send()
        .await
        .expect("UpdateSecretVersionStage");
    token
}

pub async fn aws(calls: ApiCalls) -> Aws {
    Aws::new(
        AwsSettings {
            endpoint_url: Some(env("RDSCRED_TEST_AWS_ENDPOINT")),
            default_region: "us-east-1".into(),
        },
        calls,
    )
    .await
}

/// Waits for `check` to return Some, polling every 100ms, at most `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `count` reaches `target`, polling every 200ms. Fails when the count has not
/// grown for `stall`: a bulk test asserts that work converges and keeps making progress, not
/// how fast a loaded machine does it (that is what the benches measure). `count` also returns
/// a description of what is not done yet, printed when the wait fails.
pub async fn wait_for_count<F, Fut>(what: &str, target: usize, stall: Duration, mut count: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<(usize, String)>>,
{
    let mut best = 0;
    let mut pending = String::new();
    let mut progressed = tokio::time::Instant::now();
    loop {
        let n = match count().await {
            Some((n, not_done)) => {
                pending = not_done;
                n
            }
            None => best,
        };
        if n >= target {
            return;
        }
        if n > best {
            best = n;
            progressed = tokio::time::Instant::now();
        }
        if progressed.elapsed() > stall {
            panic!(
                "no progress for {stall:?} waiting for {what}: {best} of {target}; not done: {pending}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ------------------------------------------------------------------ the chart's RBAC

/// Namespace and release name the chart is rendered for; the controller's identity is the
/// chart's ServiceAccount there.
pub const RELEASE_NAMESPACE: &str = "rdscred-system";
pub const RELEASE: &str = "rdscred";
/// `system:serviceaccount:rdscred-system:rdscred`: who the controller is in the tests.
pub const CONTROLLER_USER: &str = "system:serviceaccount:rdscred-system:rdscred";

/// How the chart is installed: every namespace, or `watchNamespaces`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Install {
    ClusterWide,
    Namespaced(Vec<String>),
}

impl Install {
    pub fn label(&self) -> &'static str {
        match self {
            Install::ClusterWide => "cluster-wide",
            Install::Namespaced(_) => "namespaced",
        }
    }

    fn values(&self) -> serde_json::Value {
        match self {
            Install::ClusterWide => json!({}),
            Install::Namespaced(namespaces) => json!({ "watchNamespaces": namespaces }),
        }
    }
}

/// One verb the chart grants on one resource, by one role. Namespaces (and resourceNames,
/// which name test objects) are left out, so grants compare across tests and renders.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Grant {
    pub install: String,
    /// `ClusterRole rdscred`, `Role rdscred-leader-election`.
    pub role: String,
    pub api_group: String,
    pub resource: String,
    pub verb: String,
}

/// The RBAC objects `charts/rdscred` renders (real Helm, through helm-python-sdk in the test
/// venv), loaded into an emulator as the administrator; the controller then runs as the
/// chart's ServiceAccount, so every request it makes is authorized by the chart's rules.
pub struct ChartRbac {
    pub install: Install,
    /// The rendered multi-document YAML of templates/rbac.yaml.
    pub yaml: String,
    objects: Vec<serde_json::Value>,
}

impl ChartRbac {
    /// Renders templates/rbac.yaml with `install`'s values merged with `extra_values`.
    pub fn render(install: Install, extra_values: serde_json::Value) -> ChartRbac {
        let mut values = install.values();
        merge(&mut values, extra_values);
        let yaml = render_chart_template(&values, "rbac.yaml", RELEASE_NAMESPACE);
        ChartRbac::from_yaml(install, yaml)
    }

    /// From already rendered (possibly edited) YAML.
    pub fn from_yaml(install: Install, yaml: String) -> ChartRbac {
        use serde::Deserialize;
        let objects = serde_yaml::Deserializer::from_str(&yaml)
            .map(|d| serde_json::Value::deserialize(d).expect("rendered YAML parses"))
            .filter(|v| !v.is_null())
            .collect();
        ChartRbac {
            install,
            yaml,
            objects,
        }
    }

    /// Loads the objects into `emulator` (creating the release namespace if missing) and
    /// returns a token of the controller's ServiceAccount.
    pub async fn apply(&self, emulator: &Emulator) -> String {
        let admin = emulator.client();
        let namespaces: Api<Namespace> = Api::all(admin);
        if namespaces
            .get_opt(RELEASE_NAMESPACE)
            .await
            .expect("get namespace")
            .is_none()
        {
            let ns: Namespace =
                serde_json::from_value(json!({ "metadata": { "name": RELEASE_NAMESPACE } }))
                    .expect("namespace");
            namespaces
                .create(&PostParams::default(), &ns)
                .await
                .expect("create release namespace");
        }
        emulator
            .apply_objects_yaml(&self.yaml)
            .unwrap_or_else(|e| panic!("loading the chart's RBAC: {e}\n{}", self.yaml));
        emulator.service_account_token(RELEASE_NAMESPACE, RELEASE)
    }

    /// Every (role, group, resource, verb) the rendered chart grants.
    pub fn grants(&self) -> Vec<Grant> {
        let mut out = BTreeSet::new();
        for (role, rule) in self.rules() {
            for atom in rule_atoms(&rule) {
                out.insert(self.grant(&role, atom));
            }
        }
        out.into_iter().collect()
    }

    /// The grants that allowed at least one of the controller's requests recorded by
    /// `emulator` (only roles bound where the request was made count).
    pub fn used_grants(&self, emulator: &Emulator) -> Vec<Grant> {
        let requests = emulator.authorized_requests(CONTROLLER_USER);
        let mut out = BTreeSet::new();
        for (role, rule) in self.rules() {
            let scope = self.binding_scope(&role);
            for (group, resource, verb) in rule_atoms(&rule) {
                let mut atom = rule.clone();
                atom["apiGroups"] = json!([group]);
                atom["resources"] = json!([resource]);
                atom["verbs"] = json!([verb]);
                let used = requests.iter().any(|r| {
                    scope
                        .iter()
                        .any(|s| s.is_none() || s.as_deref() == Some(r.namespace.as_str()))
                        && kube_emulator::rbac_rule_allows(&atom, r)
                });
                if used {
                    out.insert(self.grant(&role, (group, resource, verb)));
                }
            }
        }
        out.into_iter().collect()
    }

    fn grant(&self, role: &str, (api_group, resource, verb): (String, String, String)) -> Grant {
        Grant {
            install: self.install.label().into(),
            role: role.into(),
            api_group,
            resource,
            verb,
        }
    }

    /// (`Kind name`, rule) of every rule of every Role/ClusterRole. Roles of one name in several
    /// namespaces (the namespaced install's per-namespace Role) share the key: they are the
    /// same template, and `binding_scope` lists all the namespaces they are bound in.
    fn rules(&self) -> Vec<(String, serde_json::Value)> {
        self.objects
            .iter()
            .filter(|o| matches!(o["kind"].as_str(), Some("Role" | "ClusterRole")))
            .flat_map(|o| {
                let role = format!(
                    "{} {}",
                    o["kind"].as_str().unwrap_or(""),
                    o["metadata"]["name"].as_str().unwrap_or("")
                );
                o["rules"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |r| (role.clone(), r))
            })
            .collect()
    }

    /// Where a role is bound for the controller: `None` = cluster-wide (ClusterRoleBinding),
    /// `Some(ns)` = a RoleBinding in `ns`.
    fn binding_scope(&self, role: &str) -> Vec<Option<String>> {
        self.objects
            .iter()
            .filter(|o| {
                matches!(
                    o["kind"].as_str(),
                    Some("RoleBinding" | "ClusterRoleBinding")
                )
            })
            .filter(|b| {
                format!(
                    "{} {}",
                    b["roleRef"]["kind"].as_str().unwrap_or(""),
                    b["roleRef"]["name"].as_str().unwrap_or("")
                ) == role
            })
            .filter(|b| {
                b["subjects"].as_array().into_iter().flatten().any(|s| {
                    s["kind"] == "ServiceAccount"
                        && s["name"] == RELEASE
                        && s["namespace"] == RELEASE_NAMESPACE
                })
            })
            .map(|b| b["metadata"]["namespace"].as_str().map(str::to_string))
            .map(|ns| {
                if ns.as_deref().is_some_and(|n| !n.is_empty()) {
                    ns
                } else {
                    None
                }
            })
            .collect()
    }

    /// Fails the test if the controller got any 403, naming every denied request.
    pub fn assert_no_denials(emulator: &Emulator) {
        let denied = emulator.denied_requests(CONTROLLER_USER);
        assert!(
            denied.is_empty(),
            "the controller was denied {} request(s) under the chart's RBAC:\n{}",
            denied.len(),
            denied
                .iter()
                .map(|d| format!("  {}", d.message))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    /// End of a test (not already failing): no 403 may have happened, and the grants used
    /// are recorded for the suite-wide check.
    pub fn finish(&self, emulator: &Emulator) {
        if std::thread::panicking() {
            return;
        }
        ChartRbac::assert_no_denials(emulator);
        self.record_used(emulator);
    }

    /// Appends the grants this test used to `$RDSCRED_RBAC_RECORDS` (one file per call), for
    /// the suite-wide unused-grant check (`rbac::chart_grants_nothing_the_suite_did_not_use`).
    pub fn record_used(&self, emulator: &Emulator) {
        let Ok(dir) = std::env::var(RBAC_RECORDS_ENV) else {
            return;
        };
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::path::Path::new(&dir).join(format!(
            "{}-{}-{}.json",
            self.install.label(),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create RBAC records dir");
        let used = serde_json::to_string(&self.used_grants(emulator)).expect("grants serialize");
        std::fs::write(&path, used).expect("write RBAC record");
    }
}

/// Directory the tests record the chart grants they exercised into.
pub const RBAC_RECORDS_ENV: &str = "RDSCRED_RBAC_RECORDS";

/// (apiGroup, resource, verb) of every combination a rule lists.
fn rule_atoms(rule: &serde_json::Value) -> Vec<(String, String, String)> {
    let list = |k: &str| -> Vec<String> {
        rule[k]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(String::from))
            .collect()
    };
    let mut out = Vec::new();
    for g in list("apiGroups") {
        for r in list("resources") {
            for v in list("verbs") {
                out.push((g.clone(), r.clone(), v));
            }
        }
    }
    out
}

/// One template of charts/rdscred rendered by the real Helm library (tests/chart/render.py
/// in the test venv), as multi-document YAML.
pub fn render_chart_template(
    values: &serde_json::Value,
    template: &str,
    namespace: &str,
) -> String {
    let venv = env("RDSCRED_TEST_VENV");
    let out = std::process::Command::new(format!("{venv}/bin/python"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/chart/render.py"
        ))
        .args([&values.to_string(), template, namespace, RELEASE])
        .output()
        .expect("run tests/chart/render.py");
    assert!(
        out.status.success(),
        "rendering the chart failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 YAML")
}

/// Emulator (or a real cluster) + AWS + the running controller.
pub struct Ground {
    /// None when running against a real cluster (`RDSCRED_TEST_KUBECONFIG`).
    pub emulator: Option<Emulator>,
    pub client: Client,
    /// The controller's AWS access (counted in `calls`, every request logged).
    pub aws: Aws,
    /// The tests' own Secrets Manager/RDS clients: not counted, not logged.
    pub scope: AwsScope,
    pub calls: ApiCalls,
    pub metrics: Metrics,
    pub cluster: String,
    pub ctx: Option<Arc<Context>>,
    /// How the chart is installed for the controller (its RBAC and watched namespaces).
    pub install: Install,
    /// The chart's RBAC, once loaded (emulator only): checked and recorded on drop.
    pub rbac: Option<ChartRbac>,
    /// The negative RBAC test expects 403s: skip the no-denial check on drop.
    pub denials_expected: bool,
    controller: Option<(JoinHandle<()>, tokio::sync::oneshot::Sender<()>)>,
}

impl Ground {
    /// The emulator with the CRDs from `crds/` (or, with `RDSCRED_TEST_KUBECONFIG` set, the
    /// real cluster it points at, where the CRDs must already be applied); the controller is
    /// not started yet.
    pub async fn new() -> Ground {
        // RDSCRED_TEST_LOG=debug shows the controller's logs (text) for a failing test.
        if let Ok(filter) = std::env::var("RDSCRED_TEST_LOG") {
            let _ = rdscred::telemetry::init_logging(rdscred::telemetry::LogFormat::Text, &filter);
        }
        let (emulator, client) = match std::env::var("RDSCRED_TEST_KUBECONFIG") {
            Ok(path) => (None, real_cluster_client(&path).await),
            Err(_) => {
                let emulator = Emulator::new();
                for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/crds"))
                    .expect("crds/ exists")
                {
                    let path = entry.expect("dir entry").path();
                    emulator
                        .install_crds_yaml(&std::fs::read_to_string(&path).expect("read crd"))
                        .expect("install CRD");
                }
                let client = emulator.client();
                (Some(emulator), client)
            }
        };
        // The controller's AWS access logs every request (for the IAM policy evaluation);
        // the tests' own setup and reads (`scope`) go through separate, uncounted clients.
        let calls = ApiCalls::with_request_log();
        let aws = aws(calls.clone()).await;
        let scope = self::aws(ApiCalls::default())
            .await
            .scoped(None, None)
            .await
            .expect("aws scope");
        Ground {
            client,
            emulator,
            scope,
            metrics: Metrics::new(calls.clone()),
            calls,
            aws,
            cluster: unique("c"),
            ctx: None,
            install: Install::ClusterWide,
            rbac: None,
            denials_expected: false,
            controller: None,
        }
    }

    /// A ground with the staleness of a busy real cluster (emulator only): watch events reach
    /// informers 50–500 ms late (random, in order), so the controller's cached objects trail
    /// its own writes; with `rollout`, simulated rollouts that pass through a partial state
    /// (fewer replicas updated than desired) before they complete after `rollout`. The
    /// rotation suites run on this ground.
    pub async fn stale() -> Ground {
        let g = Ground::new().await;
        if let Some(e) = &g.emulator {
            e.set_watch_delay(Some((
                Duration::from_millis(50),
                Duration::from_millis(500),
            )));
        }
        g
    }

    /// Stepped simulated rollouts of `rollout` (emulator only; see [`stale`](Self::stale)).
    pub fn stepped_rollouts(&self, rollout: Duration) {
        self.emulator
            .as_ref()
            .expect("the emulator simulates the workload controllers")
            .simulate_stepped_workload_controllers(rollout);
    }

    /// A ground whose controller runs as a namespaced install watching `namespaces` (which
    /// must exist before [`start`](Self::start) loads the chart's Roles into them).
    pub async fn namespaced(namespaces: &[&str]) -> Ground {
        let mut g = Ground::new().await;
        g.install = Install::Namespaced(namespaces.iter().map(|s| s.to_string()).collect());
        g
    }

    /// Loads the chart's RBAC for `self.install` into the emulator (once) and returns the
    /// client the controller uses: the chart's ServiceAccount. Against a real cluster, the
    /// test client itself.
    pub async fn controller_client(&mut self) -> Client {
        self.controller_token()
            .await
            .map(|token| {
                self.emulator
                    .as_ref()
                    .expect("a token implies the emulator")
                    .client_with_token(&token)
            })
            .unwrap_or_else(|| self.client.clone())
    }

    /// The ServiceAccount token of the controller under the chart's RBAC (loaded on first
    /// use); `None` against a real cluster.
    pub async fn controller_token(&mut self) -> Option<String> {
        let emulator = self.emulator.clone()?;
        if self.rbac.is_none() {
            self.rbac = Some(ChartRbac::render(self.install.clone(), json!({})));
        }
        Some(self.rbac.as_ref().expect("just set").apply(&emulator).await)
    }

    pub fn settings(&self) -> Settings {
        Settings {
            cluster_name: self.cluster.clone(),
            poll_interval: Duration::from_secs(2),
            drift_interval: Duration::from_secs(2),
            database_recheck_interval: Duration::from_secs(5),
            default_min_rotation_interval: Duration::from_secs(1),
            ..Settings::default()
        }
    }

    /// Starts the real controller (both kinds, the poller) against the emulator.
    pub async fn start(&mut self) {
        self.start_with(self.settings()).await
    }

    pub async fn start_with(&mut self, settings: Settings) {
        let client = self.controller_client().await;
        let namespaces = match &self.install {
            Install::ClusterWide => vec![],
            Install::Namespaced(namespaces) => namespaces.clone(),
        };
        let ctx = Arc::new(Context::new(
            client,
            self.aws.clone(),
            self.metrics.clone(),
            settings,
            Some("test".into()),
        ));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let run = rdscred::runtime::controller::run(
            ctx.clone(),
            rdscred::runtime::controller::Scope {
                namespaces,
                concurrency: 4,
                shard: None,
            },
            async move {
                let _ = rx.await;
            },
        );
        self.controller = Some((tokio::spawn(run), tx));
        self.ctx = Some(ctx);
    }

    /// Stops the controller the hard way (a crash: nothing is finished or cleaned up).
    pub fn crash(&mut self) {
        if let Some((task, _tx)) = self.controller.take() {
            task.abort();
        }
    }

    /// Stops the controller gracefully.
    pub async fn stop(&mut self) {
        if let Some((task, tx)) = self.controller.take() {
            let _ = tx.send(());
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }

    pub async fn namespace(&self, name: &str, labels: &[(&str, &str)]) {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
    }

    /// An admin secret in moto for `server`, in the RDS JSON shape. Returns its name.
    pub async fn admin_secret(&self, server: &DbServer) -> String {
        let name = unique("admin/");
        let value = RdsSecretValue {
            engine: server.engine.as_str().into(),
            host: server.host.clone(),
            port: server.port,
            username: server.admin.username.clone(),
            password: server.admin.password.clone(),
            dbname: Some(server.database.clone()),
            db_instance_identifier: None,
            db_cluster_identifier: None,
            masterarn: None,
        };
        let json = value.to_secret_json();
        self.scope
            .secrets
            .create(NewSecret {
                name: &name,
                value: &json,
                description: None,
                kms_key_id: None,
                tags: &BTreeMap::new(),
                replica_regions: &[],
                client_request_token: &format!("{:0>32}", unique("t")),
            })
            .await
            .expect("create admin secret");
        name
    }

    /// An RdsDatabase for `server` with a plain endpoint, admitting namespaces labelled
    /// `rdscred-test=yes`. Returns its name and the secret prefix.
    pub async fn database(
        &self,
        server: &DbServer,
        extra_spec: serde_json::Value,
    ) -> (String, String) {
        let name = unique("db-");
        let prefix = format!("rdscred/{name}/");
        let admin = self.admin_secret(server).await;
        let mut spec = json!({
            "endpoint": { "host": server.host, "port": server.port },
            "engine": server.engine.as_str(),
            "databaseName": server.database,
            "adminLogin": { "secretId": admin },
            "tls": { "mode": "disable" },
            "namespaceSelector": { "matchLabels": { "rdscred-test": "yes" } },
            "secretNamePrefix": prefix,
            "tags": { "team": "platform" },
        });
        merge(&mut spec, extra_spec);
        self.apply_database(&name, spec).await;
        (name, prefix)
    }

    pub async fn apply_database(&self, name: &str, spec: serde_json::Value) {
        let db: RdsDatabase = serde_json::from_value(json!({
            "apiVersion": "rdscred.io/v1alpha1", "kind": "RdsDatabase",
            "metadata": { "name": name }, "spec": spec,
        }))
        .expect("RdsDatabase json");
        Api::<RdsDatabase>::all(self.client.clone())
            .create(&PostParams::default(), &db)
            .await
            .expect("create RdsDatabase");
    }

    pub async fn credential(
        &self,
        ns: &str,
        name: &str,
        spec: serde_json::Value,
    ) -> Result<RdsCredential, kube::Error> {
        let cred: RdsCredential = serde_json::from_value(json!({
            "apiVersion": "rdscred.io/v1alpha1", "kind": "RdsCredential",
            "metadata": { "name": name, "namespace": ns }, "spec": spec,
        }))
        .expect("RdsCredential json");
        Api::<RdsCredential>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &cred)
            .await
    }

    pub async fn get_credential(&self, ns: &str, name: &str) -> Option<RdsCredential> {
        Api::<RdsCredential>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .expect("get credential")
    }

    /// Waits until the credential's condition `type_` has `status`; returns the credential.
    pub async fn wait_condition(
        &self,
        ns: &str,
        name: &str,
        type_: &str,
        status: &str,
        timeout: Duration,
    ) -> RdsCredential {
        wait_for(
            &format!("{ns}/{name} {type_}={status}"),
            timeout,
            || async {
                let c = self.get_credential(ns, name).await?;
                let ok = c
                    .status
                    .as_ref()?
                    .conditions
                    .iter()
                    .any(|x| x.type_ == type_ && x.status == status);
                ok.then_some(c)
            },
        )
        .await
    }

    /// Asserts the kstatus summary: `Ready`, `Reconciling` and `Stalled` as given, all three
    /// with one reason and the object's generation observed.
    pub fn assert_kstatus(
        what: &str,
        conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
        generation: Option<i64>,
        expected: [(&str, &str); 3],
    ) {
        let reason = conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| &c.reason);
        for (type_, status) in expected {
            let c = conditions
                .iter()
                .find(|c| c.type_ == type_)
                .unwrap_or_else(|| panic!("{what}: no {type_} in {conditions:?}"));
            assert_eq!(c.status, status, "{what}: {type_} in {conditions:?}");
            assert_eq!(Some(&c.reason), reason, "{what}: {type_} reason");
            assert_eq!(
                c.observed_generation, generation,
                "{what}: {type_} generation"
            );
        }
    }

    /// Waits (at most a minute) for RdsDatabase `db` to be Ready: credentials created before
    /// that would sit out an error backoff.
    pub async fn wait_database_ready(&self, db: &str) {
        wait_for(
            &format!("RdsDatabase {db} Ready"),
            Duration::from_secs(60),
            || async {
                let d = Api::<RdsDatabase>::all(self.client.clone())
                    .get(db)
                    .await
                    .ok()?;
                d.status?
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
                    .then_some(())
            },
        )
        .await;
    }

    pub async fn wait_ready(&self, ns: &str, name: &str) -> RdsCredential {
        self.wait_condition(ns, name, "Ready", "True", Duration::from_secs(60))
            .await
    }

    pub async fn k8s_secret(&self, ns: &str, name: &str) -> Option<Secret> {
        Api::<Secret>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .expect("get secret")
    }

    /// An RDS API client on moto, for creating instances the way RDS users do.
    pub fn rds_sdk(&self) -> aws_sdk_rds::Client {
        aws_sdk_rds::Client::new(self.aws.sdk_config())
    }

    /// AWSCURRENT of a secret, read by stage (moto quirk: never without one).
    pub async fn current(&self, id: &str) -> (String, RdsSecretValue) {
        let v = self
            .scope
            .secrets
            .get_value(id, VersionSelector::Stage(AWSCURRENT))
            .await
            .expect("get value")
            .expect("has AWSCURRENT");
        (
            v.version_id,
            RdsSecretValue::parse(v.value.expose()).expect("RDS JSON"),
        )
    }
}

impl Drop for Ground {
    /// Stops the controller; then (unless the test already failed) fails the test if the
    /// controller was denied anything, and records the chart grants it used.
    fn drop(&mut self) {
        self.crash();
        if let (Some(emulator), Some(rbac)) = (&self.emulator, &self.rbac)
            && !self.denials_expected
        {
            rbac.finish(emulator);
        }
    }
}

async fn real_cluster_client(path: &str) -> Client {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(path).expect("read RDSCRED_TEST_KUBECONFIG");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kubeconfig");
    Client::try_from(config).expect("client")
}

/// Key of a Secret's data as text.
pub fn secret_key(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|b| String::from_utf8(b.0.clone()).expect("utf8"))
}

/// JSON merge patch (RFC 7386): objects merged, `null` removes a key, anything else replaces.
pub fn merge(base: &mut serde_json::Value, patch: serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(&k);
                } else {
                    merge(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        (b, p) => *b = p,
    }
}

// ------------------------------------------------------------------ AWS proxy

/// What an [`AwsProxy`] hook decides for one request: `None` forwards it, `Some((status,
/// body))` answers it in the proxy's place (an injected failure) without reaching the server.
pub type Injected = Option<(u16, String)>;

/// A hook seeing each request's operation (`X-Amz-Target` without the service prefix, as
/// sent: e.g. `ListSecrets`) and body.
pub type Hook = Arc<dyn Fn(&str, &[u8]) -> Injected + Send + Sync>;

/// An HTTP/1.1 proxy on a free loopback port in front of moto (Secrets Manager's JSON
/// protocol), between the controller and the server: counts requests by operation (from the
/// `X-Amz-Target` header) and lets a [`Hook`] fail chosen ones. Requests are relayed one at a
/// time per connection, as the SDK sends them (keep-alive, no pipelining), with their bodies
/// framed by Content-Length (the SDK's JSON requests carry it); responses by Content-Length,
/// chunked encoding or the end of the connection.
pub struct AwsProxy {
    pub url: String,
    counts: Arc<std::sync::Mutex<BTreeMap<String, u64>>>,
}

impl AwsProxy {
    /// Forwards everything (the scale bench's counting proxy).
    pub async fn counting(upstream: &str) -> AwsProxy {
        AwsProxy::start(upstream, Arc::new(|_: &str, _: &[u8]| None)).await
    }

    pub async fn start(upstream: &str, hook: Hook) -> AwsProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy addr"));
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let counts = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        let shared = counts.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, counts, hook) = (upstream.clone(), shared.clone(), hook.clone());
                tokio::spawn(async move {
                    let _ = relay(client, &upstream, &counts, &hook).await;
                });
            }
        });
        AwsProxy { url, counts }
    }

    /// Requests seen so far by operation (forwarded or answered by the hook).
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.lock().expect("counts lock").clone()
    }
}

/// One client connection: each request counted, offered to the hook, then answered by it or
/// relayed to a connection of our own to `upstream` (opened on first use).
async fn relay(
    mut client: tokio::net::TcpStream,
    upstream: &str,
    counts: &std::sync::Mutex<BTreeMap<String, u64>>,
    hook: &Hook,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut from_client = Vec::new();
    let mut server: Option<tokio::net::TcpStream> = None;
    let mut from_server = Vec::new();
    loop {
        let Some((request, head_len)) = read_message(&mut client, &mut from_client, false).await?
        else {
            return Ok(());
        };
        let head = String::from_utf8_lossy(&request[..head_len]).to_string();
        let operation = header(&head, "x-amz-target")
            .map(|t| t.rsplit('.').next().unwrap_or(t).to_owned())
            .unwrap_or_default();
        *counts
            .lock()
            .expect("counts lock")
            .entry(operation.clone())
            .or_insert(0) += 1;
        if let Some((status, body)) = hook(&operation, &request[head_len..]) {
            let response = format!(
                "HTTP/1.1 {status} Injected\r\ncontent-type: application/x-amz-json-1.1\r\n\
                 x-amzn-requestid: injected\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            client.write_all(response.as_bytes()).await?;
            continue;
        }
        if server.is_none() {
            server = Some(tokio::net::TcpStream::connect(upstream).await?);
        }
        let up = server.as_mut().expect("just connected");
        up.write_all(&request).await?;
        let Some((response, _)) = read_message(up, &mut from_server, true).await? else {
            return Ok(());
        };
        client.write_all(&response).await?;
    }
}

/// The value of header `name` (lower case) in an HTTP head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Reads one HTTP message from `stream` (with what is left in `buf` from the last one): its
/// bytes and the length of its head. `None` at a clean end of the connection.
async fn read_message(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    response: bool,
) -> std::io::Result<Option<(Vec<u8>, usize)>> {
    use tokio::io::AsyncReadExt;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut more = async |stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>| {
        let n = stream.read(&mut chunk).await?;
        buf.extend_from_slice(&chunk[..n]);
        std::io::Result::Ok(n)
    };
    let head_len = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if more(stream, buf).await? == 0 {
            return Ok(None);
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_len]).to_string();
    let chunked =
        header(&head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let end = if let Some(len) = header(&head, "content-length") {
        let end = head_len + len.parse::<usize>().unwrap_or(0);
        while buf.len() < end {
            if more(stream, buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        end
    } else if chunked {
        // Chunks up to the last (empty) one and its blank line.
        let mut at = head_len;
        loop {
            let Some(line) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
                if more(stream, buf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                continue;
            };
            let size_text = String::from_utf8_lossy(&buf[at..at + line]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
            let next = at + line + 2 + size + 2;
            while buf.len() < next {
                if more(stream, buf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
            at = next;
            if size == 0 {
                break at;
            }
        }
    } else if response {
        // Neither: the body runs to the end of the connection.
        while more(stream, buf).await? > 0 {}
        buf.len()
    } else {
        head_len
    };
    let message: Vec<u8> = buf.drain(..end).collect();
    Ok(Some((message, head_len)))
}
