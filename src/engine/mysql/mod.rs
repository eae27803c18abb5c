//! MySQL, MariaDB, Aurora MySQL.
//!
//! Users are accounts `'name'@'%'`; grants are database-level (`ON db.*`). Each login user
//! carries the plan's grants itself (MySQL has no object ownership to share), so the clone
//! of alternating users gets exactly the same grants (extras revoked), the same roles and the
//! same TLS requirement (`ssl_type` and friends) as the primary user. Current grants are read
//! with `SHOW GRANTS`, which both flavours print in the same shape.
//!
//! Passwords: neither flavour accepts a placeholder in `IDENTIFIED BY` (not even in a server
//! prepared statement), so the password is sent as a string literal quoted for the session's
//! `sql_mode` (`NO_BACKSLASH_ESCAPES` changes what a backslash means), over the text protocol
//! so no prepared statement keeps it, with the driver's statement logging off.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlDatabaseError, MySqlSslMode};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor};

use super::quote::{my_account, my_ident, my_literal};
use super::{
    ConnectTarget, DbError, Login, PrivilegeChanges, UserPlan, connect_bounded,
    map_transport_error, scrub,
};
use crate::crd::{EngineKind, Privilege, TlsMode};
use crate::secret::SecretString;

mod grants;

use grants::{ALL, GrantChange, Grants, parse_grants, wanted_grants};

/// The MySQL name of a database-level privilege; `None` when it does not exist there.
pub(crate) fn privilege_name(privilege: Privilege) -> Option<&'static str> {
    use Privilege::*;
    Some(match privilege {
        All => ALL,
        Select => "SELECT",
        Insert => "INSERT",
        Update => "UPDATE",
        Delete => "DELETE",
        Create => "CREATE",
        Drop => "DROP",
        Index => "INDEX",
        Alter => "ALTER",
        References => "REFERENCES",
        Trigger => "TRIGGER",
        Execute => "EXECUTE",
        Temporary => "CREATE TEMPORARY TABLES",
        CreateView => "CREATE VIEW",
        ShowView => "SHOW VIEW",
        CreateRoutine => "CREATE ROUTINE",
        AlterRoutine => "ALTER ROUTINE",
        Event => "EVENT",
        LockTables => "LOCK TABLES",
        // TRUNCATE needs DROP on MySQL; CONNECT and USAGE are PostgreSQL notions.
        Truncate | Connect | Usage => return None,
    })
}

// ------------------------------------------------------------------ connections

fn ssl_mode(mode: TlsMode) -> MySqlSslMode {
    match mode {
        TlsMode::Disable => MySqlSslMode::Disabled,
        TlsMode::Prefer => MySqlSslMode::Preferred,
        TlsMode::Require => MySqlSslMode::Required,
        TlsMode::VerifyCa => MySqlSslMode::VerifyCa,
        TlsMode::VerifyFull => MySqlSslMode::VerifyIdentity,
    }
}

async fn connect(target: &ConnectTarget, login: &Login) -> Result<MySqlConnection, DbError> {
    let mut options = MySqlConnectOptions::new()
        .host(&target.host)
        .port(target.port)
        .username(&login.username)
        .password(login.password.expose())
        .ssl_mode(ssl_mode(target.tls.mode))
        // Statements carry password literals: never log them.
        .disable_statement_logging();
    if let Some(database) = &target.database {
        options = options.database(database);
    }
    if let Some(pem) = &target.tls.ca_bundle_pem {
        options = options.ssl_ca_from_pem(pem.as_bytes().to_vec());
    }
    connect_bounded(async {
        MySqlConnection::connect_with(&options)
            .await
            .map_err(|e| map_error(e, &login.username, &[]))
    })
    .await
}

/// Authentication is per server: the check selects no database, so a user without access
/// to the target's database still proves its password.
pub(crate) async fn check_login(target: &ConnectTarget, login: &Login) -> Result<(), DbError> {
    let target = ConnectTarget {
        database: None,
        ..target.clone()
    };
    let mut conn = connect(&target, login).await?;
    let result = conn
        .execute("SELECT 1")
        .await
        .map(|_| ())
        .map_err(|e| map_error(e, &login.username, &[]));
    let _ = conn.close().await;
    result
}

