//! Refusals leave no trace (issue 11): a table of invalid or unsafe specs, each refused at
//! admission (422 from the CRD schema) or in status (Ready=False from the planning phase) with
//! a message naming the field, and after each **no Secrets Manager secret, no database user or
//! role, no Kubernetes Secret, and no change to any pre-existing object** — on PostgreSQL and
//! on MariaDB. Also: a working credential edited into an invalid one keeps working, unchanged
//! outside Kubernetes, and says why.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use rdscred::crd::{EngineKind, Privilege, PrivilegeGrant, RdsCredential};
use rdscred::engine::{self, Admin, Login, UserPlan};
use rdscred::secret::SecretString;
use serde_json::{Value, json};
use sqlx::{ConnectOptions, Connection};

use crate::support::{DbServer, Ground, merge, secret_key, unique, wait_for};

/// Everything observable about a pre-existing user: it logs in, and its attributes, grants,
/// memberships and TLS requirement as the server reports them.
async fn user_fingerprint(server: &DbServer, login: &Login) -> Vec<String> {
    let mut out = vec![format!(
        "login: {:?}",
        engine::check_login(&server.target(), login)
            .await
            .map_err(|e| e.reason())
    )];
    let u = &login.username;
    match server.engine.family() {
        rdscred::crd::EngineFamily::Postgres => {
            let options = sqlx::postgres::PgConnectOptions::new_without_pgpass()
                .host(&server.host)
                .port(server.port)
                .username(&server.admin.username)
                .password(server.admin.password.expose())
                .database(&server.database);
            let mut c = options.connect().await.expect("admin connects");
            let rows: Vec<String> = sqlx::query_scalar(
                "SELECT concat_ws(' ', rolname, rolsuper, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, rolbypassrls, rolconnlimit, rolvaliduntil::text) FROM pg_roles WHERE rolname = $1 \
                 UNION ALL SELECT 'member of ' || r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = $1) \
                 UNION ALL SELECT 'db ' || d.datname || ' ' || g.rolname || ' ' || a.privilege_type || ' ' || a.is_grantable FROM pg_database d, aclexplode(d.datacl) a JOIN pg_roles g ON g.oid = a.grantee WHERE g.rolname IN ($1, $1 || '_owner') \
                 UNION ALL SELECT 'schema ' || n.nspname || ' ' || g.rolname || ' ' || a.privilege_type || ' ' || a.is_grantable FROM pg_namespace n, aclexplode(n.nspacl) a JOIN pg_roles g ON g.oid = a.grantee WHERE g.rolname IN ($1, $1 || '_owner') \
                 ORDER BY 1",
            )
            .bind(u)
            .fetch_all(&mut c)
            .await
            .expect("fingerprint");
            c.close().await.ok();
            out.extend(rows);
        }
        rdscred::crd::EngineFamily::Mysql => {
            let options = sqlx::mysql::MySqlConnectOptions::new()
                .host(&server.host)
                .port(server.port)
                .username(&server.admin.username)
                .password(server.admin.password.expose());
            let mut c = options.connect().await.expect("admin connects");
            let grants: Vec<String> =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW GRANTS FOR '{u}'@'%'")))
                    .fetch_all(&mut c)
                    .await
                    .expect("show grants");
            let tls: Vec<String> = sqlx::query_scalar(
                "SELECT CONCAT_WS(' ', CAST(ssl_type AS CHAR), CAST(ssl_cipher AS CHAR), CAST(x509_issuer AS CHAR), CAST(x509_subject AS CHAR), CAST(authentication_string AS CHAR)) FROM mysql.user WHERE User = ? AND Host = '%'",
            )
            .bind(u)
            .fetch_all(&mut c)
            .await
            .expect("mysql.user");
            c.close().await.ok();
            out.extend(grants);
            out.extend(tls);
        }
    }
    out
}

