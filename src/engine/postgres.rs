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

use std::collections::{BTreeMap, BTreeSet};

use sqlx::postgres::{PgConnectOptions, PgConnection, PgDatabaseError, PgSslMode};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor};

use super::quote::{pg_ident, pg_literal};
use super::{
    ConnectTarget, DbError, Login, PrivilegeChanges, UserPlan, connect_bounded,
    map_transport_error, scram, scrub,
};
use crate::crd::{Privilege, TlsMode};
use crate::secret::SecretString;

/// Connected to when the target names no database (exists on every server, RDS included).
const DEFAULT_DATABASE: &str = "postgres";
const DATABASE_PRIVILEGES: [&str; 3] = ["CONNECT", "CREATE", "TEMPORARY"];
const SCHEMA_PRIVILEGES: [&str; 2] = ["USAGE", "CREATE"];
const TABLE_PRIVILEGES: [&str; 7] = [
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "REFERENCES",
    "TRIGGER",
];
/// Relation kinds `ON ALL TABLES IN SCHEMA` covers: tables, partitioned tables, views,
/// materialized views, foreign tables.
const TABLE_KINDS: &str = "('r','p','v','m','f')";

/// Whether `privilege` applies at database level (`in_schema == false`) or to a schema and
/// its tables.
pub(crate) fn privilege_applies(privilege: Privilege, in_schema: bool) -> bool {
    use Privilege::*;
    match privilege {
        All | Create => true,
        Connect | Temporary => !in_schema,
        Usage | Select | Insert | Update | Delete | Truncate | References | Trigger => in_schema,
        _ => false,
    }
}

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
        // Statement text can hold a password literal (non-ASCII fallback): never log it.
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

async fn fetch_pairs(
    conn: &mut PgConnection,
    sql: &'static str,
    role: &str,
) -> Result<Vec<(String, String)>, DbError> {
    sqlx::query_as(sql)
        .bind(role)
        .fetch_all(conn)
        .await
        .map_err(|e| map_error(e, "", &[]))
}

/// The literal `ALTER ROLE ... PASSWORD` gets: a SCRAM verifier computed here, or, for a
/// password SASLprep would change (non-ASCII), the password as an escape-string literal
/// for the server to hash the way clients will.
fn password_literal(password: &SecretString) -> Result<String, DbError> {
    let password = password.expose();
    if scram::saslprep_is_identity(password) {
        pg_literal(&scram::verifier(password)?)
    } else {
        pg_literal(password)
    }
}

// ------------------------------------------------------------------ desired state

/// What one grantee should hold, per database.
#[derive(Default)]
struct Desired {
    /// Database-level privileges per database.
    databases: BTreeMap<String, BTreeSet<&'static str>>,
    /// Per database, per schema.
    schemas: BTreeMap<String, BTreeMap<String, SchemaWant>>,
}

#[derive(Default, Clone, PartialEq)]
struct SchemaWant {
    schema: BTreeSet<&'static str>,
    /// On all tables in the schema, now and (via default privileges) in future.
    tables: BTreeSet<&'static str>,
}

impl Desired {
    fn from_plan(plan: &UserPlan) -> Desired {
        let mut desired = Desired::default();
        for grant in &plan.grants {
            match &grant.schema {
                None => {
                    let set = desired.databases.entry(grant.database.clone()).or_default();
                    grant
                        .privileges
                        .iter()
                        .for_each(|p| set.extend(database_privilege(*p)));
                }
                Some(schema) => {
                    let want = desired
                        .schemas
                        .entry(grant.database.clone())
                        .or_default()
                        .entry(schema.clone())
                        .or_default();
                    grant
                        .privileges
                        .iter()
                        .for_each(|p| add_schema_privilege(want, *p));
                    // Table privileges are useless without USAGE on their schema.
                    if !want.tables.is_empty() {
                        want.schema.insert("USAGE");
                    }
                }
            }
        }
        desired
    }

    fn schemas_in(&self, database: &str) -> BTreeMap<String, SchemaWant> {
        self.schemas.get(database).cloned().unwrap_or_default()
    }
}

