//! Reading one grantee's privileges into a [`Snapshot`] and executing planned changes.
//!
//! Reads scale with what the grantee holds, not with the size of a shared object: the
//! objects a role's ACL entries sit on are found through `pg_shdepend` (indexed by role), and
//! each such ACL is cut down to the grantee's own items before `aclexplode` expands it. A
//! schema shared by 5,000 credentials has 5,000 ACL items; expanding all of them for every
//! credential made provisioning quadratic.
//!
//! Writes run in one transaction per database under a transaction-scoped advisory lock:
//! concurrent GRANTs on one object rewrite the same catalog tuple, and the loser fails with
//! "tuple concurrently updated". The lock makes them wait for each other instead, across
//! connections and controller replicas alike.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection, Executor};

use super::super::PrivilegeChanges;
use super::privileges::{AclChange, AclKind, AclObject, Held, Snapshot, Wanted};
use super::{DbError, map_error};

/// Relation kinds `ON ALL TABLES IN SCHEMA` covers: tables, partitioned tables, views,
/// materialized views, foreign tables.
const TABLE_KINDS: &str = "('r','p','v','m','f')";

/// The ACL items of role `$1` in `acl`, as an array `aclexplode` can expand. The text form
/// of an item is `grantee=privileges/grantor`; rdscred's role names are `[a-z0-9_]`, which
/// PostgreSQL prints unquoted.
macro_rules! own_items {
    ($acl:literal) => {
        concat!(
            "aclexplode(ARRAY(SELECT i FROM unnest(",
            $acl,
            ") i WHERE split_part(i::text, '=', 1) = $1))"
        )
    };
}

/// `pg_shdepend` rows saying that an ACL of the object (`s.classid`, `s.objid`) in the
/// connected database (or, with `s.dbid = 0`, a shared object) names role `$1`.
const MENTIONS: &str = "s.refclassid = 'pg_authid'::regclass AND s.deptype = 'a' \
     AND s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = $1)";

/// Key of the advisory lock serialising ACL writes (per database: PostgreSQL scopes advisory
/// locks to the connected database). "rdscred\0" as a big-endian integer.
const ACL_WRITE_LOCK: i64 = 0x7264_7363_7265_6400;

async fn pairs(
    conn: &mut PgConnection,
    sql: String,
    grantee: &str,
) -> Result<Vec<(String, String)>, DbError> {
    sqlx::query_as(AssertSqlSafe(sql))
        .bind(grantee)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| map_error(e, "", &[]))
}

fn uniform(
    kind: AclKind,
    database: Option<&str>,
    rows: Vec<(String, String)>,
    snapshot: &mut Snapshot,
) {
    let mut grouped: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, privilege) in rows {
        grouped.entry(name).or_default().insert(privilege);
    }
    for (name, privileges) in grouped {
        let db = database.unwrap_or(&name).to_owned();
        snapshot.insert(AclObject::new(kind, &db, &name), Held::uniform(privileges));
    }
}

/// The grantee's database-level privileges (databases it does not own), cluster-wide.
pub(super) async fn read_database_acls(
    conn: &mut PgConnection,
    grantee: &str,
) -> Result<Snapshot, DbError> {
    let sql = format!(
        "SELECT d.datname::text, a.privilege_type FROM pg_shdepend s \
         JOIN pg_database d ON s.classid = 'pg_database'::regclass AND d.oid = s.objid \
         CROSS JOIN LATERAL {} a \
         WHERE s.dbid = 0 AND {MENTIONS} AND d.datdba <> a.grantee",
        own_items!("d.datacl")
    );
    let mut snapshot = Snapshot::new();
    uniform(
        AclKind::Database,
        None,
        pairs(conn, sql, grantee).await?,
        &mut snapshot,
    );
    Ok(snapshot)
}

/// The grantee's schema, table and future-table (the connected admin's default privileges)
/// privileges in the connected `database`. `wanted` names the schemas whose tables must all
/// be checked: a table that does not mention the grantee lacks every wanted privilege.
pub(super) async fn read_object_acls(
    conn: &mut PgConnection,
    database: &str,
    grantee: &str,
    wanted: &Wanted,
) -> Result<Snapshot, DbError> {
    let in_this_db = "s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())";
    let mut snapshot = Snapshot::new();
    let schemas = format!(
        "SELECT n.nspname::text, a.privilege_type FROM pg_shdepend s \
         JOIN pg_namespace n ON s.classid = 'pg_namespace'::regclass AND n.oid = s.objid \
         CROSS JOIN LATERAL {} a \
         WHERE {in_this_db} AND {MENTIONS} AND n.nspowner <> a.grantee",
        own_items!("n.nspacl")
    );
    let rows = pairs(conn, schemas, grantee).await?;
    uniform(AclKind::Schema, Some(database), rows, &mut snapshot);
    let defaults = format!(
        "SELECT n.nspname::text, a.privilege_type FROM pg_shdepend s \
         JOIN pg_default_acl d ON s.classid = 'pg_default_acl'::regclass AND d.oid = s.objid \
         JOIN pg_namespace n ON n.oid = d.defaclnamespace \
         CROSS JOIN LATERAL {} a \
         WHERE {in_this_db} AND {MENTIONS} AND d.defaclobjtype = 'r' \
         AND d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = current_user)",
        own_items!("d.defaclacl")
    );
    let rows = pairs(conn, defaults, grantee).await?;
    uniform(AclKind::FutureTables, Some(database), rows, &mut snapshot);
    read_table_acls(conn, database, grantee, wanted, in_this_db, &mut snapshot).await?;
    Ok(snapshot)
}