/// What a refused spec might have left behind, for one username and secret name.
async fn traces(
    g: &Ground,
    server: &DbServer,
    ns: &str,
    target: &str,
    secret_name: &str,
    username: &str,
) -> Vec<String> {
    let mut found = Vec::new();
    if g.scope
        .secrets
        .describe(secret_name)
        .await
        .unwrap()
        .is_some()
    {
        found.push(format!("Secrets Manager secret {secret_name}"));
    }
    if !target.is_empty() && g.k8s_secret(ns, target).await.is_some() {
        found.push(format!("Kubernetes Secret {ns}/{target}"));
    }
    let mut admin = Admin::connect(&server.target(), &server.admin)
        .await
        .unwrap();
    for name in [
        username.to_string(),
        UserPlan::clone_username(username),
        UserPlan::owner_role(username),
    ] {
        if admin.user_exists(&name).await.unwrap() {
            found.push(format!("database user or role {name}"));
        }
    }
    admin.close().await;
    found
}

enum Expect {
    /// Refused at admission or in status; either way the message names this field.
    Field(&'static str),
    /// Refused in status with this reason (a rule about what exists, not about the spec's shape).
    Reason(&'static str),
}

struct Case {
    what: &'static str,
    patch: Value,
    expect: Expect,
}

fn case(what: &'static str, patch: Value, expect: Expect) -> Case {
    Case {
        what,
        patch,
        expect,
    }
}

/// The table: the four the outside run saw create things before refusing, then the rest.
fn cases(server: &DbServer, existing_user: &str, foreign_target: &str, prefix: &str) -> Vec<Case> {
    use Expect::*;
    let db = server.database.clone();
    let pg = server.engine.family() == rdscred::crd::EngineFamily::Postgres;
    let admin = server.admin.username.clone();
    let mut v = vec![
        case(
            "hourly cron",
            json!({ "rotation": { "schedule": { "scheduleExpression": "cron(0 */1 * * ? *)" } } }),
            Field("scheduleExpression"),
        ),
        case(
            "the admin login as a role",
            json!({ "roles": [admin] }),
            Field("spec.roles[0]"),
        ),
        case(
            "unknown template variable",
            json!({ "target": { "templates": { "URL": "{{ usernme }}" } } }),
            Field("spec.target.templates[URL]"),
        ),
        case(
            "grant on a database that does not exist",
            json!({ "privileges": [{ "database": "no_such_db_rdscred", "privileges": if pg { json!(["CONNECT"]) } else { json!(["SELECT"]) } }] }),
            Field("spec.privileges[0]"),
        ),
        case(
            "cron 3 hours apart across midnight",
            json!({ "rotation": { "schedule": { "scheduleExpression": "cron(0 1,22 * * ? *)" } } }),
            Field("scheduleExpression"),
        ),
        case(
            "rate under 4 hours",
            json!({ "rotation": { "schedule": { "scheduleExpression": "rate(2 hours)" } } }),
            Field("schedule"),
        ),
        case(
            "window longer than the rotation interval",
            json!({ "rotation": { "schedule": { "scheduleExpression": "rate(4 hours)", "duration": "5h" } } }),
            Field("schedule"),
        ),
        case(
            "unknown template filter",
            json!({ "target": { "templates": { "URL": "{{ password | base64 }}" } } }),
            Field("spec.target.templates[URL]"),
        ),
        case(
            "unclosed template",
            json!({ "target": { "templates": { "URL": "x{{ password" } } }),
            Field("spec.target.templates[URL]"),
        ),
        case(
            "template key with a space",
            json!({ "target": { "templates": { "DATABASE URL": "{{ host }}" } } }),
            Field("spec.target.templates"),
        ),
        case(
            "template key '..'",
            json!({ "target": { "templates": { "..": "{{ host }}" } } }),
            Field("spec.target.templates"),
        ),
        case(
            "annotation key not valid!",
            json!({ "target": { "annotations": { "not valid!": "x" } } }),
            Field("spec.target.annotations"),
        ),
        case(
            "label value with a space",
            json!({ "target": { "labels": { "team": "a b" } } }),
            Field("spec.target.labels"),
        ),
        case(
            "label key with an upper-case prefix",
            json!({ "target": { "labels": { "Example.COM/x": "v" } } }),
            Field("spec.target.labels"),
        ),
        case(
            "label rdscred writes itself",
            json!({ "target": { "labels": { "rdscred.io/credential": "other" } } }),
            Field("spec.target.labels"),
        ),
        case(
            "target Secret name with upper case",
            json!({ "target": { "name": "Orders-DB" } }),
            Field("target.name"),
        ),
        case(
            "SQL in the username",
            json!({ "username": "x'; DROP USER root; --" }),
            Field("username"),
        ),
        case(
            "username with upper case",
            json!({ "username": "OrdersApp" }),
            Field("username"),
        ),
        case(
            "reserved username",
            json!({ "username": if pg { "public" } else { "mysql" } }),
            Field("spec.username"),
        ),
        case(
            "username too long for its clone",
            json!({ "username": "a".repeat(27), "rotation": { "strategy": "alternating-users" } }),
            Field("username"),
        ),
        case(
            "overlong username",
            json!({ "username": "a".repeat(64), "rotation": { "strategy": "single-user" } }),
            Field("username"),
        ),
        case(
            "SQL in a database name",
            json!({ "privileges": [{ "database": "app`; DROP DATABASE x; --", "privileges": ["SELECT"] }] }),
            Field("privileges[0].database"),
        ),
        case(
            "overlong database name",
            json!({ "privileges": [{ "database": "d".repeat(65), "privileges": ["SELECT"] }] }),
            Field("privileges[0]"),
        ),
        case(
            "grant on a system database",
            json!({ "privileges": [{ "database": if pg { "template1" } else { "mysql" }, "privileges": if pg { json!(["CONNECT"]) } else { json!(["SELECT"]) } }] }),
            Field("spec.privileges[0]"),
        ),
        case(
            "server-file role",
            json!({ "roles": ["pg_read_server_files"] }),
            Field("spec.roles"),
        ),
        case(
            "RDS superuser role",
            json!({ "roles": ["rds_superuser"] }),
            Field("spec.roles"),
        ),
        case(
            "another credential's owner role",
            json!({ "roles": ["billing_owner"] }),
            Field("spec.roles"),
        ),
        case(
            "a role that does not exist",
            json!({ "roles": ["no_such_role_rdscred"] }),
            Field("spec.roles[0]"),
        ),
        case(
            "a pre-existing user as a role",
            json!({ "roles": [existing_user] }),
            Field("spec.roles[0]"),
        ),
        case(
            "sync-only with a username (conflicting fields)",
            json!({ "mode": "sync-only" }),
            Field("sync-only"),
        ),
        case(
            "recovery window with Retain (conflicting fields)",
            json!({ "secret": { "recoveryWindowInDays": 7 } }),
            Field("recoveryWindowInDays"),
        ),
        case(
            "lambda rotator without lambdaArn",
            json!({ "rotation": { "rotator": "lambda", "schedule": { "automaticallyAfterDays": 7 } } }),
            Field("lambda"),
        ),
        case(
            "password policy leaving too few characters",
            json!({ "rotation": { "password": { "length": 32, "alphanumericOnly": true, "excludeCharacters": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ012345" } } }),
            Field("password"),
        ),
        case(
            "a grant without privileges",
            json!({ "privileges": [{ "database": db, "privileges": [] }] }),
            Field("privileges"),
        ),
        case(
            "a pre-existing user as the username",
            json!({ "username": existing_user }),
            Reason("UserExists"),
        ),
        case(
            "a target Secret someone else owns",
            json!({ "target": { "name": foreign_target } }),
            Field("spec.target.name"),
        ),
        case(
            "secret outside the prefix",
            json!({ "secret": { "name": "elsewhere/app" } }),
            Reason("SecretNameOutsidePrefix"),
        ),
        case(
            "secret name with '..'",
            json!({ "secret": { "name": format!("{prefix}../other/app") } }),
            Reason("SecretNameOutsidePrefix"),
        ),
    ];
    if pg {
        v.push(case(
            "grant on a system schema",
            json!({ "privileges": [
                { "database": db, "privileges": ["CONNECT"] },
                { "database": db, "schema": "pg_catalog", "privileges": ["SELECT"] }
            ] }),
            Field("spec.privileges[1]"),
        ));
        v.push(case(
            "grant on a schema that does not exist",
            json!({ "privileges": [
                { "database": db, "privileges": ["CONNECT"] },
                { "database": db, "schema": "no_such_schema_rdscred", "privileges": ["USAGE"] }
            ] }),
            Field("spec.privileges[1]"),
        ));
        v.push(case(
            "table privilege on a database",
            json!({ "privileges": [{ "database": db, "privileges": ["SELECT"] }] }),
            Field("spec.privileges[0]"),
        ));
    } else {
        v.push(case(
            "a schema on MariaDB",
            json!({ "privileges": [{ "database": db, "schema": "public", "privileges": ["SELECT"] }] }),
            Field("spec.privileges[0]"),
        ));
        v.push(case(
            "two roles on MariaDB",
            json!({ "roles": ["a_role", "b_role"] }),
            Field("spec.roles"),
        ));
    }
    v
}

async fn refusals_leave_no_trace(server: DbServer) {
    let existing_user = unique("pre_");
    let existing_plan = UserPlan {
        username: existing_user.clone(),
        login_users: vec![existing_user.clone()],
        grants: vec![PrivilegeGrant {
            database: server.database.clone(),
            schema: None,
            privileges: vec![match server.engine.family() {
                rdscred::crd::EngineFamily::Postgres => Privilege::Connect,
                rdscred::crd::EngineFamily::Mysql => Privilege::Select,
            }],
        }],
        roles: vec![],
    };
    let outcome = AssertUnwindSafe(refusals_table(&server, &existing_plan))
        .catch_unwind()
        .await;
    // The pre-existing user is the test's own: drop it whatever happened.
    let mut admin = Admin::connect(&server.target(), &server.admin)
        .await
        .unwrap();
    if let Err(e) = admin.drop_users(&existing_plan).await {
        eprintln!("cleanup of {existing_user}: {e}");
    }
    admin.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn refusals_table(server: &DbServer, existing_plan: &UserPlan) {
    let server = server.clone();
    let existing_user = existing_plan.username.clone();
    let mut g = Ground::new().await;
    g.start().await;
    let ns = unique("ns-");
    g.namespace(&ns, &[("rdscred-test", "yes")]).await;
    let (db, prefix) = g.database(&server, json!({})).await;

    // Pre-existing objects rdscred must never touch.
    let existing_login = Login {
        username: existing_user.clone(),
        password: SecretString::new("pre-Existing-Pa55"),
    };
    let mut admin = Admin::connect(&server.target(), &server.admin)
        .await
        .unwrap();
    admin
        .ensure_login_user(existing_plan, &existing_user, &existing_login.password)
        .await
        .unwrap();
    admin.sync_privileges(existing_plan).await.unwrap();
    admin.close().await;
    let user_before = user_fingerprint(&server, &existing_login).await;
    assert!(user_before[0].contains("Ok"), "{user_before:?}");

    let foreign_target = "someone-elses";
    let secrets: Api<Secret> = Api::namespaced(g.client.clone(), &ns);
    secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some(foreign_target.into()),
                    ..Default::default()
                },
                string_data: Some(BTreeMap::from([("k".into(), "theirs".into())])),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let foreign_before = secrets.get(foreign_target).await.unwrap();

    let table = cases(&server, &existing_user, foreign_target, &prefix);
    assert!(table.len() >= 30, "{} cases", table.len());
    let (mut at_admission, mut in_status, mut side_effects) = (0, 0, 0);
    let mut pending = Vec::new();
    for (i, c) in table.iter().enumerate() {
        let name = format!("bad-{i}");
        let username = unique("r_");
        let secret_name = format!("{prefix}{username}");
        let mut spec = json!({
            "databaseRef": { "name": db },
            "username": username,
            "secret": { "name": secret_name },
        });
        merge(&mut spec, c.patch.clone());
        let username = spec["username"].as_str().unwrap_or_default().to_string();
        let secret_name = spec["secret"]["name"].as_str().unwrap().to_string();
        let target = spec["target"]["name"].as_str().unwrap_or(&name).to_string();
        match g.credential(&ns, &name, spec).await {
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 422, "{}: {}", c.what, s.message);
                let Expect::Field(field) = c.expect else {
                    panic!(
                        "{}: refused at admission, expected in status: {}",
                        c.what, s.message
                    )
                };
                assert!(
                    s.message.contains(field),
                    "{}: admission message does not name {field}: {}",
                    c.what,
                    s.message
                );
                at_admission += 1;
            }
            Err(e) => panic!("{}: {e}", c.what),
            Ok(_) => {
                in_status += 1;
                pending.push((c, name, target, secret_name, username));
            }
        }
    }
    for (c, name, target, secret_name, username) in &pending {
        let cred = g
            .wait_condition(&ns, name, "Ready", "False", Duration::from_secs(30))
            .await;
        let ready = cred
            .status
            .unwrap()
            .conditions
            .into_iter()
            .find(|x| x.type_ == "Ready")
            .unwrap();
        match c.expect {
            Expect::Field(field) => assert!(
                ready.message.contains(field),
                "{}: status message does not name {field}: {} ({})",
                c.what,
                ready.message,
                ready.reason
            ),
            Expect::Reason(reason) => {
                assert_eq!(ready.reason, reason, "{}: {}", c.what, ready.message)
            }
        }
        // The foreign target belongs to someone else and exists by design.
        let target_to_check = if target == foreign_target {
            ""
        } else {
            target.as_str()
        };
        let mut left = traces(&g, &server, &ns, target_to_check, secret_name, username).await;
        if *username == existing_user {
            // The pre-existing user (and, on PostgreSQL, the owner role the setup made for
            // it) exist by design; the fingerprint below proves them unchanged. A clone
            // would be a side effect.
            let pre = [
                format!("database user or role {existing_user}"),
                format!(
                    "database user or role {}",
                    UserPlan::owner_role(&existing_user)
                ),
            ];
            left.retain(|t| !pre.contains(t));
        }
        side_effects += left.len();
        assert!(left.is_empty(), "{}: refused but left {left:?}", c.what);
    }
    // Pre-existing objects are exactly as they were.
    assert_eq!(
        user_fingerprint(&server, &existing_login).await,
        user_before
    );
    let foreign_after = secrets.get(foreign_target).await.unwrap();
    assert_eq!(foreign_after.data, foreign_before.data);
    assert_eq!(
        foreign_after.metadata.resource_version,
        foreign_before.metadata.resource_version
    );
    println!(
        "{:?}: {} invalid specs, {at_admission} refused at admission, {in_status} in status, {side_effects} side effects",
        server.engine,
        table.len()
    );
}

#[tokio::test]
async fn refusals_leave_no_trace_postgres() {
    refusals_leave_no_trace(DbServer::postgres()).await;
}

#[tokio::test]
async fn refusals_leave_no_trace_mariadb() {
    refusals_leave_no_trace(DbServer::mariadb()).await;
}

/// A working credential edited into an invalid spec: nothing changes outside Kubernetes (the
/// user keeps its password and grants, AWSCURRENT stays, the Secret keeps its value), Ready
/// turns False naming the field; the edit reverted, it is Ready again.
async fn invalid_edit_keeps_the_credential_working(server: DbServer) {
    let mut g = Ground::new().await;
    g.start().await;
    let ns = unique("ns-");
    g.namespace(&ns, &[("rdscred-test", "yes")]).await;
    let (db, prefix) = g.database(&server, json!({})).await;
    let user = unique("w_");
    let secret_name = format!("{prefix}{user}");
    let grant = match server.engine {
        EngineKind::Postgres => json!([{ "database": server.database, "privileges": ["CONNECT"] }]),
        _ => json!([{ "database": server.database, "privileges": ["SELECT"] }]),
    };
    g.credential(
        &ns,
        "app",
        json!({
            "databaseRef": { "name": db }, "username": user, "privileges": grant,
            "secret": { "name": secret_name },
            "target": { "templates": { "URL": "{{ username }}@{{ host }}" } },
        }),
    )
    .await
    .unwrap();
    g.wait_ready(&ns, "app").await;
    let secret_before = g.k8s_secret(&ns, "app").await.unwrap();
    let login = Login {
        username: secret_key(&secret_before, "username").unwrap(),
        password: SecretString::new(secret_key(&secret_before, "password").unwrap()),
    };
    let user_before = user_fingerprint(&server, &login).await;
    let (version_before, _) = g.current(&secret_name).await;
    let meta_before = g
        .scope
        .secrets
        .describe(&secret_name)
        .await
        .unwrap()
        .unwrap();

    let api: Api<RdsCredential> = Api::namespaced(g.client.clone(), &ns);
    let edits = [
        (
            json!({ "spec": { "privileges": [{ "database": "no_such_db_rdscred", "privileges": grant[0]["privileges"] }] } }),
            "spec.privileges[0]",
        ),
        (
            json!({ "spec": { "target": { "templates": { "URL": "{{ usernme }}" } } } }),
            "spec.target.templates[URL]",
        ),
        (
            json!({ "spec": { "rotation": { "schedule": { "scheduleExpression": "cron(0 */2 * * ? *)" } } } }),
            "scheduleExpression",
        ),
    ];
    for (edit, field) in edits {
        let patched = api
            .patch("app", &PatchParams::default(), &Patch::Merge(&edit))
            .await
            .unwrap();
        let generation = patched.metadata.generation;
        let cred = wait_for("the edit refused", Duration::from_secs(30), || async {
            let c = g.get_credential(&ns, "app").await?;
            let ready = c
                .status
                .as_ref()?
                .conditions
                .iter()
                .find(|x| x.type_ == "Ready")?
                .clone();
            (ready.status == "False" && ready.observed_generation == generation).then_some(ready)
        })
        .await;
        assert!(cred.message.contains(field), "{field}: {}", cred.message);
        assert_eq!(
            user_fingerprint(&server, &login).await,
            user_before,
            "{field}"
        );
        assert_eq!(g.current(&secret_name).await.0, version_before, "{field}");
        let meta = g
            .scope
            .secrets
            .describe(&secret_name)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(meta.tags, meta_before.tags, "{field}");
        assert_eq!(
            meta.rotation_enabled, meta_before.rotation_enabled,
            "{field}"
        );
        let secret = g.k8s_secret(&ns, "app").await.unwrap();
        assert_eq!(secret.data, secret_before.data, "{field}");
        // Undo the edit: Ready again.
        let undo = json!({ "spec": {
            "privileges": grant,
            "target": { "templates": { "URL": "{{ username }}@{{ host }}" } },
            "rotation": null,
        } });
        api.patch("app", &PatchParams::default(), &Patch::Merge(&undo))
            .await
            .unwrap();
        g.wait_ready(&ns, "app").await;
    }
    assert_eq!(user_fingerprint(&server, &login).await, user_before);
}

#[tokio::test]
async fn invalid_edit_keeps_the_credential_working_postgres() {
    invalid_edit_keeps_the_credential_working(DbServer::postgres()).await;
}

#[tokio::test]
async fn invalid_edit_keeps_the_credential_working_mariadb() {
    invalid_edit_keeps_the_credential_working(DbServer::mariadb()).await;
}
