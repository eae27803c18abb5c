//! Database engines (PostgreSQL; MySQL and MariaDB): logins, users, privileges.
//!
//! The reconcilers and the rotation use this API only; the SQL lives in [`postgres`] and
//! [`mysql`]. Every identifier is validated against the CRD patterns and then quoted for the
//! engine ([`quote`]); passwords never appear raw in SQL text (PostgreSQL gets a SCRAM
//! verifier computed here, MySQL/MariaDB a literal quoted for the session's `sql_mode`), and
//! no error text, log line or `Debug` print carries one. Statement logging of the driver is
//! off on every connection for the same reason.

mod admin_logins;
mod admin_pool;
mod mysql;
mod postgres;
mod quote;
mod scram;

use std::time::Duration;

use crate::crd::{EngineFamily, EngineKind, Privilege, PrivilegeGrant, TlsMode};
use crate::secret::SecretString;

pub use admin_logins::AdminLogins;
pub use admin_pool::{AdminPool, PooledAdmin};

/// How long a connection attempt may take (TCP, TLS, authentication).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound for one admin operation (several statements, maybe several databases).
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(120);

/// Where to connect. `database`: PostgreSQL database to connect to (default `postgres`);
/// MySQL/MariaDB default schema (default none).
#[derive(Clone, Debug)]
pub struct ConnectTarget {
    pub engine: EngineKind,
    pub host: String,
    pub port: u16,
    pub database: Option<String>,
    pub tls: TlsSettings,
}

#[derive(Clone, Debug, Default)]
pub struct TlsSettings {
    pub mode: TlsMode,
    /// PEM CA bundle; when set, the server certificate is verified against it.
    pub ca_bundle_pem: Option<String>,
}

/// A username and its password (redacted in `Debug`).
#[derive(Clone, Debug)]
pub struct Login {
    pub username: String,
    pub password: SecretString,
}

/// A database failure. The text never contains a password.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("authentication failed for user {username}")]
    AuthFailed { username: String },
    #[error("database unreachable: {detail}")]
    Unreachable { detail: String },
    #[error("permission denied: {detail}")]
    PermissionDenied { detail: String },
    #[error("user {username} owns database objects, refusing to drop it: {detail}")]
    OwnsObjects { username: String, detail: String },
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("invalid privileges: {detail}")]
    InvalidGrant { detail: String },
    #[error("TLS: {detail}")]
    Tls { detail: String },
    #[error("the database did not answer in time")]
    Timeout,
    #[error("database error: {detail}")]
    Other { detail: String },
}

impl DbError {
    /// Whether retrying soon may help (outages, timeouts, unexpected errors), as opposed to
    /// problems that need a change of spec, password or database state.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            DbError::Unreachable { .. } | DbError::Timeout | DbError::Other { .. }
        )
    }

    /// CamelCase reason for conditions, Events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DbError::AuthFailed { .. } => "AuthenticationFailed",
            DbError::Unreachable { .. } => "DatabaseUnreachable",
            DbError::PermissionDenied { .. } => "PermissionDenied",
            DbError::OwnsObjects { .. } => "UserOwnsObjects",
            DbError::InvalidName { .. } => "InvalidName",
            DbError::InvalidGrant { .. } => "InvalidPrivileges",
            DbError::Tls { .. } => "TlsError",
            DbError::Timeout => "DatabaseTimeout",
            DbError::Other { .. } => "DatabaseError",
        }
    }
}

/// Connect as `login`, run a trivial query, disconnect. Bounded by [`CONNECT_TIMEOUT`] for the
/// connection. Used by testSecret and drift checks.
pub async fn check_login(target: &ConnectTarget, login: &Login) -> Result<(), DbError> {
    match target.engine.family() {
        EngineFamily::Postgres => postgres::check_login(target, login).await,
        EngineFamily::Mysql => mysql::check_login(target, login).await,
    }
}

/// What one credential wants in the database.
#[derive(Clone, Debug, PartialEq)]
pub struct UserPlan {
    /// The primary login user; also names the derived clone and (PostgreSQL) owner role.
    pub username: String,
    /// `[username]` or `[username, username_clone]`. Users in this list that do not exist
    /// yet are skipped by [`Admin::sync_privileges`] and [`Admin::drop_users`].
    pub login_users: Vec<String>,
    pub grants: Vec<PrivilegeGrant>,
    /// Existing roles the user is a member of.
    pub roles: Vec<String>,
}

