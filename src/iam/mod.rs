//! The least-privilege IAM policy the controller needs, as a pure function of what it is
//! pointed at (secret-name prefixes, databases, KMS keys, roles to assume).
//!
//! No AWS call is made here: `rdscred iam-policy` prints [`policy_document`] and the docs
//! (`docs/iam.md`) explain every statement.
//!
//! Shape of the policy (each statement has a stable `Sid`; optional ones are left out when
//! their input list is empty):
//!
//! | Sid | Actions | Resources | Condition |
//! |---|---|---|---|
//! | `ListSecretsForChangeDetection` | `ListSecrets` | `*` (cannot be scoped) | — |
//! | `ReadSecretsUnderPrefix` | `DescribeSecret`, `GetSecretValue` | `secret:PREFIX*` | — (ownership is read from the tags; sync-only reads secrets it does not own) |
//! | `CreateOwnedSecrets` | `CreateSecret`, `TagResource` | `secret:PREFIX*` | `aws:RequestTag/rdscred.io/managed-by = rdscred` |
//! | `ManageOwnedSecrets` | every write, `Get`/`Validate`/`DeleteResourcePolicy` | `secret:PREFIX*` | `secretsmanager:ResourceTag/rdscred.io/managed-by = rdscred` |
//! | `PutOwnedSecretPolicies` | `PutResourcePolicy` | `secret:PREFIX*` | the same tag, and `secretsmanager:BlockPublicPolicy = true` |
//! | `ReadAdminSecrets` | `DescribeSecret`, `GetSecretValue` | the admin secrets, or `rds!db-*` / `rds!cluster-*` | — |
//! | `DescribeDbInstances` / `DescribeDbClusters` | `rds:Describe…` | the instances / clusters (or `db:*` / `cluster:*`) | — |
//! | `UseSecretKmsKeys` (+ `UseSecretKmsKeysByAlias`) | `kms:GenerateDataKey`, `kms:Decrypt`, `kms:Encrypt` | the keys | `kms:ViaService = secretsmanager.REGION.amazonaws.com` |
//! | `InvokeRotationLambdas` | `lambda:InvokeFunction` | the rotation Lambdas (`rotator: lambda`) | — |
//! | `AssumeDatabaseRoles` | `sts:AssumeRole` | the roles of multi-account `RdsDatabase`s | — |
//!
//! Region and account default to `*` when not given.

use std::collections::BTreeSet;

use serde_json::{Value, json};

/// The ownership tag the policy conditions on: the one the controller writes.
pub use crate::aws::ownership::{MANAGED_BY_TAG, MANAGED_BY_VALUE};

/// What the policy is for. Entries of the list fields may be full ARNs or, for convenience,
/// bare identifiers / names, which are turned into ARNs in `partition`/`region`/`account`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IamPolicyInput {
    /// `aws`, `aws-cn`, `aws-us-gov` (empty = `aws`).
    pub partition: String,
    /// Regions of the secrets and databases (empty = any region); resource ARNs are listed
    /// once per region.
    pub regions: Vec<String>,
    /// Account id (`None` = any account).
    pub account: Option<String>,
    /// `secretNamePrefix` of every `RdsDatabase` the controller serves.
    pub secret_prefixes: Vec<String>,
    /// DB instance ARNs or identifiers (`None`/empty = every instance).
    pub db_instance_arns: Vec<String>,
    /// DB cluster ARNs or identifiers (empty = every cluster).
    pub db_cluster_arns: Vec<String>,
    /// KMS key ARNs, key ids or aliases (`alias/…`) the secrets are encrypted with.
    pub kms_key_arns: Vec<String>,
    /// IAM roles named in `RdsDatabase.spec.roleArn`.
    pub role_arns: Vec<String>,
    /// Admin secrets (`adminLogin.secretId`) as ARNs or names. Empty = the RDS-managed master
    /// secrets (`rds!db-*`, `rds!cluster-*`) of the account.
    pub admin_secret_arns: Vec<String>,
    /// Rotation Lambdas of `rotator: lambda` credentials. `RotateSecret` with a
    /// `RotationLambdaARN` requires the caller to hold `lambda:InvokeFunction` on it (AWS API
    /// reference); the Lambda's resource policy must also allow `secretsmanager.amazonaws.com`.
    pub lambda_arns: Vec<String>,
}

