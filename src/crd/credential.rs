//! `RdsCredential`: written by the app team. One database login, its Secrets Manager secret,
//! its rotation, the Kubernetes Secret the workload reads and the workloads to roll.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{DriftSpec, PrivilegeGrant, RotationSpec};
use super::database::ROLE_ARN_PATTERN;

/// An application's database credential.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "rdscred.io",
    version = "v1alpha1",
    kind = "RdsCredential",
    doc = "One database login for an application: its Secrets Manager secret, the database user and its privileges, rotation, the Kubernetes Secret the workload reads, and the workloads rolled when AWSCURRENT changes. Issued against a cluster-scoped RdsDatabase that admits this namespace.",
    plural = "rdscredentials",
    shortname = "rdscred",
    namespaced,
    status = "RdsCredentialStatus",
    category = "rdscred-all",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Secret","type":"string","jsonPath":".status.targetSecret"}"#,
    printcolumn = r#"{"name":"User","type":"string","jsonPath":".status.currentUsername"}"#,
    printcolumn = r#"{"name":"Last rotated","type":"date","jsonPath":".status.lastRotationTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode != 'sync-only' || (!has(self.username) && !has(self.privileges) && !has(self.roles) && !has(self.rotation))")
    .message("sync-only credentials own nothing but the Kubernetes Secret: username, privileges, roles and rotation must not be set"))]
#[x_kube(validation = Rule::new("self.mode != 'sync-only' || !has(self.secret.readers)")
    .message("secret.readers needs a managed secret: rdscred puts no resource policy on a secret it does not own (sync-only)"))]
#[x_kube(validation = Rule::new("self.mode == 'sync-only' || has(self.username)")
    .message("username is required unless mode is sync-only"))]
#[x_kube(validation = Rule::new("!has(self.username) || !has(self.rotation) || !has(self.rotation.strategy) || self.rotation.strategy != 'alternating-users' || size(self.username) <= 26")
    .message("with alternating-users the clone username (username + '_clone') must fit 32 characters, the MySQL/MariaDB limit: use at most 26 characters"))]
#[x_kube(validation = Rule::new("self.databaseRef.name == oldSelf.databaseRef.name")
    .message("databaseRef is immutable: create a new RdsCredential to move to another database"))]
#[x_kube(validation = Rule::new("!has(oldSelf.username) || (has(self.username) && self.username == oldSelf.username)")
    .message("username is immutable: create a new RdsCredential for a new user"))]
#[x_kube(validation = Rule::new("self.secret.name == oldSelf.secret.name")
    .message("secret.name is immutable"))]
pub struct RdsCredentialSpec {
    /// The RdsDatabase (cluster-scoped) to issue the credential against.
    pub database_ref: DatabaseRef,

    /// `managed` (default): rdscred owns the secret and the user. `sync-only`: rdscred only
    /// keeps the Kubernetes Secret equal to AWSCURRENT of an existing secret someone else
    /// rotates (a rotation Lambda, or RDS's own `rds!db-…` master secret).
    #[serde(default)]
    pub mode: CredentialMode,

    /// Database username. Lower-case letters, digits and `_`; SQL keywords are fine (quoted).
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z_][a-z0-9_]*$"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,

    /// Privileges, re-asserted on every reconcile; removed ones are revoked. At most 32 grants.
    #[schemars(length(max = 32))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileges: Option<Vec<PrivilegeGrant>>,

    /// Existing database roles the user is a member of (PostgreSQL; MySQL 8 / MariaDB roles).
    /// At most 32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 32),
        inner(length(min = 1, max = 63), regex(pattern = r"^[a-z_][a-z0-9_]*$"))
    )]
    pub roles: Option<Vec<String>>,

    /// The Secrets Manager secret.
    pub secret: SecretSpec,

    /// Rotation; absent = the database's rotation defaults, or no rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Box<RotationSpec>>,

    /// Drift checks; absent = the database's defaults (report every 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftSpec>,

    /// The Kubernetes Secret the workload reads.
    #[serde(default)]
    pub target: TargetSpec,

    /// Which workloads to roll when AWSCURRENT changes.
    #[serde(default)]
    pub workloads: WorkloadsSpec,

    /// How often to look for AWSCURRENT changes made outside the controller (default: the
    /// controller's `--poll-interval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<kube::core::Duration>,
}

/// Reference to a cluster-scoped RdsDatabase.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct DatabaseRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialMode {
    #[default]
    Managed,
    SyncOnly,
}

