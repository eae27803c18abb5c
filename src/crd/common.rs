//! Types shared by both kinds: engines, privileges, rotation and drift settings.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Database engine, named like RDS's `Engine` field.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EngineKind {
    Postgres,
    Mysql,
    Mariadb,
    AuroraPostgresql,
    AuroraMysql,
}

/// The wire protocol / SQL dialect family of an engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EngineFamily {
    Postgres,
    Mysql,
}

impl EngineKind {
    pub fn family(self) -> EngineFamily {
        match self {
            EngineKind::Postgres | EngineKind::AuroraPostgresql => EngineFamily::Postgres,
            EngineKind::Mysql | EngineKind::Mariadb | EngineKind::AuroraMysql => {
                EngineFamily::Mysql
            }
        }
    }

    /// The value RDS writes into the `engine` key of a credential secret.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Postgres => "postgres",
            EngineKind::Mysql => "mysql",
            EngineKind::Mariadb => "mariadb",
            EngineKind::AuroraPostgresql => "aurora-postgresql",
            EngineKind::AuroraMysql => "aurora-mysql",
        }
    }

    /// Parses RDS's `Engine` values (`postgres`, `aurora-postgresql`, `mysql`, `mariadb`,
    /// `aurora-mysql`, and the legacy `aurora` = Aurora MySQL 5.6).
    pub fn from_rds(engine: &str) -> Option<Self> {
        match engine {
            "postgres" => Some(EngineKind::Postgres),
            "aurora-postgresql" => Some(EngineKind::AuroraPostgresql),
            "mysql" => Some(EngineKind::Mysql),
            "mariadb" => Some(EngineKind::Mariadb),
            "aurora-mysql" | "aurora" => Some(EngineKind::AuroraMysql),
            _ => None,
        }
    }

    /// Longest username the engine accepts (PostgreSQL NAMEDATALEN-1; MySQL/MariaDB 32 since 5.7
    /// and 10.x).
    pub fn max_username_len(self) -> usize {
        match self.family() {
            EngineFamily::Postgres => 63,
            EngineFamily::Mysql => 32,
        }
    }
}

/// Privileges from a fixed allowlist. Which ones apply where depends on the grant's scope
/// (database-wide or one schema) and the engine; the engine module rejects misplaced ones.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Privilege {
    /// Every privilege the scope has.
    All,
    // Data.
    Select,
    Insert,
    Update,
    Delete,
    Truncate,
    References,
    Trigger,
    // Objects.
    Create,
    /// PostgreSQL: CONNECT on the database.
    Connect,
    /// PostgreSQL: TEMPORARY on the database; MySQL: CREATE TEMPORARY TABLES.
    Temporary,
    /// PostgreSQL: USAGE on the schema.
    Usage,
    /// MySQL/MariaDB only.
    Drop,
    Index,
    Alter,
    Execute,
    CreateView,
    ShowView,
    CreateRoutine,
    AlterRoutine,
    Event,
    LockTables,
}

impl std::fmt::Display for Privilege {
    /// The spec's own spelling (`CONNECT`, `CREATE_VIEW`), so messages quote what the user wrote.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(s)) => f.write_str(&s),
            _ => write!(f, "{self:?}"),
        }
    }
}

/// One grant: a database (and on PostgreSQL optionally one schema in it) and privileges.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrivilegeGrant {
    /// Database name (schema on MySQL/MariaDB).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-zA-Z_][a-zA-Z0-9_$-]*$")
    )]
    pub database: String,
    /// PostgreSQL schema: privileges apply to the schema and to all tables in it (current and
    /// future). Absent: database-level privileges.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-zA-Z_][a-zA-Z0-9_$]*$")
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Up to 22, the size of the allowlist.
    #[schemars(length(min = 1, max = 22))]
    #[x_kube(validation = Rule::new("self.all(p, p != 'ALL') || self.size() == 1").message("ALL cannot be combined with other privileges"))]
    pub privileges: Vec<Privilege>,
}

/// Rotation strategy, named like the Secrets Manager rotation templates.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum RotationStrategy {
    /// Two users (`name` and `name_clone`); each rotation re-passwords the one not current.
    #[default]
    AlternatingUsers,
    /// One user; a short window in which clients holding the old password fail to log in.
    SingleUser,
}

/// Who performs rotations.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Rotator {
    /// rdscred itself (no Lambda, no VPC endpoint).
    #[default]
    Controller,
    /// Native Secrets Manager rotation with the given Lambda; rdscred follows AWSCURRENT.
    Lambda,
}

/// When to rotate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.automaticallyAfterDays) != has(self.scheduleExpression)")
    .message("set exactly one of automaticallyAfterDays or scheduleExpression"))]
