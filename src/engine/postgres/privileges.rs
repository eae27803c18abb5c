//! The privilege model of PostgreSQL as pure data: what a plan wants ([`wanted`]), what a
//! grantee holds (a [`Snapshot`] the catalog reader fills), and the list of changes that turns
//! one into the other ([`plan_changes`]). Four ACL kinds — database, schema, all tables in a
//! schema, future tables in a schema (the admin's default privileges) — go through the same
//! diff and the same statement rendering, so there is one loop for all of them, and the
//! decision is tested without a server.

use std::collections::{BTreeMap, BTreeSet};

use super::super::UserPlan;
use super::super::quote::pg_ident;
use crate::crd::Privilege;

pub(super) const DATABASE_PRIVILEGES: [&str; 3] = ["CONNECT", "CREATE", "TEMPORARY"];
pub(super) const SCHEMA_PRIVILEGES: [&str; 2] = ["USAGE", "CREATE"];
pub(super) const TABLE_PRIVILEGES: [&str; 7] = [
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "REFERENCES",
    "TRIGGER",
];

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

/// Which ACL a privilege lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum AclKind {
    /// `pg_database.datacl` (cluster-wide catalog).
    Database,
    /// `pg_namespace.nspacl`.
    Schema,
    /// The `relacl` of every table-like relation in the schema (`ON ALL TABLES IN SCHEMA`).
    Tables,
    /// The admin's `pg_default_acl` for tables in the schema: tables created later.
    FutureTables,
}

/// One ACL of one object. `name` is the database itself for [`AclKind::Database`], the
/// schema otherwise.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct AclObject {
    pub kind: AclKind,
    pub database: String,
    pub name: String,
}

impl AclObject {
    pub fn new(kind: AclKind, database: &str, name: &str) -> AclObject {
        AclObject {
            kind,
            database: database.to_owned(),
            name: name.to_owned(),
        }
    }

    /// `(statement prefix, ON clause)` in SQL, identifiers quoted.
    fn sql_target(&self) -> (String, String) {
        let name = pg_ident(&self.name);
        match self.kind {
            AclKind::Database => (String::new(), format!("ON DATABASE {name}")),
            AclKind::Schema => (String::new(), format!("ON SCHEMA {name}")),
            AclKind::Tables => (String::new(), format!("ON ALL TABLES IN SCHEMA {name}")),
            AclKind::FutureTables => (
                format!("ALTER DEFAULT PRIVILEGES IN SCHEMA {name} "),
                "ON TABLES".to_owned(),
            ),
        }
    }

    /// How the object reads in change summaries.
    fn label(&self) -> String {
        let (db, name) = (&self.database, &self.name);
        match self.kind {
            AclKind::Database => format!("ON DATABASE {name}"),
            AclKind::Schema => format!("ON SCHEMA {db}.{name}"),
            AclKind::Tables => format!("ON ALL TABLES IN SCHEMA {db}.{name}"),
            AclKind::FutureTables => format!("ON FUTURE TABLES IN SCHEMA {db}.{name}"),
        }
    }
}

/// What a grantee holds in one ACL. For a single ACL both sets are equal; for
/// [`AclKind::Tables`] (many tables) `everywhere` is what every table grants and
/// `somewhere` what at least one does: a privilege is granted when some table lacks it and
/// revoked when some table has it unwanted.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Held {
    pub everywhere: BTreeSet<String>,
    pub somewhere: BTreeSet<String>,
}

impl Held {
    /// The same privileges everywhere (one ACL).
    pub fn uniform(privileges: BTreeSet<String>) -> Held {
        Held {
            everywhere: privileges.clone(),
            somewhere: privileges,
        }
    }
}

/// One grantee's current privileges, as read from the catalogs.
pub(super) type Snapshot = BTreeMap<AclObject, Held>;
/// One grantee's wanted privileges. An object listed with an empty set is in the plan with
/// nothing wanted (a schema the plan names for `CREATE` only has no table privileges).
pub(super) type Wanted = BTreeMap<AclObject, BTreeSet<&'static str>>;

