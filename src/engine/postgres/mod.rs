//! PostgreSQL (and Aurora PostgreSQL).
//!
//! Model: the plan's privileges are held by a NOLOGIN role `{username}_owner`. Each login user
//! (`username`, `username_clone`) is an INHERIT member of it and has `SET role` to it as a
//! per-role default, so whatever either login user creates is owned by the owner role and
//! usable by the other one (the AWS alternating-users template leaves such objects owned by
//! whichever user created them). Login users hold no privileges of their own.
//!
//! Current privileges are read from the catalogs (ACLs via `aclexplode`, `pg_default_acl`,
//! `pg_auth_members`) and diffed against the plan. `pg_shdepend`, a cluster-wide catalog,
//! says which databases mention a role at all, so privileges left behind in a database that
//! is no longer in the plan are found and revoked too (with a connection to that database:
//! schema and table ACLs are per database).

use std::collections::BTreeSet;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgDatabaseError, PgSslMode};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor};

use super::quote::{pg_ident, pg_literal};
use super::{
    ConnectTarget, DbError, Login, PrivilegeChanges, UserPlan, connect_bounded,
    map_transport_error, scram, scrub,
};
use privileges::Wanted;

mod catalog;
mod privileges;
use crate::crd::TlsMode;
use crate::secret::SecretString;

/// Connected to when the target names no database (exists on every server, RDS included).
const DEFAULT_DATABASE: &str = "postgres";
pub(crate) use privileges::privilege_applies;

// ------------------------------------------------------------------ connections

fn ssl_mode(mode: TlsMode) -> PgSslMode {
    match mode {
        TlsMode::Disable => PgSslMode::Disable,
        TlsMode::Prefer => PgSslMode::Prefer,
        TlsMode::Require => PgSslMode::Require,
        TlsMode::VerifyCa => PgSslMode::VerifyCa,
        TlsMode::VerifyFull => PgSslMode::VerifyFull,
    }
}

fn connect_options(target: &ConnectTarget, login: &Login, database: &str) -> PgConnectOptions {
    let mut options = PgConnectOptions::new_without_pgpass()
        .host(&target.host)
        .port(target.port)
        .username(&login.username)
        .password(login.password.expose())
        .database(database)
        .ssl_mode(ssl_mode(target.tls.mode))
        .application_name("rdscred")
        // `ALTER ROLE ... PASSWORD` text holds a SCRAM verifier (offline-guessable): never log it.
        .disable_statement_logging();
    if let Some(pem) = &target.tls.ca_bundle_pem {
        options = options.ssl_root_cert_from_pem(pem.as_bytes().to_vec());
    }
    options
}

async fn connect(
    target: &ConnectTarget,
    login: &Login,
    database: &str,
) -> Result<PgConnection, DbError> {
    let options = connect_options(target, login, database);
    connect_bounded(async {
        PgConnection::connect_with(&options)
            .await
            .map_err(|e| map_error(e, &login.username, &[]))
    })
    .await
}

/// An admin connection: DDL must not wait forever behind an application's lock.
async fn connect_admin(
    target: &ConnectTarget,
    login: &Login,
    database: &str,
) -> Result<PgConnection, DbError> {
    let options = connect_options(target, login, database)
        .options([("lock_timeout", "10s"), ("statement_timeout", "60s")]);
    connect_bounded(async {
        PgConnection::connect_with(&options)
            .await
            .map_err(|e| map_error(e, &login.username, &[]))
    })
    .await
}

pub(crate) async fn check_login(target: &ConnectTarget, login: &Login) -> Result<(), DbError> {
    let database = target.database.as_deref().unwrap_or(DEFAULT_DATABASE);
    let mut conn = connect(target, login, database).await?;
    let result = conn
        .execute("SELECT 1")
        .await
        .map(|_| ())
        .map_err(|e| map_error(e, &login.username, &[]));
    let _ = conn.close().await;
    result
}

/// Whether SQLSTATE `code` means the server refused the login: class 28
/// (`invalid_authorization_specification` 28000 — no pg_hba entry, role cannot log in or does
/// not exist; `invalid_password` 28P01). Every member of the class counts, so a new subcode
/// cannot turn a refused login into a retryable generic error.
pub(crate) fn login_refused(code: &str) -> bool {
    code.starts_with("28")
}