/// Per schema: which privileges the grantee holds on some table and which on every table.
async fn read_table_acls(
    conn: &mut PgConnection,
    database: &str,
    grantee: &str,
    wanted: &Wanted,
    in_this_db: &str,
    snapshot: &mut Snapshot,
) -> Result<(), DbError> {
    let held_sql = format!(
        "SELECT n.nspname::text, a.privilege_type, count(DISTINCT c.oid) FROM pg_shdepend s \
         JOIN pg_class c ON s.classid = 'pg_class'::regclass AND c.oid = s.objid AND s.objsubid = 0 \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         CROSS JOIN LATERAL {} a \
         WHERE {in_this_db} AND {MENTIONS} AND c.relkind IN {TABLE_KINDS} AND c.relowner <> a.grantee \
         GROUP BY 1, 2",
        own_items!("c.relacl")
    );
    let held: Vec<(String, String, i64)> = sqlx::query_as(AssertSqlSafe(held_sql))
        .bind(grantee)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| map_error(e, "", &[]))?;
    let wanted_schemas: Vec<String> = wanted
        .keys()
        .filter(|o| o.kind == AclKind::Tables)
        .map(|o| o.name.clone())
        .collect();
    let totals: Vec<(String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT n.nspname::text, count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = ANY($2) AND c.relkind IN {TABLE_KINDS} \
         AND c.relowner <> coalesce((SELECT oid FROM pg_roles WHERE rolname = $1), 0) GROUP BY 1"
    )))
    .bind(grantee)
    .bind(&wanted_schemas)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| map_error(e, "", &[]))?;
    let totals: BTreeMap<String, i64> = totals.into_iter().collect();
    let mut tables: BTreeMap<String, Held> = BTreeMap::new();
    for schema in &wanted_schemas {
        if !totals.contains_key(schema) {
            // No tables: every wanted privilege is (vacuously) held on all of them.
            let want = &wanted[&AclObject::new(AclKind::Tables, database, schema)];
            tables.entry(schema.clone()).or_default().everywhere =
                want.iter().map(|p| p.to_string()).collect();
        }
    }
    for (schema, privilege, count) in held {
        let entry = tables.entry(schema.clone()).or_default();
        if totals.get(&schema) == Some(&count) {
            entry.everywhere.insert(privilege.clone());
        }
        entry.somewhere.insert(privilege);
    }
    for (schema, held) in tables {
        snapshot.insert(AclObject::new(AclKind::Tables, database, &schema), held);
    }
    Ok(())
}

/// Runs `changes` on `conn` in one transaction under the ACL write lock; records what changed.
pub(super) async fn execute(
    conn: &mut PgConnection,
    changes: &[AclChange],
    record: &mut PrivilegeChanges,
) -> Result<(), DbError> {
    if changes.is_empty() {
        return Ok(());
    }
    let err = |e| map_error(e, "", &[]);
    let mut tx = conn.begin().await.map_err(err)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(ACL_WRITE_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
    for change in changes {
        for sql in change.statements() {
            tx.execute(AssertSqlSafe(sql)).await.map_err(err)?;
        }
    }
    tx.commit().await.map_err(err)?;
    for change in changes {
        let (granted, revoked) = change.summaries();
        record.granted.extend(granted);
        record.revoked.extend(revoked);
    }
    Ok(())
}

/// The first of `names` that `sql` (a catalog query selecting names `= ANY($1)`) does not
/// return, if any.
pub(super) async fn first_missing(
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

/// [`DbError::InvalidGrant`] naming the first of `schemas` missing from the connected database.
pub(super) async fn check_schemas_exist(
    conn: &mut PgConnection,
    database: &str,
    schemas: &[String],
) -> Result<(), DbError> {
    let sql = "SELECT nspname::text FROM pg_namespace WHERE nspname = ANY($1)";
    match first_missing(conn, sql, schemas).await? {
        Some(missing) => Err(DbError::InvalidGrant {
            detail: format!("schema {missing} does not exist in database {database}"),
        }),
        None => Ok(()),
    }
}