fn database_privilege(privilege: Privilege) -> Vec<&'static str> {
    match privilege {
        Privilege::All => DATABASE_PRIVILEGES.to_vec(),
        Privilege::Connect => vec!["CONNECT"],
        Privilege::Create => vec!["CREATE"],
        Privilege::Temporary => vec!["TEMPORARY"],
        _ => vec![],
    }
}

fn add_schema_privilege(want: &mut SchemaWant, privilege: Privilege) {
    use Privilege::*;
    match privilege {
        All => {
            want.schema.extend(SCHEMA_PRIVILEGES);
            want.tables.extend(TABLE_PRIVILEGES);
        }
        Usage => _ = want.schema.insert("USAGE"),
        Create => _ = want.schema.insert("CREATE"),
        Select => _ = want.tables.insert("SELECT"),
        Insert => _ = want.tables.insert("INSERT"),
        Update => _ = want.tables.insert("UPDATE"),
        Delete => _ = want.tables.insert("DELETE"),
        Truncate => _ = want.tables.insert("TRUNCATE"),
        References => _ = want.tables.insert("REFERENCES"),
        Trigger => _ = want.tables.insert("TRIGGER"),
        _ => {}
    }
}

/// (`wanted` minus `current`, `current` minus `wanted`): what to grant and what to revoke.
fn diff(
    current: Option<&BTreeSet<String>>,
    wanted: &BTreeSet<&'static str>,
) -> (Vec<String>, Vec<String>) {
    let empty = BTreeSet::new();
    let current = current.unwrap_or(&empty);
    let missing = wanted
        .iter()
        .filter(|p| !current.contains(**p))
        .map(|p| p.to_string())
        .collect();
    let extra = current
        .iter()
        .filter(|p| !wanted.contains(p.as_str()))
        .cloned()
        .collect();
    (missing, extra)
}

