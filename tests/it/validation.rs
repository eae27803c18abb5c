//! Bad specs are rejected at `kubectl apply` time by the CRD schema from `crds/` (patterns,
//! enums, ranges and the `x-kubernetes-validations` CEL rules), as the emulator enforces it;
//! and every manifest in `examples/` is accepted.

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::support::{Ground, merge};

fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("rdscred.io", "v1alpha1", kind))
}

fn good_database() -> Value {
    json!({
        "endpoint": { "host": "db.internal", "port": 5432 },
        "engine": "postgres",
        "adminLogin": { "secretId": "admin/pg" },
        "namespaceSelector": {},
        "secretNamePrefix": "rdscred/pg/",
    })
}

fn good_credential() -> Value {
    json!({
        "databaseRef": { "name": "pg" },
        "username": "orders_app",
        "secret": { "name": "rdscred/pg/orders" },
    })
}

async fn create(g: &Ground, kind: &str, name: &str, spec: Value) -> Result<(), kube::Error> {
    let ar = resource(kind);
    let namespaced = kind == "RdsCredential";
    let api: Api<DynamicObject> = if namespaced {
        Api::namespaced_with(g.client.clone(), "default", &ar)
    } else {
        Api::all_with(g.client.clone(), &ar)
    };
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "rdscred.io/v1alpha1", "kind": kind, "metadata": { "name": name }, "spec": spec,
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.map(|_| ())
}

/// Creating `base` patched with `patch` fails with 422 and a message containing `expect`.
async fn rejected(g: &Ground, kind: &str, base: Value, patch: Value, expect: &str) {
    let mut spec = base;
    merge(&mut spec, patch.clone());
    let name = crate::support::unique("bad-");
    match create(g, kind, &name, spec).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "{patch}: {}", s.message);
            assert!(
                s.message.contains(expect),
                "{patch}: message {:?} does not mention {expect:?}",
                s.message
            );
        }
        other => panic!("{kind} with {patch} was not rejected: {other:?}"),
    }
}

#[tokio::test]
async fn bad_databases_are_rejected() {
    let g = Ground::new().await;
    create(&g, "RdsDatabase", "ok", good_database())
        .await
        .expect("the good spec is accepted");
    let cases = [
        (
            json!({ "dbInstanceIdentifier": "orders" }),
            "exactly one of dbInstanceIdentifier",
        ),
        (
            json!({ "endpoint": null, "engine": null }),
            "exactly one of dbInstanceIdentifier",
        ),
        (
            json!({ "engine": null }),
            "engine is required when endpoint is set",
        ),
        (
            json!({ "adminLogin": { "rdsManaged": true } }),
            "set exactly one of adminLogin.secretId",
        ),
        (
            json!({ "adminLogin": { "secretId": null } }),
            "set exactly one of adminLogin.secretId",
        ),
        (
            json!({ "endpoint": null, "dbInstanceIdentifier": "orders", "adminLogin": { "secretId": null, "rdsManaged": true }, "engine": null }),
            "",
        ),
        (
            json!({ "tls": { "mode": "verify-full" } }),
            "tls.caBundle is required",
        ),
        (
            json!({ "tls": { "mode": "sometimes" } }),
            "Unsupported value",
        ),
        (
            json!({ "secretNamePrefix": "has space/" }),
            "secretNamePrefix",
        ),
        (json!({ "engine": "oracle" }), "Unsupported value"),
        (json!({ "endpoint": { "port": 70000 } }), "port"),
        (json!({ "region": "mars-1" }), "region"),
        (json!({ "roleArn": "not-an-arn" }), "roleArn"),
        // Bounds (issue 17): what keeps the CEL cost estimate small, and AWS's own limits.
        (
            json!({ "tags": (0..51).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>() }),
            "spec.tags: Too many: 51: must have at most 50 items",
        ),
        (
            json!({ "tags": { "team": "x".repeat(257) } }),
            "spec.tags.team: Too long",
        ),
        (
            json!({ "namespaceSelector": { "matchExpressions": [{ "key": "team", "operator": "Like" }] } }),
            "spec.namespaceSelector.matchExpressions[0].operator: Unsupported value",
        ),
        (
            json!({ "namespaceSelector": { "matchExpressions": [{ "key": "team", "operator": "In", "values": (0..65).map(|i| format!("t{i}")).collect::<Vec<_>>() }] } }),
            "spec.namespaceSelector.matchExpressions[0].values: Too many: 65",
        ),
    ];
    for (patch, expect) in cases {
        if expect.is_empty() {
            // The rdsManaged + instance combination is valid: make sure it is accepted.
            let mut spec = good_database();
            merge(&mut spec, patch);
            create(&g, "RdsDatabase", &crate::support::unique("ok-"), spec)
                .await
                .expect("rdsManaged with an instance is valid");
            continue;
        }
        rejected(&g, "RdsDatabase", good_database(), patch, expect).await;
    }
    let mut spec = good_database();
    merge(
        &mut spec,
        json!({ "endpoint": null, "engine": null, "dbClusterIdentifier": "aurora-1", "adminLogin": { "secretId": null, "rdsManaged": true } }),
    );
    create(&g, "RdsDatabase", "cluster", spec)
        .await
        .expect("cluster + rdsManaged is valid");
}

