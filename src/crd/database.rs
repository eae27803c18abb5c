//! `RdsDatabase`: written by the platform team. Which database, how the controller logs in as
//! admin, which namespaces may issue credentials against it, and what every credential for it
//! must carry (secret-name prefix, tags, KMS key).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{DriftSpec, EngineKind, RotationSpec};

/// A database rdscred may create credentials on.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "rdscred.io",
    version = "v1alpha1",
    kind = "RdsDatabase",
    doc = "A database (RDS instance, Aurora cluster, or plain endpoint) that RdsCredentials may issue logins on, written by the platform team: how the controller logs in as admin, which namespaces it admits, and the secret-name prefix, tags and KMS key every credential's secret carries.",
    plural = "rdsdatabases",
    shortname = "rdsdb",
    status = "RdsDatabaseStatus",
    category = "rdscred-all",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Engine","type":"string","jsonPath":".status.engine"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".status.endpoint.host"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "[has(self.dbInstanceIdentifier), has(self.dbClusterIdentifier), has(self.endpoint)].filter(x, x).size() == 1"
).message("exactly one of dbInstanceIdentifier, dbClusterIdentifier or endpoint must be set"))]
#[x_kube(validation = Rule::new("!has(self.endpoint) || has(self.engine)")
    .message("engine is required when endpoint is set (it cannot be discovered from a plain endpoint)"))]
#[x_kube(validation = Rule::new("!has(self.adminLogin.rdsManaged) || !self.adminLogin.rdsManaged || !has(self.endpoint)")
    .message("adminLogin.rdsManaged needs dbInstanceIdentifier or dbClusterIdentifier: a plain endpoint has no MasterUserSecret"))]
pub struct RdsDatabaseSpec {
    /// RDS DB instance identifier; endpoint, port and engine are read with DescribeDBInstances.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-zA-Z][a-zA-Z0-9-]*$"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_instance_identifier: Option<String>,

    /// Aurora DB cluster identifier; endpoint, port and engine are read with DescribeDBClusters.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-zA-Z][a-zA-Z0-9-]*$"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_cluster_identifier: Option<String>,

    /// A plain endpoint, for databases outside RDS (and for tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Endpoint>,

    /// Database engine. Discovered for RDS; required with `endpoint`.
    #[schemars(schema_with = "super::schema::optional_enum::<EngineKind>")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineKind>,

    /// Database (schema, on MySQL) written as `dbname` into every credential's secret.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-zA-Z_][a-zA-Z0-9_$-]*$")
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_name: Option<String>,

    /// AWS region of the database and its secrets. Defaults to the controller's region.
    #[schemars(length(max = 32), regex(pattern = r"^[a-z]{2}(-[a-z]+)+-\d$"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,

    /// IAM role to assume for everything about this database (multi-account).
    #[schemars(
        length(max = 2048),
        regex(pattern = ROLE_ARN_PATTERN)
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,

    /// How the controller logs in as admin.
    pub admin_login: AdminLogin,

    /// TLS to the database.
    #[serde(default)]
    pub tls: TlsSpec,

    /// Namespaces whose RdsCredentials may use this database. `{}` admits every namespace;
    /// absent admits none.
    #[schemars(schema_with = "super::schema::namespace_selector")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// Every credential's Secrets Manager secret name must start with this prefix
    /// (for example `rdscred/orders-prod/`). Also scopes the controller's IAM policy.
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[A-Za-z0-9/_+=.@-]+$"))]
    pub secret_name_prefix: String,

    /// KMS key (id, ARN or alias) every credential's secret is encrypted with.
    #[schemars(length(min = 1, max = 2048))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,

    /// Tags every credential's secret carries (credentials may add, not override). Secrets
    /// Manager allows 50 tags per secret, values up to 256 characters.
    #[schemars(extend("maxProperties" = 50, "additionalProperties" = { "type": "string", "maxLength": 256 }))]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,

