//! The IAM policy `rdscred iam-policy` prints allows every AWS request the controller makes,
//! and denies what it must: every request the real controller sent during a scenario (the
//! request log of `ApiCalls`, read from the wire) is turned into the authorization checks AWS
//! performs for it, the implicit ones included, and evaluated (`iam_eval`) against the policy
//! printed for that scenario's configuration: prefix only, with a KMS key (by ARN and by
//! alias), with replicas, with Lambda rotation, with an assumed role, with an RDS instance and
//! its RDS-managed master secret.
//!
//! What AWS checks per call follows the Service Authorization Reference (actions, resources and
//! condition keys for Secrets Manager, KMS, RDS, STS) and the API references:
//! - every secret action is authorized on the secret's ARN, with its tags as
//!   `secretsmanager:ResourceTag/…` and `aws:ResourceTag/…` (none for a secret being created);
//! - `CreateSecret` with `Tags` is also authorized as `TagResource` (request tags as
//!   `aws:RequestTag/…`, their keys as `aws:TagKeys`), and with `AddReplicaRegions` as
//!   `ReplicateSecretToRegions` on the new, untagged secret;
//! - a customer managed KMS key is used by the caller through Secrets Manager
//!   (`kms:ViaService`): `GenerateDataKey` + `Decrypt` to write a value (CreateSecret,
//!   PutSecretValue), `Decrypt` to read one, `GenerateDataKey` + `Encrypt` + `Decrypt` to change
//!   a secret's key (UpdateSecret), and the replica region's key for a replica;
//! - `RotateSecret` with a `RotationLambdaARN` also needs `lambda:InvokeFunction` on it;
//! - calls through an assumed role are authorized by that role's policy, the `AssumeRole` by
//!   the controller's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use rdscred::aws::RecordedRequest;
use rdscred::crd::RdsCredential;
use rdscred::iam::{IamPolicyInput, MANAGED_BY_TAG, MANAGED_BY_VALUE, policy_document};
use serde_json::{Value, json};

use crate::iam_eval::{Decision, Request, evaluate};
use crate::support::{DbServer, Ground, unique, wait_for};

/// moto's account and the tests' region.
pub(crate) const ACCOUNT: &str = "123456789012";
pub(crate) const REGION: &str = "us-east-1";
pub(crate) const NS_LABEL: (&str, &str) = ("rdscred-test", "yes");

pub(crate) fn input() -> IamPolicyInput {
    IamPolicyInput {
        partition: "aws".into(),
        regions: vec![REGION.into()],
        account: Some(ACCOUNT.into()),
        ..IamPolicyInput::default()
    }
}

// ------------------------------------------------------------------ what AWS authorizes

/// What the model knows about secrets while replaying a request log: tags and KMS key per
/// secret name, and which aliases each KMS key has.
#[derive(Default)]
pub(crate) struct Model {
    tags: HashMap<String, BTreeMap<String, String>>,
    kms: HashMap<String, Option<String>>,
    /// alias name (`alias/x`) -> key ARN.
    aliases: BTreeMap<String, String>,
}

/// A secret's name from a `SecretId` (name or ARN; moto and AWS append `-` + 6 characters).
fn secret_name(id: &str) -> String {
    match id.split_once(":secret:") {
        Some((_, rest)) if rest.len() > 7 => rest[..rest.len() - 7].to_string(),
        Some((_, rest)) => rest.to_string(),
        None => id.to_string(),
    }
}

/// The ARN AWS authorizes a secret request on.
fn secret_arn(id: &str, region: &str) -> String {
    if id.starts_with("arn:") {
        id.to_string()
    } else {
        format!("arn:aws:secretsmanager:{region}:{ACCOUNT}:secret:{id}-AbC123")
    }
}