/// The wanted privileges of `plan`'s owner role.
pub(super) fn wanted(plan: &UserPlan) -> Wanted {
    let mut wanted = Wanted::new();
    for grant in &plan.grants {
        let db = grant.database.as_str();
        match &grant.schema {
            None => {
                let set = wanted
                    .entry(AclObject::new(AclKind::Database, db, db))
                    .or_default();
                grant
                    .privileges
                    .iter()
                    .for_each(|p| set.extend(database_privileges(*p)));
            }
            Some(schema) => {
                for kind in [AclKind::Schema, AclKind::Tables, AclKind::FutureTables] {
                    wanted.entry(AclObject::new(kind, db, schema)).or_default();
                }
                for privilege in &grant.privileges {
                    let (schema_privs, table_privs) = schema_privileges(*privilege);
                    let at = |kind| AclObject::new(kind, db, schema);
                    wanted
                        .get_mut(&at(AclKind::Schema))
                        .expect("inserted above")
                        .extend(schema_privs);
                    for kind in [AclKind::Tables, AclKind::FutureTables] {
                        wanted
                            .get_mut(&at(kind))
                            .expect("inserted above")
                            .extend(table_privs.iter().copied());
                    }
                }
                // Table privileges are useless without USAGE on their schema.
                let tables = &wanted[&AclObject::new(AclKind::Tables, db, schema)];
                if !tables.is_empty() {
                    wanted
                        .get_mut(&AclObject::new(AclKind::Schema, db, schema))
                        .expect("inserted above")
                        .insert("USAGE");
                }
            }
        }
    }
    wanted
}

fn database_privileges(privilege: Privilege) -> Vec<&'static str> {
    match privilege {
        Privilege::All => DATABASE_PRIVILEGES.to_vec(),
        Privilege::Connect => vec!["CONNECT"],
        Privilege::Create => vec!["CREATE"],
        Privilege::Temporary => vec!["TEMPORARY"],
        _ => vec![],
    }
}

/// `(schema privileges, table privileges)` a schema-scoped privilege stands for.
fn schema_privileges(privilege: Privilege) -> (Vec<&'static str>, Vec<&'static str>) {
    use Privilege::*;
    match privilege {
        All => (SCHEMA_PRIVILEGES.to_vec(), TABLE_PRIVILEGES.to_vec()),
        Usage => (vec!["USAGE"], vec![]),
        Create => (vec!["CREATE"], vec![]),
        Select => (vec![], vec!["SELECT"]),
        Insert => (vec![], vec!["INSERT"]),
        Update => (vec![], vec!["UPDATE"]),
        Delete => (vec![], vec!["DELETE"]),
        Truncate => (vec![], vec!["TRUNCATE"]),
        References => (vec![], vec!["REFERENCES"]),
        Trigger => (vec![], vec!["TRIGGER"]),
        _ => (vec![], vec![]),
    }
}

/// Databases whose objects the plan names (schemas, tables), in order.
pub(super) fn databases_with_schemas(wanted: &Wanted) -> BTreeSet<String> {
    wanted
        .keys()
        .filter(|o| o.kind != AclKind::Database)
        .map(|o| o.database.clone())
        .collect()
}

/// Schemas the plan names in `database`.
pub(super) fn schemas_in(wanted: &Wanted, database: &str) -> Vec<String> {
    wanted
        .keys()
        .filter(|o| o.kind == AclKind::Schema && o.database == database)
        .map(|o| o.name.clone())
        .collect()
}

/// The database-level part of `wanted` (a cluster-wide catalog, changed from any connection).
pub(super) fn database_level(wanted: &Wanted) -> Wanted {
    select(wanted, |o| o.kind == AclKind::Database)
}

/// The schema, table and default ACLs of `wanted` in `database` (changed from a connection
/// to that database: these catalogs are per database).
pub(super) fn in_database(wanted: &Wanted, database: &str) -> Wanted {
    select(wanted, |o| {
        o.kind != AclKind::Database && o.database == database
    })
}

fn select(wanted: &Wanted, keep: impl Fn(&AclObject) -> bool) -> Wanted {
    wanted
        .iter()
        .filter(|(o, _)| keep(o))
        .map(|(o, w)| (o.clone(), w.clone()))
        .collect()
}

/// One statement pair's worth of change on one ACL.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct AclChange {
    pub object: AclObject,
    pub grantee: String,
    pub grant: Vec<String>,
    pub revoke: Vec<String>,
}

