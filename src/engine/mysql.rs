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

use super::quote::{my_account, my_db_pattern, my_ident, my_literal};
use super::{
    ConnectTarget, DbError, Login, PrivilegeChanges, UserPlan, connect_bounded,
    map_transport_error, scrub,
};
use crate::crd::{EngineKind, Privilege, TlsMode};
use crate::secret::SecretString;

const ALL: &str = "ALL PRIVILEGES";
const GRANT_OPTION: &str = "GRANT OPTION";

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

// ------------------------------------------------------------------ SHOW GRANTS

/// One account's grants as `SHOW GRANTS` prints them. Table- and column-level grants are
/// outside rdscred's model and left alone.
#[derive(Debug, Default, PartialEq)]
struct Grants {
    /// Privileges `ON *.*` (`USAGE` means none).
    global: BTreeSet<String>,
    /// Privileges `ON db.*` per database pattern exactly as granted (`app\_db` is the
    /// database `app_db`; a bare `app_db` is a different grant that also matches `appXdb`);
    /// `ALL PRIVILEGES` and `GRANT OPTION` as tokens.
    databases: BTreeMap<String, BTreeSet<String>>,
    roles: BTreeSet<String>,
}

fn parse_grants(lines: &[String]) -> Grants {
    let mut grants = Grants::default();
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("GRANT "))
        .for_each(|l| parse_grant_line(l, &mut grants));
    grants
}

fn parse_grant_line(line: &str, grants: &mut Grants) {
    let Some(to) = find_unquoted(line, " TO ") else {
        return;
    };
    let (what, grantee) = (&line[..to], &line[to..]);
    let Some(on) = find_unquoted(what, " ON ") else {
        // `GRANT role[, role] TO account`.
        grants.roles.extend(
            split_top_level(what)
                .iter()
                .filter_map(|r| first_identifier(r)),
        );
        return;
    };
    let privileges = split_top_level(&what[..on]);
    if privileges.iter().any(|p| p.contains('(')) {
        return; // column-level
    }
    let mut set: BTreeSet<String> = privileges.iter().map(|p| p.to_ascii_uppercase()).collect();
    if grantee.contains(" WITH GRANT OPTION") {
        set.insert(GRANT_OPTION.into());
    }
    match parse_target(&what[on + 4..]) {
        Some(Target::Global) => grants.global.extend(set),
        Some(Target::Database(db)) => grants.databases.entry(db).or_default().extend(set),
        None => {}
    }
}

enum Target {
    Global,
    Database(String),
}

/// `*.*` or `` `pattern`.* ``.
fn parse_target(target: &str) -> Option<Target> {
    let target = target.trim();
    if target == "*.*" {
        return Some(Target::Global);
    }
    let (pattern, rest) = read_backticked(target)?;
    (rest == ".*").then_some(Target::Database(pattern))
}

/// How a grant target is shown in change summaries: `db.*` when the pattern means exactly
/// one database, else the wildcard pattern as granted.
fn pattern_label(pattern: &str) -> String {
    let name = pattern
        .replace("\\_", "_")
        .replace("\\%", "%")
        .replace("\\\\", "\\");
    if my_db_pattern(&name) == pattern {
        format!("{name}.*")
    } else {
        format!("`{pattern}`.* (wildcard pattern)")
    }
}

/// `` `name` `` at the start of `s` (doubled backticks inside), and what follows it.
fn read_backticked(s: &str) -> Option<(String, &str)> {
    let body = s.strip_prefix('`')?;
    let mut name = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '`' {
            if chars.peek().map(|(_, n)| *n) == Some('`') {
                name.push('`');
                chars.next();
            } else {
                return Some((name, &body[i + 1..]));
            }
        } else {
            name.push(c);
        }
    }
    None
}

/// A role in a role grant: `` `r` `` (MariaDB) or `` `r`@`%` `` (MySQL 8).
fn first_identifier(s: &str) -> Option<String> {
    let s = s.trim();
    match read_backticked(s) {
        Some((name, _)) => Some(name),
        None => s
            .split('@')
            .next()
            .map(|n| n.trim_matches('\'').to_owned())
            .filter(|n| !n.is_empty()),
    }
}

/// Byte offset of `pattern` outside backtick/quote-delimited text.
fn find_unquoted(s: &str, pattern: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '`' || c == '\'' => quote = Some(c),
            None if s[i..].starts_with(pattern) => return Some(i),
            None => {}
        }
    }
    None
}

