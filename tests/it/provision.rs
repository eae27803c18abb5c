//! Provisioning end to end (issue 3): the real controller against the emulator, moto and the
//! real PostgreSQL and MariaDB servers.

use std::time::Duration;

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use rdscred::crd::{RdsCredential, RdsDatabase};
use rdscred::engine::{self, Admin, DbError, Login};
use rdscred::secret::SecretString;
use serde_json::json;

use crate::support::{
    DbServer, Ground, move_awscurrent_to_new_version, secret_key, unique, wait_for,
};

const NS_LABEL: (&str, &str) = ("rdscred-test", "yes");

/// Namespace admitted by the test databases.
async fn admitted_namespace(g: &Ground) -> String {
    let ns = unique("ns-");
    g.namespace(&ns, &[NS_LABEL]).await;
    ns
}

fn login_of(secret: &k8s_openapi::api::core::v1::Secret) -> Login {
    Login {
        username: secret_key(secret, "username").unwrap(),
        password: SecretString::new(secret_key(secret, "password").unwrap()),
    }
}

async fn can_login(server: &DbServer, login: &Login) -> Result<(), DbError> {
    engine::check_login(&server.target(), login).await
}

async fn provisions_end_to_end(server: DbServer) {
    let mut g = Ground::new().await;
    g.start().await;
    let ns = admitted_namespace(&g).await;
    let (db, prefix) = g.database(&server, json!({})).await;
    let user = unique("app_");
    let secret_name = format!("{prefix}{user}");
    g.credential(&ns, "app", json!({
        "databaseRef": { "name": db },
        "username": user,
        "privileges": [{ "database": server.database, "privileges": ["ALL"] }],
        "secret": { "name": secret_name, "description": "app login", "tags": { "app": "orders" } },
        "target": { "name": "app-db", "templates": { "DATABASE_URL": "x://{{ username | urlencode }}:{{ password | urlencode }}@{{ host }}:{{ port }}/{{ dbname }}" } },
    }))
    .await
    .expect("create credential");

    let cred = g.wait_ready(&ns, "app").await;
    let status = cred.status.clone().unwrap();
    for t in ["SecretReady", "UserReady", "Synced"] {
        assert!(
            status
                .conditions
                .iter()
                .any(|c| c.type_ == t && c.status == "True"),
            "{t} not True: {:?}",
            status.conditions
        );
    }
    assert_eq!(status.observed_generation, cred.metadata.generation);
    Ground::assert_kstatus(
        "provisioned",
        &status.conditions,
        cred.metadata.generation,
        [
            ("Ready", "True"),
            ("Reconciling", "False"),
            ("Stalled", "False"),
        ],
    );

    // Secrets Manager: RDS JSON, ownership + database + credential tags, description.
    let meta = g
        .scope
        .secrets
        .describe(&secret_name)
        .await
        .unwrap()
        .expect("secret exists");
    assert_eq!(status.secret_arn.as_deref(), Some(meta.arn.as_str()));
    let owner = meta.owner().expect("owned");
    assert_eq!(
        (
            owner.cluster.as_str(),
            owner.namespace.as_str(),
            owner.name.as_str()
        ),
        (g.cluster.as_str(), ns.as_str(), "app")
    );
    assert_eq!(meta.tags.get("team").map(String::as_str), Some("platform"));
    assert_eq!(meta.tags.get("app").map(String::as_str), Some("orders"));
    assert_eq!(meta.description.as_deref(), Some("app login"));
    let (version, value) = g.current(&secret_name).await;
    assert_eq!(status.synced_version_id.as_deref(), Some(version.as_str()));
    assert_eq!(value.username, user);
    assert_eq!(value.engine, server.engine.as_str());
    assert_eq!(
        (value.host.as_str(), value.port),
        (server.host.as_str(), server.port)
    );

    // Kubernetes Secret: default keys + template, version annotation, owner reference.
    let secret = g.k8s_secret(&ns, "app-db").await.expect("target secret");
    for k in [
        "username",
        "password",
        "host",
        "port",
        "dbname",
        "engine",
        "DATABASE_URL",
    ] {
        assert!(secret_key(&secret, k).is_some(), "key {k} missing");
    }
    assert_eq!(
        secret_key(&secret, "password").unwrap(),
        value.password.expose()
    );
    assert_eq!(
        secret
            .metadata
            .annotations
            .as_ref()
            .unwrap()
            .get("rdscred.io/version-id"),
        Some(&version)
    );
    assert_eq!(
        secret.metadata.owner_references.as_ref().unwrap()[0].uid,
        cred.metadata.uid.clone().unwrap()
    );

    // The database: AWSCURRENT logs in, a wrong password does not.
    can_login(&server, &login_of(&secret))
        .await
        .expect("AWSCURRENT logs in");
    let wrong = Login {
        username: user.clone(),
        password: SecretString::new("not-the-password"),
    };
    assert!(matches!(
        can_login(&server, &wrong).await,
        Err(DbError::AuthFailed { .. })
    ));

    // No secret value in the status.
    let status_json = serde_json::to_string(&status).unwrap();
    assert!(!status_json.contains(value.password.expose()));
}