/// The Secrets Manager secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.recoveryWindowInDays) || self.deletionPolicy == 'Delete'")
    .message("recoveryWindowInDays only applies with deletionPolicy: Delete"))]
pub struct SecretSpec {
    /// Secret name (or, for sync-only, name or ARN). Managed secrets must start with the
    /// database's `secretNamePrefix`.
    #[schemars(
        length(min = 1, max = 2048),
        regex(pattern = r"^[A-Za-z0-9/_+=.@!:-]+$")
    )]
    pub name: String,
    #[schemars(length(max = 2048))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Extra tags (the database's tags and the ownership tags always win). Secrets Manager
    /// allows 50 tags per secret, values up to 256 characters.
    #[schemars(extend("maxProperties" = 50, "additionalProperties" = { "type": "string", "maxLength": 256 }))]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Regions to replicate the secret to.
    #[schemars(length(max = 64))]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replica_regions: Vec<ReplicaRegion>,
    /// IAM roles of the workloads that read this secret (typically their IRSA / EKS Pod
    /// Identity roles), within the accounts or pattern the database allows. rdscred puts a
    /// resource policy on the secret allowing them GetSecretValue and DescribeSecret. At most
    /// 16.
    #[schemars(
        length(max = 16),
        inner(
            length(max = 2048),
            regex(pattern = ROLE_ARN_PATTERN)
        )
    )]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readers: Vec<String>,
    /// What happens to the AWS secret and the database user when the RdsCredential is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// With `Delete`: Secrets Manager recovery window, 7–30 days (default 30).
    #[schemars(range(min = 7, max = 30))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_window_in_days: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaRegion {
    #[schemars(length(max = 32), regex(pattern = r"^[a-z]{2}(-[a-z]+)+-\d$"))]
    pub region: String,
    /// KMS key (id, ARN or alias) of the replica; default: the region's `aws/secretsmanager`.
    #[schemars(length(min = 1, max = 2048))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum DeletionPolicy {
    /// Leave the AWS secret and the database user (default).
    #[default]
    Retain,
    /// Schedule the secret for deletion (recovery window) and drop the user.
    Delete,
}

/// The Kubernetes Secret written from AWSCURRENT. Keys, labels and annotations are held to
/// the API server's rules for a Secret here, so `kubectl apply` fails at once instead of the
/// Secret write failing later; the planning phase checks the same (and the templates' syntax).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetSpec {
    /// Secret name (default: the RdsCredential's name).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Labels of the Secret (at most 64).
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = { "type": "string", "maxLength": 63 }))]
    #[x_kube(validation = Rule::new(r"self.all(k, k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))")
        .message("label keys must be qualified names: an optional DNS subdomain prefix and '/', then at most 63 alphanumeric characters, '-', '_' or '.', starting and ending with an alphanumeric character"))]
    #[x_kube(validation = Rule::new(r"self.all(k, self[k].matches('^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$'))")
        .message("label values must be empty or alphanumeric characters, '-', '_' or '.', starting and ending with an alphanumeric character"))]
    #[x_kube(validation = Rule::new("!('rdscred.io/credential' in self) && !('app.kubernetes.io/managed-by' in self)")
        .message("rdscred.io/credential and app.kubernetes.io/managed-by are written by rdscred itself"))]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations of the Secret (at most 64, values up to 4096 characters).
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = { "type": "string", "maxLength": 4096 }))]
    #[x_kube(validation = Rule::new(r"self.all(k, k.lowerAscii().matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$'))")
        .message("annotation keys must be qualified names: an optional DNS subdomain prefix and '/', then at most 63 alphanumeric characters, '-', '_' or '.', starting and ending with an alphanumeric character"))]
    #[x_kube(validation = Rule::new("!('rdscred.io/version-id' in self)")
        .message("rdscred.io/version-id is written by rdscred itself"))]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Extra keys rendered from templates: `{{ username }}`, `{{ password }}`, `{{ host }}`,
    /// `{{ port }}`, `{{ dbname }}`, `{{ engine }}`, each optionally piped through
    /// `| urlencode`. Example: `DATABASE_URL: postgres://{{ username | urlencode }}:{{ password | urlencode }}@{{ host }}:{{ port }}/{{ dbname }}`.
    /// At most 32 keys, each template up to 4096 characters.
    #[schemars(extend("maxProperties" = 32, "additionalProperties" = { "type": "string", "maxLength": 4096 }))]
    #[x_kube(validation = Rule::new(r"self.all(k, k.matches('^[-._a-zA-Z0-9]{1,253}$') && k != '.' && !k.startsWith('..'))")
        .message("template keys become Secret data keys: 1-253 alphanumeric characters, '-', '_' or '.', and not '.', '..' or starting with '..'"))]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub templates: BTreeMap<String, String>,
}