fn tags_of(params: &Value) -> Vec<(String, String)> {
    params["Tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["Key"].as_str().unwrap_or("").to_string(),
                t["Value"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

impl Model {
    fn key_arn(&self, key: &str, region: &str) -> String {
        if let Some(arn) = self.aliases.get(key) {
            return arn.clone();
        }
        if key.starts_with("arn:") {
            return key.to_string();
        }
        format!("arn:aws:kms:{region}:{ACCOUNT}:key/{key}")
    }

    /// A KMS check through Secrets Manager in `region`.
    fn kms(&self, action: &str, key: &str, region: &str) -> Request {
        let arn = self.key_arn(key, region);
        let aliases: Vec<&str> = self
            .aliases
            .iter()
            .filter(|(_, k)| **k == arn)
            .map(|(a, _)| a.as_str())
            .collect();
        let mut r = Request::new(action, &arn)
            .with(
                "kms:ViaService",
                &[&format!("secretsmanager.{region}.amazonaws.com")],
            )
            .with("kms:CallerAccount", &[ACCOUNT]);
        if !aliases.is_empty() {
            r = r.with("kms:ResourceAliases", &aliases);
        }
        r
    }

    /// A secret action on `id` with the secret's current tags as resource tags.
    fn on_secret(&self, action: &str, id: &str, region: &str) -> Request {
        let name = secret_name(id);
        let mut r = Request::new(&format!("secretsmanager:{action}"), &secret_arn(id, region))
            .with("secretsmanager:SecretId", &[id]);
        for (k, v) in self.tags.get(&name).into_iter().flatten() {
            r = r
                .with(&format!("secretsmanager:ResourceTag/{k}"), &[v])
                .with(&format!("aws:ResourceTag/{k}"), &[v]);
        }
        r
    }

    fn customer_key(&self, name: &str) -> Option<String> {
        self.kms.get(name).cloned().flatten()
    }

    /// The authorization checks AWS performs for one request, then the request's effect on
    /// the model (tags, keys).
    pub(crate) fn checks(&mut self, req: &RecordedRequest) -> Vec<Request> {
        let p = &req.params;
        let region = req.region.as_str();
        let id = p["SecretId"].as_str().unwrap_or("").to_string();
        let name = secret_name(&id);
        let replicas = |p: &Value| -> Vec<(String, Option<String>)> {
            p["AddReplicaRegions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    (
                        r["Region"].as_str().unwrap_or("").to_string(),
                        r["KmsKeyId"].as_str().map(str::to_string),
                    )
                })
                .collect()
        };
        match (req.service.as_str(), req.operation.as_str()) {
            ("secretsmanager", "ListSecrets") => {
                vec![Request::new("secretsmanager:ListSecrets", "*")]
            }
            ("secretsmanager", "DescribeSecret") => {
                vec![self.on_secret("DescribeSecret", &id, region)]
            }
            ("secretsmanager", "GetSecretValue") => {
                let mut out = vec![self.on_secret("GetSecretValue", &id, region)];
                if let Some(key) = self.customer_key(&name) {
                    out.push(self.kms("kms:Decrypt", &key, region));
                }
                out
            }
            ("secretsmanager", "CreateSecret") => {
                let name = p["Name"]
                    .as_str()
                    .expect("CreateSecret names the secret")
                    .to_string();
                let tags = tags_of(p);
                let keys: Vec<&str> = tags.iter().map(|(k, _)| k.as_str()).collect();
                let arn = secret_arn(&name, region);
                let mut create = Request::new("secretsmanager:CreateSecret", &arn)
                    .with("secretsmanager:Name", &[&name]);
                for (k, v) in &tags {
                    create = create.with(&format!("aws:RequestTag/{k}"), &[v]);
                }
                if !keys.is_empty() {
                    create = create.with("aws:TagKeys", &keys);
                }
                let mut out = vec![create.clone()];
                if !tags.is_empty() {
                    let mut tag = create.clone();
                    tag.action = "secretsmanager:TagResource".into();
                    out.push(tag);
                }
                let added = replicas(p);
                if !added.is_empty() {
                    // Authorized on the secret being created: it has no tags yet.
                    let regions: Vec<&str> = added.iter().map(|(r, _)| r.as_str()).collect();
                    out.push(
                        Request::new("secretsmanager:ReplicateSecretToRegions", &arn)
                            .with("secretsmanager:AddReplicaRegions", &regions),
                    );
                }
                let key = p["KmsKeyId"].as_str().map(str::to_string);
                if let Some(key) = &key {
                    out.push(self.kms("kms:GenerateDataKey", key, region));
                    out.push(self.kms("kms:Decrypt", key, region));
                }
                for (r, k) in &added {
                    if let Some(k) = k {
                        out.push(self.kms("kms:GenerateDataKey", k, r));
                    }
                }
                self.tags.insert(name.clone(), tags.into_iter().collect());
                self.kms.insert(name, key);
                out
            }
            ("secretsmanager", "PutSecretValue") => {
                let mut out = vec![self.on_secret("PutSecretValue", &id, region)];
                if let Some(key) = self.customer_key(&name) {
                    out.push(self.kms("kms:GenerateDataKey", &key, region));
                    out.push(self.kms("kms:Decrypt", &key, region));
                }
                out
            }
            ("secretsmanager", "UpdateSecret") => {
                let mut out = vec![self.on_secret("UpdateSecret", &id, region)];
                if let Some(new) = p["KmsKeyId"].as_str() {
                    if self.customer_key(&name).as_deref() != Some(new) {
                        for a in ["kms:GenerateDataKey", "kms:Encrypt", "kms:Decrypt"] {
                            out.push(self.kms(a, new, region));
                        }
                        if let Some(old) = self.customer_key(&name) {
                            out.push(self.kms("kms:Decrypt", &old, region));
                        }
                    }
                    self.kms.insert(name, Some(new.to_string()));
                }
                out
            }
            ("secretsmanager", "TagResource") => {
                let tags = tags_of(p);
                let keys: Vec<&str> = tags.iter().map(|(k, _)| k.as_str()).collect();
                let mut r = self
                    .on_secret("TagResource", &id, region)
                    .with("aws:TagKeys", &keys);
                for (k, v) in &tags {
                    r = r.with(&format!("aws:RequestTag/{k}"), &[v]);
                }
                self.tags.entry(name).or_default().extend(tags);
                vec![r]
            }
            ("secretsmanager", "UntagResource") => {
                let keys: Vec<String> = p["TagKeys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect();
                let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                let r = self
                    .on_secret("UntagResource", &id, region)
                    .with("aws:TagKeys", &refs);
                if let Some(t) = self.tags.get_mut(&name) {
                    for k in &keys {
                        t.remove(k);
                    }
                }
                vec![r]
            }
            ("secretsmanager", "ReplicateSecretToRegions") => {
                let added = replicas(p);
                let regions: Vec<&str> = added.iter().map(|(r, _)| r.as_str()).collect();
                let mut out = vec![
                    self.on_secret("ReplicateSecretToRegions", &id, region)
                        .with("secretsmanager:AddReplicaRegions", &regions),
                ];
                if let Some(key) = self.customer_key(&name) {
                    out.push(self.kms("kms:Decrypt", &key, region));
                }
                for (r, k) in &added {
                    if let Some(k) = k {
                        out.push(self.kms("kms:GenerateDataKey", k, r));
                    }
                }
                out
            }
            ("secretsmanager", "RotateSecret") => {
                let mut r = self.on_secret("RotateSecret", &id, region);
                let mut out = vec![];
                if let Some(lambda) = p["RotationLambdaARN"].as_str() {
                    r = r.with("secretsmanager:RotationLambdaARN", &[lambda]);
                    out.push(Request::new("lambda:InvokeFunction", lambda));
                }
                out.insert(0, r);
                out
            }
            // BlockPublicPolicy is a condition key of PutResourcePolicy (absent when not sent).
            ("secretsmanager", "PutResourcePolicy") => {
                let mut r = self.on_secret("PutResourcePolicy", &id, region);
                if let Some(b) = p["BlockPublicPolicy"].as_bool() {
                    r = r.with("secretsmanager:BlockPublicPolicy", &[&b.to_string()]);
                }
                vec![r]
            }
            (
                "secretsmanager",
                op @ ("GetResourcePolicy" | "ValidateResourcePolicy" | "DeleteResourcePolicy"),
            ) => vec![self.on_secret(op, &id, region)],
            (
                "secretsmanager",
                op @ ("UpdateSecretVersionStage"
                | "DeleteSecret"
                | "RestoreSecret"
                | "CancelRotateSecret"
                | "RemoveRegionsFromReplication"),
            ) => {
                vec![self.on_secret(op, &id, region)]
            }
            ("rds", "DescribeDBInstances") => {
                let db = p["DBInstanceIdentifier"].as_str().unwrap_or("*");
                vec![Request::new(
                    "rds:DescribeDBInstances",
                    &format!("arn:aws:rds:{region}:{ACCOUNT}:db:{db}"),
                )]
            }
            ("rds", "DescribeDBClusters") => {
                let db = p["DBClusterIdentifier"].as_str().unwrap_or("*");
                vec![Request::new(
                    "rds:DescribeDBClusters",
                    &format!("arn:aws:rds:{region}:{ACCOUNT}:cluster:{db}"),
                )]
            }
            ("sts", "AssumeRole") => vec![Request::new(
                "sts:AssumeRole",
                p["RoleArn"].as_str().expect("RoleArn"),
            )],
            (service, op) => {
                panic!("the IAM model does not know {service}:{op}: add what AWS authorizes for it")
            }
        }
    }
}

/// Every check of every request the controller sent, evaluated against `policies` (by the
/// role the request ran as; `None` = the controller's own). Panics listing every denial.
/// Returns the actions evaluated (to prove a scenario exercised what it is about).
pub(crate) async fn assert_allowed(
    g: &Ground,
    model: &mut Model,
    policies: &HashMap<Option<String>, Value>,
) -> BTreeSet<String> {
    let log = g
        .calls
        .request_log()
        .expect("the ground logs requests")
        .snapshot();
    assert!(!log.is_empty(), "the controller made no AWS request");
    assert!(
        log.iter().all(|r| r.params.get("SecretString").is_none()),
        "the request log must never hold a secret value"
    );
    // Secrets the log does not create (admin secrets, RDS-managed ones, pre-existing ones)
    // start with their current tags and key.
    let mut known: BTreeSet<String> = BTreeSet::new();
    for req in &log {
        let id = req.params["SecretId"].as_str().map(secret_name);
        if req.operation == "CreateSecret" {
            known.insert(req.params["Name"].as_str().unwrap_or("").to_string());
        } else if let Some(name) = id
            && known.insert(name.clone())
            && let Ok(Some(meta)) = g.scope.secrets.describe(&name).await
        {
            model.tags.insert(name.clone(), meta.tags.clone());
            model.kms.insert(name, meta.kms_key_id.clone());
        }
    }
    let mut denied = Vec::new();
    let mut actions = BTreeSet::new();
    for req in &log {
        let policy = policies
            .get(&req.role_arn)
            .unwrap_or_else(|| panic!("no policy for the identity {:?}", req.role_arn));
        for check in model.checks(req) {
            actions.insert(check.action.clone());
            let (decision, _) = evaluate(policy, &check);
            if decision != Decision::Allow {
                denied.push(format!(
                    "{decision:?}: {} on {} (for {}:{} as {:?}) with {:?}",
                    check.action,
                    check.resource,
                    req.service,
                    req.operation,
                    req.role_arn,
                    check.context
                ));
            }
        }
    }
    assert!(
        denied.is_empty(),
        "the printed policy denies {} check(s) of the controller's requests:\n{}",
        denied.len(),
        denied.join("\n")
    );
    actions
}

pub(crate) fn expect_actions(got: &BTreeSet<String>, want: &[&str]) {
    for a in want {
        assert!(
            got.contains(*a),
            "the scenario did not exercise {a}: {got:?}"
        );
    }
}

// ------------------------------------------------------------------ scenarios

pub(crate) async fn admitted(g: &Ground) -> String {
    let ns = unique("ns-");
    g.namespace(&ns, &[NS_LABEL]).await;
    ns
}

async fn ready_with(g: &Ground, ns: &str, name: &str, spec: Value) -> RdsCredential {
    g.credential(ns, name, spec)
        .await
        .expect("create credential");
    g.wait_ready(ns, name).await
}

pub(crate) async fn patch_credential(g: &Ground, ns: &str, name: &str, patch: Value) {
    Api::<RdsCredential>::namespaced(g.client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch credential");
}

async fn wait_status(
    g: &Ground,
    ns: &str,
    name: &str,
    what: &str,
    check: impl Fn(&RdsCredential) -> bool,
) {
    wait_for(what, Duration::from_secs(60), || async {
        let c = g.get_credential(ns, name).await?;
        check(&c).then_some(())
    })
    .await;
}

fn ready_gen(c: &RdsCredential) -> bool {
    c.status.as_ref().is_some_and(|s| {
        s.observed_generation == c.metadata.generation
            && s.conditions
                .iter()
                .any(|x| x.type_ == "Ready" && x.status == "True")
    })
}

/// Prefix only (the default key, no replicas): create, rotate, change description and tags,
/// delete with a recovery window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_only_policy_allows_every_request() {
    let mut g = Ground::new().await;
    g.start().await;
    let ns = admitted(&g).await;
    let (db, prefix) = g.database(&DbServer::postgres(), json!({})).await;
    let admin = Api::<rdscred::crd::RdsDatabase>::all(g.client.clone())
        .get(&db)
        .await
        .unwrap()
        .spec
        .admin_login
        .secret_id
        .clone()
        .expect("admin secret id");
    let user = unique("iam_");
    let secret = format!("{prefix}{user}");
    let spec = json!({
        "databaseRef": { "name": db }, "username": user,
        "rotation": { "strategy": "single-user", "minimumInterval": "1s" },
        "secret": { "name": secret, "description": "first", "tags": { "app": "shop" },
                    "deletionPolicy": "Delete", "recoveryWindowInDays": 7 },
    });
    ready_with(&g, &ns, "app", spec.clone()).await;
    wait_for("a bulk poll", Duration::from_secs(30), || async {
        (g.calls.total("ListSecrets") > 0).then_some(())
    })
    .await;
    patch_credential(
        &g,
        &ns,
        "app",
        json!({ "metadata": { "annotations": { "rdscred.io/rotate-requested-at": "1" } } }),
    )
    .await;
    wait_status(&g, &ns, "app", "rotated", |c| {
        c.status
            .as_ref()
            .is_some_and(|s| s.last_rotation_time.is_some())
    })
    .await;
    // Someone schedules the secret for deletion: the controller restores it.
    let arn = g
        .scope
        .secrets
        .describe(&secret)
        .await
        .unwrap()
        .unwrap()
        .arn;
    g.scope.secrets.schedule_deletion(&arn, 7).await.unwrap();
    patch_credential(
        &g,
        &ns,
        "app",
        json!({ "metadata": { "annotations": { "iam-test": "reconcile" } } }),
    )
    .await;
    wait_for("secret restored", Duration::from_secs(60), || async {
        let m = g.scope.secrets.describe(&secret).await.ok()??;
        (!m.is_scheduled_for_deletion()).then_some(())
    })
    .await;
    // The spec's description and tags change: UpdateSecret, TagResource; a removed rdscred.io/
    // tag is untagged (a user tag is left alone by design, so use a managed-prefix one).
    patch_credential(&g, &ns, "app", json!({ "spec": { "secret": { "description": "second", "tags": { "app": "shop", "rdscred.io/extra": "x" } } } })).await;
    wait_status(&g, &ns, "app", "tags synced", ready_gen).await;
    patch_credential(
        &g,
        &ns,
        "app",
        json!({ "spec": { "secret": { "tags": { "app": "shop", "rdscred.io/extra": null } } } }),
    )
    .await;
    wait_status(&g, &ns, "app", "tag removed", ready_gen).await;
    Api::<RdsCredential>::namespaced(g.client.clone(), &ns)
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("credential gone", Duration::from_secs(60), || async {
        g.get_credential(&ns, "app").await.is_none().then_some(())
    })
    .await;
    let mut policy_input = input();
    policy_input.secret_prefixes = vec![prefix.clone()];
    policy_input.admin_secret_arns = vec![admin];
    let policy = policy_document(&policy_input);
    let actions = assert_allowed(
        &g,
        &mut Model::default(),
        &HashMap::from([(None, policy.clone())]),
    )
    .await;
    expect_actions(
        &actions,
        &[
            "secretsmanager:ListSecrets",
            "secretsmanager:DescribeSecret",
            "secretsmanager:GetSecretValue",
            "secretsmanager:CreateSecret",
            "secretsmanager:TagResource",
            "secretsmanager:UntagResource",
            "secretsmanager:PutSecretValue",
            "secretsmanager:UpdateSecretVersionStage",
            "secretsmanager:UpdateSecret",
            "secretsmanager:DeleteSecret",
            "secretsmanager:RestoreSecret",
        ],
    );

    // What must be denied: a secret outside the prefix, one under it not tagged as ours, a
    // create without the ownership tag.
    let mut m = Model::default();
    let outside = "arn:aws:secretsmanager:us-east-1:123456789012:secret:other/app-AbC123";
    let foreign =
        format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{prefix}someone-AbC123");
    m.tags.insert(
        format!("{prefix}someone"),
        BTreeMap::from([("team".to_string(), "x".to_string())]),
    );
    for (what, check) in [
        (
            "write outside the prefix",
            m.on_secret("PutSecretValue", outside, REGION),
        ),
        (
            "read outside the prefix",
            m.on_secret("GetSecretValue", outside, REGION),
        ),
        (
            "write to a secret not tagged as ours",
            m.on_secret("PutSecretValue", &foreign, REGION),
        ),
        (
            "delete a secret not tagged as ours",
            m.on_secret("DeleteSecret", &foreign, REGION),
        ),
        (
            "create without the ownership tag",
            Request::new(
                "secretsmanager:CreateSecret",
                &format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{prefix}x-AbC123"),
            )
            .with("aws:RequestTag/team", &["x"]),
        ),
        (
            "create outside the prefix",
            Request::new("secretsmanager:CreateSecret", outside).with(
                &format!("aws:RequestTag/{MANAGED_BY_TAG}"),
                &[MANAGED_BY_VALUE],
            ),
        ),
    ] {
        assert_eq!(
            evaluate(&policy, &check).0,
            Decision::ImplicitDeny,
            "{what} must be denied"
        );
    }
    // The known limit (docs/iam.md, "Limits"): CreateSecret with tags is also authorized as
    // TagResource, and IAM offers no key telling that implicit check from a TagResource of an
    // existing secret, so the role may tag a foreign secret under its prefix as ours. The
    // controller never does (it tags only secrets whose full ownership tags name the
    // credential); a prefix dedicated to rdscred closes it.
    let adopt = m
        .on_secret("TagResource", &foreign, REGION)
        .with(
            &format!("aws:RequestTag/{MANAGED_BY_TAG}"),
            &[MANAGED_BY_VALUE],
        )
        .with("aws:TagKeys", &[MANAGED_BY_TAG]);
    assert_eq!(evaluate(&policy, &adopt).0, Decision::Allow);
}

/// A database with a KMS key by ARN and one by alias: writes and reads use the key through
/// Secrets Manager; the alias form is matched by `kms:ResourceAliases`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_key_policy_allows_every_request() {
    let (key_arn, alias) = moto_kms_key(&unique("rdscred-iam"));
    let (key2_arn, _) = moto_kms_key(&unique("rdscred-iam"));
    let mut g = Ground::new().await;
    g.start().await;
    let ns = admitted(&g).await;
    let server = DbServer::postgres();
    let (db1, prefix1) = g.database(&server, json!({ "kmsKeyId": alias })).await;
    let (db2, prefix2) = g.database(&server, json!({ "kmsKeyId": key2_arn })).await;
    for (i, (db, prefix)) in [(&db1, &prefix1), (&db2, &prefix2)].into_iter().enumerate() {
        let user = unique("iam_");
        ready_with(
            &g,
            &ns,
            &format!("c{i}"),
            json!({ "databaseRef": { "name": db }, "username": user,
                    "rotation": { "strategy": "single-user", "minimumInterval": "1s" },
                    "secret": { "name": format!("{prefix}{user}") } }),
        )
        .await;
        patch_credential(
            &g,
            &ns,
            &format!("c{i}"),
            json!({ "metadata": { "annotations": { "rdscred.io/rotate-requested-at": "1" } } }),
        )
        .await;
        wait_status(&g, &ns, &format!("c{i}"), "rotated", |c| {
            c.status
                .as_ref()
                .is_some_and(|s| s.last_rotation_time.is_some())
        })
        .await;
    }
    let mut policy_input = input();
    policy_input.secret_prefixes = vec![prefix1, prefix2];
    policy_input.admin_secret_arns = admin_secrets(&g, &[&db1, &db2]).await;
    policy_input.kms_key_arns = vec![alias.clone(), key2_arn.clone()];
    let mut model = Model::default();
    model.aliases.insert(alias, key_arn);
    let actions = assert_allowed(
        &g,
        &mut model,
        &HashMap::from([(None, policy_document(&policy_input))]),
    )
    .await;
    expect_actions(
        &actions,
        &[
            "kms:GenerateDataKey",
            "kms:Decrypt",
            "secretsmanager:PutSecretValue",
        ],
    );
    // Without the KMS statements the same requests are denied: the check is not vacuous.
    policy_input.kms_key_arns.clear();
    let policy = policy_document(&policy_input);
    let r = model.kms("kms:Decrypt", &key2_arn, REGION);
    assert_eq!(evaluate(&policy, &r).0, Decision::ImplicitDeny);
}

/// Replicas: created after the secret (so replication is authorized on a secret that carries
/// our tags), then a region swapped for another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_policy_allows_every_request() {
    let mut g = Ground::new().await;
    g.start().await;
    let ns = admitted(&g).await;
    let (db, prefix) = g.database(&DbServer::postgres(), json!({})).await;
    let user = unique("iam_");
    let secret = format!("{prefix}{user}");
    ready_with(
        &g,
        &ns,
        "app",
        json!({ "databaseRef": { "name": db }, "username": user,
                "secret": { "name": secret, "replicaRegions": [{ "region": "us-west-2" }] } }),
    )
    .await;
    let meta = g.scope.secrets.describe(&secret).await.unwrap().unwrap();
    assert_eq!(meta.replica_regions, vec!["us-west-2".to_string()]);
    patch_credential(
        &g,
        &ns,
        "app",
        json!({ "spec": { "secret": { "replicaRegions": [{ "region": "eu-west-1" }] } } }),
    )
    .await;
    wait_for("replica swapped", Duration::from_secs(60), || async {
        let m = g.scope.secrets.describe(&secret).await.ok()??;
        (m.replica_regions == vec!["eu-west-1".to_string()]).then_some(())
    })
    .await;
    let create = g
        .calls
        .request_log()
        .unwrap()
        .snapshot()
        .into_iter()
        .find(|r| r.operation == "CreateSecret")
        .expect("created");
    assert!(
        create.params.get("AddReplicaRegions").is_none(),
        "replicas must not be requested at create: {:?}",
        create.params
    );
    let mut policy_input = input();
    policy_input.secret_prefixes = vec![prefix.clone()];
    policy_input.admin_secret_arns = admin_secrets(&g, &[&db]).await;
    let policy = policy_document(&policy_input);
    let actions = assert_allowed(
        &g,
        &mut Model::default(),
        &HashMap::from([(None, policy.clone())]),
    )
    .await;
    expect_actions(
        &actions,
        &[
            "secretsmanager:ReplicateSecretToRegions",
            "secretsmanager:RemoveRegionsFromReplication",
        ],
    );

    // The denial this avoids: CreateSecret with AddReplicaRegions makes AWS authorize
    // ReplicateSecretToRegions on the secret being created, which has no tags yet.
    let mut with_replicas = create.clone();
    with_replicas.params["AddReplicaRegions"] = json!([{ "Region": "us-west-2" }]);
    let checks = Model::default().checks(&with_replicas);
    let replicate = checks
        .iter()
        .find(|c| c.action == "secretsmanager:ReplicateSecretToRegions")
        .unwrap();
    assert_eq!(evaluate(&policy, replicate).0, Decision::ImplicitDeny);
}