#[tokio::test]
async fn provisions_postgres() {
    provisions_end_to_end(DbServer::postgres()).await;
}

#[tokio::test]
async fn provisions_mariadb() {
    provisions_end_to_end(DbServer::mariadb()).await;
}

/// Refusals leave no trace: no AWS secret, no database user, no Kubernetes Secret.
async fn assert_refused(
    g: &Ground,
    server: &DbServer,
    ns: &str,
    name: &str,
    reason: &str,
    secret_name: &str,
    username: &str,
) {
    let cred = g
        .wait_condition(ns, name, "Ready", "False", Duration::from_secs(30))
        .await;
    let ready = cred
        .status
        .clone()
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.reason, reason, "message: {}", ready.message);
    Ground::assert_kstatus(
        reason,
        &cred.status.as_ref().unwrap().conditions,
        cred.metadata.generation,
        [
            ("Ready", "False"),
            ("Reconciling", "False"),
            ("Stalled", "True"),
        ],
    );
    assert!(
        g.k8s_secret(ns, name).await.is_none(),
        "no Kubernetes Secret after a refusal"
    );
    if !secret_name.is_empty() {
        assert!(
            g.scope
                .secrets
                .describe(secret_name)
                .await
                .unwrap()
                .is_none(),
            "no AWS secret after a refusal"
        );
    }
    let mut admin = Admin::connect(&server.target(), &server.admin)
        .await
        .unwrap();
    assert!(
        !admin.user_exists(username).await.unwrap(),
        "no database user after a refusal"
    );
    admin.close().await;
}

#[tokio::test]
async fn database_not_ready_is_reconciling_until_it_is() {
    // An admin secret that does not exist yet: the database waits (Reconciling), and so does
    // its credential; neither asks a person (Stalled). Pointing at a real one makes both Ready.
    let server = DbServer::postgres();
    let mut g = Ground::new().await;
    g.start().await;
    let missing = unique("admin/missing-");
    let (db, prefix) = g
        .database(&server, json!({ "adminLogin": { "secretId": missing } }))
        .await;
    let ns = admitted_namespace(&g).await;
    let user = unique("u_");
    g.credential(&ns, "waits", json!({ "databaseRef": { "name": db }, "username": user, "secret": { "name": format!("{prefix}{user}") } }))
        .await
        .unwrap();
    let dbs: Api<RdsDatabase> = Api::all(g.client.clone());
    let not_ready = wait_for("database Reconciling", Duration::from_secs(30), || async {
        let d = dbs.get(&db).await.ok()?;
        let st = d.status.as_ref()?;
        st.conditions
            .iter()
            .any(|c| c.type_ == "Reconciling" && c.status == "True")
            .then_some(d)
    })
    .await;
    let st = not_ready.status.as_ref().unwrap();
    Ground::assert_kstatus(
        "database without admin secret",
        &st.conditions,
        not_ready.metadata.generation,
        [
            ("Ready", "False"),
            ("Reconciling", "True"),
            ("Stalled", "False"),
        ],
    );
    assert_eq!(st.observed_generation, not_ready.metadata.generation);
    let cred = g
        .wait_condition(&ns, "waits", "Reconciling", "True", Duration::from_secs(30))
        .await;
    let conds = &cred.status.as_ref().unwrap().conditions;
    Ground::assert_kstatus(
        "credential of a database not Ready",
        conds,
        cred.metadata.generation,
        [
            ("Ready", "False"),
            ("Reconciling", "True"),
            ("Stalled", "False"),
        ],
    );
    assert_eq!(
        conds.iter().find(|c| c.type_ == "Ready").unwrap().reason,
        "DatabaseNotReady"
    );

    let admin = g.admin_secret(&server).await;
    dbs.patch(
        &db,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "adminLogin": { "secretId": admin } } })),
    )
    .await
    .unwrap();
    let cred = g.wait_ready(&ns, "waits").await;
    Ground::assert_kstatus(
        "credential once its database is Ready",
        &cred.status.as_ref().unwrap().conditions,
        cred.metadata.generation,
        [
            ("Ready", "True"),
            ("Reconciling", "False"),
            ("Stalled", "False"),
        ],
    );
    let ready_db = dbs.get(&db).await.unwrap();
    Ground::assert_kstatus(
        "database with its admin secret",
        &ready_db.status.as_ref().unwrap().conditions,
        ready_db.metadata.generation,
        [
            ("Ready", "True"),
            ("Reconciling", "False"),
            ("Stalled", "False"),
        ],
    );
}

