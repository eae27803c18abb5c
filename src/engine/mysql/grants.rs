//! MySQL/MariaDB grants as pure data: `SHOW GRANTS` parsed into [`Grants`], the plan's
//! wanted database-level privileges ([`wanted_grants`]), and the changes that turn one into
//! the other ([`plan_user`]), rendered to SQL by [`GrantChange::statements`]. Each account's
//! grants are its own rows (`mysql.db`, `mysql.roles_mapping`), so there is no shared object
//! to contend on, unlike a PostgreSQL schema ACL.

use std::collections::{BTreeMap, BTreeSet};

use super::super::UserPlan;
use super::super::quote::{my_db_pattern, my_ident};
use super::privilege_name;

pub(super) const ALL: &str = "ALL PRIVILEGES";
pub(super) const GRANT_OPTION: &str = "GRANT OPTION";

/// One account's grants as `SHOW GRANTS` prints them. Table- and column-level grants are
/// outside rdscred's model and left alone.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Grants {
    /// Privileges `ON *.*` (`USAGE` means none).
    pub global: BTreeSet<String>,
    /// Privileges `ON db.*` per database pattern exactly as granted (`app\_db` is the
    /// database `app_db`; a bare `app_db` is a different grant that also matches `appXdb`);
    /// `ALL PRIVILEGES` and `GRANT OPTION` as tokens.
    pub databases: BTreeMap<String, BTreeSet<String>>,
    pub roles: BTreeSet<String>,
}

pub(super) fn parse_grants(lines: &[String]) -> Grants {
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

/// The plan's wanted database-level privileges: exact grant pattern → privilege names.
pub(super) fn wanted_grants(plan: &UserPlan) -> BTreeMap<String, BTreeSet<&'static str>> {
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

/// One change to one account's grants.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum GrantChange {
    /// Global privileges (`ON *.*`): rdscred grants none, so any are revoked.
    RevokeGlobal(Vec<String>),
    /// A database-level grant `pattern` made exactly the plan's. `revoke_all` first: `ALL`
    /// cannot be partly revoked by name, so it is revoked and the wanted ones granted.
    Database {
        pattern: String,
        revoke_all: bool,
        grant: Vec<String>,
        revoke: Vec<String>,
    },
    GrantRole(String),
    RevokeRole(String),
}

impl GrantChange {
    /// SQL for `account` (quoted `'user'@'%'`).
    pub fn statements(&self, account: &str) -> Vec<String> {
        match self {
            GrantChange::RevokeGlobal(privs) => {
                vec![format!("REVOKE {} ON *.* FROM {account}", privs.join(", "))]
            }
            GrantChange::Database {
                pattern,
                revoke_all,
                grant,
                revoke,
            } => {
                let on = format!("ON {}.*", my_ident(pattern));
                let mut out = Vec::new();
                if *revoke_all {
                    out.push(format!("REVOKE ALL PRIVILEGES {on} FROM {account}"));
                }
                if !grant.is_empty() {
                    out.push(format!("GRANT {} {on} TO {account}", grant.join(", ")));
                }
                if !revoke.is_empty() {
                    out.push(format!("REVOKE {} {on} FROM {account}", revoke.join(", ")));
                }
                out
            }
            GrantChange::GrantRole(role) => vec![format!("GRANT {} TO {account}", my_ident(role))],
            GrantChange::RevokeRole(role) => {
                vec![format!("REVOKE {} FROM {account}", my_ident(role))]
            }
        }
    }

    /// Readable summaries without secrets: `(granted, revoked)`.
    pub fn summaries(&self, user: &str) -> (Vec<String>, Vec<String>) {
        match self {
            GrantChange::RevokeGlobal(privs) => (
                vec![],
                vec![format!("{} ON *.* FROM {user}", privs.join(", "))],
            ),
            GrantChange::Database {
                pattern,
                revoke_all,
                grant,
                revoke,
            } => {
                let target = pattern_label(pattern);
                let mut revoked = Vec::new();
                if *revoke_all {
                    revoked.push(format!("{ALL} ON {target} FROM {user}"));
                }
                if !revoke.is_empty() {
                    revoked.push(format!("{} ON {target} FROM {user}", revoke.join(", ")));
                }
                let granted = (!grant.is_empty())
                    .then(|| format!("{} ON {target} TO {user}", grant.join(", ")))
                    .into_iter()
                    .collect();
                (granted, revoked)
            }
            GrantChange::GrantRole(role) => (vec![format!("ROLE {role} TO {user}")], vec![]),
            GrantChange::RevokeRole(role) => (vec![], vec![format!("ROLE {role} FROM {user}")]),
        }
    }
}

