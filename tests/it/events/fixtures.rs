//! The ground of the event tests (and of the event bench, which includes this file): an SQS
//! queue and an EventBridge bus in moto, the events AWS would send, credentials and workloads.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, PostParams};
use rdscred::aws::{NewSecret, SecretMeta};
use rdscred::context::Settings;
use rdscred::runtime::events::EventsConfig;
use rdscred::secret::{RdsSecretValue, SecretString};
use serde_json::{Value, json};

use crate::support::{
    DbServer, Ground, move_awscurrent_to_new_version, secret_key, unique, wait_for,
};

pub const NS_LABEL: (&str, &str) = ("rdscred-test", "yes");
/// The controller's Pod, which queue Events are about.
pub const POD_NS: &str = "rdscred-system";
pub const POD: &str = "rdscred-test-pod";
/// The bulk poll interval with events on: nothing in these tests waits for it.
pub const BACKSTOP: Duration = Duration::from_secs(1800);
/// How long a test waits for an event to carry an outside change to the Secret and the
/// dependents. The goal is 2 s, and `cargo bench --bench events` measures it (p50/p99); a test
/// only proves the event carried the change (no poll ran: the backstop is 30 minutes away, and
/// the next drift check a drift interval), so the wait is a bound well under those, not the
/// goal — four integration tests share 2 cores.
pub const BY_EVENT: Duration = Duration::from_secs(10);

// ------------------------------------------------------------------ the queue and EventBridge

pub struct Queue {
    sqs: aws_sdk_sqs::Client,
    name: String,
    pub url: String,
    pub arn: String,
    visibility: u32,
}

impl Queue {
    pub async fn create(g: &Ground, visibility: u32) -> Queue {
        let sqs = aws_sdk_sqs::Client::new(g.aws.sdk_config());
        let name = unique("rdscred-events-");
        let mut q = Queue {
            sqs,
            name,
            url: String::new(),
            arn: String::new(),
            visibility,
        };
        q.recreate().await;
        q
    }

    pub async fn recreate(&mut self) {
        self.url = self
            .sqs
            .create_queue()
            .queue_name(&self.name)
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                self.visibility.to_string(),
            )
            .send()
            .await
            .expect("CreateQueue")
            .queue_url
            .expect("queue url");
        self.arn = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("GetQueueAttributes")
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .expect("queue arn");
    }

    pub async fn delete(&self) {
        self.sqs
            .delete_queue()
            .queue_url(&self.url)
            .send()
            .await
            .expect("DeleteQueue");
    }

    /// Writes bodies to the queue directly (SendMessageBatch, 10 at a time).
    pub async fn send(&self, bodies: &[String]) {
        for chunk in bodies.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(b)
                        .build()
                        .unwrap()
                })
                .collect();
            let out = self
                .sqs
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .expect("SendMessageBatch");
            assert!(out.failed().is_empty(), "{:?}", out.failed());
        }
    }

    /// (visible, in flight) messages.
    pub async fn depth(&self) -> (u64, u64) {
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("GetQueueAttributes")
            .attributes
            .unwrap_or_default();
        let n = |a| {
            attrs
                .get(&a)
                .and_then(|v| v.parse().ok())
                .unwrap_or(u64::MAX)
        };
        (
            n(QueueAttributeName::ApproximateNumberOfMessages),
            n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    }

    pub async fn wait_drained(&self, timeout: Duration) {
        wait_for("the queue to be empty", timeout, || async {
            (self.depth().await == (0, 0)).then_some(())
        })
        .await
    }
}

/// Runs a boto3 script from the test ground's venv (moto's EventBridge; the Rust SDK for it is
/// not a dependency of rdscred).
pub fn python(script: &str, args: &[&str]) -> String {
    let venv = std::env::var("RDSCRED_TEST_VENV")
        .unwrap_or_else(|_| format!("{}/.venv", env!("CARGO_MANIFEST_DIR")));
    let out = std::process::Command::new(format!("{venv}/bin/python"))
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("running the venv's python (bash scripts/test-env.sh up)");
    assert!(
        out.status.success(),
        "boto3 script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub const EVENTBRIDGE: &str = r#"
import json, os, sys, boto3
eb = boto3.client("events", endpoint_url=os.environ["RDSCRED_TEST_AWS_ENDPOINT"], region_name="us-east-1")
bus = sys.argv[2]
if sys.argv[1] == "rule":
    _, _, _, queue_arn, pattern = sys.argv
    eb.create_event_bus(Name=bus)
    eb.put_rule(Name=bus, EventBusName=bus, EventPattern=pattern)
    eb.put_targets(Rule=bus, EventBusName=bus, Targets=[{"Id": "rdscred-events", "Arn": queue_arn}])
else:
    entries = json.loads(sys.argv[3])
    for e in entries:
        e["EventBusName"] = bus
    out = eb.put_events(Entries=entries)
    assert out["FailedEntryCount"] == 0, out
"#;

/// The event pattern of the documented rule (examples/06-event-driven-propagation).
pub fn documented_pattern() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/06-event-driven-propagation/event-pattern.json"
    ))
    .expect("event pattern example")
}