#[tokio::test]
async fn bad_credentials_are_rejected() {
    let g = Ground::new().await;
    create(&g, "RdsCredential", "ok", good_credential())
        .await
        .expect("the good spec is accepted");
    let cases = [
        (json!({ "username": "Orders" }), "username"),
        (json!({ "username": "drop table x;" }), "username"),
        (
            json!({ "username": "a_twenty_seven_characters_x", "rotation": { "strategy": "alternating-users" } }),
            "clone username",
        ),
        (json!({ "username": null }), "username is required"),
        (
            json!({ "mode": "sync-only" }),
            "sync-only credentials own nothing",
        ),
        (json!({ "mode": "sometimes" }), "Unsupported value"),
        (
            json!({ "rotation": { "rotator": "lambda" } }),
            "rotator: lambda requires lambdaArn",
        ),
        (
            json!({ "rotation": { "lambdaArn": "arn:aws:lambda:us-east-1:123456789012:function:rot" } }),
            "lambdaArn is only used",
        ),
        (
            json!({ "rotation": { "rotator": "lambda", "lambdaArn": "arn:nope" } }),
            "lambdaArn",
        ),
        (
            json!({ "rotation": { "schedule": { "automaticallyAfterDays": 7, "scheduleExpression": "rate(10 days)" } } }),
            "set exactly one of automaticallyAfterDays",
        ),
        (
            json!({ "rotation": { "schedule": {} } }),
            "set exactly one of automaticallyAfterDays",
        ),
        (
            json!({ "rotation": { "schedule": { "automaticallyAfterDays": 0 } } }),
            "automaticallyAfterDays",
        ),
        (
            json!({ "rotation": { "schedule": { "automaticallyAfterDays": 1001 } } }),
            "automaticallyAfterDays",
        ),
        (
            json!({ "rotation": { "schedule": { "scheduleExpression": "every day" } } }),
            "scheduleExpression",
        ),
        (
            json!({ "rotation": { "schedule": { "automaticallyAfterDays": 7, "duration": "25h" } } }),
            "duration",
        ),
        (
            json!({ "rotation": { "schedule": { "scheduleExpression": "rate(2 hours)" } } }),
            "rate() must be 4-23 hours or 1-999 days",
        ),
        (
            json!({ "rotation": { "schedule": { "scheduleExpression": "rate(30 hours)" } } }),
            "rate() must be 4-23 hours or 1-999 days",
        ),
        (
            json!({ "rotation": { "schedule": { "scheduleExpression": "rate(1000 days)" } } }),
            "rate() must be 4-23 hours or 1-999 days",
        ),
        (
            json!({ "rotation": { "schedule": { "scheduleExpression": "cron(15 4 ? * SUN *)" } } }),
            "minutes 0 and year '*'",
        ),
        (
            json!({ "rotation": { "schedule": { "scheduleExpression": "cron(0 4 ? * SUN 2027)" } } }),
            "minutes 0 and year '*'",
        ),
        (
            json!({ "rotation": { "schedule": { "scheduleExpression": "cron(0 4 ? * SUN)" } } }),
            "minutes 0 and year '*'",
        ),
        (
            json!({ "rotation": { "schedule": { "scheduleExpression": "cron(0 4 * * * *)" } } }),
            "exactly one of day-of-month and day-of-week",
        ),
        (
            json!({ "rotation": { "schedule": { "scheduleExpression": "cron(0 4 ? * ? *)" } } }),
            "exactly one of day-of-month and day-of-week",
        ),
        (
            json!({ "rotation": { "password": { "length": 8 } } }),
            "length",
        ),
        (
            json!({ "rotation": { "strategy": "triple-user" } }),
            "Unsupported value",
        ),
        (
            json!({ "secret": { "recoveryWindowInDays": 7 } }),
            "recoveryWindowInDays only applies",
        ),
        (
            json!({ "secret": { "deletionPolicy": "Delete", "recoveryWindowInDays": 3 } }),
            "recoveryWindowInDays",
        ),
        (json!({ "secret": { "name": "bad name" } }), "secret.name"),
        (
            json!({ "workloads": { "policy": "explicit" } }),
            "workloads.policy explicit needs workloads.refs",
        ),
        (
            json!({ "workloads": { "refs": [{ "kind": "Pod", "name": "x" }] } }),
            "Unsupported value",
        ),
        (
            json!({ "privileges": [{ "database": "app", "privileges": ["ALL", "SELECT"] }] }),
            "ALL cannot be combined",
        ),
        (
            json!({ "privileges": [{ "database": "app", "privileges": ["SUPERUSER"] }] }),
            "Unsupported value",
        ),
        (
            json!({ "privileges": [{ "database": "app; drop", "privileges": ["SELECT"] }] }),
            "database",
        ),
        (
            json!({ "privileges": [{ "database": "app", "privileges": [] }] }),
            "privileges",
        ),
        (json!({ "roles": ["Admin Role"] }), "roles"),
        (
            json!({ "target": { "name": "Not_A_DNS_Name" } }),
            "target.name",
        ),
        // Bounds (issue 17).
        (
            json!({ "privileges": (0..33).map(|i| json!({ "database": format!("db{i}"), "privileges": ["SELECT"] })).collect::<Vec<_>>() }),
            "spec.privileges: Too many: 33: must have at most 32 items",
        ),
        (
            json!({ "secret": { "replicaRegions": (0..65).map(|_| json!({ "region": "eu-west-1" })).collect::<Vec<_>>() } }),
            "spec.secret.replicaRegions: Too many: 65",
        ),
        (
            json!({ "target": { "templates": (0..33).map(|i| (format!("K{i}"), json!("{{ host }}"))).collect::<serde_json::Map<_, _>>() } }),
            "spec.target.templates: Too many: 33",
        ),
        (
            json!({ "rotation": { "schedule": { "scheduleExpression": format!("cron({})", "0 ".repeat(130)) } } }),
            "spec.rotation.schedule.scheduleExpression: Too long",
        ),
        // The target Secret as a real API server will judge it (issue 11).
        (
            json!({ "target": { "templates": { "DATABASE URL": "{{ host }}" } } }),
            "spec.target.templates: Invalid value: \"object\": template keys become Secret data keys",
        ),
        (
            json!({ "target": { "templates": { "..data": "{{ host }}" } } }),
            "spec.target.templates: Invalid value",
        ),
        (
            json!({ "target": { "labels": { "not valid!": "x" } } }),
            "spec.target.labels: Invalid value: \"object\": label keys must be qualified names",
        ),
        (
            json!({ "target": { "labels": { "Bad_Prefix/x": "x" } } }),
            "label keys must be qualified names",
        ),
        (
            json!({ "target": { "labels": { "team": "a b" } } }),
            "label values must be empty or",
        ),
        (
            json!({ "target": { "labels": { "rdscred.io/credential": "x" } } }),
            "written by rdscred itself",
        ),
        (
            json!({ "target": { "annotations": { "not valid!": "x" } } }),
            "spec.target.annotations: Invalid value: \"object\": annotation keys must be qualified names",
        ),
        (
            json!({ "target": { "annotations": { "rdscred.io/version-id": "x" } } }),
            "written by rdscred itself",
        ),
    ];
    for (patch, expect) in cases {
        rejected(&g, "RdsCredential", good_credential(), patch, expect).await;
    }
    // Keys a real API server accepts pass admission (annotation names are case-insensitive).
    let mut spec = good_credential();
    merge(
        &mut spec,
        json!({ "target": {
            "templates": { "DATABASE_URL": "{{ host }}", ".env": "{{ port }}", "a-b.c": "x" },
            "labels": { "app.kubernetes.io/name": "orders", "Team": "", "x": "A_b-1.2" },
            "annotations": { "Example.COM/Note": "anything at all", "note": "" },
        } }),
    );
    create(&g, "RdsCredential", &crate::support::unique("keys-"), spec)
        .await
        .expect("valid keys are accepted");
    // Schedules Secrets Manager accepts pass admission.
    for expr in [
        "rate(4 hours)",
        "rate(23 hours)",
        "rate(1 day)",
        "rate(999 days)",
        "cron(0 4 ? * SUN *)",
        "cron(0 */6 1 * ? *)",
        "cron(0 4 ? * 2#1 *)",
    ] {
        let mut spec = good_credential();
        merge(
            &mut spec,
            json!({ "rotation": { "schedule": { "scheduleExpression": expr, "duration": "2h" } } }),
        );
        create(&g, "RdsCredential", &crate::support::unique("sched-"), spec)
            .await
            .unwrap_or_else(|e| panic!("{expr} rejected: {e}"));
    }
}