/// Which workloads to roll.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.policy != 'explicit' || (has(self.refs) && size(self.refs) > 0)")
    .message("workloads.policy explicit needs workloads.refs"))]
pub struct WorkloadsSpec {
    #[serde(default)]
    pub policy: RolloutPolicy,
    /// Workloads rolled in addition to the discovered ones (`auto`) or instead (`explicit`).
    /// At most 64.
    #[schemars(length(max = 64))]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refs: Vec<WorkloadRef>,
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutPolicy {
    /// Deployments, StatefulSets, DaemonSets, CronJobs and (when enabled) Argo Rollouts whose
    /// pod template references the Secret.
    #[default]
    Auto,
    Explicit,
    None,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub struct WorkloadRef {
    pub kind: WorkloadKind,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    /// batch/v1: the job template is annotated, so the next Job starts on the new value.
    CronJob,
    /// Argo Rollouts (argoproj.io/v1alpha1), restarted by `spec.restartAt` (no new revision,
    /// no canary analysis). Only when the controller runs with `--argo-rollouts`.
    Rollout,
}

/// Observed state of an RdsCredential. Never holds a secret value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RdsCredentialStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions, one per type: `Ready`, `SecretReady`, `UserReady`, `Synced`,
    /// `Rotating`, `Drifted`.
    #[schemars(
        length(max = 16),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"])
    )]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_arn: Option<String>,
    /// AWSCURRENT version id last written to the Kubernetes Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_version_id: Option<String>,
    #[schemars(extend("format" = "date-time"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_secret: Option<String>,
    /// The database user AWSCURRENT logs in as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    #[schemars(extend("format" = "date-time"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_time: Option<String>,
    #[schemars(extend("format" = "date-time"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_time: Option<String>,
    /// Value of the rotate-requested annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_request: Option<String>,
    /// The rotation being served, recorded (with a resourceVersion precondition) before its
    /// first step: one request, from one AWSCURRENT version. Whoever reconciles next finds
    /// it and either finishes that same rotation or records it done; never a second one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_claim: Option<Box<RotationClaim>>,
    /// Workloads rolled for the last AWSCURRENT change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rolled_workloads: Vec<RolledWorkload>,
    #[schemars(extend("format" = "date-time"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drift_check: Option<String>,
    /// `rotator: lambda`: the native rotation configuration last applied (Lambda ARN and
    /// rules), so it is re-applied only when the spec changes or AWS shows it turned off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda_rotation: Option<String>,
    /// Who may read the secret, as its resource policy says (ARNs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Box<AccessStatus>>,
}

/// The secret's resource policy as last applied.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessStatus {
    /// Principals the policy allows to read the secret: the credential's readers, the
    /// database's `alwaysAllowed` roles and, when restricted, the controller's role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readers: Vec<String>,
    /// Every principal not in `readers` is denied GetSecretValue.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restricted: bool,
    /// Digest of the policy last applied: tells an edit made outside rdscred (restored, with
    /// an Event) from a change of the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_digest: Option<String>,
    /// When the policy was last read back from Secrets Manager.
    #[schemars(extend("format" = "date-time"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<String>,
}

/// A rotation claimed before it starts: what asked for it and the AWSCURRENT version it
/// starts from (which also fixes its ClientRequestToken, so at most one new version).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationClaim {
    /// `annotation`, `schedule` or `rotateImmediately`.
    #[schemars(length(max = 32))]
    pub trigger: String,
    /// The rotate-requested annotation value served (trigger `annotation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// AWSCURRENT version id the rotation starts from.
    #[schemars(length(max = 128))]
    pub from_version: String,
    #[schemars(extend("format" = "date-time"))]
    pub claimed_at: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolledWorkload {
    pub kind: WorkloadKind,
    pub name: String,
    pub version_id: String,
    #[schemars(extend("format" = "date-time"))]
    pub rolled_at: String,
    /// When the rollout was observed complete (all replicas updated and available).
    #[schemars(extend("format" = "date-time"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
}