impl IamPolicyInput {
    fn partition(&self) -> &str {
        if self.partition.is_empty() {
            "aws"
        } else {
            &self.partition
        }
    }
    fn regions(&self) -> Vec<&str> {
        let given: Vec<&str> = self
            .regions
            .iter()
            .map(String::as_str)
            .filter(|r| !r.is_empty())
            .collect();
        if given.is_empty() { vec!["*"] } else { given }
    }
    fn account(&self) -> &str {
        self.account
            .as_deref()
            .filter(|a| !a.is_empty())
            .unwrap_or("*")
    }
    /// The resource's ARN in each region.
    fn arns(&self, service: &str, resource: &str) -> Vec<String> {
        self.regions()
            .into_iter()
            .map(|region| {
                format!(
                    "arn:{}:{service}:{region}:{}:{resource}",
                    self.partition(),
                    self.account()
                )
            })
            .collect()
    }
    fn dns_suffix(&self) -> &'static str {
        if self.partition().starts_with("aws-cn") {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        }
    }
}

fn is_arn(s: &str) -> bool {
    s.starts_with("arn:")
}

fn dedup(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    items
        .into_iter()
        .filter(|s| seen.insert(s.clone()))
        .collect()
}

/// Region field of an ARN (`arn:partition:service:REGION:account:resource`).
fn arn_region(arn: &str) -> Option<&str> {
    arn.split(':').nth(3).filter(|r| !r.is_empty())
}

fn statement(sid: &str, actions: &[&str], resources: Vec<String>) -> Value {
    json!({
        "Sid": sid,
        "Effect": "Allow",
        "Action": actions,
        "Resource": resources,
    })
}

fn with_condition(mut stmt: Value, condition: Value) -> Value {
    stmt["Condition"] = condition;
    stmt
}

