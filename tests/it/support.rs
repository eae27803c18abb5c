//! Test ground for the controller-level tests: the real services from `scripts/test-env.sh`
//! plus an in-process Kubernetes API emulator with the CRDs from `crds/`, and the real
//! controller running against them.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use kube_emulator::Emulator;
use rdscred::aws::{AWSCURRENT, ApiCalls, Aws, AwsScope, AwsSettings, NewSecret, VersionSelector};
use rdscred::crd::{EngineKind, RdsCredential, RdsDatabase};
use rdscred::engine::{ConnectTarget, Login, TlsSettings};
use rdscred::reconcile::{Context, Settings};
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
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id() % 100_000)
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

/// Emulator (or a real cluster) + AWS + the running controller.
pub struct Ground {
    /// None when running against a real cluster (`RDSCRED_TEST_KUBECONFIG`).
    pub emulator: Option<Emulator>,
    pub client: Client,
    pub aws: Aws,
    pub scope: AwsScope,
    pub calls: ApiCalls,
    pub metrics: Metrics,
    pub cluster: String,
    pub ctx: Option<Arc<Context>>,
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
        let calls = ApiCalls::default();
        let aws = aws(calls.clone()).await;
        let scope = aws.scoped(None, None).await.expect("aws scope");
        Ground {
            client,
            emulator,
            scope,
            metrics: Metrics::new(calls.clone()),
            calls,
            aws,
            cluster: unique("c"),
            ctx: None,
            controller: None,
        }
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
        let ctx = Arc::new(Context::new(
            self.client.clone(),
            self.aws.clone(),
            self.metrics.clone(),
            settings,
            Some("test".into()),
        ));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let run = rdscred::controller::run(
            ctx.clone(),
            rdscred::controller::Scope {
                namespaces: vec![],
                concurrency: 4,
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
    fn drop(&mut self) {
        self.crash();
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