/// Role names a credential may never ask for: they would hand out the server itself
/// (files, programs, replication, the RDS admin roles) rather than data.
const FORBIDDEN_ROLES: &[&str] = &[
    "pg_execute_server_program",
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_signal_backend",
    "pg_checkpoint",
    "pg_create_subscription",
    "pg_use_reserved_connections",
    "rds_superuser",
    "rds_replication",
    "rds_password",
    "rdsadmin",
    "rdstopmgr",
    "root",
];

impl UserPlan {
    pub fn clone_username(username: &str) -> String {
        format!("{username}_clone")
    }

    /// PostgreSQL only: the NOLOGIN role that holds the privileges and owns what the login
    /// users create.
    pub fn owner_role(username: &str) -> String {
        format!("{username}_owner")
    }

    /// Names within the engine's limits (derived names included) and patterns, privileges
    /// valid for their scope and engine, roles neither reserved nor dangerous.
    pub fn validate(&self, engine: EngineKind) -> Result<(), DbError> {
        let max = engine.max_username_len();
        quote::check_user_name(&self.username, max)?;
        check_not_reserved(&self.username, engine)?;
        // The clone name must fit even before the clone exists: it is created on first rotation.
        quote::check_user_name(&Self::clone_username(&self.username), max)?;
        if engine.family() == EngineFamily::Postgres {
            quote::check_user_name(&Self::owner_role(&self.username), max)?;
        }
        for user in &self.login_users {
            quote::check_user_name(user, max)?;
            if *user != self.username && *user != Self::clone_username(&self.username) {
                return Err(DbError::InvalidName {
                    name: user.clone(),
                    reason: format!("a login user of {} must be it or its clone", self.username),
                });
            }
        }
        self.validate_roles(engine)?;
        self.grants
            .iter()
            .try_for_each(|g| validate_grant(g, engine))
    }

    fn validate_roles(&self, engine: EngineKind) -> Result<(), DbError> {
        for role in &self.roles {
            quote::check_user_name(role, engine.max_username_len())?;
            if FORBIDDEN_ROLES.contains(&role.as_str()) {
                return Err(DbError::InvalidGrant {
                    detail: format!(
                        "role {role} grants control of the server, not of data; it cannot be requested"
                    ),
                });
            }
            // Another credential's users and owner role: membership would hand out its data.
            if role.ends_with("_owner") || role.ends_with("_clone") || *role == self.username {
                return Err(DbError::InvalidGrant {
                    detail: format!(
                        "role {role}: names ending in _owner or _clone are reserved for rdscred's own users"
                    ),
                });
            }
        }
        if engine == EngineKind::Mariadb && self.roles.len() > 1 {
            return Err(DbError::InvalidGrant {
                detail: "MariaDB has one default role per user: request at most one role".into(),
            });
        }
        Ok(())
    }
}

/// Databases that belong to the server, not to an application: a grant there would reach
/// the catalog, the templates every new database is copied from, or RDS's own database.
const SYSTEM_DATABASES_PG: &[&str] = &["template0", "template1", "rdsadmin"];
const SYSTEM_DATABASES_MY: &[&str] = &[
    "mysql",
    "information_schema",
    "performance_schema",
    "sys",
    "rdsadmin",
];

/// PostgreSQL schemas that are the catalog (`pg_*` is reserved for system schemas).
fn is_system_schema(schema: &str) -> bool {
    schema.starts_with("pg_") || schema == "information_schema"
}

/// Names a user of rdscred's may not have: PostgreSQL's reserved role names (`public`,
/// `none`, the `current_user` family, the `pg_` prefix: `CREATE ROLE` refuses them), and the
/// server's own accounts and roles on every engine.
fn check_not_reserved(username: &str, engine: EngineKind) -> Result<(), DbError> {
    const PG_RESERVED: &[&str] = &[
        "public",
        "none",
        "current_user",
        "session_user",
        "current_role",
    ];
    let reserved = FORBIDDEN_ROLES.contains(&username)
        || matches!(username, "mysql" | "mariadb" | "postgres" | "rdsproxyadmin")
        || (engine.family() == EngineFamily::Postgres
            && (PG_RESERVED.contains(&username) || username.starts_with("pg_")));
    if reserved {
        return Err(DbError::InvalidName {
            name: username.to_owned(),
            reason: "reserved for the server or its own accounts; choose another username".into(),
        });
    }
    Ok(())
}