/// The IAM policy document (JSON) the controller's role needs.
pub fn policy_document(input: &IamPolicyInput) -> Value {
    let mut statements = Vec::new();

    // Bulk change detection: ListSecrets cannot be scoped to resources or tags.
    statements.push(json!({
        "Sid": "ListSecretsForChangeDetection",
        "Effect": "Allow",
        "Action": ["secretsmanager:ListSecrets"],
        "Resource": "*",
    }));

    let prefix_arns = dedup(
        input
            .secret_prefixes
            .iter()
            .filter(|p| !p.is_empty())
            .flat_map(|p| input.arns("secretsmanager", &format!("secret:{p}*"))),
    );
    if !prefix_arns.is_empty() {
        // Reading is not tag-conditioned: the ownership check itself needs DescribeSecret on
        // secrets that may not be ours, and sync-only credentials read secrets others own.
        statements.push(statement(
            "ReadSecretsUnderPrefix",
            &[
                "secretsmanager:DescribeSecret",
                "secretsmanager:GetSecretValue",
            ],
            prefix_arns.clone(),
        ));
        // CreateSecret with Tags also authorizes TagResource; both only with our tag.
        statements.push(with_condition(
            statement("CreateOwnedSecrets", &["secretsmanager:CreateSecret", "secretsmanager:TagResource"], prefix_arns.clone()),
            json!({ "StringEquals": { format!("aws:RequestTag/{MANAGED_BY_TAG}"): MANAGED_BY_VALUE } }),
        ));
        statements.push(with_condition(
            statement(
                "ManageOwnedSecrets",
                &[
                    "secretsmanager:PutSecretValue",
                    "secretsmanager:UpdateSecretVersionStage",
                    "secretsmanager:UpdateSecret",
                    "secretsmanager:TagResource",
                    "secretsmanager:UntagResource",
                    "secretsmanager:DeleteSecret",
                    "secretsmanager:RestoreSecret",
                    "secretsmanager:RotateSecret",
                    "secretsmanager:CancelRotateSecret",
                    "secretsmanager:ReplicateSecretToRegions",
                    "secretsmanager:RemoveRegionsFromReplication",
                    "secretsmanager:GetResourcePolicy",
                    "secretsmanager:ValidateResourcePolicy",
                    "secretsmanager:DeleteResourcePolicy",
                ],
                prefix_arns.clone(),
            ),
            json!({ "StringEquals": { format!("secretsmanager:ResourceTag/{MANAGED_BY_TAG}"): MANAGED_BY_VALUE } }),
        ));
        // Who may read an owned secret (spec.secret.readers, spec.accessPolicy): only with
        // BlockPublicPolicy, so even a compromised controller cannot make a secret public.
        statements.push(with_condition(
            statement(
                "PutOwnedSecretPolicies",
                &["secretsmanager:PutResourcePolicy"],
                prefix_arns,
            ),
            json!({
                "StringEquals": { format!("secretsmanager:ResourceTag/{MANAGED_BY_TAG}"): MANAGED_BY_VALUE },
                "Bool": { "secretsmanager:BlockPublicPolicy": "true" },
            }),
        ));
    }

    // Admin logins: named secrets (ARN, or name + the 6-character suffix Secrets Manager
    // appends), or the RDS-managed master secrets.
    let admin_arns = if input.admin_secret_arns.is_empty() {
        [
            input.arns("secretsmanager", "secret:rds!db-*"),
            input.arns("secretsmanager", "secret:rds!cluster-*"),
        ]
        .concat()
    } else {
        dedup(input.admin_secret_arns.iter().flat_map(|s| {
            if is_arn(s) {
                vec![s.clone()]
            } else {
                input.arns("secretsmanager", &format!("secret:{s}-??????"))
            }
        }))
    };
    statements.push(statement(
        "ReadAdminSecrets",
        &[
            "secretsmanager:DescribeSecret",
            "secretsmanager:GetSecretValue",
        ],
        admin_arns,
    ));

    let instance_arns = if input.db_instance_arns.is_empty() {
        input.arns("rds", "db:*")
    } else {
        dedup(input.db_instance_arns.iter().flat_map(|s| {
            if is_arn(s) {
                vec![s.clone()]
            } else {
                input.arns("rds", &format!("db:{s}"))
            }
        }))
    };
    statements.push(statement(
        "DescribeDbInstances",
        &["rds:DescribeDBInstances"],
        instance_arns,
    ));

    let cluster_arns = if input.db_cluster_arns.is_empty() {
        input.arns("rds", "cluster:*")
    } else {
        dedup(input.db_cluster_arns.iter().flat_map(|s| {
            if is_arn(s) {
                vec![s.clone()]
            } else {
                input.arns("rds", &format!("cluster:{s}"))
            }
        }))
    };
    statements.push(statement(
        "DescribeDbClusters",
        &["rds:DescribeDBClusters"],
        cluster_arns,
    ));

    // KMS: only through Secrets Manager, in the regions involved. Writing a value takes
    // GenerateDataKey + Decrypt, reading one Decrypt, changing a secret's key (UpdateSecret
    // re-encrypts its versions) also Encrypt. DescribeKey is the console's, not the API's.
    let kms_actions = ["kms:GenerateDataKey", "kms:Decrypt", "kms:Encrypt"];
    let is_alias = |k: &str| k.starts_with("alias/") || (is_arn(k) && k.contains(":alias/"));
    let keys: Vec<&String> = input
        .kms_key_arns
        .iter()
        .filter(|k| !k.is_empty() && !is_alias(k))
        .collect();
    let aliases: Vec<&String> = input.kms_key_arns.iter().filter(|k| is_alias(k)).collect();
    if !keys.is_empty() || !aliases.is_empty() {
        let key_arns = dedup(keys.iter().flat_map(|k| {
            if is_arn(k) {
                vec![(*k).clone()]
            } else {
                input.arns("kms", &format!("key/{k}"))
            }
        }));
        let mut regions: BTreeSet<String> = BTreeSet::new();
        let mut any_region = false;
        for r in input.regions() {
            any_region |= r == "*";
            regions.insert(r.to_string());
        }
        for arn in key_arns
            .iter()
            .chain(aliases.iter().filter(|a| is_arn(a)).copied())
        {
            match arn_region(arn) {
                Some("*") | None => any_region = true,
                Some(r) => {
                    regions.insert(r.to_string());
                }
            }
        }
        let suffix = input.dns_suffix();
        let via = if any_region {
            json!({ "StringLike": { "kms:ViaService": format!("secretsmanager.*.{suffix}") } })
        } else {
            let services: Vec<String> = regions
                .iter()
                .map(|r| format!("secretsmanager.{r}.{suffix}"))
                .collect();
            json!({ "StringEquals": { "kms:ViaService": services } })
        };
        if !key_arns.is_empty() {
            statements.push(with_condition(
                statement("UseSecretKmsKeys", &kms_actions, key_arns),
                via.clone(),
            ));
        }
        if !aliases.is_empty() {
            // Crypto operations cannot name an alias as Resource; match the key by its alias.
            let names = dedup(aliases.iter().map(|a| match a.find(":alias/") {
                Some(i) => a[i + 1..].to_string(),
                None => (*a).clone(),
            }));
            let mut cond = via;
            cond["ForAnyValue:StringEquals"] = json!({ "kms:ResourceAliases": names });
            statements.push(with_condition(
                statement(
                    "UseSecretKmsKeysByAlias",
                    &kms_actions,
                    input.arns("kms", "key/*"),
                ),
                cond,
            ));
        }
    }

    let lambdas = dedup(
        input
            .lambda_arns
            .iter()
            .filter(|s| !s.is_empty())
            .flat_map(|s| {
                if is_arn(s) {
                    vec![s.clone()]
                } else {
                    input.arns("lambda", &format!("function:{s}"))
                }
            }),
    );
    if !lambdas.is_empty() {
        statements.push(statement(
            "InvokeRotationLambdas",
            &["lambda:InvokeFunction"],
            lambdas,
        ));
    }

    let roles = dedup(input.role_arns.iter().filter(|s| !s.is_empty()).cloned());
    if !roles.is_empty() {
        statements.push(statement("AssumeDatabaseRoles", &["sts:AssumeRole"], roles));
    }

    json!({ "Version": "2012-10-17", "Statement": statements })
}

