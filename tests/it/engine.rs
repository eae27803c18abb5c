//! The database engine module against the real PostgreSQL and MariaDB of the test ground.
//! Every test uses its own users, schemas and tables (unique names: process id + counter) and
//! removes them even when it fails, so the suite can run repeatedly and concurrently. The
//! keyword-username tests cannot use unique names; they serialise on a server-side lock.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};

use futures::FutureExt;
use rdscred::crd::{EngineKind, Privilege, PrivilegeGrant, TlsMode};
use rdscred::engine::{self, Admin, ConnectTarget, DbError, Login, TlsSettings, UserPlan};
use rdscred::secret::SecretString;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor};

// ------------------------------------------------------------------ environment

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{name} is not set: run `bash scripts/test-env.sh up && source .test-env/env`"),
    }
}

struct Server {
    target: ConnectTarget,
    admin: Login,
    database: String,
}

fn server(prefix: &str, engine: EngineKind) -> Server {
    let database = env(&format!("RDSCRED_TEST_{prefix}_DB"));
    Server {
        target: ConnectTarget {
            engine,
            host: env(&format!("RDSCRED_TEST_{prefix}_HOST")),
            port: env(&format!("RDSCRED_TEST_{prefix}_PORT"))
                .parse()
                .expect("port is a number"),
            database: Some(database.clone()),
            tls: TlsSettings {
                mode: TlsMode::Disable,
                ca_bundle_pem: None,
            },
        },
        admin: Login {
            username: env(&format!("RDSCRED_TEST_{prefix}_ADMIN_USER")),
            password: SecretString::new(env(&format!("RDSCRED_TEST_{prefix}_ADMIN_PASSWORD"))),
        },
        database,
    }
}

fn pg() -> Server {
    server("PG", EngineKind::Postgres)
}

fn maria() -> Server {
    server("MYSQL", EngineKind::Mariadb)
}

/// Lower-case, short enough for MySQL's clone limit (26), unique per process and call.
fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "rct_{tag}_{}_{}",
        std::process::id() % 1_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn login(username: &str, password: &str) -> Login {
    Login {
        username: username.into(),
        password: SecretString::new(password),
    }
}

fn plan(username: &str, grants: Vec<PrivilegeGrant>, roles: Vec<String>) -> UserPlan {
    UserPlan {
        username: username.into(),
        login_users: vec![username.into(), UserPlan::clone_username(username)],
        grants,
        roles,
    }
}

fn grant(database: &str, schema: Option<&str>, privileges: &[Privilege]) -> PrivilegeGrant {
    PrivilegeGrant {
        database: database.into(),
        schema: schema.map(Into::into),
        privileges: privileges.to_vec(),
    }
}

/// Every printable ASCII character, space included.
fn all_printable() -> String {
    (0x20u8..=0x7e).map(char::from).collect()
}

async fn admin(s: &Server) -> Admin {
    Admin::connect(&s.target, &s.admin)
        .await
        .expect("admin connects")
}