fn validate_grant(grant: &PrivilegeGrant, engine: EngineKind) -> Result<(), DbError> {
    let (max_db, system) = match engine.family() {
        EngineFamily::Postgres => (63, SYSTEM_DATABASES_PG),
        EngineFamily::Mysql => (64, SYSTEM_DATABASES_MY),
    };
    quote::check_database_name(&grant.database, max_db)?;
    if system.contains(&grant.database.to_ascii_lowercase().as_str()) {
        return Err(DbError::InvalidGrant {
            detail: format!(
                "database {} belongs to the server, not to an application; grants on it are refused",
                grant.database
            ),
        });
    }
    if let Some(schema) = &grant.schema {
        if engine.family() == EngineFamily::Postgres && is_system_schema(schema) {
            return Err(DbError::InvalidGrant {
                detail: format!(
                    "schema {}.{schema} is a system schema; grants on it are refused",
                    grant.database
                ),
            });
        }
        if engine.family() == EngineFamily::Mysql {
            return Err(DbError::InvalidGrant {
                detail: format!(
                    "schema {schema}: MySQL/MariaDB have no schemas inside a database; grant on the database"
                ),
            });
        }
        quote::check_schema_name(schema, 63)?;
    }
    if grant.privileges.is_empty() {
        return Err(DbError::InvalidGrant {
            detail: format!("no privileges listed for {}", grant_scope(grant)),
        });
    }
    if grant.privileges.len() > 1 && grant.privileges.contains(&Privilege::All) {
        return Err(DbError::InvalidGrant {
            detail: format!(
                "ALL cannot be combined with other privileges ({})",
                grant_scope(grant)
            ),
        });
    }
    for privilege in &grant.privileges {
        let valid = match engine.family() {
            EngineFamily::Postgres => {
                postgres::privilege_applies(*privilege, grant.schema.is_some())
            }
            EngineFamily::Mysql => mysql::privilege_name(*privilege).is_some(),
        };
        if !valid {
            return Err(DbError::InvalidGrant {
                detail: format!(
                    "{privilege} does not apply to {} on {}",
                    grant_scope(grant),
                    engine.as_str()
                ),
            });
        }
    }
    Ok(())
}

fn grant_scope(grant: &PrivilegeGrant) -> String {
    match &grant.schema {
        Some(schema) => format!("schema {}.{schema}", grant.database),
        None => format!("database {}", grant.database),
    }
}

/// What [`Admin::sync_privileges`] changed, as readable statements without secrets, e.g.
/// `SELECT ON ALL TABLES IN SCHEMA app.public TO app_owner`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PrivilegeChanges {
    pub granted: Vec<String>,
    pub revoked: Vec<String>,
}

impl PrivilegeChanges {
    pub fn is_empty(&self) -> bool {
        self.granted.is_empty() && self.revoked.is_empty()
    }
}

/// An admin session on one database server (one connection; PostgreSQL opens short-lived
/// extra ones for grants in other databases).
pub struct Admin {
    inner: AdminInner,
}

enum AdminInner {
    Postgres(postgres::PgAdmin),
    Mysql(mysql::MyAdmin),
}

impl Admin {
    pub async fn connect(target: &ConnectTarget, admin: &Login) -> Result<Admin, DbError> {
        let inner = match target.engine.family() {
            EngineFamily::Postgres => {
                AdminInner::Postgres(postgres::PgAdmin::connect(target, admin).await?)
            }
            EngineFamily::Mysql => AdminInner::Mysql(mysql::MyAdmin::connect(target, admin).await?),
        };
        Ok(Admin { inner })
    }

    pub async fn user_exists(&mut self, username: &str) -> Result<bool, DbError> {
        bounded(async {
            match &mut self.inner {
                AdminInner::Postgres(a) => a.user_exists(username).await,
                AdminInner::Mysql(a) => a.user_exists(username).await,
            }
        })
        .await
    }

    /// Create the login user if absent with `password` (fully configured: privileges and
    /// memberships of the plan); if present leave its password alone. Returns true if created.
    pub async fn ensure_login_user(
        &mut self,
        plan: &UserPlan,
        username: &str,
        password: &SecretString,
    ) -> Result<bool, DbError> {
        if !plan.login_users.iter().any(|u| u == username) {
            return Err(DbError::InvalidName {
                name: username.to_owned(),
                reason: format!("not a login user of the plan for {}", plan.username),
            });
        }
        bounded(async {
            match &mut self.inner {
                AdminInner::Postgres(a) => a.ensure_login_user(plan, username, password).await,
                AdminInner::Mysql(a) => a.ensure_login_user(plan, username, password).await,
            }
        })
        .await
    }

    pub async fn set_password(
        &mut self,
        username: &str,
        password: &SecretString,
    ) -> Result<(), DbError> {
        bounded(async {
            match &mut self.inner {
                AdminInner::Postgres(a) => a.set_password(username, password).await,
                AdminInner::Mysql(a) => a.set_password(username, password).await,
            }
        })
        .await
    }