// Secrets Manager's own limits, checked at admission as far as a regex can; the controller
// checks the rest (e.g. that cron() fires at most every 4 hours) and reports InvalidSchedule.
#[x_kube(validation = Rule::new(r"!has(self.scheduleExpression) || !self.scheduleExpression.startsWith('rate(') || self.scheduleExpression.matches('^rate\\(\\s*(([4-9]|1[0-9]|2[0-3])\\s+hours?|([1-9][0-9]{0,2})\\s+days?)\\s*\\)$')")
    .message("rate() must be 4-23 hours or 1-999 days (Secrets Manager rotates at most every 4 hours)"))]
#[x_kube(validation = Rule::new(r"!has(self.scheduleExpression) || !self.scheduleExpression.startsWith('cron(') || self.scheduleExpression.matches('^cron\\(0 \\S+ \\S+ \\S+ \\S+ \\*\\)$')")
    .message("cron() takes 6 fields in UTC with minutes 0 and year '*': cron(0 hours day-of-month month day-of-week *)"))]
#[x_kube(validation = Rule::new(r"!has(self.scheduleExpression) || !self.scheduleExpression.startsWith('cron(') || self.scheduleExpression.matches('^cron\\(\\S+ \\S+ (\\? \\S+ [^?\\s]+|[^?\\s]+ \\S+ \\?) \\S+\\)$')")
    .message("cron(): exactly one of day-of-month and day-of-week must be '?'"))]
pub struct RotationSchedule {
    #[schemars(range(min = 1, max = 1000), extend("format" = "int32"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automatically_after_days: Option<u32>,
    /// `rate(N hours|days)` or `cron(min hour dom month dow year)` in UTC, with the rules
    /// Secrets Manager applies (minute 0 where hours are given, year `*`, at most every 4 hours).
    /// At most 256 characters, Secrets Manager's limit.
    #[schemars(
        length(max = 256),
        regex(pattern = r"^(rate\(\s*\d+\s+(hour|hours|day|days)\s*\)|cron\([^()]+\))$")
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_expression: Option<String>,
    /// Length of the rotation window, e.g. `3h` (Secrets Manager's `Duration`, 1h–24h).
    #[schemars(length(max = 3), regex(pattern = r"^([1-9]|1\d|2[0-4])h$"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

/// Password generation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PasswordSpec {
    /// Length, 16–128 (default 32).
    #[schemars(range(min = 16, max = 128), extend("format" = "int32"))]
    #[serde(default = "default_password_length")]
    pub length: u32,
    /// Characters never used. Default: none beyond the always-unsafe set of the engine.
    #[schemars(length(max = 94))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_characters: Option<String>,
    /// Only letters and digits (the default: safe in URLs, DSNs and .pgpass without quoting).
    #[serde(default = "default_true")]
    pub alphanumeric_only: bool,
}

fn default_password_length() -> u32 {
    32
}
fn default_true() -> bool {
    true
}

impl Default for PasswordSpec {
    fn default() -> Self {
        PasswordSpec {
            length: default_password_length(),
            exclude_characters: None,
            alphanumeric_only: true,
        }
    }
}

/// Rotation settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.rotator) || self.rotator != 'lambda' || has(self.lambdaArn)")
    .message("rotator: lambda requires lambdaArn"))]
#[x_kube(validation = Rule::new("!has(self.lambdaArn) || (has(self.rotator) && self.rotator == 'lambda')")
    .message("lambdaArn is only used with rotator: lambda"))]
pub struct RotationSpec {
    #[serde(default)]
    pub strategy: RotationStrategy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<RotationSchedule>,
    /// Rotate once as soon as the credential is created.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rotate_immediately: bool,
    #[serde(default)]
    pub rotator: Rotator,
    #[schemars(
        length(max = 2048),
        regex(
            pattern = r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:function:[A-Za-z0-9_-]+(:[A-Za-z0-9_$-]+)?$"
        )
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda_arn: Option<String>,
    #[serde(default)]
    pub password: PasswordSpec,
    /// Minimum time between two rotations of this credential (default 1h): alternating users
    /// must not re-password the previous user while pods may still use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_interval: Option<kube::core::Duration>,
    /// How long a rotation waits for dependent workloads to finish rolling before it reports
    /// a timeout (default 15m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_timeout: Option<kube::core::Duration>,
}

/// What to do when AWSCURRENT no longer logs in.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum DriftPolicy {
    /// Condition `Drifted`, Event, metric.
    #[default]
    Report,
    /// Also reset the database password to AWSCURRENT with the admin login.
    Repair,
}

/// Drift checks: periodically prove AWSCURRENT logs in.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftSpec {
    /// Check interval (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<kube::core::Duration>,
    #[serde(default)]
    pub policy: DriftPolicy,
}