/// SQS actions the event consumer uses (`DeleteMessageBatch` is authorised as DeleteMessage).
pub const EVENTS_QUEUE_ACTIONS: [&str; 3] = [
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
];

/// `policy_document` plus, for `--events-queue-url` (event-driven change detection), the
/// statement `ConsumeSecretEventsQueue` on those queues (ARNs, URLs or names). Kept apart from
/// [`policy_document`] so the rest of the policy does not depend on it.
pub fn with_events_queues(mut doc: Value, input: &IamPolicyInput, queues: &[String]) -> Value {
    let arns = dedup(
        queues
            .iter()
            .filter(|q| !q.is_empty())
            .flat_map(|q| events_queue_arns(input, q)),
    );
    if arns.is_empty() {
        return doc;
    }
    if let Some(statements) = doc["Statement"].as_array_mut() {
        statements.push(statement(
            "ConsumeSecretEventsQueue",
            &EVENTS_QUEUE_ACTIONS,
            arns,
        ));
    }
    doc
}

/// The queue's ARN from an ARN or a queue URL (`https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`);
/// for a bare name (or a URL without region/account), one ARN per `--region` of the input.
fn events_queue_arns(input: &IamPolicyInput, queue: &str) -> Vec<String> {
    if is_arn(queue) {
        return vec![queue.to_string()];
    }
    if queue.contains("://") {
        if let Some(arn) = crate::aws::sqs::queue_arn_from_url(queue, input.partition()) {
            return vec![arn];
        }
        let name = queue.rsplit('/').find(|s| !s.is_empty()).unwrap_or(queue);
        return input.arns("sqs", name);
    }
    input.arns("sqs", queue)
}

#[cfg(test)]
mod tests;
