use serde_json::{Value, json};

use super::*;
use crate::reconcile::Reason;

fn cred(patch: Value) -> RdsCredential {
    let mut spec = json!({
        "databaseRef": { "name": "db" },
        "username": "app_user",
        "privileges": [
            { "database": "app", "privileges": ["CONNECT"] },
            { "database": "app", "schema": "public", "privileges": ["SELECT"] }
        ],
        "secret": { "name": "rdscred/db/app" },
        "target": { "templates": { "DATABASE_URL": "postgres://{{ username }}@{{ host }}" } },
    });
    merge(&mut spec, patch);
    serde_json::from_value(json!({
        "apiVersion": "rdscred.io/v1alpha1", "kind": "RdsCredential",
        "metadata": { "name": "c", "namespace": "ns", "generation": 1 },
        "spec": spec,
    }))
    .expect("credential json")
}

fn database(rotation_defaults: Option<Value>) -> RdsDatabase {
    let mut spec = json!({
        "endpoint": { "host": "h", "port": 5432 },
        "engine": "postgres",
        "adminLogin": { "secretId": "admin" },
        "secretNamePrefix": "rdscred/db/",
    });
    if let Some(r) = rotation_defaults {
        spec["rotationDefaults"] = r;
    }
    serde_json::from_value(json!({
        "apiVersion": "rdscred.io/v1alpha1", "kind": "RdsDatabase",
        "metadata": { "name": "db" }, "spec": spec,
    }))
    .expect("database json")
}

pub(super) fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(&k);
                } else {
                    merge(b.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        (b, p) => *b = p,
    }
}

#[test]
fn a_valid_spec_is_planned() {
    let plan = decide(
        &cred(json!({ "rotation": { "schedule": { "scheduleExpression": "cron(0 4 ? * SUN *)", "duration": "2h" } } })),
        &database(None),
        EngineKind::Postgres,
    )
    .expect("valid");
    let user = plan.user.expect("managed");
    assert_eq!(user.username, "app_user");
    assert_eq!(user.login_users, vec!["app_user", "app_user_clone"]);
    assert_eq!(user.grants.len(), 2);
    assert!(plan.schedule.is_some());

    let sync_only = decide(
        &cred(json!({ "mode": "sync-only", "username": null, "privileges": null })),
        &database(None),
        EngineKind::Postgres,
    )
    .expect("valid sync-only");
    assert!(sync_only.user.is_none());
}