fn group(pairs: Vec<(String, String)>) -> BTreeMap<String, BTreeSet<String>> {
    let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (key, value) in pairs {
        map.entry(key).or_default().insert(value);
    }
    map
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

        let desired = Desired::from_plan(plan);
        self.check_databases_exist(desired.databases.keys().chain(desired.schemas.keys()))
            .await?;
        // The owner holds the plan; login users hold nothing directly.
        let empty = Desired::default();
        let mut grantees: Vec<(&str, &Desired)> = vec![(owner.as_str(), &desired)];
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
        let desired = Desired::from_plan(plan);
        self.check_databases_exist(desired.databases.keys().chain(desired.schemas.keys()))
            .await?;
        for database in desired.schemas.keys() {
            let wanted = desired.schemas_in(database);
            if *database == self.database {
                check_schemas_exist(&mut self.conn, database, &wanted).await?;
            } else {
                let mut conn = connect_admin(&self.target, &self.admin, database).await?;
                let result = check_schemas_exist(&mut conn, database, &wanted).await;
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
        let empty = Desired::default();
        let grantees: Vec<(&str, &Desired)> =
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
        for role in wanted.iter().filter(|r| !current.contains(*r)) {
            exec(
                &mut self.conn,
                format!("GRANT {} TO {}", pg_ident(role), pg_ident(member)),
            )
            .await?;
            changes.granted.push(format!("ROLE {role} TO {member}"));
        }
        for role in current.iter().filter(|r| !wanted.contains(r)) {
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
        match first_missing(&mut self.conn, sql, &names).await? {
            Some(missing) => Err(DbError::InvalidGrant {
                detail: format!("database {missing} does not exist"),
            }),
            None => Ok(()),
        }
    }

    /// Database ACLs (a cluster-wide catalog, readable from here) and, per database that the
    /// plan names or that mentions a grantee, schema, table and default privileges.
    async fn sync_acls(
        &mut self,
        grantees: &[(&str, &Desired)],
        changes: &mut PrivilegeChanges,
    ) -> Result<(), DbError> {
        for (grantee, desired) in grantees {
            self.sync_database_acl(grantee, desired, changes).await?;
        }
        let names: Vec<String> = grantees.iter().map(|(g, _)| g.to_string()).collect();
        let mut databases: BTreeSet<String> = self.databases_mentioning(&names).await?;
        grantees
            .iter()
            .for_each(|(_, d)| databases.extend(d.schemas.keys().cloned()));
        for database in databases {
            self.sync_in_database(&database, grantees, changes).await?;
        }
        Ok(())
    }

    async fn sync_database_acl(
        &mut self,
        grantee: &str,
        desired: &Desired,
        changes: &mut PrivilegeChanges,
    ) -> Result<(), DbError> {
        let current = group(
            fetch_pairs(
                &mut self.conn,
                "SELECT d.datname::text, a.privilege_type FROM pg_database d CROSS JOIN LATERAL aclexplode(d.datacl) a \
                 WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $1) AND d.datdba <> a.grantee",
                grantee,
            )
            .await?,
        );
        let none = BTreeSet::new();
        let databases: BTreeSet<&String> = current.keys().chain(desired.databases.keys()).collect();
        for database in databases {
            let (missing, extra) = diff(
                current.get(database),
                desired.databases.get(database).unwrap_or(&none),
            );
            let on = format!("ON DATABASE {}", pg_ident(database));
            grant_revoke(
                &mut self.conn,
                &missing,
                &extra,
                &on,
                grantee,
                &format!("ON DATABASE {database}"),
                changes,
            )
            .await?;
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
        grantees: &[(&str, &Desired)],
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

/// Schema ACLs, table ACLs and the admin's default privileges in the connected database.
async fn sync_objects(
    conn: &mut PgConnection,
    database: &str,
    grantees: &[(&str, &Desired)],
    changes: &mut PrivilegeChanges,
) -> Result<(), DbError> {
    for (grantee, desired) in grantees {
        let wanted = desired.schemas_in(database);
        check_schemas_exist(conn, database, &wanted).await?;
        sync_schema_acls(conn, database, grantee, &wanted, changes).await?;
        sync_table_acls(conn, database, grantee, &wanted, changes).await?;
        sync_default_acls(conn, database, grantee, &wanted, changes).await?;
    }
    Ok(())
}

async fn check_schemas_exist(
    conn: &mut PgConnection,
    database: &str,
    wanted: &BTreeMap<String, SchemaWant>,
) -> Result<(), DbError> {
    let names: Vec<String> = wanted.keys().cloned().collect();
    let sql = "SELECT nspname::text FROM pg_namespace WHERE nspname = ANY($1)";
    match first_missing(conn, sql, &names).await? {
        Some(missing) => Err(DbError::InvalidGrant {
            detail: format!("schema {missing} does not exist in database {database}"),
        }),
        None => Ok(()),
    }
}

/// The first of `names` that `sql` (a catalog query selecting names `= ANY($1)`) does not
/// return, if any.
async fn first_missing(
    conn: &mut PgConnection,
    sql: &'static str,
    names: &[String],
) -> Result<Option<String>, DbError> {
    let found: Vec<String> = sqlx::query_scalar(sql)
        .bind(names)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| map_error(e, "", &[]))?;
    Ok(names.iter().find(|n| !found.contains(n)).cloned())
}

async fn sync_schema_acls(
    conn: &mut PgConnection,
    database: &str,
    grantee: &str,
    wanted: &BTreeMap<String, SchemaWant>,
    changes: &mut PrivilegeChanges,
) -> Result<(), DbError> {
    let current = group(
        fetch_pairs(
            conn,
            "SELECT n.nspname::text, a.privilege_type FROM pg_namespace n CROSS JOIN LATERAL aclexplode(n.nspacl) a \
             WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $1) AND n.nspowner <> a.grantee",
            grantee,
        )
        .await?,
    );
    let schemas: BTreeSet<&String> = current.keys().chain(wanted.keys()).collect();
    for schema in schemas {
        let want = wanted
            .get(schema)
            .map(|w| w.schema.clone())
            .unwrap_or_default();
        let (missing, extra) = diff(current.get(schema), &want);
        let on = format!("ON SCHEMA {}", pg_ident(schema));
        grant_revoke(
            conn,
            &missing,
            &extra,
            &on,
            grantee,
            &format!("ON SCHEMA {database}.{schema}"),
            changes,
        )
        .await?;
    }
    Ok(())
}

/// Grants are made with `ON ALL TABLES IN SCHEMA` when any table lacks any wanted privilege;
/// privileges held on any table that the plan does not want in that schema are revoked
/// from all its tables.
async fn sync_table_acls(
    conn: &mut PgConnection,
    database: &str,
    grantee: &str,
    wanted: &BTreeMap<String, SchemaWant>,
    changes: &mut PrivilegeChanges,
) -> Result<(), DbError> {
    let held_sql = format!(
        "SELECT n.nspname::text, a.privilege_type FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         CROSS JOIN LATERAL aclexplode(c.relacl) a \
         WHERE c.relkind IN {TABLE_KINDS} AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $1) AND c.relowner <> a.grantee \
         GROUP BY 1, 2"
    );
    let held: Vec<(String, String)> = sqlx::query_as(AssertSqlSafe(held_sql))
        .bind(grantee)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| map_error(e, "", &[]))?;
    let held = group(held);
    let schemas: BTreeSet<&String> = held.keys().chain(wanted.keys()).collect();
    for schema in schemas {
        let want = wanted
            .get(schema)
            .map(|w| w.tables.clone())
            .unwrap_or_default();
        let missing = privileges_missing_on_some_table(conn, schema, grantee, &want).await?;
        let (_, extra) = diff(held.get(schema), &want);
        let on = format!("ON ALL TABLES IN SCHEMA {}", pg_ident(schema));
        let label = format!("ON ALL TABLES IN SCHEMA {database}.{schema}");
        // Grant every wanted privilege (idempotent); report the ones that were missing.
        if !missing.is_empty() {
            let all: Vec<String> = want.iter().map(|p| p.to_string()).collect();
            exec(
                conn,
                format!("GRANT {} {on} TO {}", all.join(", "), pg_ident(grantee)),
            )
            .await?;
            changes
                .granted
                .push(format!("{} {label} TO {grantee}", missing.join(", ")));
        }
        grant_revoke(conn, &[], &extra, &on, grantee, &label, changes).await?;
    }
    Ok(())
}

async fn privileges_missing_on_some_table(
    conn: &mut PgConnection,
    schema: &str,
    grantee: &str,
    want: &BTreeSet<&'static str>,
) -> Result<Vec<String>, DbError> {
    if want.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT DISTINCT p.priv FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         CROSS JOIN unnest($3::text[]) AS p(priv) \
         WHERE n.nspname = $1 AND c.relkind IN {TABLE_KINDS} \
         AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = $2) \
         AND NOT EXISTS (SELECT 1 FROM aclexplode(c.relacl) a \
                         WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $2) AND a.privilege_type = p.priv) \
         ORDER BY 1"
    );
    let want: Vec<String> = want.iter().map(|p| p.to_string()).collect();
    sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(schema)
        .bind(grantee)
        .bind(&want)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| map_error(e, "", &[]))
}