impl AclChange {
    /// The SQL, grants before revokes. Privilege names come from the fixed lists above or the
    /// catalog's `privilege_type`, which only yields keywords; identifiers are quoted.
    pub fn statements(&self) -> Vec<String> {
        let (prefix, on) = self.object.sql_target();
        let grantee = pg_ident(&self.grantee);
        let mut out = Vec::new();
        if !self.grant.is_empty() {
            out.push(format!(
                "{prefix}GRANT {} {on} TO {grantee}",
                self.grant.join(", ")
            ));
        }
        if !self.revoke.is_empty() {
            out.push(format!(
                "{prefix}REVOKE {} {on} FROM {grantee}",
                self.revoke.join(", ")
            ));
        }
        out
    }

    /// Readable summaries without secrets: `(granted, revoked)`.
    pub fn summaries(&self) -> (Option<String>, Option<String>) {
        let label = self.object.label();
        let line = |privs: &[String], to: &str| {
            (!privs.is_empty())
                .then(|| format!("{} {label} {to} {}", privs.join(", "), self.grantee))
        };
        (line(&self.grant, "TO"), line(&self.revoke, "FROM"))
    }
}

/// The changes that make `grantee`'s privileges exactly `wanted`, given what it `held`:
/// every object in either map, wanted minus held everywhere granted, held somewhere minus
/// wanted revoked. Objects that need nothing are left out.
pub(super) fn plan_changes(grantee: &str, wanted: &Wanted, held: &Snapshot) -> Vec<AclChange> {
    let objects: BTreeSet<&AclObject> = wanted.keys().chain(held.keys()).collect();
    let nothing = Held::default();
    let none = BTreeSet::new();
    objects
        .into_iter()
        .filter_map(|object| {
            let want = wanted.get(object).unwrap_or(&none);
            let held = held.get(object).unwrap_or(&nothing);
            let grant: Vec<String> = want
                .iter()
                .filter(|p| !held.everywhere.contains(**p))
                .map(|p| p.to_string())
                .collect();
            let revoke: Vec<String> = held
                .somewhere
                .iter()
                .filter(|p| !want.contains(p.as_str()))
                .cloned()
                .collect();
            (!grant.is_empty() || !revoke.is_empty()).then(|| AclChange {
                object: object.clone(),
                grantee: grantee.to_owned(),
                grant,
                revoke,
            })
        })
        .collect()
}