/// SQLSTATE → [`DbError`]. `secrets` are scrubbed from the server's message.
fn map_error(error: sqlx::Error, username: &str, secrets: &[&str]) -> DbError {
    let sqlx::Error::Database(db) = &error else {
        return map_transport_error(error);
    };
    let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
    let extra = db
        .try_downcast_ref::<PgDatabaseError>()
        .and_then(PgDatabaseError::detail)
        .map(|d| format!(": {d}"))
        .unwrap_or_default();
    let detail = scrub(
        &format!("{}{extra} (SQLSTATE {code})", db.message()),
        secrets,
    );
    match code.as_str() {
        c if login_refused(c) => DbError::AuthFailed {
            username: username.to_owned(),
        },
        "42501" => DbError::PermissionDenied { detail },
        "2BP01" => DbError::OwnsObjects {
            username: username.to_owned(),
            detail,
        },
        "57014" | "55P03" => DbError::Timeout,
        c if c.starts_with("08") || c.starts_with("57P") => DbError::Unreachable { detail },
        _ => DbError::Other { detail },
    }
}

async fn exec(conn: &mut PgConnection, sql: String) -> Result<(), DbError> {
    conn.execute(AssertSqlSafe(sql))
        .await
        .map(|_| ())
        .map_err(|e| map_error(e, "", &[]))
}

/// The literal `ALTER ROLE ... PASSWORD` gets: a SCRAM verifier computed here, never the
/// password itself (which would then be SQL text, in the server's logs and statistics).
fn password_literal(password: &SecretString) -> Result<String, DbError> {
    pg_literal(&scram::verifier(password.expose())?)
}

// ------------------------------------------------------------------ admin

pub(crate) struct PgAdmin {
    conn: PgConnection,
    target: ConnectTarget,
    admin: Login,
    /// The database `conn` is connected to.
    database: String,
}

impl PgAdmin {
    pub(crate) async fn connect(target: &ConnectTarget, admin: &Login) -> Result<PgAdmin, DbError> {
        let database = target
            .database
            .clone()
            .unwrap_or_else(|| DEFAULT_DATABASE.to_owned());
        let conn = connect_admin(target, admin, &database).await?;
        Ok(PgAdmin {
            conn,
            target: target.clone(),
            admin: admin.clone(),
            database,
        })
    }

    pub(crate) async fn close(self) {
        let _ = self.conn.close().await;
    }

    /// Whether the session still answers (before a pooled connection is used again).
    pub(crate) async fn ping(&mut self) -> Result<(), DbError> {
        self.conn.ping().await.map_err(|e| map_error(e, "", &[]))
    }

    pub(crate) async fn user_exists(&mut self, username: &str) -> Result<bool, DbError> {
        Ok(!self
            .existing_roles(&[username.to_owned()])
            .await?
            .is_empty())
    }