/// Every spec the CRD schema lets through but a later step would refuse (or a real API server
/// would reject) is refused here, with the field it is about.
#[test]
fn invalid_specs_are_refused_naming_the_field() {
    let pg = EngineKind::Postgres;
    let my = EngineKind::Mariadb;
    let cases: Vec<(&str, Value, EngineKind, &str, &str)> = vec![
        (
            "hourly cron",
            json!({ "rotation": { "schedule": { "scheduleExpression": "cron(0 */1 * * ? *)" } } }),
            pg,
            "InvalidSchedule",
            "spec.rotation.schedule.scheduleExpression",
        ),
        (
            "cron firing 3 hours apart across midnight",
            json!({ "rotation": { "schedule": { "scheduleExpression": "cron(0 1,22 * * ? *)" } } }),
            pg,
            "InvalidSchedule",
            "spec.rotation.schedule.scheduleExpression",
        ),
        (
            "unknown template variable",
            json!({ "target": { "templates": { "URL": "{{ usernme }}" } } }),
            pg,
            "InvalidTemplate",
            "spec.target.templates[URL]",
        ),
        (
            "unknown template filter",
            json!({ "target": { "templates": { "URL": "{{ password | base64 }}" } } }),
            pg,
            "InvalidTemplate",
            "spec.target.templates[URL]",
        ),
        (
            "unclosed template",
            json!({ "target": { "templates": { "URL": "{{ password" } } }),
            pg,
            "InvalidTemplate",
            "spec.target.templates[URL]",
        ),
        (
            "template key with a space",
            json!({ "target": { "templates": { "DATABASE URL": "{{ host }}" } } }),
            pg,
            "InvalidTemplate",
            "spec.target.templates[DATABASE URL]",
        ),
        (
            "template key '..'",
            json!({ "target": { "templates": { "..": "{{ host }}" } } }),
            pg,
            "InvalidTemplate",
            "spec.target.templates[..]",
        ),
        (
            "annotation key not valid!",
            json!({ "target": { "annotations": { "not valid!": "x" } } }),
            pg,
            "InvalidTarget",
            "spec.target.annotations[not valid!]",
        ),
        (
            "label value with a space",
            json!({ "target": { "labels": { "team": "a b" } } }),
            pg,
            "InvalidTarget",
            "spec.target.labels[team]",
        ),
        (
            "label key with a bad prefix",
            json!({ "target": { "labels": { "Example.COM/x": "v" } } }),
            pg,
            "InvalidTarget",
            "spec.target.labels[Example.COM/x]",
        ),
        (
            "reserved label",
            json!({ "target": { "labels": { "rdscred.io/credential": "other" } } }),
            pg,
            "InvalidTarget",
            "spec.target.labels[rdscred.io/credential]",
        ),
        (
            "reserved annotation",
            json!({ "target": { "annotations": { "rdscred.io/version-id": "v" } } }),
            pg,
            "InvalidTarget",
            "spec.target.annotations[rdscred.io/version-id]",
        ),
        (
            "forbidden role pg_read_server_files",
            json!({ "roles": ["pg_read_server_files"] }),
            pg,
            "InvalidPrivileges",
            "spec.roles",
        ),
        (
            "forbidden role rds_superuser",
            json!({ "roles": ["rds_superuser"] }),
            pg,
            "InvalidPrivileges",
            "spec.roles",
        ),
        (
            "another credential's owner role",
            json!({ "roles": ["billing_owner"] }),
            pg,
            "InvalidPrivileges",
            "spec.roles",
        ),
        (
            "two roles on MariaDB",
            json!({ "roles": ["a_role", "b_role"] }),
            my,
            "InvalidPrivileges",
            "spec.roles",
        ),
        (
            "grant on template1",
            json!({ "privileges": [{ "database": "template1", "privileges": ["CONNECT"] }] }),
            pg,
            "InvalidPrivileges",
            "spec.privileges[0]",
        ),
        (
            "grant on the mysql system database",
            json!({ "privileges": [{ "database": "mysql", "privileges": ["SELECT"] }] }),
            my,
            "InvalidPrivileges",
            "spec.privileges[0]",
        ),
        (
            "grant on pg_catalog",
            json!({ "privileges": [
                { "database": "app", "privileges": ["CONNECT"] },
                { "database": "app", "schema": "pg_catalog", "privileges": ["SELECT"] }
            ] }),
            pg,
            "InvalidPrivileges",
            "spec.privileges[1]",
        ),
        (
            "schema on MySQL",
            json!({ "privileges": [{ "database": "app", "schema": "public", "privileges": ["SELECT"] }] }),
            my,
            "InvalidPrivileges",
            "spec.privileges[0]",
        ),
        (
            "table privilege on a database (PostgreSQL)",
            json!({ "privileges": [{ "database": "app", "privileges": ["SELECT"] }] }),
            pg,
            "InvalidPrivileges",
            "spec.privileges[0]",
        ),
        (
            "ALL combined with others",
            json!({ "privileges": [{ "database": "app", "privileges": ["ALL", "SELECT"] }] }),
            my,
            "InvalidPrivileges",
            "spec.privileges[0]",
        ),
        (
            "username too long for the MySQL clone",
            json!({ "username": "a".repeat(27) }),
            my,
            "InvalidUser",
            "spec.username",
        ),
        (
            "username too long for the PostgreSQL owner role",
            json!({ "username": "a".repeat(58) }),
            pg,
            "InvalidUser",
            "spec.username",
        ),
        (
            "lambda rotator without lambdaArn",
            json!({ "rotation": { "rotator": "lambda", "schedule": { "automaticallyAfterDays": 7 } } }),
            pg,
            "InvalidRotation",
            "spec.rotation.lambdaArn",
        ),
        (
            "password policy without enough characters",
            json!({ "rotation": { "password": { "length": 32, "alphanumericOnly": true, "excludeCharacters": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ012345" } } }),
            pg,
            "InvalidPasswordPolicy",
            "spec.rotation.password.excludeCharacters",
        ),
    ];
    for (what, patch, engine, reason, field) in cases {
        let refusal =
            decide(&cred(patch), &database(None), engine).expect_err(&format!("{what}: refused"));
        assert_eq!(
            (refusal.reason.as_str(), refusal.field.as_str()),
            (reason, field),
            "{what}: {refusal}"
        );
        assert!(!refusal.message.is_empty(), "{what}");
    }
}

#[test]
fn the_database_defaults_are_checked_and_named() {
    let db = database(Some(
        json!({ "schedule": { "scheduleExpression": "cron(0 */2 * * ? *)" } }),
    ));
    let refusal = decide(&cred(json!({})), &db, EngineKind::Postgres).unwrap_err();
    assert_eq!(refusal.reason, Reason::InvalidSchedule);
    assert_eq!(
        refusal.field,
        "RdsDatabase spec.rotationDefaults.schedule.scheduleExpression"
    );
    assert!(refusal.message.contains("4 hours"), "{refusal}");
}

#[test]
fn kubernetes_syntax_rules() {
    use k8s::*;
    for ok in ["DATABASE_URL", "key.name", "a-b", ".env", "x..y"] {
        assert_eq!(config_key(ok), None, "{ok}");
    }
    for bad in [
        "DATABASE URL",
        "a/b",
        "",
        ".",
        "..",
        "..x",
        "ü",
        &"k".repeat(254),
    ] {
        assert!(config_key(bad).is_some(), "{bad:?}");
    }
    for ok in ["app", "example.com/app", "a_b.c-d", "A"] {
        assert_eq!(qualified_name(ok), None, "{ok}");
    }
    for bad in [
        "not valid!",
        "/x",
        "x/",
        "a/b/c",
        "Bad_Prefix/x",
        "-x",
        &"n".repeat(64),
    ] {
        assert!(qualified_name(bad).is_some(), "{bad:?}");
    }
    assert_eq!(label_value(""), None);
    assert!(label_value("a b").is_some());
    assert!(label_value(&"v".repeat(64)).is_some());
    assert!(dns1123_subdomain("Orders").is_some());
    assert_eq!(dns1123_subdomain("orders-db.v1"), None);
}

#[test]
fn a_database_answer_names_the_role_or_grant() {
    let user = UserPlan {
        username: "app".into(),
        login_users: vec!["app".into()],
        grants: cred(json!({ "privileges": [
            { "database": "app", "privileges": ["CONNECT"] },
            { "database": "other", "privileges": ["CONNECT"] },
            { "database": "other", "schema": "missing", "privileges": ["USAGE"] }
        ] }))
        .spec
        .privileges
        .unwrap(),
        roles: vec!["readers".into(), "rdscred_admin".into()],
    };
    assert_eq!(
        privileges_field(
            &user,
            "role rdscred_admin can log in or has administrative attributes"
        ),
        "spec.roles[1]"
    );
    assert_eq!(
        privileges_field(&user, "database other does not exist"),
        "spec.privileges[1]"
    );
    assert_eq!(
        privileges_field(&user, "schema missing does not exist in database other"),
        "spec.privileges[2]"
    );
}

/// docs/troubleshooting.md lists every refusal reason the code can give: the planning
/// phase's, and every `Error::refused(Reason::…, …)` in the source tree.
#[test]
fn troubleshooting_lists_every_refusal_reason() {
    let root = env!("CARGO_MANIFEST_DIR");
    let doc = std::fs::read_to_string(format!("{root}/docs/troubleshooting.md")).unwrap();
    let mut reasons: Vec<String> = REFUSAL_REASONS.iter().map(|s| s.to_string()).collect();
    reasons.push("TargetSecretNotOwned".into());
    let re = regex::Regex::new(r#"Error::refused\(\s*Reason::([A-Za-z]+)"#).unwrap();
    for (path, text) in crate::reconcile::rust_sources_under(&["src"]) {
        if !path.ends_with("plan/tests.rs") {
            reasons.extend(re.captures_iter(&text).map(|c| c[1].to_string()));
        }
    }
    reasons.sort();
    reasons.dedup();
    assert!(reasons.len() >= 20, "found only {reasons:?}");
    let missing: Vec<&String> = reasons
        .iter()
        .filter(|r| !doc.contains(&format!("`{r}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/troubleshooting.md does not list {missing:?}"
    );
}