/// `rotator: lambda`: RotateSecret with the Lambda (and `lambda:InvokeFunction` on it), then
/// back to the controller: CancelRotateSecret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_rotation_policy_allows_every_request() {
    let lambda = crate::aws::moto_lambda_function(&unique("rdscred-iam-rotator"));
    let mut g = Ground::new().await;
    g.start().await;
    let ns = admitted(&g).await;
    let (db, prefix) = g.database(&DbServer::postgres(), json!({})).await;
    let user = unique("iam_");
    let secret = format!("{prefix}{user}");
    ready_with(
        &g,
        &ns,
        "app",
        json!({ "databaseRef": { "name": db }, "username": user,
                "rotation": { "rotator": "lambda", "lambdaArn": lambda, "schedule": { "automaticallyAfterDays": 7 }, "minimumInterval": "1s" },
                "secret": { "name": secret } }),
    )
    .await;
    wait_for("native rotation on", Duration::from_secs(60), || async {
        let m = g.scope.secrets.describe(&secret).await.ok()??;
        m.rotation_enabled.then_some(())
    })
    .await;
    patch_credential(
        &g,
        &ns,
        "app",
        json!({ "spec": { "rotation": { "rotator": "controller", "lambdaArn": null } } }),
    )
    .await;
    wait_for("native rotation off", Duration::from_secs(60), || async {
        let m = g.scope.secrets.describe(&secret).await.ok()??;
        (!m.rotation_enabled).then_some(())
    })
    .await;
    let mut policy_input = input();
    policy_input.secret_prefixes = vec![prefix];
    policy_input.admin_secret_arns = admin_secrets(&g, &[&db]).await;
    policy_input.lambda_arns = vec![lambda.clone()];
    let policy = policy_document(&policy_input);
    let actions = assert_allowed(&g, &mut Model::default(), &HashMap::from([(None, policy)])).await;
    expect_actions(
        &actions,
        &[
            "secretsmanager:RotateSecret",
            "lambda:InvokeFunction",
            "secretsmanager:CancelRotateSecret",
        ],
    );
    // The printed policy without the Lambda does not allow invoking it.
    policy_input.lambda_arns.clear();
    let without = policy_document(&policy_input);
    assert_eq!(
        evaluate(&without, &Request::new("lambda:InvokeFunction", &lambda)).0,
        Decision::ImplicitDeny
    );
}