#[tokio::test]
async fn each_sync_event_names_the_version_it_synced() {
    // Two versions synced in a row: kube-runtime's Recorder would count the second into the
    // first Event's series and keep its note; each Event must name its own version.
    let server = DbServer::postgres();
    let mut g = Ground::new().await;
    g.start().await;
    let (db, prefix) = g.database(&server, json!({})).await;
    let ns = admitted_namespace(&g).await;
    let user = unique("u_");
    g.credential(&ns, "notes", json!({ "databaseRef": { "name": db }, "username": user, "secret": { "name": format!("{prefix}{user}") } }))
        .await
        .unwrap();
    let cred = g.wait_ready(&ns, "notes").await;
    let uid = cred.metadata.uid.clone().unwrap();
    let arn = cred.status.unwrap().secret_arn.unwrap();
    let sm = aws_sdk_secretsmanager::Client::new(g.aws.sdk_config());
    let evs: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(g.client.clone(), &ns);
    let sync_notes = || async {
        evs.list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| {
                e.reason.as_deref() == Some("SecretSynced")
                    && e.regarding.as_ref().and_then(|r| r.uid.as_deref()) == Some(uid.as_str())
            })
            .filter_map(|e| e.note)
            .collect::<Vec<_>>()
    };
    let mut versions = Vec::new();
    for round in 0..2 {
        // The same login under a new version id: nothing drifts, the Secret is re-synced.
        let (_, value) = g.current(&arn).await;
        let version =
            move_awscurrent_to_new_version(&sm, &arn, value.to_secret_json().expose()).await;
        wait_for(
            &format!("SecretSynced naming {version} (round {round})"),
            Duration::from_secs(60),
            || async {
                let notes = sync_notes().await;
                notes.iter().any(|n| n.contains(&version)).then_some(())
            },
        )
        .await;
        versions.push(version);
    }
    // The first Event still names the first version: a new Event, not a rewritten one.
    let notes = sync_notes().await;
    for v in &versions {
        assert!(
            notes.iter().any(|n| n.contains(v.as_str())),
            "{v} in {notes:?}"
        );
    }
}

#[tokio::test]
async fn refuses_namespace_not_admitted_and_secret_outside_prefix() {
    let server = DbServer::postgres();
    let mut g = Ground::new().await;
    g.start().await;
    let (db, prefix) = g.database(&server, json!({})).await;

    let outsider = unique("ns-");
    g.namespace(&outsider, &[("rdscred-test", "no")]).await;
    let user = unique("u_");
    let name = format!("{prefix}{user}");
    g.credential(
        &outsider,
        "c1",
        json!({ "databaseRef": { "name": db }, "username": user, "secret": { "name": name } }),
    )
    .await
    .unwrap();
    assert_refused(
        &g,
        &server,
        &outsider,
        "c1",
        "NamespaceNotAdmitted",
        &name,
        &user,
    )
    .await;

    let ns = admitted_namespace(&g).await;
    let user2 = unique("u_");
    let outside = format!("elsewhere/{user2}");
    g.credential(
        &ns,
        "c2",
        json!({ "databaseRef": { "name": db }, "username": user2, "secret": { "name": outside } }),
    )
    .await
    .unwrap();
    assert_refused(
        &g,
        &server,
        &ns,
        "c2",
        "SecretNameOutsidePrefix",
        &outside,
        &user2,
    )
    .await;
}

#[tokio::test]
async fn refuses_competing_claims_and_foreign_secrets_and_users() {
    let server = DbServer::mariadb();
    let mut g = Ground::new().await;
    g.start().await;
    let (db, prefix) = g.database(&server, json!({})).await;
    let ns = admitted_namespace(&g).await;
    let ns2 = admitted_namespace(&g).await;

    // First claim wins; a second credential for the same user (other namespace, other secret) is refused.
    let user = unique("u_");
    g.credential(&ns, "first", json!({ "databaseRef": { "name": db }, "username": user, "secret": { "name": format!("{prefix}{user}") } })).await.unwrap();
    g.wait_ready(&ns, "first").await;
    let other_secret = format!("{prefix}{user}-2");
    g.credential(&ns2, "second", json!({ "databaseRef": { "name": db }, "username": user, "secret": { "name": other_secret } })).await.unwrap();
    let cred = g
        .wait_condition(&ns2, "second", "Ready", "False", Duration::from_secs(30))
        .await;
    let ready = cred
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.reason, "AlreadyClaimed");
    assert!(
        ready.message.contains(&format!("{ns}/first")),
        "{}",
        ready.message
    );
    assert!(
        g.scope
            .secrets
            .describe(&other_secret)
            .await
            .unwrap()
            .is_none()
    );

    // Same secret name, other user: refused too.
    let user3 = unique("u_");
    g.credential(&ns2, "third", json!({ "databaseRef": { "name": db }, "username": user3, "secret": { "name": format!("{prefix}{user}") } })).await.unwrap();
    assert_refused(&g, &server, &ns2, "third", "AlreadyClaimed", "", &user3).await;

    // A secret that exists but is not ours is never touched.
    let user4 = unique("u_");
    let foreign = format!("{prefix}{user4}");
    let foreign_value = SecretString::new(r#"{"username":"someone","password":"theirs"}"#);
    g.scope
        .secrets
        .create(rdscred::aws::NewSecret {
            name: &foreign,
            value: &foreign_value,
            description: Some("not rdscred's"),
            kms_key_id: None,
            tags: &Default::default(),
            replica_regions: &[],
            client_request_token: &format!("{:0>32}", unique("t")),
        })
        .await
        .unwrap();
    g.credential(
        &ns2,
        "fourth",
        json!({ "databaseRef": { "name": db }, "username": user4, "secret": { "name": foreign } }),
    )
    .await
    .unwrap();
    let cred = g
        .wait_condition(&ns2, "fourth", "Ready", "False", Duration::from_secs(30))
        .await;
    assert_eq!(
        cred.status
            .unwrap()
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap()
            .reason,
        "SecretNotOwned"
    );
    let meta = g.scope.secrets.describe(&foreign).await.unwrap().unwrap();
    assert_eq!(meta.description.as_deref(), Some("not rdscred's"));
    assert!(meta.owner().is_none());
    let mut admin = Admin::connect(&server.target(), &server.admin)
        .await
        .unwrap();
    assert!(!admin.user_exists(&user4).await.unwrap());

    // A database user that exists before its secret is never claimed.
    let user5 = unique("u_");
    let plan = engine::UserPlan {
        username: user5.clone(),
        login_users: vec![user5.clone()],
        grants: vec![],
        roles: vec![],
    };
    admin
        .ensure_login_user(&plan, &user5, &SecretString::new("preexisting-Pw-1"))
        .await
        .unwrap();
    admin.close().await;
    let s5 = format!("{prefix}{user5}");
    g.credential(
        &ns2,
        "fifth",
        json!({ "databaseRef": { "name": db }, "username": user5, "secret": { "name": s5 } }),
    )
    .await
    .unwrap();
    let cred = g
        .wait_condition(&ns2, "fifth", "Ready", "False", Duration::from_secs(30))
        .await;
    assert_eq!(
        cred.status
            .unwrap()
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap()
            .reason,
        "UserExists"
    );
    assert!(g.scope.secrets.describe(&s5).await.unwrap().is_none());
    let pre = Login {
        username: user5.clone(),
        password: SecretString::new("preexisting-Pw-1"),
    };
    can_login(&server, &pre)
        .await
        .expect("the foreign user's password is untouched");
}