/// An event bus of this test's own (AWS sends Secrets Manager events to the default bus; the
/// tests share one moto, whose PutEvents fails outright when any matching rule targets a queue
/// that no longer exists) with a rule of the documented pattern targeting the queue.
pub struct Bus(String);

impl Bus {
    pub fn to(queue: &Queue) -> Bus {
        let bus = unique("rdscred-");
        python(
            EVENTBRIDGE,
            &["rule", &bus, &queue.arn, &documented_pattern()],
        );
        Bus(bus)
    }

    /// PutEvents of `envelopes` (EventBridge builds the envelope; the rule routes them).
    pub fn put(&self, envelopes: &[Value]) {
        let entries: Vec<Value> = envelopes
            .iter()
            .map(|e| {
                json!({
                    "Source": e["source"], "DetailType": e["detail-type"],
                    "Detail": e["detail"].to_string(), "Resources": e["resources"],
                })
            })
            .collect();
        python(
            EVENTBRIDGE,
            &["put", &self.0, &Value::from(entries).to_string()],
        );
    }
}

// ------------------------------------------------------------------ events AWS would send

pub fn envelope(detail_type: &str, resources: Vec<String>, detail: Value) -> Value {
    let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap();
    json!({
        "version": "0", "id": unique("ev-"), "detail-type": detail_type,
        "source": "aws.secretsmanager", "account": "123456789012", "time": now.to_string(),
        "region": "us-east-1", "resources": resources, "detail": detail,
    })
}

pub fn label_updated(meta: &SecretMeta, version: &str) -> Value {
    envelope(
        "Secret Label Updated",
        vec![meta.arn.clone()],
        json!({ "name": meta.name, "labelUpdated": "AWSCURRENT", "versionId": version }),
    )
}

/// A CloudTrail API call event naming the secret as the caller did (`secret_id`).
pub fn api_call(event_name: &str, secret_id: &str, arn: &str) -> Value {
    envelope(
        "AWS API Call via CloudTrail",
        vec![],
        json!({
            "eventVersion": "1.09", "eventSource": "secretsmanager.amazonaws.com",
            "eventName": event_name, "awsRegion": "us-east-1", "eventType": "AwsApiCall",
            "readOnly": false, "userIdentity": { "type": "AssumedRole" },
            "requestParameters": { "secretId": secret_id, "clientRequestToken": "x" },
            "responseElements": { "arn": arn },
        }),
    )
}

pub fn service_event(event_name: &str, arn: &str) -> Value {
    envelope(
        "AWS Service Event via CloudTrail",
        vec![],
        json!({
            "eventVersion": "1.09", "eventSource": "secretsmanager.amazonaws.com",
            "eventName": event_name, "eventType": "AwsServiceEvent",
            "additionalEventData": { "SecretId": arn },
        }),
    )
}

/// What AWS sends after PutSecretValue + UpdateSecretVersionStage.
pub fn rotation_events(meta: &SecretMeta, version: &str, by_name: bool) -> Vec<Value> {
    let id = if by_name { &meta.name } else { &meta.arn };
    vec![
        api_call("PutSecretValue", id, &meta.arn),
        api_call("UpdateSecretVersionStage", id, &meta.arn),
        label_updated(meta, version),
    ]
}

pub fn bodies(envelopes: &[Value]) -> Vec<String> {
    envelopes.iter().map(Value::to_string).collect()
}

// ------------------------------------------------------------------ ground helpers

pub fn events_config(queue: &Queue, fallback: Duration) -> EventsConfig {
    EventsConfig {
        queue_url: queue.url.clone(),
        region: None,
        role_arn: None,
        fallback_poll_interval: fallback,
        retry_max: Duration::from_millis(500),
        report_to: Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(POD.into()),
            namespace: Some(POD_NS.into()),
            ..ObjectReference::default()
        }),
    }
}

/// Events on, the bulk poll at 30 minutes (while the queue is read), drift checks a minute
/// apart: within a test only events move anything.
pub fn settings_with_events(g: &Ground, queue: &Queue, fallback: Duration) -> Settings {
    Settings {
        poll_interval: BACKSTOP,
        drift_interval: Duration::from_secs(60),
        events: Some(events_config(queue, fallback)),
        ..g.settings()
    }
}