/// A multi-account database (`roleArn`): the controller may only assume the role; everything
/// about that database runs as the role, under the policy printed for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assumed_role_policy_allows_every_request() {
    let role = format!("arn:aws:iam::{ACCOUNT}:role/{}", unique("rdscred-target"));
    let mut g = Ground::new().await;
    g.start().await;
    let ns = admitted(&g).await;
    let (db, prefix) = g
        .database(&DbServer::postgres(), json!({ "roleArn": role }))
        .await;
    let user = unique("iam_");
    ready_with(
        &g,
        &ns,
        "app",
        json!({ "databaseRef": { "name": db }, "username": user, "secret": { "name": format!("{prefix}{user}") } }),
    )
    .await;
    let mut controller = input();
    controller.role_arns = vec![role.clone()];
    let mut target = input();
    target.secret_prefixes = vec![prefix];
    target.admin_secret_arns = admin_secrets(&g, &[&db]).await;
    let log = g.calls.request_log().unwrap().snapshot();
    assert!(
        log.iter().any(|r| r.operation == "AssumeRole"),
        "the role was assumed"
    );
    assert!(
        log.iter()
            .any(|r| r.operation == "CreateSecret" && r.role_arn.as_deref() == Some(role.as_str())),
        "the secret was created as the role"
    );
    // The controller's own identity only assumes the role; the rest runs as the role.
    let policies = HashMap::from([
        (None, policy_document(&controller)),
        (Some(role.clone()), policy_document(&target)),
    ]);
    let actions = assert_allowed(&g, &mut Model::default(), &policies).await;
    expect_actions(&actions, &["sts:AssumeRole", "secretsmanager:CreateSecret"]);
}