/// Default privileges of the admin (the role whose future tables `ALTER DEFAULT PRIVILEGES`
/// without `FOR ROLE` covers), so tables created later are covered too.
async fn sync_default_acls(
    conn: &mut PgConnection,
    database: &str,
    grantee: &str,
    wanted: &BTreeMap<String, SchemaWant>,
    changes: &mut PrivilegeChanges,
) -> Result<(), DbError> {
    let current = group(
        fetch_pairs(
            conn,
            "SELECT n.nspname::text, a.privilege_type FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace \
             CROSS JOIN LATERAL aclexplode(d.defaclacl) a \
             WHERE d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = current_user) AND d.defaclobjtype = 'r' \
             AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $1)",
            grantee,
        )
        .await?,
    );
    let schemas: BTreeSet<&String> = current.keys().chain(wanted.keys()).collect();
    for schema in schemas {
        let want = wanted
            .get(schema)
            .map(|w| w.tables.clone())
            .unwrap_or_default();
        let (missing, extra) = diff(current.get(schema), &want);
        let label = format!("ON FUTURE TABLES IN SCHEMA {database}.{schema}");
        let prefix = format!("ALTER DEFAULT PRIVILEGES IN SCHEMA {} ", pg_ident(schema));
        grant_revoke_with(
            conn,
            &prefix,
            &missing,
            &extra,
            "ON TABLES",
            grantee,
            &label,
            changes,
        )
        .await?;
    }
    Ok(())
}