/// Whether server error `number` means the server refused the login itself. Every variant
/// must count: drift detection, testSecret and the "user exists" checks read AuthFailed, and a
/// refused login reported as a generic error turns into a retry loop instead of a verdict.
/// - 1045 `ER_ACCESS_DENIED_ERROR`: wrong password or unknown user (with a password);
/// - 1698 `ER_ACCESS_DENIED_NO_PASSWORD_ERROR`: MariaDB's answer when the account does not
///   exist or has no matching authentication (seen for a dropped user);
/// - 1130 `ER_HOST_NOT_PRIVILEGED`: no account for this host;
/// - 1862 `ER_MUST_CHANGE_PASSWORD_LOGIN`: password expired, login refused;
/// - 3118 `ER_ACCOUNT_HAS_BEEN_LOCKED` (MySQL), 4151 `ER_ACCOUNT_HAS_BEEN_LOCKED` (MariaDB);
/// - 3955 `ER_USER_ACCESS_DENIED_FOR_USER_ACCOUNT_BLOCKED_BY_PASSWORD_LOCK` (MySQL 8.0.19+).
///
/// 1044 (access denied to a database) and 1142/1227 are privilege errors of a logged-in user.
pub(crate) fn login_refused(number: u16) -> bool {
    matches!(number, 1045 | 1698 | 1130 | 1862 | 3118 | 3955 | 4151)
}

/// Server error number → [`DbError`]. `secrets` are scrubbed from the server's message.
fn map_error(error: sqlx::Error, username: &str, secrets: &[&str]) -> DbError {
    let sqlx::Error::Database(db) = &error else {
        return map_transport_error(error);
    };
    let number = db
        .try_downcast_ref::<MySqlDatabaseError>()
        .map(MySqlDatabaseError::number)
        .unwrap_or(0);
    let detail = scrub(&format!("{} (error {number})", db.message()), secrets);
    match number {
        n if login_refused(n) => DbError::AuthFailed {
            username: username.to_owned(),
        },
        1044 | 1142 | 1227 | 1410 => DbError::PermissionDenied { detail },
        1205 | 1969 | 3024 => DbError::Timeout,
        1040 | 1053 | 2002 | 2003 | 2006 | 2013 => DbError::Unreachable { detail },
        _ => DbError::Other { detail },
    }
}

// ------------------------------------------------------------------ admin

#[derive(Clone, Copy, PartialEq, Debug)]
enum Flavour {
    MariaDb,
    MySql,
}

/// `REQUIRE ...` of an account, from `mysql.user`.
#[derive(Debug, Default, PartialEq)]
struct TlsRequirement {
    ssl_type: String,
    cipher: String,
    issuer: String,
    subject: String,
}

pub(crate) struct MyAdmin {
    conn: MySqlConnection,
    engine: EngineKind,
    flavour: Flavour,
    /// The session's `sql_mode` has `NO_BACKSLASH_ESCAPES`: literals are quoted accordingly.
    no_backslash_escapes: bool,
}

impl MyAdmin {
    pub(crate) async fn connect(target: &ConnectTarget, admin: &Login) -> Result<MyAdmin, DbError> {
        let mut conn = connect(target, admin).await?;
        let (version, sql_mode): (String, String) =
            sqlx::query_as("SELECT VERSION(), CAST(@@SESSION.sql_mode AS CHAR)")
                .fetch_one(&mut conn)
                .await
                .map_err(|e| map_error(e, &admin.username, &[]))?;
        // DDL must not wait forever behind an application's metadata lock.
        conn.execute("SET SESSION lock_wait_timeout = 10")
            .await
            .map_err(|e| map_error(e, &admin.username, &[]))?;
        let flavour = if version.to_ascii_lowercase().contains("mariadb") {
            Flavour::MariaDb
        } else {
            Flavour::MySql
        };
        let no_backslash_escapes = sql_mode
            .to_ascii_uppercase()
            .split(',')
            .any(|m| m == "NO_BACKSLASH_ESCAPES");
        Ok(MyAdmin {
            conn,
            engine: target.engine,
            flavour,
            no_backslash_escapes,
        })
    }

    pub(crate) async fn close(self) {
        let _ = self.conn.close().await;
    }

    /// Whether the session still answers (before a pooled connection is used again).
    pub(crate) async fn ping(&mut self) -> Result<(), DbError> {
        self.conn.ping().await.map_err(|e| map_error(e, "", &[]))
    }

    fn account(&self, user: &str) -> Result<String, DbError> {
        super::quote::check_user_name(user, self.engine.max_username_len())?;
        my_account(user, self.no_backslash_escapes)
    }