/// The changes that make an account's grants exactly the plan's: global privileges revoked,
/// every database pattern held or wanted made exactly `wanted`, roles made exactly `roles`.
pub(super) fn plan_user(
    current: &Grants,
    wanted: &BTreeMap<String, BTreeSet<&'static str>>,
    roles: &[String],
) -> Vec<GrantChange> {
    let mut changes = Vec::new();
    let global: Vec<String> = current
        .global
        .iter()
        .filter(|p| *p != "USAGE")
        .cloned()
        .collect();
    if !global.is_empty() {
        changes.push(GrantChange::RevokeGlobal(global));
    }
    let none = BTreeSet::new();
    let patterns: BTreeSet<&String> = current.databases.keys().chain(wanted.keys()).collect();
    for pattern in patterns {
        let held = current.databases.get(pattern).cloned().unwrap_or_default();
        let change = plan_database(pattern, held, wanted.get(pattern).unwrap_or(&none));
        changes.extend(change);
    }
    let wanted_roles: BTreeSet<&String> = roles.iter().collect();
    changes.extend(
        wanted_roles
            .iter()
            .filter(|r| !current.roles.contains(**r))
            .map(|r| GrantChange::GrantRole((*r).clone())),
    );
    changes.extend(
        current
            .roles
            .iter()
            .filter(|r| !wanted_roles.contains(r))
            .map(|r| GrantChange::RevokeRole(r.clone())),
    );
    changes
}

/// One database-level grant `pattern` made exactly `want`; `None` when it already is.
fn plan_database(
    pattern: &str,
    mut held: BTreeSet<String>,
    want: &BTreeSet<&'static str>,
) -> Option<GrantChange> {
    let revoke_all = held.contains(ALL) && !want.contains(ALL);
    if revoke_all {
        held.remove(ALL);
    }
    let grant: Vec<String> = want
        .iter()
        .filter(|p| !held.contains(**p))
        .map(|p| p.to_string())
        .collect();
    // With ALL wanted, the individual privileges it includes are not extras.
    let revoke: Vec<String> = held
        .iter()
        .filter(|p| !want.contains(p.as_str()) && (!want.contains(ALL) || *p == GRANT_OPTION))
        .cloned()
        .collect();
    (revoke_all || !grant.is_empty() || !revoke.is_empty()).then(|| GrantChange::Database {
        pattern: pattern.to_owned(),
        revoke_all,
        grant,
        revoke,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Privilege;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
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

    fn strings(v: &[&str]) -> Vec<String> {
        lines(v)
    }

    fn held(global: &[&str], databases: &[(&str, &[&str])], roles: &[&str]) -> Grants {
        Grants {
            global: global.iter().map(|p| p.to_string()).collect(),
            databases: databases
                .iter()
                .map(|(d, p)| (d.to_string(), p.iter().map(|p| p.to_string()).collect()))
                .collect(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        }
    }

    fn want(databases: &[(&str, &[&'static str])]) -> BTreeMap<String, BTreeSet<&'static str>> {
        databases
            .iter()
            .map(|(d, p)| (d.to_string(), p.iter().copied().collect()))
            .collect()
    }

    #[test]
    fn exact_grants_plan_nothing() {
        let current = held(&["USAGE"], &[("app", &["SELECT"])], &["r"]);
        assert!(plan_user(&current, &want(&[("app", &["SELECT"])]), &["r".into()]).is_empty());
    }

    #[test]
    fn global_privileges_are_revoked_usage_is_not() {
        let current = held(&["USAGE", "PROCESS"], &[], &[]);
        assert_eq!(
            plan_user(&current, &want(&[]), &[]),
            vec![GrantChange::RevokeGlobal(strings(&["PROCESS"]))]
        );
    }

    #[test]
    fn all_held_but_not_wanted_is_revoked_then_wanted_granted() {
        let current = held(&[], &[("app", &[ALL])], &[]);
        assert_eq!(
            plan_user(&current, &want(&[("app", &["SELECT"])]), &[]),
            vec![GrantChange::Database {
                pattern: "app".into(),
                revoke_all: true,
                grant: strings(&["SELECT"]),
                revoke: vec![],
            }]
        );
    }

    #[test]
    fn all_wanted_keeps_included_privileges_but_not_grant_option() {
        let current = held(&[], &[("app", &["SELECT", GRANT_OPTION])], &[]);
        assert_eq!(
            plan_user(&current, &want(&[("app", &[ALL])]), &[]),
            vec![GrantChange::Database {
                pattern: "app".into(),
                revoke_all: false,
                grant: strings(&[ALL]),
                revoke: strings(&[GRANT_OPTION]),
            }]
        );
    }

    #[test]
    fn databases_and_roles_left_out_are_revoked() {
        let current = held(&[], &[("old", &["SELECT"])], &["gone"]);
        let planned = plan_user(&current, &want(&[]), &["new".into()]);
        assert_eq!(
            planned,
            vec![
                GrantChange::Database {
                    pattern: "old".into(),
                    revoke_all: false,
                    grant: vec![],
                    revoke: strings(&["SELECT"]),
                },
                GrantChange::GrantRole("new".into()),
                GrantChange::RevokeRole("gone".into()),
            ]
        );
        assert_eq!(
            planned[0].statements("'u'@'%'"),
            vec!["REVOKE SELECT ON `old`.* FROM 'u'@'%'"]
        );
        assert_eq!(
            planned[0].summaries("u"),
            (vec![], strings(&["SELECT ON old.* FROM u"]))
        );
        assert_eq!(
            planned[1].statements("'u'@'%'"),
            vec!["GRANT `new` TO 'u'@'%'"]
        );
    }
}