/// `GRANT missing <on> TO grantee` and `REVOKE extra <on> FROM grantee`, recorded under `label`.
/// Privilege names come from the fixed lists above or from the catalog's `privilege_type`,
/// which only yields keywords.
async fn grant_revoke(
    conn: &mut PgConnection,
    missing: &[String],
    extra: &[String],
    on: &str,
    grantee: &str,
    label: &str,
    changes: &mut PrivilegeChanges,
) -> Result<(), DbError> {
    grant_revoke_with(conn, "", missing, extra, on, grantee, label, changes).await
}

/// [`grant_revoke`] with a statement prefix (`ALTER DEFAULT PRIVILEGES IN SCHEMA s `).
#[allow(clippy::too_many_arguments)]
async fn grant_revoke_with(
    conn: &mut PgConnection,
    prefix: &str,
    missing: &[String],
    extra: &[String],
    on: &str,
    grantee: &str,
    label: &str,
    changes: &mut PrivilegeChanges,
) -> Result<(), DbError> {
    if !missing.is_empty() {
        let grant = format!(
            "{prefix}GRANT {} {on} TO {}",
            missing.join(", "),
            pg_ident(grantee)
        );
        exec(conn, grant).await?;
        changes
            .granted
            .push(format!("{} {label} TO {grantee}", missing.join(", ")));
    }
    if !extra.is_empty() {
        let revoke = format!(
            "{prefix}REVOKE {} {on} FROM {}",
            extra.join(", "),
            pg_ident(grantee)
        );
        exec(conn, revoke).await?;
        changes
            .revoked
            .push(format!("{} {label} FROM {grantee}", extra.join(", ")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::PrivilegeGrant;

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

    #[test]
    fn plan_maps_to_database_schema_and_table_privileges() {
        let plan = UserPlan {
            username: "app".into(),
            login_users: vec!["app".into()],
            grants: vec![
                PrivilegeGrant {
                    database: "db".into(),
                    schema: None,
                    privileges: vec![Privilege::Connect],
                },
                PrivilegeGrant {
                    database: "db".into(),
                    schema: Some("s".into()),
                    privileges: vec![Privilege::Select],
                },
                PrivilegeGrant {
                    database: "db".into(),
                    schema: Some("t".into()),
                    privileges: vec![Privilege::All],
                },
            ],
            roles: vec![],
        };
        let d = Desired::from_plan(&plan);
        assert_eq!(d.databases["db"], BTreeSet::from(["CONNECT"]));
        let s = &d.schemas["db"]["s"];
        assert_eq!(s.schema, BTreeSet::from(["USAGE"]));
        assert_eq!(s.tables, BTreeSet::from(["SELECT"]));
        assert_eq!(d.schemas["db"]["t"].tables.len(), 7);
        assert_eq!(
            d.schemas["db"]["t"].schema,
            BTreeSet::from(["CREATE", "USAGE"])
        );
    }

    #[test]
    fn diff_finds_missing_and_extra() {
        let current = BTreeSet::from(["SELECT".to_string(), "DELETE".to_string()]);
        let wanted = BTreeSet::from(["SELECT", "INSERT"]);
        let (missing, extra) = diff(Some(&current), &wanted);
        assert_eq!(missing, vec!["INSERT"]);
        assert_eq!(extra, vec!["DELETE"]);
    }
}