/// Memberships that make `member` a member of exactly `wanted`: `(grant, revoke)`.
pub(super) fn membership_changes(
    current: &BTreeSet<String>,
    wanted: &[String],
) -> (Vec<String>, Vec<String>) {
    let grant = wanted
        .iter()
        .filter(|r| !current.contains(*r))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let revoke = current
        .iter()
        .filter(|r| !wanted.contains(r))
        .cloned()
        .collect();
    (grant, revoke)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::PrivilegeGrant;

    fn plan(grants: Vec<PrivilegeGrant>) -> UserPlan {
        UserPlan {
            username: "app".into(),
            login_users: vec!["app".into()],
            grants,
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

    fn obj(kind: AclKind, database: &str, name: &str) -> AclObject {
        AclObject::new(kind, database, name)
    }

    fn set(privs: &[&str]) -> BTreeSet<String> {
        privs.iter().map(|p| p.to_string()).collect()
    }

    fn strings(privs: &[&str]) -> Vec<String> {
        privs.iter().map(|p| p.to_string()).collect()
    }

    /// (grant, revoke) per object of the plan for `grantee` "g".
    fn diff(wanted: &Wanted, held: &Snapshot) -> Vec<(AclObject, Vec<String>, Vec<String>)> {
        plan_changes("g", wanted, held)
            .into_iter()
            .map(|c| (c.object, c.grant, c.revoke))
            .collect()
    }

    #[test]
    fn plan_maps_to_database_schema_and_table_privileges() {
        let w = wanted(&plan(vec![
            grant("db", None, &[Privilege::Connect]),
            grant("db", Some("s"), &[Privilege::Select]),
            grant("db", Some("t"), &[Privilege::All]),
        ]));
        let at = |kind, name| &w[&obj(kind, "db", name)];
        assert_eq!(*at(AclKind::Database, "db"), BTreeSet::from(["CONNECT"]));
        assert_eq!(*at(AclKind::Schema, "s"), BTreeSet::from(["USAGE"]));
        assert_eq!(*at(AclKind::Tables, "s"), BTreeSet::from(["SELECT"]));
        assert_eq!(*at(AclKind::FutureTables, "s"), BTreeSet::from(["SELECT"]));
        assert_eq!(at(AclKind::Tables, "t").len(), 7);
        assert_eq!(
            *at(AclKind::Schema, "t"),
            BTreeSet::from(["CREATE", "USAGE"])
        );
    }

    #[test]
    fn schema_create_only_wants_no_usage_and_no_tables() {
        let w = wanted(&plan(vec![grant("db", Some("s"), &[Privilege::Create])]));
        assert_eq!(
            w[&obj(AclKind::Schema, "db", "s")],
            BTreeSet::from(["CREATE"])
        );
        assert!(w[&obj(AclKind::Tables, "db", "s")].is_empty());
        assert!(w[&obj(AclKind::FutureTables, "db", "s")].is_empty());
        assert_eq!(schemas_in(&w, "db"), vec!["s".to_string()]);
    }

    #[test]
    fn all_on_a_database_is_its_three_privileges() {
        let w = wanted(&plan(vec![grant("db", None, &[Privilege::All])]));
        assert_eq!(
            w[&obj(AclKind::Database, "db", "db")],
            BTreeSet::from(DATABASE_PRIVILEGES)
        );
        assert!(databases_with_schemas(&w).is_empty());
    }

    #[test]
    fn repeated_grants_on_one_schema_merge() {
        let w = wanted(&plan(vec![
            grant("db", Some("s"), &[Privilege::Select]),
            grant("db", Some("s"), &[Privilege::Insert]),
        ]));
        assert_eq!(
            w[&obj(AclKind::Tables, "db", "s")],
            BTreeSet::from(["INSERT", "SELECT"])
        );
    }

    #[test]
    fn nothing_held_grants_everything_wanted() {
        let w = wanted(&plan(vec![grant("db", Some("s"), &[Privilege::Select])]));
        assert_eq!(
            diff(&w, &Snapshot::new()),
            vec![
                (obj(AclKind::Schema, "db", "s"), strings(&["USAGE"]), vec![]),
                (
                    obj(AclKind::Tables, "db", "s"),
                    strings(&["SELECT"]),
                    vec![]
                ),
                (
                    obj(AclKind::FutureTables, "db", "s"),
                    strings(&["SELECT"]),
                    vec![]
                ),
            ]
        );
    }

    #[test]
    fn exactly_held_changes_nothing() {
        let w = wanted(&plan(vec![
            grant("db", None, &[Privilege::Connect]),
            grant("db", Some("s"), &[Privilege::Select]),
        ]));
        let held: Snapshot = w
            .iter()
            .map(|(o, p)| {
                (
                    o.clone(),
                    Held::uniform(p.iter().map(|s| s.to_string()).collect()),
                )
            })
            .collect();
        assert!(plan_changes("g", &w, &held).is_empty());
    }

    #[test]
    fn extra_privileges_are_revoked_missing_granted() {
        let w = wanted(&plan(vec![grant("db", None, &[Privilege::Connect])]));
        let held = Snapshot::from([(
            obj(AclKind::Database, "db", "db"),
            Held::uniform(set(&["CREATE", "TEMPORARY"])),
        )]);
        assert_eq!(
            diff(&w, &held),
            vec![(
                obj(AclKind::Database, "db", "db"),
                strings(&["CONNECT"]),
                strings(&["CREATE", "TEMPORARY"])
            )]
        );
    }

    #[test]
    fn objects_left_out_of_the_plan_lose_everything() {
        let held = Snapshot::from([
            (
                obj(AclKind::Schema, "old", "s"),
                Held::uniform(set(&["USAGE"])),
            ),
            (
                obj(AclKind::FutureTables, "old", "s"),
                Held::uniform(set(&["SELECT"])),
            ),
        ]);
        assert_eq!(
            diff(&Wanted::new(), &held),
            vec![
                (
                    obj(AclKind::Schema, "old", "s"),
                    vec![],
                    strings(&["USAGE"])
                ),
                (
                    obj(AclKind::FutureTables, "old", "s"),
                    vec![],
                    strings(&["SELECT"])
                ),
            ]
        );
    }

    #[test]
    fn a_table_lacking_a_privilege_regrants_it_on_all_tables() {
        let w = Wanted::from([(obj(AclKind::Tables, "db", "s"), BTreeSet::from(["SELECT"]))]);
        // Some tables grant SELECT, a new one does not: SELECT is not held everywhere.
        let held = Snapshot::from([(
            obj(AclKind::Tables, "db", "s"),
            Held {
                everywhere: set(&[]),
                somewhere: set(&["SELECT"]),
            },
        )]);
        assert_eq!(
            diff(&w, &held),
            vec![(
                obj(AclKind::Tables, "db", "s"),
                strings(&["SELECT"]),
                vec![]
            )]
        );
    }

    #[test]
    fn an_unwanted_privilege_on_one_table_is_revoked_from_all() {
        let w = Wanted::from([(obj(AclKind::Tables, "db", "s"), BTreeSet::from(["SELECT"]))]);
        let held = Snapshot::from([(
            obj(AclKind::Tables, "db", "s"),
            Held {
                everywhere: set(&["SELECT"]),
                somewhere: set(&["DELETE", "SELECT"]),
            },
        )]);
        assert_eq!(
            diff(&w, &held),
            vec![(
                obj(AclKind::Tables, "db", "s"),
                vec![],
                strings(&["DELETE"])
            )]
        );
    }

    #[test]
    fn statements_quote_identifiers_and_use_the_kind_syntax() {
        let change = |kind, grant: &[&str], revoke: &[&str]| AclChange {
            object: obj(kind, "db", "my schema"),
            grantee: "app_owner".into(),
            grant: strings(grant),
            revoke: strings(revoke),
        };
        assert_eq!(
            change(AclKind::Schema, &["USAGE"], &["CREATE"]).statements(),
            vec![
                r#"GRANT USAGE ON SCHEMA "my schema" TO "app_owner""#,
                r#"REVOKE CREATE ON SCHEMA "my schema" FROM "app_owner""#,
            ]
        );
        assert_eq!(
            change(AclKind::Tables, &["SELECT", "INSERT"], &[]).statements(),
            vec![r#"GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA "my schema" TO "app_owner""#]
        );
        assert_eq!(
            change(AclKind::FutureTables, &[], &["DELETE"]).statements(),
            vec![
                r#"ALTER DEFAULT PRIVILEGES IN SCHEMA "my schema" REVOKE DELETE ON TABLES FROM "app_owner""#
            ]
        );
        assert_eq!(
            change(AclKind::Database, &["CONNECT"], &[]).statements(),
            vec![r#"GRANT CONNECT ON DATABASE "my schema" TO "app_owner""#]
        );
    }

    #[test]
    fn summaries_name_database_and_schema_without_quotes() {
        let c = AclChange {
            object: obj(AclKind::FutureTables, "db", "s"),
            grantee: "app_owner".into(),
            grant: strings(&["SELECT"]),
            revoke: strings(&["INSERT"]),
        };
        assert_eq!(
            c.summaries(),
            (
                Some("SELECT ON FUTURE TABLES IN SCHEMA db.s TO app_owner".into()),
                Some("INSERT ON FUTURE TABLES IN SCHEMA db.s FROM app_owner".into())
            )
        );
    }

    #[test]
    fn wanted_splits_into_database_level_and_per_database_parts() {
        let w = wanted(&plan(vec![
            grant("a", None, &[Privilege::Connect]),
            grant("a", Some("s"), &[Privilege::Usage]),
            grant("b", Some("s"), &[Privilege::Usage]),
        ]));
        assert_eq!(
            database_level(&w).keys().collect::<Vec<_>>(),
            vec![&obj(AclKind::Database, "a", "a")]
        );
        let in_a = in_database(&w, "a");
        assert_eq!(in_a.len(), 3, "schema, tables, future tables: {in_a:?}");
        assert!(
            in_a.keys()
                .all(|o| o.database == "a" && o.kind != AclKind::Database)
        );
        assert_eq!(
            databases_with_schemas(&w),
            BTreeSet::from(["a".to_string(), "b".to_string()])
        );
    }

    #[test]
    fn memberships_are_made_exact() {
        let current = set(&["old", "keep"]);
        let (grant, revoke) =
            membership_changes(&current, &["keep".into(), "new".into(), "new".into()]);
        assert_eq!(grant, strings(&["new"]));
        assert_eq!(revoke, strings(&["old"]));
    }

    #[test]
    fn privileges_apply_to_their_scope() {
        let table = [
            (Privilege::Connect, false, true),
            (Privilege::Connect, true, false),
            (Privilege::Select, true, true),
            (Privilege::Select, false, false),
            (Privilege::Create, false, true),
            (Privilege::Create, true, true),
            (Privilege::Execute, true, false),
        ];
        for (privilege, in_schema, applies) in table {
            assert_eq!(
                privilege_applies(privilege, in_schema),
                applies,
                "{privilege:?} in_schema={in_schema}"
            );
        }
    }
}