/// An RDS instance with an RDS-managed master secret: DescribeDBInstances on the instance,
/// the `rds!db-…` secret read under the default admin statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rds_instance_policy_allows_every_request() {
    let mut g = Ground::new().await;
    g.start().await;
    let instance = unique("iam-");
    g.rds_sdk()
        .create_db_instance()
        .db_instance_identifier(&instance)
        .engine("postgres")
        .db_instance_class("db.t3.micro")
        .allocated_storage(20)
        .master_username("postgres")
        .manage_master_user_password(true)
        .send()
        .await
        .expect("moto CreateDBInstance");
    let ns = admitted(&g).await;
    let db = unique("rds-");
    let prefix = format!("rdscred/{db}/");
    g.apply_database(
        &db,
        json!({
            "dbInstanceIdentifier": instance,
            "adminLogin": { "rdsManaged": true },
            "allowAdminSecretSync": true,
            "namespaceSelector": { "matchLabels": { "rdscred-test": "yes" } },
            "secretNamePrefix": prefix,
        }),
    )
    .await;
    let master = wait_for(
        "master secret resolved",
        Duration::from_secs(30),
        || async {
            Api::<rdscred::crd::RdsDatabase>::all(g.client.clone())
                .get(&db)
                .await
                .ok()?
                .status?
                .admin_secret_arn
        },
    )
    .await;
    let master_name = g
        .scope
        .secrets
        .describe(&master)
        .await
        .unwrap()
        .unwrap()
        .name;
    ready_with(
        &g,
        &ns,
        "master",
        json!({ "databaseRef": { "name": db }, "mode": "sync-only", "secret": { "name": master_name }, "target": { "name": "pg-master" } }),
    )
    .await;
    let mut policy_input = input();
    policy_input.secret_prefixes = vec![prefix];
    policy_input.db_instance_arns = vec![instance];
    let actions = assert_allowed(
        &g,
        &mut Model::default(),
        &HashMap::from([(None, policy_document(&policy_input))]),
    )
    .await;
    expect_actions(
        &actions,
        &["rds:DescribeDBInstances", "secretsmanager:GetSecretValue"],
    );
}