    async fn exec(&mut self, sql: String) -> Result<(), DbError> {
        self.conn
            .execute(AssertSqlSafe(sql))
            .await
            .map(|_| ())
            .map_err(|e| map_error(e, "", &[]))
    }

    pub(crate) async fn user_exists(&mut self, username: &str) -> Result<bool, DbError> {
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM mysql.user WHERE User = ? AND Host = '%'")
                .bind(username)
                .fetch_one(&mut self.conn)
                .await
                .map_err(|e| map_error(e, "", &[]))?;
        Ok(count > 0)
    }

    async fn existing_users(&mut self, names: &[String]) -> Result<Vec<String>, DbError> {
        let mut existing = Vec::new();
        for name in names {
            if self.user_exists(name).await? {
                existing.push(name.clone());
            }
        }
        Ok(existing)
    }

    pub(crate) async fn ensure_login_user(
        &mut self,
        plan: &UserPlan,
        username: &str,
        password: &SecretString,
    ) -> Result<bool, DbError> {
        plan.validate(self.engine)?;
        if self.user_exists(username).await? {
            return Ok(false);
        }
        let literal = my_literal(password.expose(), self.no_backslash_escapes)?;
        let sql = format!(
            "CREATE USER {} IDENTIFIED BY {literal}",
            self.account(username)?
        );
        self.conn
            .execute(AssertSqlSafe(sql))
            .await
            .map_err(|e| map_error(e, username, &[password.expose(), literal.as_str()]))?;
        // A user that exists is a configured user: grants, roles and TLS of the plan now,
        // not only at the next sync.
        let mut changes = PrivilegeChanges::default();
        self.sync_user(plan, username, &wanted_grants(plan), &mut changes)
            .await?;
        self.copy_tls_requirement(&plan.username, username, &mut changes)
            .await?;
        Ok(true)
    }

    pub(crate) async fn set_password(
        &mut self,
        username: &str,
        password: &SecretString,
    ) -> Result<(), DbError> {
        let literal = my_literal(password.expose(), self.no_backslash_escapes)?;
        let sql = format!(
            "ALTER USER {} IDENTIFIED BY {literal}",
            self.account(username)?
        );
        self.conn
            .execute(AssertSqlSafe(sql))
            .await
            .map(|_| ())
            .map_err(|e| map_error(e, username, &[password.expose(), literal.as_str()]))
    }

    pub(crate) async fn sync_privileges(
        &mut self,
        plan: &UserPlan,
    ) -> Result<PrivilegeChanges, DbError> {
        plan.validate(self.engine)?;
        let wanted = wanted_grants(plan);
        let mut changes = PrivilegeChanges::default();
        for user in self.existing_users(&plan.login_users).await? {
            self.sync_user(plan, &user, &wanted, &mut changes).await?;
            self.copy_tls_requirement(&plan.username, &user, &mut changes)
                .await?;
        }
        Ok(changes)
    }