    /// Make privileges and role memberships EXACTLY the plan's for every existing login user
    /// (and the PostgreSQL owner role): grant missing, revoke extra. Returns what changed.
    pub async fn sync_privileges(&mut self, plan: &UserPlan) -> Result<PrivilegeChanges, DbError> {
        bounded(async {
            match &mut self.inner {
                AdminInner::Postgres(a) => a.sync_privileges(plan).await,
                AdminInner::Mysql(a) => a.sync_privileges(plan).await,
            }
        })
        .await
    }

    /// Reads only: the roles, databases and schemas the plan names exist and may be granted
    /// ([`DbError::InvalidGrant`] otherwise). Nothing is written.
    pub async fn check_plan(&mut self, plan: &UserPlan) -> Result<(), DbError> {
        bounded(async {
            match &mut self.inner {
                AdminInner::Postgres(a) => a.check_plan(plan).await,
                AdminInner::Mysql(a) => a.check_plan(plan).await,
            }
        })
        .await
    }

    /// Drop all login users of the plan (and the PostgreSQL owner role). Refuses with
    /// [`DbError::OwnsObjects`], dropping nothing, if any of them owns objects.
    pub async fn drop_users(&mut self, plan: &UserPlan) -> Result<(), DbError> {
        bounded(async {
            match &mut self.inner {
                AdminInner::Postgres(a) => a.drop_users(plan).await,
                AdminInner::Mysql(a) => a.drop_users(plan).await,
            }
        })
        .await
    }

    pub async fn close(self) {
        match self.inner {
            AdminInner::Postgres(a) => a.close().await,
            AdminInner::Mysql(a) => a.close().await,
        }
    }

    /// One round trip: whether the session still answers, bounded by [`CONNECT_TIMEOUT`].
    pub async fn ping(&mut self) -> Result<(), DbError> {
        connect_bounded(async {
            match &mut self.inner {
                AdminInner::Postgres(a) => a.ping().await,
                AdminInner::Mysql(a) => a.ping().await,
            }
        })
        .await
    }
}

async fn bounded<T>(operation: impl Future<Output = Result<T, DbError>>) -> Result<T, DbError> {
    tokio::time::timeout(OPERATION_TIMEOUT, operation)
        .await
        .map_err(|_| DbError::Timeout)?
}

/// Connects with [`CONNECT_TIMEOUT`].
async fn connect_bounded<C>(
    connect: impl Future<Output = Result<C, DbError>>,
) -> Result<C, DbError> {
    tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| DbError::Timeout)?
}

/// Maps driver errors that are not the server's own (I/O, TLS, protocol).
fn map_transport_error(error: sqlx::Error) -> DbError {
    match error {
        // rustls reports handshake failures (untrusted or misnamed certificate) as InvalidData.
        sqlx::Error::Io(e)
            if e.kind() == std::io::ErrorKind::InvalidData
                || e.to_string().contains("certificate") =>
        {
            DbError::Tls {
                detail: e.to_string(),
            }
        }
        sqlx::Error::Io(e) => DbError::Unreachable {
            detail: e.to_string(),
        },
        sqlx::Error::Tls(e) => DbError::Tls {
            detail: e.to_string(),
        },
        sqlx::Error::PoolTimedOut => DbError::Timeout,
        other => DbError::Other {
            detail: other.to_string(),
        },
    }
}

