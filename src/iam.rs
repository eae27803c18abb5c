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
mod tests {
    use super::*;

    #[test]
    fn events_queue_statement_only_when_asked_and_scoped_to_the_queue() {
        let doc = with_events_queues(policy_document(&input()), &input(), &[]);
        assert!(stmt(&doc, "ConsumeSecretEventsQueue").is_none());
        let queues = vec![
            "https://sqs.eu-west-1.amazonaws.com/123456789012/rdscred-events".to_string(),
            "arn:aws:sqs:eu-west-1:123456789012:rdscred-events".to_string(),
            "other-queue".to_string(),
        ];
        let doc = with_events_queues(policy_document(&input()), &input(), &queues);
        let s = stmt(&doc, "ConsumeSecretEventsQueue").expect("statement");
        assert_eq!(
            strings(&s["Action"]),
            vec![
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes"
            ]
        );
        assert_eq!(
            strings(&s["Resource"]),
            vec![
                "arn:aws:sqs:eu-west-1:123456789012:rdscred-events".to_string(),
                input().arns("sqs", "other-queue")[0].clone(),
            ],
            "URL and ARN of one queue are one resource; a name takes the input's region/account"
        );
        assert!(s.get("Condition").is_none());
        // Nothing else changes.
        let before = policy_document(&input());
        let n = before["Statement"].as_array().unwrap().len();
        assert_eq!(doc["Statement"].as_array().unwrap().len(), n + 1);
        assert_eq!(
            doc["Statement"].as_array().unwrap()[..n],
            before["Statement"].as_array().unwrap()[..n]
        );
    }

    fn input() -> IamPolicyInput {
        IamPolicyInput {
            partition: "aws".into(),
            regions: vec!["eu-west-1".into()],
            account: Some("123456789012".into()),
            secret_prefixes: vec!["rdscred/orders-prod/".into()],
            db_instance_arns: vec!["orders-prod".into()],
            db_cluster_arns: vec!["arn:aws:rds:eu-west-1:123456789012:cluster:billing".into()],
            kms_key_arns: vec!["arn:aws:kms:eu-west-1:123456789012:key/1111-2222".into()],
            role_arns: vec!["arn:aws:iam::210987654321:role/rdscred-target".into()],
            admin_secret_arns: vec![],
            lambda_arns: vec![],
        }
    }

