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