pub fn sample(g: &Ground, series: &str, labels: &str) -> f64 {
    let text = g.metrics.encode();
    let prefix = if labels.is_empty() {
        format!("{series} ")
    } else {
        format!("{series}{{{labels}}} ")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

pub async fn wait_queue_up(g: &Ground, queue: &Queue, up: bool, timeout: Duration) {
    let labels = format!(r#"queue="{}""#, queue.url);
    let want = if up { 1.0 } else { 0.0 };
    let text = |g: &Ground| g.metrics.encode();
    wait_for(
        &format!("rdscred_events_queue_up = {want}"),
        timeout,
        || {
            let present = text(g).contains(&format!("rdscred_events_queue_up{{{labels}}} "));
            let v = sample(g, "rdscred_events_queue_up", &labels);
            async move { (present && v == want).then_some(()) }
        },
    )
    .await
}

pub async fn admitted_namespace(g: &Ground) -> String {
    let ns = unique("ns-");
    g.namespace(&ns, &[NS_LABEL]).await;
    ns
}

/// A Deployment reading Secret `secret` through envFrom.
pub async fn deployment(g: &Ground, ns: &str, name: &str, secret: &str) {
    let d: Deployment = serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": ns },
        "spec": {
            "selector": { "matchLabels": { "app": name } },
            "template": { "metadata": { "labels": { "app": name } }, "spec": {
                "containers": [{ "name": "app", "image": "busybox", "envFrom": [{ "secretRef": { "name": secret } }] }],
            } },
        },
    }))
    .unwrap();
    Api::<Deployment>::namespaced(g.client.clone(), ns)
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
}

/// (generation, AWSCURRENT version the pod template was rolled to) of a Deployment.
pub async fn rolled(g: &Ground, ns: &str, name: &str, secret: &str) -> (i64, Option<String>) {
    let d = Api::<Deployment>::namespaced(g.client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    let version = d
        .spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.annotations)
        .and_then(|a| a.get(&format!("{secret}.rdscred.io/version-id")).cloned());
    (d.metadata.generation.unwrap_or(0), version)
}

/// A secret in moto in the RDS JSON shape, for sync-only credentials. Returns its metadata.
pub async fn external_secret(
    g: &Ground,
    name: &str,
    server: &DbServer,
) -> (SecretMeta, RdsSecretValue) {
    let value = RdsSecretValue {
        engine: "postgres".into(),
        host: server.host.clone(),
        port: server.port,
        username: "ext_user".into(),
        password: SecretString::new(format!("first-{}", unique("pw"))),
        dbname: Some(server.database.clone()),
        db_instance_identifier: None,
        db_cluster_identifier: None,
        masterarn: None,
    };
    let meta = g
        .scope
        .secrets
        .create(NewSecret {
            name,
            value: &value.to_secret_json(),
            description: None,
            kms_key_id: None,
            tags: &BTreeMap::new(),
            replica_regions: &[],
            client_request_token: &format!("{:0>32}", unique("t")),
        })
        .await
        .unwrap();
    (meta, value)
}

pub async fn sync_only(g: &Ground, ns: &str, name: &str, db: &str, secret: &str, target: &str) {
    g.credential(
        ns,
        name,
        json!({ "databaseRef": { "name": db }, "mode": "sync-only",
                "secret": { "name": secret }, "target": { "name": target } }),
    )
    .await
    .unwrap();
}

/// A rotator outside rdscred, the way a rotation Lambda finishes (see
/// [`move_awscurrent_to_new_version`]), with `value` as the new version. Returns its id.
pub async fn outside_rotate(g: &Ground, meta: &SecretMeta, value: &RdsSecretValue) -> String {
    let sm = aws_sdk_secretsmanager::Client::new(g.aws.sdk_config());
    move_awscurrent_to_new_version(&sm, &meta.arn, value.to_secret_json().expose()).await
}

/// Waits (at most `BY_EVENT` from now) for the Secret to hold `password` and the Deployment to
/// be rolled to `version`; returns how long it took.
pub async fn synced_and_rolled(
    g: &Ground,
    ns: &str,
    (secret, deploy): (&str, &str),
    password: &str,
    version: &str,
) -> Duration {
    let started = Instant::now();
    wait_for(
        &format!("{ns}/{secret} holding the new value and {deploy} rolled"),
        BY_EVENT,
        || async {
            let s = g.k8s_secret(ns, secret).await?;
            let holds = secret_key(&s, "password").as_deref() == Some(password);
            let (_, rolled_to) = rolled(g, ns, deploy, secret).await;
            (holds && rolled_to.as_deref() == Some(version)).then_some(())
        },
    )
    .await;
    started.elapsed()
}

/// Waits until every rollout the credential started is complete (it requeues itself until
/// then) and no reconcile has finished for half a second: from here on nothing but an event
/// (or a poll) looks at its secret for a drift interval.
pub async fn rollouts_complete(g: &Ground, ns: &str, name: &str) {
    wait_for("rollouts complete", Duration::from_secs(15), || async {
        let st = g.get_credential(ns, name).await?.status?;
        st.rolled_workloads
            .iter()
            .all(|w| w.completed_at.is_some())
            .then_some(())
    })
    .await;
    let reconciles = |g: &Ground| {
        g.metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with("rdscred_reconciles_total{kind=\"RdsCredential\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let mut last = (reconciles(g), Instant::now());
    wait_for("the controller to settle", Duration::from_secs(15), || {
        let now = reconciles(g);
        if now != last.0 {
            last = (now, Instant::now());
        }
        let settled = last.1.elapsed() >= Duration::from_millis(500);
        async move { settled.then_some(()) }
    })
    .await;
}

pub fn new_password(value: &mut RdsSecretValue) -> String {
    let pw = format!("Outside-{}", unique("pw"));
    value.password = SecretString::new(pw.clone());
    pw
}