    fn stmt<'a>(doc: &'a Value, sid: &str) -> Option<&'a Value> {
        doc["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Sid"] == sid)
    }

    fn strings(v: &Value) -> Vec<String> {
        match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a.iter().map(|x| x.as_str().unwrap().to_string()).collect(),
            _ => panic!("not a string or list: {v}"),
        }
    }

    #[test]
    fn well_formed_and_unique_sids() {
        let doc = policy_document(&input());
        assert_eq!(doc["Version"], "2012-10-17");
        let stmts = doc["Statement"].as_array().unwrap();
        let sids: BTreeSet<_> = stmts
            .iter()
            .map(|s| s["Sid"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(sids.len(), stmts.len(), "Sids must be unique");
        for s in stmts {
            assert_eq!(s["Effect"], "Allow");
            let sid = s["Sid"].as_str().unwrap();
            assert!(
                sid.chars().all(|c| c.is_ascii_alphanumeric()),
                "Sid {sid} must be alphanumeric"
            );
            for a in strings(&s["Action"]) {
                assert!(!a.contains('*'), "wildcard action {a}");
            }
        }
    }

    #[test]
    fn only_list_secrets_has_a_star_resource() {
        let doc = policy_document(&input());
        for s in doc["Statement"].as_array().unwrap() {
            let resources = strings(&s["Resource"]);
            if resources.iter().any(|r| r == "*") {
                assert_eq!(s["Sid"], "ListSecretsForChangeDetection");
                assert_eq!(strings(&s["Action"]), vec!["secretsmanager:ListSecrets"]);
            }
        }
    }

    #[test]
    fn secret_statements_are_scoped_to_the_prefix_and_tag_conditioned() {
        let doc = policy_document(&input());
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rdscred/orders-prod/*";
        for sid in [
            "ReadSecretsUnderPrefix",
            "CreateOwnedSecrets",
            "ManageOwnedSecrets",
        ] {
            assert_eq!(
                strings(&stmt(&doc, sid).unwrap()["Resource"]),
                vec![arn],
                "{sid}"
            );
        }
        let create = stmt(&doc, "CreateOwnedSecrets").unwrap();
        assert_eq!(
            strings(&create["Action"]),
            vec!["secretsmanager:CreateSecret", "secretsmanager:TagResource"]
        );
        assert_eq!(
            create["Condition"]["StringEquals"]["aws:RequestTag/rdscred.io/managed-by"],
            "rdscred"
        );
        let manage = stmt(&doc, "ManageOwnedSecrets").unwrap();
        assert_eq!(
            manage["Condition"]["StringEquals"]["secretsmanager:ResourceTag/rdscred.io/managed-by"],
            "rdscred"
        );
        let actions = strings(&manage["Action"]);
        for a in [
            "PutSecretValue",
            "UpdateSecretVersionStage",
            "UpdateSecret",
            "TagResource",
            "UntagResource",
            "DeleteSecret",
            "RestoreSecret",
            "RotateSecret",
            "CancelRotateSecret",
            "ReplicateSecretToRegions",
            "RemoveRegionsFromReplication",
            "GetResourcePolicy",
            "ValidateResourcePolicy",
            "DeleteResourcePolicy",
        ] {
            assert!(
                actions.contains(&format!("secretsmanager:{a}")),
                "{a} missing"
            );
        }
        // Putting a resource policy: owned secrets only, and only with BlockPublicPolicy.
        assert!(!actions.contains(&"secretsmanager:PutResourcePolicy".to_string()));
        let put = stmt(&doc, "PutOwnedSecretPolicies").unwrap();
        assert_eq!(
            strings(&put["Action"]),
            vec!["secretsmanager:PutResourcePolicy"]
        );
        assert_eq!(strings(&put["Resource"]), vec![arn]);
        assert_eq!(
            put["Condition"]["StringEquals"]["secretsmanager:ResourceTag/rdscred.io/managed-by"],
            "rdscred"
        );
        assert_eq!(
            put["Condition"]["Bool"]["secretsmanager:BlockPublicPolicy"],
            "true"
        );
        assert!(
            !actions
                .iter()
                .any(|a| a.ends_with("GetSecretValue") || a.ends_with("CreateSecret"))
        );
        // Reading carries no write action.
        let read = strings(&stmt(&doc, "ReadSecretsUnderPrefix").unwrap()["Action"]);
        assert_eq!(
            read,
            vec![
                "secretsmanager:DescribeSecret",
                "secretsmanager:GetSecretValue"
            ]
        );
    }

    /// `--region` is repeatable: every regional resource is listed once per region, and KMS
    /// is reachable through Secrets Manager in each of them.
    #[test]
    fn several_regions_list_each_resource_per_region() {
        let mut i = input();
        i.regions = vec!["eu-west-1".into(), "eu-central-1".into()];
        i.kms_key_arns = vec!["1111-2222".into()];
        let doc = policy_document(&i);
        assert_eq!(
            strings(&stmt(&doc, "ReadSecretsUnderPrefix").unwrap()["Resource"]),
            vec![
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rdscred/orders-prod/*",
                "arn:aws:secretsmanager:eu-central-1:123456789012:secret:rdscred/orders-prod/*",
            ]
        );
        assert_eq!(
            strings(&stmt(&doc, "DescribeDbInstances").unwrap()["Resource"]),
            vec![
                "arn:aws:rds:eu-west-1:123456789012:db:orders-prod",
                "arn:aws:rds:eu-central-1:123456789012:db:orders-prod",
            ]
        );
        let kms = stmt(&doc, "UseSecretKmsKeys").unwrap();
        assert_eq!(
            strings(&kms["Condition"]["StringEquals"]["kms:ViaService"]),
            vec![
                "secretsmanager.eu-central-1.amazonaws.com",
                "secretsmanager.eu-west-1.amazonaws.com",
            ]
        );
    }

    #[test]
    fn wildcard_region_and_account_when_not_given() {
        let mut i = input();
        i.regions = vec![];
        i.account = None;
        i.partition = String::new();
        i.kms_key_arns = vec!["1111-2222".into()];
        let doc = policy_document(&i);
        assert_eq!(
            strings(&stmt(&doc, "ReadSecretsUnderPrefix").unwrap()["Resource"]),
            vec!["arn:aws:secretsmanager:*:*:secret:rdscred/orders-prod/*"]
        );
        assert_eq!(
            strings(&stmt(&doc, "DescribeDbInstances").unwrap()["Resource"]),
            vec!["arn:aws:rds:*:*:db:orders-prod"]
        );
        let kms = stmt(&doc, "UseSecretKmsKeys").unwrap();
        assert_eq!(
            strings(&kms["Resource"]),
            vec!["arn:aws:kms:*:*:key/1111-2222"]
        );
        assert_eq!(
            kms["Condition"]["StringLike"]["kms:ViaService"],
            "secretsmanager.*.amazonaws.com"
        );
    }

    #[test]
    fn kms_only_via_secrets_manager_in_the_regions_involved() {
        let mut i = input();
        i.kms_key_arns
            .push("arn:aws:kms:us-east-1:123456789012:key/replica".into());
        let doc = policy_document(&i);
        let kms = stmt(&doc, "UseSecretKmsKeys").unwrap();
        assert_eq!(
            strings(&kms["Condition"]["StringEquals"]["kms:ViaService"]),
            vec![
                "secretsmanager.eu-west-1.amazonaws.com",
                "secretsmanager.us-east-1.amazonaws.com"
            ]
        );
        let actions = strings(&kms["Action"]);
        for a in ["kms:Decrypt", "kms:GenerateDataKey", "kms:Encrypt"] {
            assert!(actions.contains(&a.to_string()));
        }
        assert!(stmt(&doc, "UseSecretKmsKeysByAlias").is_none());
    }

    #[test]
    fn kms_aliases_match_by_resource_alias() {
        let mut i = input();
        i.kms_key_arns = vec!["alias/rdscred".into()];
        let doc = policy_document(&i);
        assert!(stmt(&doc, "UseSecretKmsKeys").is_none());
        let s = stmt(&doc, "UseSecretKmsKeysByAlias").unwrap();
        assert_eq!(
            strings(&s["Resource"]),
            vec!["arn:aws:kms:eu-west-1:123456789012:key/*"]
        );
        assert_eq!(
            strings(&s["Condition"]["ForAnyValue:StringEquals"]["kms:ResourceAliases"]),
            vec!["alias/rdscred"]
        );
        assert!(s["Condition"]["StringEquals"]["kms:ViaService"].is_array());
    }

    #[test]
    fn china_partition_uses_its_service_domain() {
        let mut i = input();
        i.partition = "aws-cn".into();
        i.regions = vec!["cn-north-1".into()];
        i.kms_key_arns = vec!["k1".into()];
        let doc = policy_document(&i);
        let kms = stmt(&doc, "UseSecretKmsKeys").unwrap();
        assert_eq!(
            strings(&kms["Resource"]),
            vec!["arn:aws-cn:kms:cn-north-1:123456789012:key/k1"]
        );
        assert_eq!(
            strings(&kms["Condition"]["StringEquals"]["kms:ViaService"]),
            vec!["secretsmanager.cn-north-1.amazonaws.com.cn"]
        );
    }

    #[test]
    fn admin_secrets_default_to_rds_managed_and_accept_names() {
        let doc = policy_document(&input());
        assert_eq!(
            strings(&stmt(&doc, "ReadAdminSecrets").unwrap()["Resource"]),
            vec![
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!db-*",
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!cluster-*"
            ]
        );
        let mut i = input();
        i.admin_secret_arns = vec![
            "platform/orders-admin".into(),
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:x-AbCdEf".into(),
        ];
        let doc = policy_document(&i);
        let s = stmt(&doc, "ReadAdminSecrets").unwrap();
        assert_eq!(
            strings(&s["Resource"]),
            vec![
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:platform/orders-admin-??????",
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:x-AbCdEf"
            ]
        );
        assert_eq!(
            strings(&s["Action"]),
            vec![
                "secretsmanager:DescribeSecret",
                "secretsmanager:GetSecretValue"
            ]
        );
    }

    #[test]
    fn rds_describe_is_scoped() {
        let doc = policy_document(&input());
        assert_eq!(
            strings(&stmt(&doc, "DescribeDbInstances").unwrap()["Resource"]),
            vec!["arn:aws:rds:eu-west-1:123456789012:db:orders-prod"]
        );
        assert_eq!(
            strings(&stmt(&doc, "DescribeDbClusters").unwrap()["Resource"]),
            vec!["arn:aws:rds:eu-west-1:123456789012:cluster:billing"]
        );
        let mut i = input();
        i.db_instance_arns.clear();
        i.db_cluster_arns.clear();
        let doc = policy_document(&i);
        assert_eq!(
            strings(&stmt(&doc, "DescribeDbInstances").unwrap()["Resource"]),
            vec!["arn:aws:rds:eu-west-1:123456789012:db:*"]
        );
        assert_eq!(
            strings(&stmt(&doc, "DescribeDbClusters").unwrap()["Resource"]),
            vec!["arn:aws:rds:eu-west-1:123456789012:cluster:*"]
        );
    }

    #[test]
    fn optional_statements_only_when_asked() {
        let doc = policy_document(&IamPolicyInput::default());
        for sid in [
            "ReadSecretsUnderPrefix",
            "CreateOwnedSecrets",
            "ManageOwnedSecrets",
            "PutOwnedSecretPolicies",
            "UseSecretKmsKeys",
            "UseSecretKmsKeysByAlias",
            "InvokeRotationLambdas",
            "AssumeDatabaseRoles",
        ] {
            assert!(stmt(&doc, sid).is_none(), "{sid} present without input");
        }
        assert!(stmt(&doc, "ListSecretsForChangeDetection").is_some());

        let mut i = input();
        i.lambda_arns = vec![
            "arn:aws:lambda:eu-west-1:123456789012:function:rotate-pg".into(),
            "rotate-my".into(),
        ];
        let doc = policy_document(&i);
        assert_eq!(
            strings(&stmt(&doc, "InvokeRotationLambdas").unwrap()["Resource"]),
            vec![
                "arn:aws:lambda:eu-west-1:123456789012:function:rotate-pg",
                "arn:aws:lambda:eu-west-1:123456789012:function:rotate-my"
            ]
        );
        assert_eq!(
            strings(&stmt(&doc, "AssumeDatabaseRoles").unwrap()["Resource"]),
            vec!["arn:aws:iam::210987654321:role/rdscred-target"]
        );
    }

    #[test]
    fn duplicates_are_removed_and_several_prefixes_kept() {
        let mut i = input();
        i.secret_prefixes = vec!["a/".into(), "b/".into(), "a/".into()];
        let doc = policy_document(&i);
        assert_eq!(
            strings(&stmt(&doc, "ManageOwnedSecrets").unwrap()["Resource"]),
            vec![
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:a/*",
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:b/*"
            ]
        );
    }

    #[test]
    fn never_grants_what_the_controller_does_not_use() {
        let mut i = input();
        i.lambda_arns = vec!["f".into()];
        let doc = policy_document(&i);
        let all: Vec<String> = doc["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| strings(&s["Action"]))
            .collect();
        for banned in [
            "secretsmanager:GetRandomPassword",
            "secretsmanager:StopReplicationToReplica",
            "iam:PassRole",
            "kms:CreateGrant",
            "kms:DescribeKey",
        ] {
            assert!(!all.contains(&banned.to_string()), "{banned}");
        }
        // The document survives a JSON round trip (what `rdscred iam-policy` prints).
        let text = serde_json::to_string_pretty(&doc).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), doc);
    }
}