async fn privileges_follow_the_spec(server: DbServer) {
    let mut g = Ground::new().await;
    g.start().await;
    let (db, prefix) = g.database(&server, json!({})).await;
    let ns = admitted_namespace(&g).await;
    let user = unique("p_");
    let read_only = json!([{ "database": server.database, "privileges": ["CONNECT"] }]);
    let spec = |privs: serde_json::Value| json!({ "databaseRef": { "name": db }, "username": user, "privileges": privs, "secret": { "name": format!("{prefix}{user}") } });
    let grants = if server.engine.family() == rdscred::crd::EngineFamily::Postgres {
        (
            read_only,
            json!([{ "database": server.database, "privileges": ["CONNECT", "CREATE"] }]),
        )
    } else {
        (
            json!([{ "database": server.database, "privileges": ["SELECT"] }]),
            json!([{ "database": server.database, "privileges": ["SELECT", "CREATE"] }]),
        )
    };
    g.credential(&ns, "p", spec(grants.0.clone()))
        .await
        .unwrap();
    g.wait_ready(&ns, "p").await;
    let api: Api<RdsCredential> = Api::namespaced(g.client.clone(), &ns);

    let secret = g.k8s_secret(&ns, "p").await.unwrap();
    let can_create = || {
        let server = server.clone();
        let login = login_of(&secret);
        async move { user_can_create(&server, &login).await }
    };
    assert!(!can_create().await, "no CREATE before it is declared");
    api.patch(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "privileges": grants.1 } })),
    )
    .await
    .unwrap();
    wait_for("CREATE granted", Duration::from_secs(30), || async {
        can_create().await.then_some(())
    })
    .await;
    api.patch(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "privileges": grants.0 } })),
    )
    .await
    .unwrap();
    wait_for("CREATE revoked", Duration::from_secs(30), || async {
        (!can_create().await).then_some(())
    })
    .await;
    // Each change is announced with an Event naming the privileges.
    let evs: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(g.client.clone(), &ns);
    let notes: Vec<String> = evs
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("PrivilegesChanged"))
        .filter_map(|e| e.note)
        .collect();
    assert!(!notes.is_empty(), "PrivilegesChanged events");
}

/// Whether `login` may create a table (PostgreSQL: a schema; MySQL: a table) in the test database.
async fn user_can_create(server: &DbServer, login: &Login) -> bool {
    use sqlx::Connection;
    let name = unique("t_");
    match server.engine.family() {
        rdscred::crd::EngineFamily::Postgres => {
            let opts = sqlx::postgres::PgConnectOptions::new()
                .host(&server.host)
                .port(server.port)
                .username(&login.username)
                .password(login.password.expose())
                .database(&server.database);
            let mut c = sqlx::PgConnection::connect_with(&opts)
                .await
                .expect("login");
            let ok = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{name}\"")))
                .execute(&mut c)
                .await
                .is_ok();
            if ok {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA \"{name}\"")))
                    .execute(&mut c)
                    .await;
            }
            ok
        }
        rdscred::crd::EngineFamily::Mysql => {
            let opts = sqlx::mysql::MySqlConnectOptions::new()
                .host(&server.host)
                .port(server.port)
                .username(&login.username)
                .password(login.password.expose())
                .database(&server.database);
            let mut c = sqlx::MySqlConnection::connect_with(&opts)
                .await
                .expect("login");
            let ok = sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE TABLE `{name}` (id int)"
            )))
            .execute(&mut c)
            .await
            .is_ok();
            if ok {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE `{name}`")))
                    .execute(&mut c)
                    .await;
            }
            ok
        }
    }
}