    /// Reads only: every role of the plan is a real role (not another account), every
    /// database named by a grant exists. MySQL accepts a grant on a database that does not
    /// exist (it applies once one is created by that name): a typo would silently grant
    /// nothing now and everything to whoever creates the database later, so it is refused.
    pub(crate) async fn check_plan(&mut self, plan: &UserPlan) -> Result<(), DbError> {
        plan.validate(self.engine)?;
        for role in &plan.roles {
            self.check_is_role(role).await?;
        }
        let databases: BTreeSet<&String> = plan.grants.iter().map(|g| &g.database).collect();
        for database in databases {
            let found: Option<String> = sqlx::query_scalar(
                "SELECT CAST(SCHEMA_NAME AS CHAR) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            )
            .bind(database)
            .fetch_optional(&mut self.conn)
            .await
            .map_err(|e| map_error(e, "", &[]))?;
            if found.is_none() {
                return Err(DbError::InvalidGrant {
                    detail: format!("database {database} does not exist"),
                });
            }
        }
        Ok(())
    }

    pub(crate) async fn drop_users(&mut self, plan: &UserPlan) -> Result<(), DbError> {
        let existing = self.existing_users(&plan.login_users).await?;
        if existing.is_empty() {
            return Ok(());
        }
        let mut owned = Vec::new();
        for user in &existing {
            owned.extend(self.definer_counts(user).await?);
        }
        if !owned.is_empty() {
            return Err(DbError::OwnsObjects {
                username: plan.username.clone(),
                detail: owned.join("; "),
            });
        }
        let accounts: Vec<String> = existing
            .iter()
            .map(|u| self.account(u))
            .collect::<Result<_, _>>()?;
        self.exec(format!("DROP USER IF EXISTS {}", accounts.join(", ")))
            .await
    }

    /// Stored objects that run as `user` (MySQL's only notion of ownership): a dropped
    /// definer breaks them.
    async fn definer_counts(&mut self, user: &str) -> Result<Vec<String>, DbError> {
        let definer = format!("{user}@%");
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT 'routine(s)', COUNT(*) FROM information_schema.ROUTINES WHERE DEFINER = ? \
             UNION ALL SELECT 'view(s)', COUNT(*) FROM information_schema.VIEWS WHERE DEFINER = ? \
             UNION ALL SELECT 'trigger(s)', COUNT(*) FROM information_schema.TRIGGERS WHERE DEFINER = ? \
             UNION ALL SELECT 'event(s)', COUNT(*) FROM information_schema.EVENTS WHERE DEFINER = ?",
        )
        .bind(&definer)
        .bind(&definer)
        .bind(&definer)
        .bind(&definer)
        .fetch_all(&mut self.conn)
        .await
        .map_err(|e| map_error(e, "", &[]))?;
        Ok(rows
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(kind, n)| format!("{user} is the definer of {n} {kind}"))
            .collect())
    }

    // -------------------------------------------------------------- grants

    async fn current_grants(&mut self, user: &str) -> Result<Grants, DbError> {
        let sql = format!("SHOW GRANTS FOR {}", self.account(user)?);
        let lines: Vec<String> = sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_all(&mut self.conn)
            .await
            .map_err(|e| map_error(e, "", &[]))?;
        Ok(parse_grants(&lines))
    }

    /// Grants (global ones revoked, database ones made exactly the plan's), roles and default
    /// role of one login user: read, planned, executed.
    async fn sync_user(
        &mut self,
        plan: &UserPlan,
        user: &str,
        wanted: &BTreeMap<String, BTreeSet<&'static str>>,
        changes: &mut PrivilegeChanges,
    ) -> Result<(), DbError> {
        let current = self.current_grants(user).await?;
        let planned = grants::plan_user(&current, wanted, &plan.roles);
        let account = self.account(user)?;
        for change in &planned {
            if let GrantChange::GrantRole(role) = change {
                self.check_is_role(role).await?;
            }
            for sql in change.statements(&account) {
                self.exec(sql).await?;
            }
            let (granted, revoked) = change.summaries(user);
            changes.granted.extend(granted);
            changes.revoked.extend(revoked);
        }
        self.sync_default_role(user, &plan.roles).await
    }

    // -------------------------------------------------------------- roles

    /// Only real roles can be granted: on MySQL 8 any account can be granted like a role, and
    /// granting another application's user would hand out its privileges. MariaDB marks roles
    /// (`is_role`); MySQL roles are locked accounts (`CREATE ROLE` makes them so).
    async fn check_is_role(&mut self, role: &str) -> Result<(), DbError> {
        let sql = match self.flavour {
            Flavour::MariaDb => {
                "SELECT CAST(is_role AS CHAR) FROM mysql.user WHERE User = ? AND Host = ''"
            }
            Flavour::MySql => {
                "SELECT CAST(account_locked AS CHAR) FROM mysql.user WHERE User = ? AND Host = '%'"
            }
        };
        let flag: Option<String> = sqlx::query_scalar(sql)
            .bind(role)
            .fetch_optional(&mut self.conn)
            .await
            .map_err(|e| map_error(e, "", &[]))?;
        match flag.as_deref() {
            None => Err(DbError::InvalidGrant {
                detail: format!("role {role} does not exist"),
            }),
            Some("Y") => Ok(()),
            Some(_) => Err(DbError::InvalidGrant {
                detail: format!("{role} is a user account, not a role; only roles can be granted"),
            }),
        }
    }

    /// Roles are only active in a session when they are default roles. MariaDB has one
    /// default role (validation allows one role there); MySQL 8 gets all granted roles.
    async fn sync_default_role(&mut self, user: &str, roles: &[String]) -> Result<(), DbError> {
        let account = self.account(user)?;
        match self.flavour {
            Flavour::MariaDb => {
                let current: Option<String> =
                    sqlx::query_scalar("SELECT CAST(default_role AS CHAR) FROM mysql.user WHERE User = ? AND Host = '%'")
                        .bind(user)
                        .fetch_optional(&mut self.conn)
                        .await
                        .map_err(|e| map_error(e, "", &[]))?;
                let wanted = roles.first().cloned().unwrap_or_default();
                if current.unwrap_or_default() != wanted {
                    let role = if wanted.is_empty() {
                        "NONE".to_owned()
                    } else {
                        my_ident(&wanted)
                    };
                    self.exec(format!("SET DEFAULT ROLE {role} FOR {account}"))
                        .await?;
                }
            }
            Flavour::MySql => {
                let current: BTreeSet<String> =
                    sqlx::query_scalar("SELECT CAST(DEFAULT_ROLE_USER AS CHAR) FROM mysql.default_roles WHERE USER = ? AND HOST = '%'")
                        .bind(user)
                        .fetch_all(&mut self.conn)
                        .await
                        .map_err(|e| map_error(e, "", &[]))?
                        .into_iter()
                        .collect();
                if current != roles.iter().cloned().collect() {
                    let which = if roles.is_empty() { "NONE" } else { "ALL" };
                    self.exec(format!("SET DEFAULT ROLE {which} TO {account}"))
                        .await?;
                }
            }
        }
        Ok(())
    }

    // -------------------------------------------------------------- TLS

    async fn tls_requirement(&mut self, user: &str) -> Result<Option<TlsRequirement>, DbError> {
        type Row = (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let row: Option<Row> = sqlx::query_as(
            "SELECT CAST(ssl_type AS CHAR), CAST(ssl_cipher AS CHAR), CAST(x509_issuer AS CHAR), CAST(x509_subject AS CHAR) \
             FROM mysql.user WHERE User = ? AND Host = '%'",
        )
        .bind(user)
        .fetch_optional(&mut self.conn)
        .await
        .map_err(|e| map_error(e, "", &[]))?;
        Ok(
            row.map(|(ssl_type, cipher, issuer, subject)| TlsRequirement {
                ssl_type: ssl_type.unwrap_or_default(),
                cipher: cipher.unwrap_or_default(),
                issuer: issuer.unwrap_or_default(),
                subject: subject.unwrap_or_default(),
            }),
        )
    }

    /// The clone requires exactly what the primary requires (SSL, X509, issuer/subject/cipher).
    async fn copy_tls_requirement(
        &mut self,
        primary: &str,
        user: &str,
        changes: &mut PrivilegeChanges,
    ) -> Result<(), DbError> {
        if user == primary {
            return Ok(());
        }
        let (Some(source), Some(current)) = (
            self.tls_requirement(primary).await?,
            self.tls_requirement(user).await?,
        ) else {
            return Ok(());
        };
        if source == current {
            return Ok(());
        }
        let clause = self.require_clause(&source)?;
        self.exec(format!("ALTER USER {} {clause}", self.account(user)?))
            .await?;
        changes
            .granted
            .push(format!("{clause} TO {user} (as {primary})"));
        Ok(())
    }

    fn require_clause(&self, tls: &TlsRequirement) -> Result<String, DbError> {
        Ok(match tls.ssl_type.to_ascii_uppercase().as_str() {
            "ANY" => "REQUIRE SSL".into(),
            "X509" => "REQUIRE X509".into(),
            "SPECIFIED" => {
                let mut parts = Vec::new();
                for (keyword, value) in [
                    ("ISSUER", &tls.issuer),
                    ("SUBJECT", &tls.subject),
                    ("CIPHER", &tls.cipher),
                ] {
                    if !value.is_empty() {
                        parts.push(format!(
                            "{keyword} {}",
                            my_literal(value, self.no_backslash_escapes)?
                        ));
                    }
                }
                if parts.is_empty() {
                    "REQUIRE SSL".into()
                } else {
                    format!("REQUIRE {}", parts.join(" AND "))
                }
            }
            _ => "REQUIRE NONE".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refused_login_is_auth_failed() {
        // (error number, refused login?)
        let table = [
            (1045, true),
            (1698, true),
            (1130, true),
            (1862, true),
            (3118, true),
            (3955, true),
            (4151, true),
            (1044, false),
            (1142, false),
            (1227, false),
            (1064, false),
            (2003, false),
            (0, false),
        ];
        for (number, refused) in table {
            assert_eq!(login_refused(number), refused, "error {number}");
        }
    }
}