/// Splits on commas outside parentheses and quotes; trims each part.
fn split_top_level(s: &str) -> Vec<String> {
    let (mut parts, mut current, mut depth, mut quote) =
        (Vec::new(), String::new(), 0i32, None::<char>);
    for c in s.chars() {
        match (quote, c) {
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '`' | '\'') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, ',') if depth == 0 => {
                parts.push(current.trim().to_owned());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current.trim().to_owned());
    parts.retain(|p| !p.is_empty());
    parts
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

/// The plan's wanted database-level privileges: exact grant pattern → privilege names.
fn wanted_grants(plan: &UserPlan) -> BTreeMap<String, BTreeSet<&'static str>> {
    let mut wanted: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    for grant in &plan.grants {
        let set = wanted.entry(my_db_pattern(&grant.database)).or_default();
        set.extend(grant.privileges.iter().filter_map(|p| privilege_name(*p)));
        if set.contains(ALL) {
            set.retain(|p| *p == ALL);
        }
    }
    wanted
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
    /// role of one login user.
    async fn sync_user(
        &mut self,
        plan: &UserPlan,
        user: &str,
        wanted: &BTreeMap<String, BTreeSet<&'static str>>,
        changes: &mut PrivilegeChanges,
    ) -> Result<(), DbError> {
        let current = self.current_grants(user).await?;
        let account = self.account(user)?;
        let global_extra: Vec<&str> = current
            .global
            .iter()
            .map(String::as_str)
            .filter(|p| *p != "USAGE")
            .collect();
        if !global_extra.is_empty() {
            self.exec(format!(
                "REVOKE {} ON *.* FROM {account}",
                global_extra.join(", ")
            ))
            .await?;
            changes
                .revoked
                .push(format!("{} ON *.* FROM {user}", global_extra.join(", ")));
        }
        let none = BTreeSet::new();
        let databases: BTreeSet<&String> = current.databases.keys().chain(wanted.keys()).collect();
        for db in databases {
            let held = current.databases.get(db).cloned().unwrap_or_default();
            self.sync_database(user, db, held, wanted.get(db).unwrap_or(&none), changes)
                .await?;
        }
        self.sync_roles(user, &current.roles, &plan.roles, changes)
            .await?;
        self.sync_default_role(user, &plan.roles).await
    }

    /// One database-level grant `pattern` of `user` made exactly `want`.
    async fn sync_database(
        &mut self,
        user: &str,
        pattern: &str,
        mut held: BTreeSet<String>,
        want: &BTreeSet<&'static str>,
        changes: &mut PrivilegeChanges,
    ) -> Result<(), DbError> {
        let account = self.account(user)?;
        let on = format!("ON {}.*", my_ident(pattern));
        let target = pattern_label(pattern);
        if held.contains(ALL) && !want.contains(ALL) {
            // ALL cannot be partly revoked by name: revoke it, then grant what is wanted.
            self.exec(format!("REVOKE ALL PRIVILEGES {on} FROM {account}"))
                .await?;
            changes
                .revoked
                .push(format!("{ALL} ON {target} FROM {user}"));
            held.remove(ALL);
        }
        // With ALL wanted, the individual privileges it includes are not extras.
        let missing: Vec<&str> = want
            .iter()
            .copied()
            .filter(|p| !held.contains(*p))
            .collect();
        let extra: Vec<&str> = held
            .iter()
            .map(String::as_str)
            .filter(|p| !want.contains(p) && (!want.contains(ALL) || *p == GRANT_OPTION))
            .collect();
        if !missing.is_empty() {
            self.exec(format!("GRANT {} {on} TO {account}", missing.join(", ")))
                .await?;
            changes
                .granted
                .push(format!("{} ON {target} TO {user}", missing.join(", ")));
        }
        if !extra.is_empty() {
            self.exec(format!("REVOKE {} {on} FROM {account}", extra.join(", ")))
                .await?;
            changes
                .revoked
                .push(format!("{} ON {target} FROM {user}", extra.join(", ")));
        }
        Ok(())
    }

    // -------------------------------------------------------------- roles

    async fn sync_roles(
        &mut self,
        user: &str,
        held: &BTreeSet<String>,
        wanted: &[String],
        changes: &mut PrivilegeChanges,
    ) -> Result<(), DbError> {
        let account = self.account(user)?;
        for role in wanted.iter().filter(|r| !held.contains(*r)) {
            self.check_is_role(role).await?;
            self.exec(format!("GRANT {} TO {account}", my_ident(role)))
                .await?;
            changes.granted.push(format!("ROLE {role} TO {user}"));
        }
        for role in held.iter().filter(|r| !wanted.contains(r)) {
            self.exec(format!("REVOKE {} FROM {account}", my_ident(role)))
                .await?;
            changes.revoked.push(format!("ROLE {role} FROM {user}"));
        }
        Ok(())
    }

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

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

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

    #[test]
    fn parses_mariadb_show_grants() {
        let g = parse_grants(&lines(&[
            "GRANT USAGE ON *.* TO `app`@`%` IDENTIFIED BY PASSWORD '*ABC'",
            "GRANT SELECT, INSERT ON `rdscred\\_test`.* TO `app`@`%`",
            "GRANT ALL PRIVILEGES ON `other`.* TO `app`@`%` WITH GRANT OPTION",
            "GRANT SELECT (`c`) ON `db`.`t` TO `app`@`%`",
            "GRANT UPDATE ON `db`.`t` TO `app`@`%`",
            "GRANT `readers` TO `app`@`%`",
            "SET DEFAULT ROLE `readers` FOR `app`@`%`",
        ]));
        assert_eq!(g.global, BTreeSet::from(["USAGE".to_string()]));
        assert_eq!(
            g.databases["rdscred\\_test"],
            BTreeSet::from(["SELECT".to_string(), "INSERT".to_string()])
        );
        assert_eq!(
            g.databases["other"],
            BTreeSet::from([ALL.to_string(), GRANT_OPTION.to_string()])
        );
        assert_eq!(g.databases.len(), 2);
        assert_eq!(g.roles, BTreeSet::from(["readers".to_string()]));
    }

    #[test]
    fn parses_mysql8_show_grants() {
        let g = parse_grants(&lines(&[
            "GRANT USAGE ON *.* TO `app`@`%`",
            "GRANT BACKUP_ADMIN,XA_RECOVER_ADMIN ON *.* TO `app`@`%`",
            "GRANT CREATE TEMPORARY TABLES, LOCK TABLES ON `we``ird`.* TO `app`@`%`",
            "GRANT `r1`@`%`,`r2`@`%` TO `app`@`%`",
        ]));
        assert!(g.global.contains("BACKUP_ADMIN") && g.global.contains("XA_RECOVER_ADMIN"));
        assert_eq!(
            g.databases["we`ird"],
            BTreeSet::from([
                "CREATE TEMPORARY TABLES".to_string(),
                "LOCK TABLES".to_string()
            ])
        );
        assert_eq!(
            g.roles,
            BTreeSet::from(["r1".to_string(), "r2".to_string()])
        );
    }

    #[test]
    fn grant_patterns_round_trip() {
        for name in ["app_db", "a%b", "plain", "x\\y"] {
            let quoted = my_ident(&my_db_pattern(name));
            let (pattern, rest) = read_backticked(&quoted).unwrap();
            assert_eq!(rest, "");
            assert_eq!(pattern, my_db_pattern(name));
            assert_eq!(pattern_label(&pattern), format!("{name}.*"));
        }
        assert_eq!(pattern_label("app_db"), "`app_db`.* (wildcard pattern)");
    }

    #[test]
    fn all_absorbs_other_privileges() {
        let plan = UserPlan {
            username: "app".into(),
            login_users: vec!["app".into()],
            grants: vec![
                crate::crd::PrivilegeGrant {
                    database: "a".into(),
                    schema: None,
                    privileges: vec![Privilege::All],
                },
                crate::crd::PrivilegeGrant {
                    database: "a".into(),
                    schema: None,
                    privileges: vec![Privilege::Select],
                },
                crate::crd::PrivilegeGrant {
                    database: "b".into(),
                    schema: None,
                    privileges: vec![Privilege::Temporary],
                },
            ],
            roles: vec![],
        };
        let w = wanted_grants(&plan);
        assert_eq!(w["a"], BTreeSet::from([ALL]));
        assert!(!w.contains_key("app_db"));
        assert_eq!(w["b"], BTreeSet::from(["CREATE TEMPORARY TABLES"]));
    }
}