#[tokio::test]
async fn privileges_follow_the_spec_postgres() {
    privileges_follow_the_spec(DbServer::postgres()).await;
}

#[tokio::test]
async fn privileges_follow_the_spec_mariadb() {
    privileges_follow_the_spec(DbServer::mariadb()).await;
}

async fn deletion(server: DbServer) {
    let mut g = Ground::new().await;
    g.start().await;
    let (db, prefix) = g.database(&server, json!({})).await;
    let ns = admitted_namespace(&g).await;
    let api: Api<RdsCredential> = Api::namespaced(g.client.clone(), &ns);

    // Retain (default): secret and user stay.
    let kept = unique("k_");
    let kept_secret = format!("{prefix}{kept}");
    g.credential(&ns, "kept", json!({ "databaseRef": { "name": db }, "username": kept, "secret": { "name": kept_secret } })).await.unwrap();
    g.wait_ready(&ns, "kept").await;
    let login = login_of(&g.k8s_secret(&ns, "kept").await.unwrap());
    api.delete("kept", &DeleteParams::default()).await.unwrap();
    wait_for("kept deleted", Duration::from_secs(30), || async {
        g.get_credential(&ns, "kept").await.is_none().then_some(())
    })
    .await;
    let meta = g
        .scope
        .secrets
        .describe(&kept_secret)
        .await
        .unwrap()
        .unwrap();
    assert!(!meta.is_scheduled_for_deletion());
    can_login(&server, &login)
        .await
        .expect("retained user still logs in");

    // Re-created with the same name: the retained secret is taken back, not refused.
    g.credential(&ns, "kept", json!({ "databaseRef": { "name": db }, "username": kept, "secret": { "name": kept_secret } })).await.unwrap();
    g.wait_ready(&ns, "kept").await;

    // Delete: user dropped, secret scheduled for deletion with the recovery window.
    let gone = unique("d_");
    let gone_secret = format!("{prefix}{gone}");
    g.credential(
        &ns,
        "gone",
        json!({ "databaseRef": { "name": db }, "username": gone,
        "secret": { "name": gone_secret, "deletionPolicy": "Delete", "recoveryWindowInDays": 7 } }),
    )
    .await
    .unwrap();
    g.wait_ready(&ns, "gone").await;
    let login = login_of(&g.k8s_secret(&ns, "gone").await.unwrap());
    api.delete("gone", &DeleteParams::default()).await.unwrap();
    wait_for("gone deleted", Duration::from_secs(30), || async {
        g.get_credential(&ns, "gone").await.is_none().then_some(())
    })
    .await;
    assert!(
        g.scope
            .secrets
            .describe(&gone_secret)
            .await
            .unwrap()
            .unwrap()
            .is_scheduled_for_deletion()
    );
    let after = can_login(&server, &login).await;
    assert!(
        matches!(after, Err(DbError::AuthFailed { .. })),
        "user dropped, but login gives {after:?}"
    );

    // Re-created after Delete: the secret is restored, not an error.
    g.credential(&ns, "gone", json!({ "databaseRef": { "name": db }, "username": gone, "secret": { "name": gone_secret } })).await.unwrap();
    g.wait_condition(&ns, "gone", "SecretReady", "True", Duration::from_secs(60))
        .await;
    assert!(
        !g.scope
            .secrets
            .describe(&gone_secret)
            .await
            .unwrap()
            .unwrap()
            .is_scheduled_for_deletion()
    );
}

#[tokio::test]
async fn deletion_policies_postgres() {
    deletion(DbServer::postgres()).await;
}

#[tokio::test]
async fn deletion_policies_mariadb() {
    deletion(DbServer::mariadb()).await;
}