    /// Rotation defaults for credentials that do not set their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_defaults: Option<RotationSpec>,

    /// Drift-check defaults for credentials that do not set their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_defaults: Option<DriftSpec>,

    /// Whether `sync-only` credentials may sync the admin secret itself (for example the
    /// `rds!db-…` MasterUserSecret) into an admitted namespace. Off by default: it hands out
    /// the master password.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_admin_secret_sync: bool,

    /// Who may read the secrets of this database's credentials: a resource policy on each
    /// secret (docs/access.md). Absent: rdscred puts no policy on them unless a credential
    /// names `secret.readers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_policy: Option<DatabaseAccessPolicy>,
}

/// An IAM role ARN (roles only: no users, no account roots, no wildcards, no sessions). The
/// CRD's pattern in ASCII classes: Rust's `\d` and `\w` are Unicode-aware, the API server's
/// are not.
pub const ROLE_ARN_PATTERN: &str = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9_+=,.@/-]+$";

/// The platform team's part of each credential secret's resource policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseAccessPolicy {
    /// IAM roles that may always read every credential secret of this database, whatever
    /// the credentials say: the break-glass role, an audit role. At most 16.
    #[schemars(
        length(max = 16),
        inner(
            length(max = 2048),
            regex(pattern = ROLE_ARN_PATTERN)
        )
    )]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub always_allowed: Vec<String>,
    /// Only the listed principals (the credential's readers, `alwaysAllowed`) and the
    /// controller may read a secret: its policy explicitly denies GetSecretValue to every
    /// other principal, whatever their identity policies allow.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restricted: bool,
    /// AWS accounts a credential's readers may belong to. Empty (and no pattern): the
    /// secrets' own account only. At most 32.
    #[schemars(length(max = 32), inner(regex(pattern = r"^\d{12}$")))]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_accounts: Vec<String>,
    /// A pattern every reader a credential names must match (`*`: any characters), for
    /// example `arn:aws:iam::111122223333:role/orders-*`. With `allowedAccounts`, both apply.
    #[schemars(
        length(min = 1, max = 2048),
        regex(pattern = r"^arn:[A-Za-z0-9:/_+=,.@*-]+$")
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_principal_pattern: Option<String>,
}

/// Host and port of a database outside RDS.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    #[schemars(range(min = 1, max = 65535), extend("format" = "int32"))]
    pub port: u16,
}

/// The admin login: a Secrets Manager secret in the RDS credential JSON shape, or the
/// instance's/cluster's own RDS-managed master secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretId) != (has(self.rdsManaged) && self.rdsManaged)")
    .message("set exactly one of adminLogin.secretId or adminLogin.rdsManaged: true"))]
pub struct AdminLogin {
    /// Secrets Manager secret id (name or ARN) holding `username` and `password`.
    #[schemars(length(min = 1, max = 2048))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_id: Option<String>,
    /// Use the MasterUserSecret RDS manages for the instance/cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rds_managed: Option<bool>,
}

/// TLS settings for connections to the database.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(self.mode == 'verify-ca' || self.mode == 'verify-full') || has(self.caBundle)")
    .message("tls.caBundle is required with verify-ca and verify-full"))]
pub struct TlsSpec {
    #[serde(default)]
    pub mode: TlsMode,
    /// PEM CA bundle (for RDS: the regional global-bundle.pem, about 170 KB), at most 1 MiB.
    #[schemars(length(min = 1, max = 1048576))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
}

/// TLS mode, named like libpq's `sslmode`.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Observed state of an RdsDatabase.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RdsDatabaseStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions, one per type: `Ready`, `AdminLoginReady`, `EndpointResolved`.
    #[schemars(
        length(max = 16),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"])
    )]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Resolved engine.
    #[schemars(schema_with = "super::schema::optional_enum::<EngineKind>")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineKind>,
    /// Resolved endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Endpoint>,
    /// ARN of the admin secret in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_secret_arn: Option<String>,
}