/// Runs `body`, then `cleanup` whether or not `body` panicked, then re-raises the panic.
async fn with_cleanup<B: Future<Output = ()>, C: Future<Output = ()>>(body: B, cleanup: C) {
    let outcome = AssertUnwindSafe(body).catch_unwind().await;
    cleanup.await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn drop_plan(s: &Server, p: &UserPlan) {
    let mut a = admin(s).await;
    if let Err(e) = a.drop_users(p).await {
        eprintln!("cleanup of {}: {e}", p.username);
    }
    a.close().await;
}

// ------------------------------------------------------------------ raw SQL helpers

async fn pg_conn(s: &Server, who: &Login, database: &str) -> PgConnection {
    let options = PgConnectOptions::new_without_pgpass()
        .host(&s.target.host)
        .port(s.target.port)
        .username(&who.username)
        .password(who.password.expose())
        .database(database)
        .disable_statement_logging();
    PgConnection::connect_with(&options)
        .await
        .expect("connects")
}

async fn pg_admin_sql(s: &Server, database: &str, sql: &str) {
    let mut c = pg_conn(s, &s.admin, database).await;
    c.execute(AssertSqlSafe(sql.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    c.close().await.ok();
}

async fn my_conn(s: &Server, who: &Login) -> MySqlConnection {
    let options = MySqlConnectOptions::new()
        .host(&s.target.host)
        .port(s.target.port)
        .username(&who.username)
        .password(who.password.expose())
        .database(&s.database)
        .disable_statement_logging();
    MySqlConnection::connect_with(&options)
        .await
        .expect("connects")
}

async fn my_admin_sql(s: &Server, sql: &str) {
    let mut c = my_conn(s, &s.admin).await;
    c.execute(AssertSqlSafe(sql.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    c.close().await.ok();
}

/// Whether `sql` succeeds on a new session of `who` (MySQL applies database-level grant
/// changes to new sessions only).
async fn my_user_can(s: &Server, who: &Login, sql: &str) -> bool {
    let options = MySqlConnectOptions::new()
        .host(&s.target.host)
        .port(s.target.port)
        .username(&who.username)
        .password(who.password.expose())
        .database(&s.database)
        .disable_statement_logging();
    let mut c = match MySqlConnection::connect_with(&options).await {
        Ok(c) => c,
        // No privilege at all on the database: 1044 at connect.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42000") => return false,
        Err(e) => panic!("connect: {e}"),
    };
    let can = my_can(&mut c, sql).await;
    c.close().await.ok();
    can
}

/// Whether `sql` succeeds; a permission error is `false`, anything else panics.
async fn pg_can(conn: &mut PgConnection, sql: &str) -> bool {
    match conn.execute(AssertSqlSafe(sql.to_owned())).await {
        Ok(_) => true,
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => false,
        Err(e) => panic!("{sql}: {e}"),
    }
}

async fn my_can(conn: &mut MySqlConnection, sql: &str) -> bool {
    match conn.execute(AssertSqlSafe(sql.to_owned())).await {
        Ok(_) => true,
        // 1142 table access denied, 1044 database access denied.
        Err(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("42000")) => false,
        Err(e) => panic!("{sql}: {e}"),
    }
}

/// `SHOW GRANTS` of an account with its name and password hash neutralised, for comparing two.
async fn my_grants_of(s: &Server, user: &str) -> Vec<String> {
    let mut c = my_conn(s, &s.admin).await;
    let lines: Vec<String> =
        sqlx::query_scalar(AssertSqlSafe(format!("SHOW GRANTS FOR '{user}'@'%'")))
            .fetch_all(&mut c)
            .await
            .expect("show grants");
    c.close().await.ok();
    let mut lines: Vec<String> = lines
        .into_iter()
        .map(|l| {
            l.split(" IDENTIFIED BY")
                .next()
                .unwrap()
                .replace(&format!("`{user}`"), "`U`")
        })
        .collect();
    lines.sort();
    lines
}

async fn my_ssl_type(s: &Server, user: &str) -> String {
    let mut c = my_conn(s, &s.admin).await;
    let t: String = sqlx::query_scalar(
        "SELECT CAST(ssl_type AS CHAR) FROM mysql.user WHERE User = ? AND Host = '%'",
    )
    .bind(user)
    .fetch_one(&mut c)
    .await
    .expect("ssl_type");
    c.close().await.ok();
    t
}

// ------------------------------------------------------------------ both engines

/// Create, idempotent re-create, login, wrong password, set_password, TLS modes.
async fn user_lifecycle(s: Server) {
    let name = unique("life");
    let p = plan(&name, vec![], vec![]);
    let first = SecretString::new("first-Pa55word");
    with_cleanup(
        async {
            let mut a = admin(&s).await;
            assert!(!a.user_exists(&name).await.unwrap());
            assert!(
                a.ensure_login_user(&p, &name, &first).await.unwrap(),
                "created"
            );
            assert!(a.user_exists(&name).await.unwrap());
            assert!(
                !a.ensure_login_user(&p, &name, &SecretString::new("other"))
                    .await
                    .unwrap(),
                "second call leaves it alone"
            );
            engine::check_login(&s.target, &login(&name, "first-Pa55word"))
                .await
                .expect("password of the first call works");

            let wrong = engine::check_login(&s.target, &login(&name, "wrong"))
                .await
                .unwrap_err();
            assert!(
                matches!(&wrong, DbError::AuthFailed { username } if *username == name),
                "{wrong:?}"
            );
            assert_eq!(wrong.reason(), "AuthenticationFailed");
            assert!(!wrong.to_string().contains("wrong"));

            a.set_password(&name, &SecretString::new("second-Pa55word"))
                .await
                .unwrap();
            engine::check_login(&s.target, &login(&name, "second-Pa55word"))
                .await
                .expect("new password works");
            assert!(matches!(
                engine::check_login(&s.target, &login(&name, "first-Pa55word")).await,
                Err(DbError::AuthFailed { .. })
            ));

            tls_modes(&s, &login(&name, "second-Pa55word")).await;
            a.close().await;
        },
        drop_plan(&s, &p),
    )
    .await;
}

fn with_tls(s: &Server, host: &str, mode: TlsMode, ca: Option<&str>) -> ConnectTarget {
    ConnectTarget {
        host: host.into(),
        tls: TlsSettings {
            mode,
            ca_bundle_pem: ca.map(Into::into),
        },
        ..s.target.clone()
    }
}

/// `disable` and `prefer` always work. Where the server speaks TLS (Debian's PostgreSQL
/// does, with its self-signed "snakeoil" certificate for `localhost`), `require` works,
/// `verify-ca` works with that certificate as CA bundle, and `verify-full` checks the host
/// name; where it does not (the local MariaDB), `require` fails with a TLS error.
async fn tls_modes(s: &Server, who: &Login) {
    let host = s.target.host.clone();
    for mode in [TlsMode::Disable, TlsMode::Prefer] {
        engine::check_login(&with_tls(s, &host, mode, None), who)
            .await
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
    }
    let snakeoil = std::fs::read_to_string("/etc/ssl/certs/ssl-cert-snakeoil.pem").ok();
    match engine::check_login(&with_tls(s, &host, TlsMode::Require, None), who).await {
        Ok(()) if s.target.engine == EngineKind::Postgres && snakeoil.is_some() => {
            let ca = snakeoil.as_deref();
            engine::check_login(&with_tls(s, &host, TlsMode::VerifyCa, ca), who)
                .await
                .expect("verify-ca with the server's certificate");
            engine::check_login(&with_tls(s, "localhost", TlsMode::VerifyFull, ca), who)
                .await
                .expect("verify-full for the certificate's name");
            let e = engine::check_login(&with_tls(s, "127.0.0.1", TlsMode::VerifyFull, ca), who)
                .await
                .unwrap_err();
            assert!(
                matches!(e, DbError::Tls { .. }),
                "verify-full for a name the certificate lacks: {e:?}"
            );
        }
        Ok(()) => {}
        Err(e) => assert!(
            matches!(e, DbError::Tls { .. }),
            "require against a server without TLS: {e:?}"
        ),
    }
}

/// Every way the server refuses a login is `AuthFailed`: a user that never existed, a dropped
/// one, an empty password, and (per engine) a locked account or a role without LOGIN. Drift
/// detection and every login check read this; a generic `DatabaseError` would retry forever.
async fn refused_logins_are_auth_failed(s: Server, lock_sql: fn(&str) -> String) {
    let name = unique("deny");
    let p = plan(&name, vec![], vec![]);
    let password = "locked-Pa55word";
    with_cleanup(
        async {
            let never = unique("never");
            let mut cases = vec![
                (format!("never-existing user {never}"), login(&never, "x")),
                (
                    format!("never-existing user {never}, empty password"),
                    login(&never, ""),
                ),
            ];
            let mut a = admin(&s).await;
            a.ensure_login_user(&p, &name, &SecretString::new(password))
                .await
                .unwrap();
            engine::check_login(&s.target, &login(&name, password))
                .await
                .expect("logs in before it is locked");
            cases.push((format!("{name} with an empty password"), login(&name, "")));
            match s.target.engine {
                EngineKind::Postgres => pg_admin_sql(&s, &s.database, &lock_sql(&name)).await,
                _ => my_admin_sql(&s, &lock_sql(&name)).await,
            }
            cases.push((
                format!("{name} locked / without LOGIN"),
                login(&name, password),
            ));
            for (what, who) in &cases {
                let e = engine::check_login(&s.target, who).await.unwrap_err();
                assert!(
                    matches!(&e, DbError::AuthFailed { username } if *username == who.username),
                    "{what}: {e:?}"
                );
            }
            a.drop_users(&p).await.unwrap();
            let e = engine::check_login(&s.target, &login(&name, password))
                .await
                .unwrap_err();
            assert!(
                matches!(e, DbError::AuthFailed { .. }),
                "dropped user: {e:?}"
            );
            let e = engine::check_login(&s.target, &login(&name, ""))
                .await
                .unwrap_err();
            assert!(
                matches!(e, DbError::AuthFailed { .. }),
                "dropped user, empty password: {e:?}"
            );
            a.close().await;
        },
        drop_plan(&s, &p),
    )
    .await;
}

#[tokio::test]
async fn pg_refused_logins_are_auth_failed() {
    refused_logins_are_auth_failed(pg(), |u| format!("ALTER ROLE \"{u}\" NOLOGIN")).await;
}

#[tokio::test]
async fn mariadb_refused_logins_are_auth_failed() {
    refused_logins_are_auth_failed(maria(), |u| format!("ALTER USER '{u}'@'%' ACCOUNT LOCK")).await;
}

#[tokio::test]
async fn pg_user_lifecycle() {
    user_lifecycle(pg()).await;
}

#[tokio::test]
async fn mariadb_user_lifecycle() {
    user_lifecycle(maria()).await;
}

/// A keyword as username (with its clone) and passwords with every printable character.
async fn keyword_user_with_printable_passwords(s: Server, keyword: &str) {
    let p = plan(keyword, vec![], vec![]);
    let clone = UserPlan::clone_username(keyword);
    let printable = all_printable();
    let reversed: String = printable.chars().rev().collect();
    drop_plan(&s, &p).await; // leftovers of an interrupted earlier run
    with_cleanup(
        async {
            let mut a = admin(&s).await;
            assert!(
                a.ensure_login_user(&p, keyword, &SecretString::new(printable.clone()))
                    .await
                    .unwrap()
            );
            engine::check_login(&s.target, &login(keyword, &printable))
                .await
                .expect("all-printable password logs in");
            a.set_password(keyword, &SecretString::new(reversed.clone()))
                .await
                .unwrap();
            engine::check_login(&s.target, &login(keyword, &reversed))
                .await
                .expect("reversed all-printable password logs in");
            assert!(
                a.ensure_login_user(&p, &clone, &SecretString::new(r#"'\"`;--\\0"#))
                    .await
                    .unwrap()
            );
            engine::check_login(&s.target, &login(&clone, r#"'\"`;--\\0"#))
                .await
                .expect("quote-heavy password logs in");
            // Not ASCII. PostgreSQL: the verifier is computed over the SASLprep form, as
            // clients hash it (the password is never SQL text).
            let non_ascii = "pässwörd-€-ñ\u{a0}x";
            a.set_password(&clone, &SecretString::new(non_ascii))
                .await
                .unwrap();
            engine::check_login(&s.target, &login(&clone, non_ascii))
                .await
                .expect("non-ASCII password logs in");
            if s.target.engine == EngineKind::Postgres {
                // U+00A0 is a space after SASLprep: the other spelling is the same password.
                engine::check_login(&s.target, &login(&clone, "pässwörd-€-ñ x"))
                    .await
                    .expect("the SASLprep-equivalent spelling logs in");
                // Prohibited by SASLprep: no SCRAM client could log in with it, so it is
                // refused and the old password still works.
                assert!(
                    a.set_password(&clone, &SecretString::new("tab\there"))
                        .await
                        .is_err()
                );
                engine::check_login(&s.target, &login(&clone, non_ascii))
                    .await
                    .expect("a refused password changes nothing");
            }
            assert!(a.sync_privileges(&p).await.is_ok());
            a.drop_users(&p).await.expect("keyword users dropped");
            assert!(!a.user_exists(keyword).await.unwrap());
            a.close().await;
        },
        drop_plan(&s, &p),
    )
    .await;
}

#[tokio::test]
async fn pg_keyword_user_with_printable_passwords() {
    let s = pg();
    // Fixed names: serialise concurrent runs on an advisory lock held by this connection.
    let mut lock = pg_conn(&s, &s.admin, &s.database).await;
    lock.execute("SELECT pg_advisory_lock(727272)")
        .await
        .unwrap();
    keyword_user_with_printable_passwords(s, "select").await;
    lock.close().await.ok();
}

#[tokio::test]
async fn mariadb_keyword_user_with_printable_passwords() {
    let s = maria();
    let mut lock = my_conn(&s, &s.admin).await;
    lock.execute("DO GET_LOCK('rdscred_engine_keyword', 60)")
        .await
        .unwrap();
    keyword_user_with_printable_passwords(s, "order").await;
    lock.close().await.ok();
}

#[tokio::test]
async fn validate_rejects_names_whose_derived_names_do_not_fit() {
    let long_for_mysql = "a".repeat(27); // + "_clone" = 33 > 32
    assert!(matches!(
        plan(&long_for_mysql, vec![], vec![]).validate(EngineKind::Mysql),
        Err(DbError::InvalidName { .. })
    ));
    assert!(
        plan(&long_for_mysql, vec![], vec![])
            .validate(EngineKind::Postgres)
            .is_ok()
    );
    let long_for_pg = "a".repeat(58); // + "_owner" = 64 > 63
    assert!(matches!(
        plan(&long_for_pg, vec![], vec![]).validate(EngineKind::Postgres),
        Err(DbError::InvalidName { .. })
    ));
    // And the admin API refuses such a plan before touching the database.
    let s = maria();
    let mut a = admin(&s).await;
    let e = a
        .ensure_login_user(
            &plan(&long_for_mysql, vec![], vec![]),
            &long_for_mysql,
            &SecretString::new("x"),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, DbError::InvalidName { .. }));
    a.close().await;
}

// ------------------------------------------------------------------ PostgreSQL

#[tokio::test]
async fn pg_grants_follow_the_plan() {
    let s = pg();
    let db = s.database.clone();
    let name = unique("pgg");
    let schema = format!("s_{name}");
    let pw = "Grants-pw-1";
    pg_admin_sql(
        &s,
        &db,
        &format!("CREATE SCHEMA {schema}; CREATE TABLE {schema}.t (id int)"),
    )
    .await;
    let with = |privileges: &[Privilege]| {
        let mut grants = vec![grant(&db, None, &[Privilege::Connect])];
        if !privileges.is_empty() {
            grants.push(grant(&db, Some(&schema), privileges));
        }
        plan(&name, grants, vec![])
    };
    let select = with(&[Privilege::Select]);
    with_cleanup(
        async {
            let mut a = admin(&s).await;
            a.ensure_login_user(&select, &name, &SecretString::new(pw))
                .await
                .unwrap();
            let changes = a.sync_privileges(&select).await.unwrap();
            assert!(
                changes
                    .granted
                    .iter()
                    .any(|g| g.contains("SELECT ON ALL TABLES")),
                "{changes:?}"
            );
            assert!(
                a.sync_privileges(&select).await.unwrap().is_empty(),
                "a second sync changes nothing"
            );

            let mut user = pg_conn(&s, &login(&name, pw), &db).await;
            assert!(pg_can(&mut user, &format!("SELECT * FROM {schema}.t")).await);
            assert!(!pg_can(&mut user, &format!("INSERT INTO {schema}.t VALUES (1)")).await);

            a.sync_privileges(&with(&[Privilege::Select, Privilege::Insert]))
                .await
                .unwrap();
            assert!(pg_can(&mut user, &format!("INSERT INTO {schema}.t VALUES (1)")).await);
            // A table the admin creates later is covered by default privileges.
            pg_admin_sql(&s, &db, &format!("CREATE TABLE {schema}.later (id int)")).await;
            assert!(pg_can(&mut user, &format!("INSERT INTO {schema}.later VALUES (1)")).await);

            let changes = a
                .sync_privileges(&with(&[Privilege::Select]))
                .await
                .unwrap();
            assert!(
                changes
                    .revoked
                    .iter()
                    .any(|r| r.starts_with("INSERT ON ALL TABLES")),
                "{changes:?}"
            );
            assert!(
                changes
                    .revoked
                    .iter()
                    .any(|r| r.starts_with("INSERT ON FUTURE TABLES")),
                "{changes:?}"
            );
            assert!(!pg_can(&mut user, &format!("INSERT INTO {schema}.t VALUES (2)")).await);
            assert!(pg_can(&mut user, &format!("SELECT * FROM {schema}.later")).await);

            let changes = a.sync_privileges(&with(&[])).await.unwrap();
            assert!(
                changes
                    .revoked
                    .iter()
                    .any(|r| r.contains("USAGE ON SCHEMA")),
                "{changes:?}"
            );
            assert!(!pg_can(&mut user, &format!("SELECT * FROM {schema}.t")).await);
            user.close().await.ok();
            a.close().await;
        },
        async {
            drop_plan(&s, &select).await;
            pg_admin_sql(&s, &db, &format!("DROP SCHEMA {schema} CASCADE")).await;
        },
    )
    .await;
}

/// Objects created while logged in as the clone belong to the owner role and are usable by
/// the primary user; drop refuses while they exist.
#[tokio::test]
async fn pg_clone_shares_the_owner_role_and_drop_refuses_owned_objects() {
    let s = pg();
    let db = s.database.clone();
    let name = unique("pgc");
    let clone = UserPlan::clone_username(&name);
    let schema = format!("s_{name}");
    pg_admin_sql(&s, &db, &format!("CREATE SCHEMA {schema}")).await;
    let p = plan(
        &name,
        vec![grant(&db, Some(&schema), &[Privilege::All])],
        vec![],
    );
    with_cleanup(
        async {
            let mut a = admin(&s).await;
            a.ensure_login_user(&p, &name, &SecretString::new("primary-pw")).await.unwrap();
            a.sync_privileges(&p).await.unwrap();
            assert!(a.ensure_login_user(&p, &clone, &SecretString::new("clone-pw")).await.unwrap());
            assert!(a.sync_privileges(&p).await.unwrap().is_empty(), "the clone is complete on creation");

            let mut as_clone = pg_conn(&s, &login(&clone, "clone-pw"), &db).await;
            as_clone.execute(AssertSqlSafe(format!("CREATE TABLE {schema}.made_by_clone (id int)"))).await.unwrap();
            let owner: String = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT tableowner::text FROM pg_tables WHERE schemaname = '{schema}' AND tablename = 'made_by_clone'"
            )))
            .fetch_one(&mut as_clone)
            .await
            .unwrap();
            assert_eq!(owner, UserPlan::owner_role(&name));

            let mut as_primary = pg_conn(&s, &login(&name, "primary-pw"), &db).await;
            assert!(pg_can(&mut as_primary, &format!("INSERT INTO {schema}.made_by_clone VALUES (1)")).await);
            assert!(pg_can(&mut as_primary, &format!("ALTER TABLE {schema}.made_by_clone ADD COLUMN v text")).await);
            as_primary.close().await.ok();

            let e = a.drop_users(&p).await.unwrap_err();
            assert!(matches!(&e, DbError::OwnsObjects { detail, .. } if detail.contains("owns 1 object")), "{e}");
            assert!(a.user_exists(&name).await.unwrap() && a.user_exists(&clone).await.unwrap(), "nothing dropped");

            as_clone.execute(AssertSqlSafe(format!("DROP TABLE {schema}.made_by_clone"))).await.unwrap();
            as_clone.close().await.ok();
            a.drop_users(&p).await.expect("drop succeeds once nothing is owned");
            for role in [&name, &clone, &UserPlan::owner_role(&name)] {
                assert!(!a.user_exists(role).await.unwrap(), "{role} dropped");
            }
            a.close().await;
        },
        async {
            drop_plan(&s, &p).await;
            pg_admin_sql(&s, &db, &format!("DROP SCHEMA {schema} CASCADE")).await;
        },
    )
    .await;
}

/// Grants in a database other than the admin connection's, found and revoked when they leave
/// the plan; role memberships granted and revoked; unsafe roles refused.
#[tokio::test]
async fn pg_other_database_and_role_memberships() {
    let s = pg();
    let name = unique("pgo");
    let other_db = format!("d_{name}");
    let role = format!("r_{name}");
    let login_role = format!("l_{name}");
    pg_admin_sql(&s, &s.database, &format!("CREATE DATABASE {other_db}")).await;
    pg_admin_sql(&s, &other_db, "CREATE TABLE public.t (id int)").await;
    pg_admin_sql(
        &s,
        &s.database,
        &format!("CREATE ROLE {role} NOLOGIN; CREATE ROLE {login_role} LOGIN"),
    )
    .await;
    let p = plan(
        &name,
        vec![grant(&other_db, Some("public"), &[Privilege::Select])],
        vec![],
    );
    with_cleanup(
        async {
            let mut a = admin(&s).await;
            a.ensure_login_user(&p, &name, &SecretString::new("other-pw"))
                .await
                .unwrap();
            let changes = a.sync_privileges(&p).await.unwrap();
            assert!(
                changes
                    .granted
                    .iter()
                    .any(|g| g.contains(&format!("{other_db}.public"))),
                "{changes:?}"
            );
            let mut user = pg_conn(&s, &login(&name, "other-pw"), &other_db).await;
            assert!(pg_can(&mut user, "SELECT * FROM public.t").await);

            // Membership in a group role that may read the table instead of a direct grant.
            pg_admin_sql(
                &s,
                &other_db,
                &format!("GRANT SELECT ON public.t TO {role}"),
            )
            .await;
            let via_role = plan(&name, vec![], vec![role.clone()]);
            let changes = a.sync_privileges(&via_role).await.unwrap();
            assert!(
                changes.revoked.iter().any(|r| r.contains(&other_db)),
                "grants in a database left out of the plan are revoked: {changes:?}"
            );
            assert!(
                changes
                    .granted
                    .iter()
                    .any(|g| g.contains(&format!("ROLE {role}"))),
                "{changes:?}"
            );
            assert!(
                pg_can(&mut user, "SELECT * FROM public.t").await,
                "via the role"
            );
            a.sync_privileges(&plan(&name, vec![], vec![]))
                .await
                .unwrap();
            assert!(
                !pg_can(&mut user, "SELECT * FROM public.t").await,
                "role revoked"
            );
            user.close().await.ok();

            let e = a
                .sync_privileges(&plan(&name, vec![], vec![login_role.clone()]))
                .await
                .unwrap_err();
            assert!(
                matches!(e, DbError::InvalidGrant { .. }),
                "a login role is refused: {e:?}"
            );
            let e = a
                .sync_privileges(&plan(
                    &name,
                    vec![grant("no_such_db", None, &[Privilege::Connect])],
                    vec![],
                ))
                .await
                .unwrap_err();
            assert!(matches!(e, DbError::InvalidGrant { .. }), "{e:?}");
            a.close().await;
        },
        async {
            drop_plan(&s, &p).await;
            pg_admin_sql(
                &s,
                &s.database,
                &format!("DROP DATABASE IF EXISTS {other_db} WITH (FORCE)"),
            )
            .await;
            pg_admin_sql(
                &s,
                &s.database,
                &format!("DROP ROLE IF EXISTS {role}; DROP ROLE IF EXISTS {login_role}"),
            )
            .await;
        },
    )
    .await;
}

// ------------------------------------------------------------------ MariaDB

#[tokio::test]
async fn mariadb_grants_follow_the_plan() {
    let s = maria();
    let db = s.database.clone();
    let name = unique("myg");
    let table = format!("t_{name}");
    my_admin_sql(&s, &format!("CREATE TABLE `{db}`.{table} (id int)")).await;
    let with = |privileges: &[Privilege]| {
        let grants = if privileges.is_empty() {
            vec![]
        } else {
            vec![grant(&db, None, privileges)]
        };
        plan(&name, grants, vec![])
    };
    let select = with(&[Privilege::Select]);
    with_cleanup(
        async {
            let mut a = admin(&s).await;
            a.ensure_login_user(&select, &name, &SecretString::new("my-grants-pw"))
                .await
                .unwrap();
            assert!(
                a.sync_privileges(&select).await.unwrap().is_empty(),
                "the user is complete on creation"
            );
            let user = login(&name, "my-grants-pw");
            assert!(my_user_can(&s, &user, &format!("SELECT * FROM {table}")).await);
            assert!(!my_user_can(&s, &user, &format!("INSERT INTO {table} VALUES (1)")).await);

            let changes = a
                .sync_privileges(&with(&[Privilege::Select, Privilege::Insert]))
                .await
                .unwrap();
            assert_eq!(changes.granted, vec![format!("INSERT ON {db}.* TO {name}")]);
            assert!(my_user_can(&s, &user, &format!("INSERT INTO {table} VALUES (1)")).await);

            a.sync_privileges(&with(&[Privilege::All])).await.unwrap();
            assert!(my_user_can(&s, &user, &format!("DELETE FROM {table}")).await);
            assert!(
                a.sync_privileges(&with(&[Privilege::All]))
                    .await
                    .unwrap()
                    .is_empty()
            );

            let changes = a
                .sync_privileges(&with(&[Privilege::Select]))
                .await
                .unwrap();
            assert!(
                changes
                    .revoked
                    .iter()
                    .any(|r| r.starts_with("ALL PRIVILEGES")),
                "{changes:?}"
            );
            assert!(!my_user_can(&s, &user, &format!("INSERT INTO {table} VALUES (2)")).await);
            assert!(my_user_can(&s, &user, &format!("SELECT * FROM {table}")).await);

            // A grant made behind rdscred's back is revoked.
            my_admin_sql(&s, &format!("GRANT DELETE ON `{db}`.* TO '{name}'@'%'")).await;
            let changes = a.sync_privileges(&with(&[])).await.unwrap();
            assert!(
                changes.revoked.iter().any(|r| r.contains("DELETE")),
                "{changes:?}"
            );
            assert!(!my_user_can(&s, &user, &format!("DELETE FROM {table}")).await);
            a.close().await;
        },
        async {
            drop_plan(&s, &select).await;
            my_admin_sql(&s, &format!("DROP TABLE IF EXISTS `{db}`.{table}")).await;
        },
    )
    .await;
}

/// The clone carries exactly the primary's grants and TLS requirement, re-synchronised
/// including revocations.
#[tokio::test]
async fn mariadb_clone_matches_primary_grants_and_tls() {
    let s = maria();
    let db = s.database.clone();
    let name = unique("myc");
    let clone = UserPlan::clone_username(&name);
    let p = plan(
        &name,
        vec![grant(
            &db,
            None,
            &[Privilege::Select, Privilege::Insert, Privilege::CreateView],
        )],
        vec![],
    );
    with_cleanup(
        async {
            let mut a = admin(&s).await;
            a.ensure_login_user(&p, &name, &SecretString::new("primary-pw"))
                .await
                .unwrap();
            my_admin_sql(&s, &format!("ALTER USER '{name}'@'%' REQUIRE SSL")).await;
            assert!(
                a.ensure_login_user(&p, &clone, &SecretString::new("clone-pw"))
                    .await
                    .unwrap()
            );
            assert_eq!(
                my_grants_of(&s, &clone).await,
                my_grants_of(&s, &name).await
            );
            assert_eq!(
                my_ssl_type(&s, &clone).await,
                "ANY",
                "clone requires TLS like the primary"
            );

            // Drift on the clone: an extra grant; and the primary's requirement changes.
            my_admin_sql(
                &s,
                &format!("GRANT DELETE, DROP ON `{db}`.* TO '{clone}'@'%'"),
            )
            .await;
            my_admin_sql(&s, &format!("ALTER USER '{name}'@'%' REQUIRE X509")).await;
            let changes = a.sync_privileges(&p).await.unwrap();
            assert!(
                changes
                    .revoked
                    .iter()
                    .any(|r| r.contains("DELETE, DROP") && r.contains(&clone)),
                "{changes:?}"
            );
            assert_eq!(
                my_grants_of(&s, &clone).await,
                my_grants_of(&s, &name).await
            );
            assert_eq!(my_ssl_type(&s, &clone).await, "X509");
            my_admin_sql(&s, &format!("ALTER USER '{name}'@'%' REQUIRE NONE")).await;
            a.sync_privileges(&p).await.unwrap();
            assert_eq!(my_ssl_type(&s, &clone).await, "");
            engine::check_login(&s.target, &login(&clone, "clone-pw"))
                .await
                .expect("clone logs in");
            a.close().await;
        },
        drop_plan(&s, &p),
    )
    .await;
}

#[tokio::test]
async fn mariadb_drop_refuses_definer_of_objects_and_roles_follow_the_plan() {
    let s = maria();
    let db = s.database.clone();
    let name = unique("myd");
    let role = format!("r_{name}");
    let table = format!("t_{name}");
    let view = format!("v_{name}");
    my_admin_sql(&s, &format!("CREATE TABLE `{db}`.{table} (id int)")).await;
    my_admin_sql(&s, &format!("CREATE ROLE {role}")).await;
    my_admin_sql(&s, &format!("GRANT SELECT ON `{db}`.{table} TO {role}")).await;
    let p = plan(
        &name,
        vec![grant(&db, None, &[Privilege::CreateView])],
        vec![role.clone()],
    );
    with_cleanup(
        async {
            let mut a = admin(&s).await;
            a.ensure_login_user(&p, &name, &SecretString::new("definer-pw"))
                .await
                .unwrap();
            let mut user = my_conn(&s, &login(&name, "definer-pw")).await;
            // SELECT comes from the role, active as the default role.
            assert!(my_can(&mut user, &format!("SELECT * FROM {table}")).await);
            user.execute(AssertSqlSafe(format!(
                "CREATE VIEW {view} AS SELECT id FROM {table}"
            )))
            .await
            .unwrap();
            user.close().await.ok();

            let e = a.drop_users(&p).await.unwrap_err();
            assert!(
                matches!(&e, DbError::OwnsObjects { detail, .. } if detail.contains("1 view(s)")),
                "{e}"
            );
            assert!(a.user_exists(&name).await.unwrap(), "nothing dropped");

            let changes = a
                .sync_privileges(&plan(
                    &name,
                    vec![grant(&db, None, &[Privilege::CreateView])],
                    vec![],
                ))
                .await
                .unwrap();
            assert_eq!(changes.revoked, vec![format!("ROLE {role} FROM {name}")]);
            assert!(
                !my_user_can(
                    &s,
                    &login(&name, "definer-pw"),
                    &format!("SELECT * FROM {table}")
                )
                .await
            );
            let e = a
                .sync_privileges(&plan(&name, vec![], vec![s.admin.username.clone()]))
                .await
                .unwrap_err();
            assert!(
                matches!(e, DbError::InvalidGrant { .. }),
                "a user account is not a role: {e:?}"
            );

            my_admin_sql(&s, &format!("DROP VIEW `{db}`.{view}")).await;
            a.drop_users(&p)
                .await
                .expect("drop succeeds once nothing runs as the user");
            assert!(!a.user_exists(&name).await.unwrap());
            a.close().await;
        },
        async {
            drop_plan(&s, &p).await;
            my_admin_sql(&s, &format!("DROP VIEW IF EXISTS `{db}`.{view}")).await;
            my_admin_sql(&s, &format!("DROP TABLE IF EXISTS `{db}`.{table}")).await;
            my_admin_sql(&s, &format!("DROP ROLE IF EXISTS {role}")).await;
        },
    )
    .await;
}

/// Provisions `plans` from as many concurrent admin sessions, each with its own connection;
/// returns the errors. The sessions are opened one after another first: the race under test
/// is between the GRANTs, and 32 simultaneous TLS + SCRAM handshakes from one debug-built task
/// on a loaded 2-core machine can outlast the connect timeout, which measures the machine.
async fn provision_concurrently(s: &Server, plans: &[UserPlan], pw: &str) -> Vec<String> {
    let mut sessions = Vec::with_capacity(plans.len());
    for p in plans {
        let a = Admin::connect(&s.target, &s.admin)
            .await
            .unwrap_or_else(|e| panic!("{}: connect: {e}", p.username));
        sessions.push((a, p));
    }
    let tasks = sessions.into_iter().map(|(mut a, p)| async move {
        let result = async {
            a.ensure_login_user(p, &p.username, &SecretString::new(pw))
                .await?;
            a.sync_privileges(p).await
        }
        .await;
        a.close().await;
        result
            .map(|_| ())
            .map_err(|e| format!("{}: {e}", p.username))
    });
    futures::future::join_all(tasks)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect()
}

/// 32 credentials granted on one shared schema at once: concurrent GRANTs on one object
/// rewrite the same catalog tuple ("tuple concurrently updated" without serialisation);
/// every one must succeed first time, and every user must then read the shared table.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_concurrent_grants_on_one_schema_all_succeed() {
    let s = pg();
    let db = s.database.clone();
    let tag = unique("pgc");
    let schema = format!("s_{tag}");
    pg_admin_sql(
        &s,
        &db,
        &format!("CREATE SCHEMA {schema}; CREATE TABLE {schema}.t (id int)"),
    )
    .await;
    let plans: Vec<UserPlan> = (0..32)
        .map(|i| {
            plan(
                &format!("{tag}_{i}"),
                vec![
                    grant(&db, None, &[Privilege::Connect]),
                    grant(&db, Some(&schema), &[Privilege::Select, Privilege::Insert]),
                ],
                vec![],
            )
        })
        .collect();
    let pw = "Concurrent-pw-1";
    with_cleanup(
        async {
            let errors = provision_concurrently(&s, &plans, pw).await;
            assert!(errors.is_empty(), "{} failed: {errors:#?}", errors.len());
            for p in &plans {
                let mut user = pg_conn(&s, &login(&p.username, pw), &db).await;
                assert!(
                    pg_can(&mut user, &format!("SELECT * FROM {schema}.t")).await,
                    "{} reads the shared table",
                    p.username
                );
                user.close().await.ok();
            }
            let mut a = admin(&s).await;
            for p in &plans {
                assert!(
                    a.sync_privileges(p).await.unwrap().is_empty(),
                    "{}: a second sync changes nothing",
                    p.username
                );
            }
            a.close().await;
        },
        async {
            for p in &plans {
                drop_plan(&s, p).await;
            }
            pg_admin_sql(&s, &db, &format!("DROP SCHEMA {schema} CASCADE")).await;
        },
    )
    .await;
}

/// The same on MariaDB: grants are per-account rows, so concurrent grants on one database
/// need no serialisation; this proves it stays so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_concurrent_grants_on_one_database_all_succeed() {
    let s = maria();
    let db = s.database.clone();
    let tag = unique("myc");
    let plans: Vec<UserPlan> = (0..32)
        .map(|i| {
            plan(
                &format!("{tag}_{i}"),
                vec![grant(&db, None, &[Privilege::Select, Privilege::Insert])],
                vec![],
            )
        })
        .collect();
    with_cleanup(
        async {
            let errors = provision_concurrently(&s, &plans, "Concurrent-pw-1").await;
            assert!(errors.is_empty(), "{} failed: {errors:#?}", errors.len());
            for p in &plans {
                assert_eq!(
                    my_grants_of(&s, &p.username)
                        .await
                        .iter()
                        .filter(|g| g.contains("SELECT, INSERT"))
                        .count(),
                    1,
                    "{}",
                    p.username
                );
            }
        },
        async {
            for p in &plans {
                drop_plan(&s, p).await;
            }
        },
    )
    .await;
}

// ------------------------------------------------------------------ admin pool

/// The admin pool against the real server: a session given back after success is used again
/// (one login for several operations), one given back after a failure is not, and a caller
/// with another admin password closes the idle sessions of the old one and logs in afresh.
async fn admin_pool_reuses_and_evicts(s: Server) {
    let pool = engine::AdminPool::default();
    for _ in 0..3 {
        let mut conn = pool.get(&s.target, &s.admin).await.expect("admin session");
        let exists = conn.user_exists(&unique("nobody")).await;
        assert!(!exists.as_ref().expect("query runs"));
        conn.done(exists.is_ok()).await;
    }
    assert_eq!(pool.logins(), 1, "one login, reused");
    assert_eq!(pool.idle(), 1);

    // Two at once: the second is a login of its own; both are kept (bounded per login).
    let a = pool.get(&s.target, &s.admin).await.expect("admin session");
    let b = pool.get(&s.target, &s.admin).await.expect("admin session");
    assert_eq!(pool.logins(), 2);
    a.done(true).await;
    b.done(true).await;
    assert_eq!(pool.idle(), 2);

    // After a failure the session's state is unknown: closed, not pooled.
    let failed = pool.get(&s.target, &s.admin).await.expect("admin session");
    failed.done(false).await;
    assert_eq!(pool.idle(), 1);

    // The admin password changed (here: a wrong one): the old sessions are not handed to it.
    let wrong = Login {
        username: s.admin.username.clone(),
        password: SecretString::new("not-the-admin-password"),
    };
    match pool.get(&s.target, &wrong).await {
        Err(DbError::AuthFailed { .. }) => {}
        Err(e) => panic!("expected AuthFailed, got {e}"),
        Ok(_) => panic!("a wrong admin password must not get a pooled session"),
    }
    assert_eq!(pool.idle(), 0, "idle sessions of the other password closed");
    let logins = pool.logins();
    let conn = pool.get(&s.target, &s.admin).await.expect("admin session");
    assert_eq!(pool.logins(), logins + 1, "a fresh login after the change");
    conn.done(true).await;
}

#[tokio::test]
async fn pg_admin_pool_reuses_and_evicts() {
    admin_pool_reuses_and_evicts(pg()).await;
}

#[tokio::test]
async fn mariadb_admin_pool_reuses_and_evicts() {
    admin_pool_reuses_and_evicts(maria()).await;
}