/// `deletionPolicy: Delete` on a secret with replica regions: Secrets Manager (and moto)
/// refuse DeleteSecret while replicas exist, so the controller removes them first; the
/// credential does not stay stuck on its finalizer, the replica is gone, and the primary is
/// scheduled for deletion with the recovery window.
#[tokio::test]
async fn deletion_removes_replicas_before_deleting_the_secret() {
    let server = DbServer::postgres();
    let mut g = Ground::new().await;
    g.start().await;
    let (db, prefix) = g.database(&server, json!({})).await;
    let ns = admitted_namespace(&g).await;
    let user = unique("r_");
    let name = format!("{prefix}{user}");
    g.credential(
        &ns,
        "replicated",
        json!({ "databaseRef": { "name": db }, "username": user,
            "secret": { "name": name, "deletionPolicy": "Delete", "recoveryWindowInDays": 7,
                "replicaRegions": [{ "region": "eu-west-1" }] } }),
    )
    .await
    .unwrap();
    g.wait_ready(&ns, "replicated").await;
    let meta = g.scope.secrets.describe(&name).await.unwrap().unwrap();
    assert_eq!(meta.replica_regions, vec!["eu-west-1".to_string()]);
    let replica_scope = g.aws.scoped(Some("eu-west-1"), None).await.unwrap();
    assert!(
        replica_scope
            .secrets
            .describe(&name)
            .await
            .unwrap()
            .is_some()
    );

    let api: Api<RdsCredential> = Api::namespaced(g.client.clone(), &ns);
    api.delete("replicated", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("replicated deleted", Duration::from_secs(30), || async {
        g.get_credential(&ns, "replicated")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    let meta = g.scope.secrets.describe(&name).await.unwrap().unwrap();
    assert!(meta.is_scheduled_for_deletion());
    assert!(
        meta.replica_regions.is_empty(),
        "{:?}",
        meta.replica_regions
    );
    assert!(
        replica_scope
            .secrets
            .describe(&name)
            .await
            .unwrap()
            .is_none()
    );
    // DeleteSecret was never refused: the replicas were gone before it.
    let calls = g.calls.snapshot();
    let count = |op: &str, outcome: &str| {
        calls
            .iter()
            .filter(|((_, o, r), _)| o == op && r == outcome)
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    assert!(
        count("RemoveRegionsFromReplication", "ok") >= 1,
        "{calls:?}"
    );
    assert_eq!(count("DeleteSecret", "error"), 0, "{calls:?}");
}

/// Every printable ASCII character in the password and a SQL keyword as username.
async fn hostile_names_and_passwords(server: DbServer) {
    let mut g = Ground::new().await;
    g.start().await;
    let (db, prefix) = g.database(&server, json!({})).await;
    let ns = admitted_namespace(&g).await;
    // Keywords are global names: only one test run at a time may own "select" etc., so pick
    // a keyword per engine and drop leftovers of an earlier run first.
    let user = if server.engine.family() == rdscred::crd::EngineFamily::Postgres {
        "user"
    } else {
        "select"
    };
    let mut admin = Admin::connect(&server.target(), &server.admin)
        .await
        .unwrap();
    let plan = engine::UserPlan {
        username: user.into(),
        login_users: vec![user.into(), format!("{user}_clone")],
        grants: vec![],
        roles: vec![],
    };
    let _ = admin.drop_users(&plan).await;
    admin.close().await;
    g.credential(&ns, "kw", json!({
        "databaseRef": { "name": db }, "username": user,
        "rotation": { "strategy": "single-user", "password": { "length": 128, "alphanumericOnly": false } },
        "drift": { "policy": "repair", "interval": "1s" },
        "secret": { "name": format!("{prefix}{}", unique("kw")), "deletionPolicy": "Delete" },
    }))
    .await
    .unwrap();
    g.wait_ready(&ns, "kw").await;
    let secret = g.k8s_secret(&ns, "kw").await.unwrap();
    let login = login_of(&secret);
    assert_eq!(login.username, user);
    can_login(&server, &login)
        .await
        .expect("keyword user logs in");

    // A new AWSCURRENT with every printable character (as another rotator could write it):
    // the controller notices (bulk poll), sees the drift, repairs it with the admin login,
    // and syncs the Secret; the password must survive SQL, JSON and the Secret unharmed.
    let all: String = (0x20u8..=0x7e).map(char::from).collect();
    let arn = g
        .get_credential(&ns, "kw")
        .await
        .unwrap()
        .status
        .unwrap()
        .secret_arn
        .unwrap();
    let (old_version, mut value) = g.current(&arn).await;
    value.password = SecretString::new(all.clone());
    let token = format!("{:0>40}", unique("all"));
    g.scope
        .secrets
        .put_pending(&arn, &token, &value.to_secret_json())
        .await
        .unwrap();
    g.scope
        .secrets
        .move_stage(&arn, "AWSCURRENT", &token, Some(&old_version))
        .await
        .unwrap();
    g.scope
        .secrets
        .remove_stage(&arn, "AWSPENDING", &token)
        .await
        .unwrap();
    let synced = wait_for(
        "all-printable password synced",
        Duration::from_secs(60),
        || async {
            let s = g.k8s_secret(&ns, "kw").await?;
            (secret_key(&s, "password").as_deref() == Some(all.as_str())).then_some(s)
        },
    )
    .await;
    wait_for("repaired login", Duration::from_secs(60), || async {
        can_login(&server, &login_of(&synced)).await.ok()
    })
    .await;
    Api::<RdsCredential>::namespaced(g.client.clone(), &ns)
        .delete("kw", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("kw deleted", Duration::from_secs(30), || async {
        g.get_credential(&ns, "kw").await.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn hostile_names_and_passwords_postgres() {
    hostile_names_and_passwords(DbServer::postgres()).await;
}

#[tokio::test]
async fn hostile_names_and_passwords_mariadb() {
    hostile_names_and_passwords(DbServer::mariadb()).await;
}

/// An RDS instance created through moto's RDS API with "Manage master credentials in Secrets
/// Manager": RDS creates the `rds!db-…` secret, and a sync-only credential keeps a
/// Kubernetes Secret equal to its AWSCURRENT, following changes made by someone else.
#[tokio::test]
async fn sync_only_follows_the_rds_managed_master_secret() {
    let mut g = Ground::new().await;
    g.start().await;
    let instance = unique("orders-");
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
    let db = unique("rds-");
    let spec = |allow: bool| {
        json!({
            "dbInstanceIdentifier": instance,
            "adminLogin": { "rdsManaged": true },
            "allowAdminSecretSync": allow,
            "namespaceSelector": { "matchLabels": { "rdscred-test": "yes" } },
            "secretNamePrefix": format!("rdscred/{db}/"),
        })
    };
    g.apply_database(&db, spec(true)).await;
    // The master secret is found through DescribeDBInstances (the endpoint is moto's, so the
    // admin login itself cannot be proven here: sync-only never logs in).
    let master_arn = wait_for(
        "master secret resolved",
        Duration::from_secs(30),
        || async {
            let d = Api::<RdsDatabase>::all(g.client.clone())
                .get(&db)
                .await
                .ok()?;
            d.status?.admin_secret_arn
        },
    )
    .await;
    let master_name = g
        .scope
        .secrets
        .describe(&master_arn)
        .await
        .unwrap()
        .unwrap()
        .name;
    assert!(master_name.starts_with("rds!db-"), "{master_name}");

    let ns = admitted_namespace(&g).await;
    g.credential(&ns, "master", json!({ "databaseRef": { "name": db }, "mode": "sync-only", "secret": { "name": master_name }, "target": { "name": "pg-master" } }))
        .await
        .unwrap();
    g.wait_ready(&ns, "master").await;
    let (version, value) = g.current(&master_arn).await;
    let secret = g.k8s_secret(&ns, "pg-master").await.unwrap();
    assert_eq!(secret_key(&secret, "username").unwrap(), value.username);
    assert_eq!(
        secret_key(&secret, "password").unwrap(),
        value.password.expose()
    );
    assert_eq!(secret_key(&secret, "engine").as_deref(), Some("postgres"));
    assert!(
        secret_key(&secret, "host").unwrap().contains(&instance),
        "host filled in from RDS"
    );
    assert_eq!(
        secret
            .metadata
            .annotations
            .unwrap()
            .get("rdscred.io/version-id"),
        Some(&version)
    );

    // RDS (here: the test) rotates the master secret; the change arrives within a poll.
    let mut next = value.clone();
    next.password = SecretString::new("rotated-by-RDS-0123456789");
    let token = format!("{:0>40}", unique("rds"));
    g.scope
        .secrets
        .put_pending(&master_arn, &token, &next.to_secret_json())
        .await
        .unwrap();
    g.scope
        .secrets
        .move_stage(&master_arn, "AWSCURRENT", &token, Some(&version))
        .await
        .unwrap();
    g.scope
        .secrets
        .remove_stage(&master_arn, "AWSPENDING", &token)
        .await
        .unwrap();
    wait_for("rotated master synced", Duration::from_secs(30), || async {
        let s = g.k8s_secret(&ns, "pg-master").await?;
        (secret_key(&s, "password").as_deref() == Some("rotated-by-RDS-0123456789")).then_some(())
    })
    .await;
    // The master secret was never written by the controller: no ownership tags appeared.
    assert!(
        g.scope
            .secrets
            .describe(&master_arn)
            .await
            .unwrap()
            .unwrap()
            .owner()
            .is_none()
    );

    // Without allowAdminSecretSync, syncing the admin secret is refused.
    let db2 = unique("rds-");
    g.apply_database(&db2, spec(false)).await;
    g.credential(&ns, "master2", json!({ "databaseRef": { "name": db2 }, "mode": "sync-only", "secret": { "name": master_name }, "target": { "name": "pg-master-2" } }))
        .await
        .unwrap();
    let cred = g
        .wait_condition(&ns, "master2", "Ready", "False", Duration::from_secs(30))
        .await;
    let ready = cred
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(
        ready.reason == "AdminSecretSyncNotAllowed" || ready.reason == "DatabaseNotReady",
        "{}: {}",
        ready.reason,
        ready.message
    );
    assert!(g.k8s_secret(&ns, "pg-master-2").await.is_none());
}

/// No generated password reaches a log line or an Event, across provisioning and rotation.
#[tokio::test]
async fn passwords_never_reach_logs_or_events() {
    let logs = rdscred::telemetry::capture_logs();
    let server = DbServer::postgres();
    let mut g = Ground::new().await;
    g.start().await;
    let (db, prefix) = g.database(&server, json!({})).await;
    let ns = admitted_namespace(&g).await;
    let user = unique("l_");
    g.credential(&ns, "logged", json!({
        "databaseRef": { "name": db }, "username": user,
        "privileges": [{ "database": server.database, "privileges": ["CONNECT"] }],
        "rotation": { "strategy": "alternating-users", "minimumInterval": "1s" },
        "secret": { "name": format!("{prefix}{user}") },
        "target": { "templates": { "URL": "pg://{{ username }}:{{ password | urlencode }}@{{ host }}" } },
    }))
    .await
    .unwrap();
    g.wait_ready(&ns, "logged").await;
    let first = secret_key(&g.k8s_secret(&ns, "logged").await.unwrap(), "password").unwrap();
    let api: Api<RdsCredential> = Api::namespaced(g.client.clone(), &ns);
    api.patch(
        "logged",
        &PatchParams::default(),
        &Patch::Merge(
            json!({ "metadata": { "annotations": { "rdscred.io/rotate-requested-at": "now" } } }),
        ),
    )
    .await
    .unwrap();
    let second = wait_for("rotated", Duration::from_secs(60), || async {
        let p = secret_key(&g.k8s_secret(&ns, "logged").await?, "password")?;
        (p != first).then_some(p)
    })
    .await;
    let admin_password = server.admin.password.expose().to_string();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(g.client.clone(), &ns);
    let events =
        serde_json::to_string(&events.list(&Default::default()).await.unwrap().items).unwrap();
    let statuses = serde_json::to_string(
        &api.list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|c| &c.status)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let text = logs.contents();
    assert!(
        text.contains(&user),
        "the capture works: the username is logged"
    );
    for pw in [&first, &second, &admin_password] {
        assert!(!text.contains(pw.as_str()), "a password reached the logs");
        assert!(!events.contains(pw.as_str()), "a password reached an Event");
        assert!(
            !statuses.contains(pw.as_str()),
            "a password reached a status"
        );
    }
}

/// Credentials the metrics book holds (the `rdscred_credentials` gauge over every state).
fn credentials_in_metrics(g: &Ground) -> f64 {
    ["True", "False", "Unknown"]
        .iter()
        .filter_map(|s| {
            crate::runtime::sample(
                &g.metrics.encode(),
                "rdscred_credentials",
                &format!("ready=\"{s}\""),
            )
        })
        .sum()
}

#[tokio::test]
async fn deletion_leaves_nothing_behind_in_the_caches() {
    // What the process keeps per credential (secret metadata, the digest of the target
    // Secret, the failure count, the metrics book) goes with the credential, and the poller
    // does not bring a deleted credential's secret back: ListSecrets keeps returning it (a
    // retained secret for good, a deleted one for its recovery window).
    let server = DbServer::postgres();
    let mut g = Ground::new().await;
    g.start().await;
    let ctx = g.ctx.clone().expect("controller started");
    let (db, prefix) = g.database(&server, json!({})).await;
    let ns = admitted_namespace(&g).await;
    let api: Api<RdsCredential> = Api::namespaced(g.client.clone(), &ns);
    let (kept, gone, stays) = (unique("k_"), unique("d_"), unique("s_"));
    // One credential stays, so that the poller keeps polling (it lists nothing without any).
    g.credential(&ns, "stays", json!({ "databaseRef": { "name": db }, "username": stays, "secret": { "name": format!("{prefix}{stays}") } }))
        .await
        .unwrap();
    g.credential(&ns, "kept", json!({ "databaseRef": { "name": db }, "username": kept, "secret": { "name": format!("{prefix}{kept}") } }))
        .await
        .unwrap();
    g.credential(&ns, "gone", json!({ "databaseRef": { "name": db }, "username": gone,
        "secret": { "name": format!("{prefix}{gone}"), "deletionPolicy": "Delete", "recoveryWindowInDays": 7 } }))
        .await
        .unwrap();
    // Refused (no such database): it fails, so it has a failure count.
    g.credential(&ns, "failing", json!({ "databaseRef": { "name": unique("nodb-") }, "username": unique("f_"), "secret": { "name": format!("{prefix}{}", unique("f_")) } }))
        .await
        .unwrap();
    for name in ["stays", "kept", "gone"] {
        g.wait_ready(&ns, name).await;
    }
    wait_for(
        "the refused credential in backoff",
        Duration::from_secs(30),
        || async { (ctx.failing_objects() >= 1).then_some(()) },
    )
    .await;
    // A poll after both are Ready has remembered their secrets (one poll is not enough: it
    // may have started before the second secret existed).
    let polls = g.calls.total("ListSecrets");
    wait_for("two more polls", Duration::from_secs(30), || async {
        (g.calls.total("ListSecrets") >= polls + 2).then_some(())
    })
    .await;
    assert_eq!(
        ctx.secrets.sizes(),
        (3, 3),
        "three secrets and target Secrets"
    );
    assert_eq!(credentials_in_metrics(&g), 4.0);

    for name in ["kept", "gone", "failing"] {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
    wait_for("all three deleted", Duration::from_secs(60), || async {
        let left = api.list(&Default::default()).await.ok()?.items.len();
        (left == 1).then_some(())
    })
    .await;
    // The poller sees both secrets again (retained; scheduled for deletion) and must not
    // remember them for credentials that no longer exist.
    let polls = g.calls.total("ListSecrets");
    wait_for(
        "two polls after the deletions",
        Duration::from_secs(30),
        || async { (g.calls.total("ListSecrets") >= polls + 2).then_some(()) },
    )
    .await;
    assert_eq!(
        ctx.secrets.sizes(),
        (1, 1),
        "only the remaining credential's entries"
    );
    assert_eq!(ctx.failing_objects(), 0, "failure counts dropped");
    assert_eq!(
        credentials_in_metrics(&g),
        1.0,
        "metrics book: the remaining one"
    );
}
