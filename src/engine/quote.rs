//! Quoting of identifiers and literals per engine, and the identifier patterns checked
//! before anything is quoted. Everything that reaches SQL text goes through here: names are
//! validated *and* quoted, so a name that slipped past validation still cannot break out.

use std::sync::LazyLock;

use regex::Regex;

use super::DbError;

/// Usernames and role names (the CRD pattern): lower-case letters, digits, `_`.
static USER_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z_][a-z0-9_]*$").expect("valid regex"));
/// Database names (the CRD pattern of `PrivilegeGrant.database`).
static DATABASE_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z_][a-zA-Z0-9_$-]*$").expect("valid regex"));
/// PostgreSQL schema names (the CRD pattern of `PrivilegeGrant.schema`).
static SCHEMA_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z_][a-zA-Z0-9_$]*$").expect("valid regex"));

fn check(name: &str, pattern: &Regex, max_len: usize, what: &str) -> Result<(), DbError> {
    if name.is_empty() || name.len() > max_len {
        return Err(DbError::InvalidName {
            name: name.to_owned(),
            reason: format!("{what} must be 1 to {max_len} characters"),
        });
    }
    if !pattern.is_match(name) {
        return Err(DbError::InvalidName {
            name: name.to_owned(),
            reason: format!("{what} must match {}", pattern.as_str()),
        });
    }
    Ok(())
}

pub(crate) fn check_user_name(name: &str, max_len: usize) -> Result<(), DbError> {
    check(name, &USER_NAME, max_len, "a user or role name")
}

pub(crate) fn check_database_name(name: &str, max_len: usize) -> Result<(), DbError> {
    check(name, &DATABASE_NAME, max_len, "a database name")
}

pub(crate) fn check_schema_name(name: &str, max_len: usize) -> Result<(), DbError> {
    check(name, &SCHEMA_NAME, max_len, "a schema name")
}

/// PostgreSQL identifier: `"..."` with `"` doubled.
pub(crate) fn pg_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// PostgreSQL string literal in escape-string syntax (`E'...'`): backslashes are always
/// escapes there, so the result means the same whatever `standard_conforming_strings` is.
/// NUL cannot be stored in a PostgreSQL string and is refused.
pub(crate) fn pg_literal(value: &str) -> Result<String, DbError> {
    refuse_nul(value)?;
    Ok(format!(
        "E'{}'",
        value.replace('\\', "\\\\").replace('\'', "''")
    ))
}

/// MySQL/MariaDB identifier: `` `...` `` with `` ` `` doubled.
pub(crate) fn my_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The database-level grant pattern (the `db` in `` `db`.* ``) that means exactly `name`:
/// `_` and `%` are wildcards there (`app_db` also matches `appXdb`), so they are escaped with
/// a backslash, which the grant layer (not the lexer) interprets, inside backticks.
pub(crate) fn my_db_pattern(name: &str) -> String {
    name.replace('\\', "\\\\")
        .replace('_', "\\_")
        .replace('%', "\\%")
}

/// MySQL/MariaDB string literal. `'` is doubled; `\` is doubled unless the session runs with
/// `NO_BACKSLASH_ESCAPES`, where it is an ordinary character.
pub(crate) fn my_literal(value: &str, no_backslash_escapes: bool) -> Result<String, DbError> {
    refuse_nul(value)?;
    let body = if no_backslash_escapes {
        value.replace('\'', "''")
    } else {
        value.replace('\\', "\\\\").replace('\'', "''")
    };
    Ok(format!("'{body}'"))
}

/// `'user'@'%'`: the account form every user and clone is created with.
pub(crate) fn my_account(user: &str, no_backslash_escapes: bool) -> Result<String, DbError> {
    Ok(format!("{}@'%'", my_literal(user, no_backslash_escapes)?))
}

fn refuse_nul(value: &str) -> Result<(), DbError> {
    if value.contains('\0') {
        return Err(DbError::Other {
            detail: "a string sent to the database contains a NUL character".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_and_doubled() {
        assert_eq!(pg_ident("select"), "\"select\"");
        assert_eq!(pg_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(my_ident("order"), "`order`");
        assert_eq!(my_ident("a`b"), "`a``b`");
        assert_eq!(my_ident(&my_db_pattern("app_db%")), "`app\\_db\\%`");
    }

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(pg_literal(r"a'b\c").unwrap(), r"E'a''b\\c'");
        assert_eq!(my_literal(r"a'b\c", false).unwrap(), r"'a''b\\c'");
        assert_eq!(my_literal(r"a'b\c", true).unwrap(), r"'a''b\c'");
        assert_eq!(my_account("user", false).unwrap(), "'user'@'%'");
        assert!(pg_literal("a\0b").is_err());
        assert!(my_literal("a\0b", true).is_err());
    }

    #[test]
    fn names_are_checked_against_the_crd_patterns() {
        assert!(check_user_name("select", 63).is_ok());
        assert!(check_user_name("Select", 63).is_err());
        assert!(check_user_name("a-b", 63).is_err());
        assert!(check_user_name("a\"; drop", 63).is_err());
        assert!(check_user_name(&"a".repeat(33), 32).is_err());
        assert!(check_database_name("my-db$1", 63).is_ok());
        assert!(check_database_name("1db", 63).is_err());
        assert!(check_schema_name("my-schema", 63).is_err());
    }
}