    async fn existing_roles(&mut self, names: &[String]) -> Result<Vec<String>, DbError> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1) ORDER BY 1")
                .bind(names)
                .fetch_all(&mut self.conn)
                .await
                .map_err(|e| map_error(e, "", &[]))?;
        // Keep the caller's order (login users before the owner role).
        Ok(names
            .iter()
            .filter(|n| rows.iter().any(|(r,)| r == *n))
            .cloned()
            .collect())
    }

    pub(crate) async fn ensure_login_user(
        &mut self,
        plan: &UserPlan,
        username: &str,
        password: &SecretString,
    ) -> Result<bool, DbError> {
        plan.validate(self.target.engine)?;
        if self.user_exists(username).await? {
            return Ok(false);
        }
        let owner = UserPlan::owner_role(&plan.username);
        let literal = password_literal(password)?;
        let secrets = [password.expose(), literal.as_str()];
        // One transaction: a crash never leaves a login user that is not yet acting as owner.
        let mut tx = self.conn.begin().await.map_err(|e| map_error(e, "", &[]))?;
        let statements = [
            format!(
                "DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {}) THEN CREATE ROLE {} NOLOGIN; END IF; END$$",
                pg_literal(&owner)?,
                pg_ident(&owner)
            ),
            format!(
                "CREATE ROLE {} WITH LOGIN INHERIT PASSWORD {literal}",
                pg_ident(username)
            ),
            format!("GRANT {} TO {}", pg_ident(&owner), pg_ident(username)),
            format!(
                "ALTER ROLE {} SET role = {}",
                pg_ident(username),
                pg_literal(&owner)?
            ),
        ];
        for sql in statements {
            tx.execute(AssertSqlSafe(sql))
                .await
                .map_err(|e| map_error(e, username, &secrets))?;
        }
        tx.commit().await.map_err(|e| map_error(e, username, &[]))?;
        Ok(true)
    }

    pub(crate) async fn set_password(
        &mut self,
        username: &str,
        password: &SecretString,
    ) -> Result<(), DbError> {
        super::quote::check_user_name(username, self.target.engine.max_username_len())?;
        let literal = password_literal(password)?;
        let sql = format!("ALTER ROLE {} WITH PASSWORD {literal}", pg_ident(username));
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
        plan.validate(self.target.engine)?;
        let mut changes = PrivilegeChanges::default();
        let owner = UserPlan::owner_role(&plan.username);
        self.ensure_owner_role(&owner, &mut changes).await?;
        let logins = self.existing_roles(&plan.login_users).await?;
        for login in &logins {
            self.sync_login_user(login, &owner, &mut changes).await?;
        }
        self.sync_role_memberships(&owner, &plan.roles, &mut changes)
            .await?;

        let wanted = privileges::wanted(plan);
        self.check_databases_exist(wanted.keys().map(|o| &o.database))
            .await?;
        // The owner holds the plan; login users hold nothing directly.
        let empty = Wanted::new();
        let mut grantees: Vec<(&str, &Wanted)> = vec![(owner.as_str(), &wanted)];
        grantees.extend(logins.iter().map(|l| (l.as_str(), &empty)));
        self.sync_acls(&grantees, &mut changes).await?;
        Ok(changes)
    }

    /// Reads only: every role of the plan is a grantable NOLOGIN group role without
    /// administrative attributes, every database exists, every schema exists in its
    /// database. The planning phase runs this before anything is written, so a grant that
    /// would fail halfway through a sync never starts.
    pub(crate) async fn check_plan(&mut self, plan: &UserPlan) -> Result<(), DbError> {
        plan.validate(self.target.engine)?;
        for role in &plan.roles {
            self.check_grantable_role(role).await?;
        }
        let wanted = privileges::wanted(plan);
        self.check_databases_exist(wanted.keys().map(|o| &o.database))
            .await?;
        for database in privileges::databases_with_schemas(&wanted) {
            let schemas = privileges::schemas_in(&wanted, &database);
            if database == self.database {
                catalog::check_schemas_exist(&mut self.conn, &database, &schemas).await?;
            } else {
                let mut conn = connect_admin(&self.target, &self.admin, &database).await?;
                let result = catalog::check_schemas_exist(&mut conn, &database, &schemas).await;
                let _ = conn.close().await;
                result?;
            }
        }
        Ok(())
    }

    pub(crate) async fn drop_users(&mut self, plan: &UserPlan) -> Result<(), DbError> {
        let max = self.target.engine.max_username_len();
        plan.login_users
            .iter()
            .try_for_each(|u| super::quote::check_user_name(u, max))?;
        let owner = UserPlan::owner_role(&plan.username);
        super::quote::check_user_name(&owner, max)?;
        let mut names = plan.login_users.clone();
        names.push(owner);
        let existing = self.existing_roles(&names).await?;
        if existing.is_empty() {
            return Ok(());
        }
        let owned = self.owned_object_counts(&existing).await?;
        if !owned.is_empty() {
            return Err(DbError::OwnsObjects {
                username: plan.username.clone(),
                detail: owned.join("; "),
            });
        }
        // Privileges mention the roles too and block DROP ROLE: revoke them all first.
        let empty = Wanted::new();
        let grantees: Vec<(&str, &Wanted)> =
            existing.iter().map(|r| (r.as_str(), &empty)).collect();
        self.sync_acls(&grantees, &mut PrivilegeChanges::default())
            .await?;
        let mut tx = self.conn.begin().await.map_err(|e| map_error(e, "", &[]))?;
        for role in &existing {
            tx.execute(AssertSqlSafe(format!(
                "DROP ROLE IF EXISTS {}",
                pg_ident(role)
            )))
            .await
            .map_err(|e| map_error(e, &plan.username, &[]))?;
        }
        tx.commit()
            .await
            .map_err(|e| map_error(e, &plan.username, &[]))
    }

    // -------------------------------------------------------------- roles

    async fn ensure_owner_role(
        &mut self,
        owner: &str,
        changes: &mut PrivilegeChanges,
    ) -> Result<(), DbError> {
        if !self.user_exists(owner).await? {
            exec(
                &mut self.conn,
                format!("CREATE ROLE {} NOLOGIN", pg_ident(owner)),
            )
            .await?;
            changes
                .granted
                .push(format!("ROLE {owner} (created, NOLOGIN)"));
        }
        Ok(())
    }

    /// A login user: LOGIN INHERIT, member of exactly the owner role, acting as it.
    async fn sync_login_user(
        &mut self,
        login: &str,
        owner: &str,
        changes: &mut PrivilegeChanges,
    ) -> Result<(), DbError> {
        let (can_login, inherits): (bool, bool) =
            sqlx::query_as("SELECT rolcanlogin, rolinherit FROM pg_roles WHERE rolname = $1")
                .bind(login)
                .fetch_one(&mut self.conn)
                .await
                .map_err(|e| map_error(e, "", &[]))?;
        if !(can_login && inherits) {
            exec(
                &mut self.conn,
                format!("ALTER ROLE {} WITH LOGIN INHERIT", pg_ident(login)),
            )
            .await?;
            changes.granted.push(format!("LOGIN INHERIT TO {login}"));
        }
        self.sync_memberships(login, &[owner.to_owned()], changes)
            .await?;
        let acts_as_owner: bool = sqlx::query_scalar(
            "SELECT coalesce((SELECT ('role=' || $2) = ANY(setconfig) FROM pg_db_role_setting \
             WHERE setdatabase = 0 AND setrole = (SELECT oid FROM pg_roles WHERE rolname = $1)), false)",
        )
        .bind(login)
        .bind(owner)
        .fetch_one(&mut self.conn)
        .await
        .map_err(|e| map_error(e, "", &[]))?;
        if !acts_as_owner {
            exec(
                &mut self.conn,
                format!(
                    "ALTER ROLE {} SET role = {}",
                    pg_ident(login),
                    pg_literal(owner)?
                ),
            )
            .await?;
            changes
                .granted
                .push(format!("SET role = {owner} FOR {login}"));
        }
        Ok(())
    }

    /// The owner role is a member of exactly the plan's roles, each of which must be a plain
    /// NOLOGIN group without administrative attributes.
    async fn sync_role_memberships(
        &mut self,
        owner: &str,
        roles: &[String],
        changes: &mut PrivilegeChanges,
    ) -> Result<(), DbError> {
        for role in roles {
            self.check_grantable_role(role).await?;
        }
        self.sync_memberships(owner, roles, changes).await
    }

    async fn check_grantable_role(&mut self, role: &str) -> Result<(), DbError> {
        let flags: Option<(bool,)> = sqlx::query_as(
            "SELECT rolsuper OR rolcreaterole OR rolreplication OR rolbypassrls OR rolcanlogin FROM pg_roles WHERE rolname = $1",
        )
        .bind(role)
        .fetch_optional(&mut self.conn)
        .await
        .map_err(|e| map_error(e, "", &[]))?;
        match flags {
            None => Err(DbError::InvalidGrant {
                detail: format!("role {role} does not exist"),
            }),
            Some((true,)) => Err(DbError::InvalidGrant {
                detail: format!(
                    "role {role} can log in or has administrative attributes; only NOLOGIN group roles can be granted"
                ),
            }),
            Some((false,)) => Ok(()),
        }
    }

    async fn sync_memberships(
        &mut self,
        member: &str,
        wanted: &[String],
        changes: &mut PrivilegeChanges,
    ) -> Result<(), DbError> {
        let current: BTreeSet<String> = sqlx::query_scalar(
            "SELECT r.rolname::text FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid \
             WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = $1)",
        )
        .bind(member)
        .fetch_all(&mut self.conn)
        .await
        .map_err(|e| map_error(e, "", &[]))?
        .into_iter()
        .collect();
        let (grant, revoke) = privileges::membership_changes(&current, wanted);
        for role in &grant {
            exec(
                &mut self.conn,
                format!("GRANT {} TO {}", pg_ident(role), pg_ident(member)),
            )
            .await?;
            changes.granted.push(format!("ROLE {role} TO {member}"));
        }
        for role in &revoke {
            exec(
                &mut self.conn,
                format!("REVOKE {} FROM {}", pg_ident(role), pg_ident(member)),
            )
            .await?;
            changes.revoked.push(format!("ROLE {role} FROM {member}"));
        }
        Ok(())
    }

    // -------------------------------------------------------------- privileges

    async fn check_databases_exist<'a>(
        &mut self,
        names: impl Iterator<Item = &'a String>,
    ) -> Result<(), DbError> {
        let names: Vec<String> = names
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let sql = "SELECT datname::text FROM pg_database WHERE datname = ANY($1)";
        match catalog::first_missing(&mut self.conn, sql, &names).await? {
            Some(missing) => Err(DbError::InvalidGrant {
                detail: format!("database {missing} does not exist"),
            }),
            None => Ok(()),
        }
    }

    /// Database ACLs (a cluster-wide catalog, readable and changed from here) and, per
    /// database that the plan names or that mentions a grantee, schema, table and default
    /// privileges: read into a snapshot, planned, executed.
    async fn sync_acls(
        &mut self,
        grantees: &[(&str, &Wanted)],
        changes: &mut PrivilegeChanges,
    ) -> Result<(), DbError> {
        let mut planned = Vec::new();
        for (grantee, wanted) in grantees {
            let held = catalog::read_database_acls(&mut self.conn, grantee).await?;
            let wanted = privileges::database_level(wanted);
            planned.extend(privileges::plan_changes(grantee, &wanted, &held));
        }
        catalog::execute(&mut self.conn, &planned, changes).await?;
        let names: Vec<String> = grantees.iter().map(|(g, _)| g.to_string()).collect();
        let mut databases: BTreeSet<String> = self.databases_mentioning(&names).await?;
        grantees
            .iter()
            .for_each(|(_, w)| databases.extend(privileges::databases_with_schemas(w)));
        for database in databases {
            self.sync_in_database(&database, grantees, changes).await?;
        }
        Ok(())
    }

    async fn databases_mentioning(
        &mut self,
        roles: &[String],
    ) -> Result<BTreeSet<String>, DbError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT d.datname::text FROM pg_shdepend s JOIN pg_roles r ON r.oid = s.refobjid \
             JOIN pg_database d ON d.oid = s.dbid \
             WHERE s.refclassid = 'pg_authid'::regclass AND s.deptype = 'a' AND r.rolname = ANY($1) AND d.datallowconn",
        )
        .bind(roles)
        .fetch_all(&mut self.conn)
        .await
        .map_err(|e| map_error(e, "", &[]))?;
        Ok(rows.into_iter().collect())
    }

    /// Runs the per-database sync on this connection or, for another database, on a
    /// short-lived connection with the same admin login.
    async fn sync_in_database(
        &mut self,
        database: &str,
        grantees: &[(&str, &Wanted)],
        changes: &mut PrivilegeChanges,
    ) -> Result<(), DbError> {
        if database == self.database {
            return sync_objects(&mut self.conn, database, grantees, changes).await;
        }
        let mut conn = connect_admin(&self.target, &self.admin, database).await?;
        let result = sync_objects(&mut conn, database, grantees, changes).await;
        let _ = conn.close().await;
        result
    }

    /// "db: role owns N objects" for every database where one of `roles` owns something.
    async fn owned_object_counts(&mut self, roles: &[String]) -> Result<Vec<String>, DbError> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT coalesce(d.datname::text, '(cluster-wide)'), r.rolname::text, count(*) \
             FROM pg_shdepend s JOIN pg_roles r ON r.oid = s.refobjid LEFT JOIN pg_database d ON d.oid = s.dbid \
             WHERE s.refclassid = 'pg_authid'::regclass AND s.deptype = 'o' AND r.rolname = ANY($1) \
             GROUP BY 1, 2 ORDER BY 1, 2",
        )
        .bind(roles)
        .fetch_all(&mut self.conn)
        .await
        .map_err(|e| map_error(e, "", &[]))?;
        Ok(rows
            .into_iter()
            .map(|(db, role, n)| format!("{role} owns {n} object(s) in database {db}"))
            .collect())
    }
}

/// Schema ACLs, table ACLs and the admin's default privileges in the connected database:
/// every grantee's snapshot read and its changes planned before anything is written.
async fn sync_objects(
    conn: &mut PgConnection,
    database: &str,
    grantees: &[(&str, &Wanted)],
    changes: &mut PrivilegeChanges,
) -> Result<(), DbError> {
    let mut planned = Vec::new();
    for (grantee, wanted) in grantees {
        let wanted = privileges::in_database(wanted, database);
        catalog::check_schemas_exist(conn, database, &privileges::schemas_in(&wanted, database))
            .await?;
        let held = catalog::read_object_acls(conn, database, grantee, &wanted).await?;
        planned.extend(privileges::plan_changes(grantee, &wanted, &held));
    }
    catalog::execute(conn, &planned, changes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refused_login_is_auth_failed() {
        let table = [
            ("28P01", true),
            ("28000", true),
            ("42501", false),
            ("3D000", false),
            ("08006", false),
            ("", false),
        ];
        for (code, refused) in table {
            assert_eq!(login_refused(code), refused, "SQLSTATE {code:?}");
        }
    }
}