/// Removes `secrets` from a server message before it becomes error text: a statement that
/// carried a password (or verifier) may be echoed back in a syntax error.
fn scrub(message: &str, secrets: &[&str]) -> String {
    let mut out = message.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret, "<redacted>");
    }
    // MySQL syntax errors quote the statement from the error onwards.
    if let Some(at) = out.find(" near '") {
        out.truncate(at);
        out.push_str(" (statement omitted)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(username: &str) -> UserPlan {
        UserPlan {
            username: username.into(),
            login_users: vec![username.into(), UserPlan::clone_username(username)],
            grants: vec![],
            roles: vec![],
        }
    }

    fn grant(database: &str, schema: Option<&str>, privileges: &[Privilege]) -> PrivilegeGrant {
        PrivilegeGrant {
            database: database.into(),
            schema: schema.map(Into::into),
            privileges: privileges.to_vec(),
        }
    }

    #[test]
    fn privilege_messages_use_the_spec_spelling() {
        assert_eq!(Privilege::Connect.to_string(), "CONNECT");
        assert_eq!(Privilege::CreateView.to_string(), "CREATE_VIEW");
        let mut p = plan("app");
        p.grants = vec![grant("app", None, &[Privilege::Connect])];
        let err = p.validate(EngineKind::Mysql).unwrap_err();
        assert!(matches!(err, DbError::InvalidGrant { .. }), "{err:?}");
        assert_eq!(err.reason(), "InvalidPrivileges");
        assert!(
            err.to_string()
                .contains("CONNECT does not apply to database app on mysql"),
            "{err}"
        );
    }

    #[test]
    fn derived_names_must_fit_the_engine() {
        // 26 + "_clone" = 32: fits MySQL exactly.
        assert!(plan(&"a".repeat(26)).validate(EngineKind::Mysql).is_ok());
        assert!(matches!(
            plan(&"a".repeat(27)).validate(EngineKind::Mariadb),
            Err(DbError::InvalidName { .. })
        ));
        // 57 + "_owner" = 63: fits PostgreSQL exactly.
        assert!(plan(&"a".repeat(57)).validate(EngineKind::Postgres).is_ok());
        assert!(
            plan(&"a".repeat(58))
                .validate(EngineKind::AuroraPostgresql)
                .is_err()
        );
        assert!(plan("Bad").validate(EngineKind::Postgres).is_err());
        assert!(plan("select").validate(EngineKind::Postgres).is_ok());
    }

    #[test]
    fn privileges_must_fit_scope_and_engine() {
        let with = |g: PrivilegeGrant| UserPlan {
            grants: vec![g],
            ..plan("app")
        };
        assert!(
            with(grant("app", None, &[Privilege::Connect, Privilege::Create]))
                .validate(EngineKind::Postgres)
                .is_ok()
        );
        assert!(
            with(grant("app", None, &[Privilege::Select]))
                .validate(EngineKind::Postgres)
                .is_err()
        );
        assert!(
            with(grant(
                "app",
                Some("public"),
                &[Privilege::Select, Privilege::Usage]
            ))
            .validate(EngineKind::Postgres)
            .is_ok()
        );
        assert!(
            with(grant("app", Some("public"), &[Privilege::Connect]))
                .validate(EngineKind::Postgres)
                .is_err()
        );
        assert!(
            with(grant("app", Some("public"), &[Privilege::Select]))
                .validate(EngineKind::Mysql)
                .is_err()
        );
        assert!(
            with(grant(
                "app",
                None,
                &[Privilege::Select, Privilege::CreateView]
            ))
            .validate(EngineKind::Mysql)
            .is_ok()
        );
        assert!(
            with(grant("app", None, &[Privilege::Connect]))
                .validate(EngineKind::Mysql)
                .is_err()
        );
        assert!(
            with(grant("app", None, &[Privilege::All, Privilege::Select]))
                .validate(EngineKind::Mysql)
                .is_err()
        );
        assert!(
            with(grant("1app", None, &[Privilege::All]))
                .validate(EngineKind::Mysql)
                .is_err()
        );
    }

    #[test]
    fn dangerous_and_reserved_roles_are_refused() {
        let with = |roles: &[&str]| UserPlan {
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ..plan("app")
        };
        assert!(with(&["readers"]).validate(EngineKind::Postgres).is_ok());
        assert!(
            with(&["pg_write_server_files"])
                .validate(EngineKind::Postgres)
                .is_err()
        );
        assert!(
            with(&["rds_superuser"])
                .validate(EngineKind::Postgres)
                .is_err()
        );
        assert!(
            with(&["other_owner"])
                .validate(EngineKind::Postgres)
                .is_err()
        );
        assert!(with(&["a", "b"]).validate(EngineKind::Mariadb).is_err());
        assert!(with(&["a", "b"]).validate(EngineKind::Mysql).is_ok());
    }

    #[test]
    fn error_reasons_and_retryability() {
        assert_eq!(
            DbError::AuthFailed {
                username: "u".into()
            }
            .reason(),
            "AuthenticationFailed"
        );
        assert!(DbError::Timeout.is_retryable());
        assert!(
            !DbError::PermissionDenied {
                detail: String::new()
            }
            .is_retryable()
        );
    }

    #[test]
    fn scrub_removes_secrets_and_echoed_statements() {
        let m = scrub(
            "syntax error near 'IDENTIFIED BY 'hunter2'' at line 1",
            &["hunter2"],
        );
        assert!(!m.contains("hunter2"));
        assert_eq!(
            scrub("bad hunter2 thing", &["hunter2"]),
            "bad <redacted> thing"
        );
    }
}