#[tokio::test]
async fn immutable_fields_cannot_change() {
    let g = Ground::new().await;
    create(&g, "RdsCredential", "fixed", good_credential())
        .await
        .unwrap();
    let api: Api<DynamicObject> =
        Api::namespaced_with(g.client.clone(), "default", &resource("RdsCredential"));
    for (patch, expect) in [
        (
            json!({ "spec": { "username": "other_user" } }),
            "username is immutable",
        ),
        (
            json!({ "spec": { "databaseRef": { "name": "other" } } }),
            "databaseRef is immutable",
        ),
        (
            json!({ "spec": { "secret": { "name": "rdscred/pg/other" } } }),
            "secret.name is immutable",
        ),
    ] {
        match api
            .patch("fixed", &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Err(kube::Error::Api(s)) => assert!(
                s.code == 422 && s.message.contains(expect),
                "{patch}: {}",
                s.message
            ),
            other => panic!("{patch} was accepted: {other:?}"),
        }
    }
    // Mutable fields still change.
    api.patch(
        "fixed",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "secret": { "description": "ok" } } })),
    )
    .await
    .expect("description is mutable");
}

/// Every example manifest is valid against the generated CRDs (and built-in kinds parse).
#[tokio::test]
async fn examples_are_valid() {
    let g = Ground::new().await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<_> = walk(&dir);
    files.sort();
    assert!(!files.is_empty(), "examples/ has manifests");
    let mut checked = 0;
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc).unwrap_or(Value::Null);
            let Some(kind) = value.get("kind").and_then(Value::as_str).map(str::to_owned) else {
                continue;
            };
            let kind = kind.as_str();
            if !matches!(kind, "RdsDatabase" | "RdsCredential") {
                continue;
            }
            let ar = resource(kind);
            let name = value["metadata"]["name"].as_str().unwrap().to_string();
            let api: Api<DynamicObject> = match value["metadata"]["namespace"].as_str() {
                Some(ns) => {
                    ensure_namespace(&g, ns).await;
                    Api::namespaced_with(g.client.clone(), ns, &ar)
                }
                None if kind == "RdsCredential" => {
                    Api::namespaced_with(g.client.clone(), "default", &ar)
                }
                None => Api::all_with(g.client.clone(), &ar),
            };
            let obj: DynamicObject = serde_json::from_value(value).unwrap();
            if let Err(e) = api.create(&PostParams::default(), &obj).await {
                // The same name may be used by two example files (alternatives): only a 409 is fine.
                assert!(
                    matches!(&e, kube::Error::Api(s) if s.code == 409),
                    "{} ({kind} {name}) is invalid: {e}",
                    path.display()
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 5,
        "examples cover the seed scenarios ({checked} custom resources checked)"
    );
}

async fn ensure_namespace(g: &Ground, ns: &str) {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(g.client.clone());
    if api.get_opt(ns).await.unwrap().is_none() {
        g.namespace(ns, &[]).await;
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
    out
}