/// `adminLogin.secretId` of each database.
pub(crate) async fn admin_secrets(g: &Ground, dbs: &[&str]) -> Vec<String> {
    let api = Api::<rdscred::crd::RdsDatabase>::all(g.client.clone());
    let mut out = Vec::new();
    for db in dbs {
        let d = api.get(db).await.unwrap();
        out.extend(d.spec.admin_login.secret_id.clone());
    }
    out
}

/// A KMS key and an alias for it in moto (boto3 from the test venv): (key ARN, `alias/NAME`).
fn moto_kms_key(name: &str) -> (String, String) {
    let venv = std::env::var("RDSCRED_TEST_VENV").expect("test ground is up");
    let script = r#"
import os, sys, boto3
kms = boto3.client("kms", endpoint_url=os.environ["RDSCRED_TEST_AWS_ENDPOINT"], region_name="us-east-1")
key = kms.create_key(Description="rdscred iam test")["KeyMetadata"]["Arn"]
kms.create_alias(AliasName="alias/" + sys.argv[1], TargetKeyId=key)
print(key)
"#;
    let out = std::process::Command::new(format!("{venv}/bin/python"))
        .args(["-c", script, name])
        .output()
        .expect("run the venv's python");
    assert!(
        out.status.success(),
        "creating a KMS key in moto: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8(out.stdout).unwrap().trim().to_string(),
        format!("alias/{name}"),
    )
}

/// Every operation the code sends (each `call(.., SERVICE, "Operation", ..)` in src/aws) is one
/// the model knows what AWS authorizes for: a new call fails here until it is described.
#[test]
fn the_model_knows_every_operation_the_code_calls() {
    let re = regex::Regex::new(r#"SERVICE,\s*"(\w+)""#).unwrap();
    let mut seen = 0;
    for (service, file) in [
        ("secretsmanager", "src/aws/secrets.rs"),
        ("secretsmanager", "src/aws/policy.rs"),
        ("rds", "src/aws/rds.rs"),
    ] {
        let text =
            std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        for op in re.captures_iter(&text).map(|c| c[1].to_string()) {
            let req = RecordedRequest {
                service: service.into(),
                operation: op.clone(),
                region: REGION.into(),
                role_arn: None,
                params: json!({ "SecretId": "rdscred/x/y", "Name": "rdscred/x/y" }),
                at: std::time::Instant::now(),
                attempt: 1,
            };
            assert!(!Model::default().checks(&req).is_empty(), "{service}:{op}");
            seen += 1;
        }
    }
    assert!(
        seen >= 17,
        "found only {seen} operations: the pattern no longer matches the code"
    );
}
