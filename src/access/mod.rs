//! Who may read a credential's secret: the resource policy rdscred puts on it, as pure
//! functions (render, validate, decide), so every rule is a table test. The I/O is in
//! [`crate::aws::policy`], the reconcile step in `reconcile::access`.
//!
//! The policy has at most two statements, both with a `Sid` starting with [`SID_PREFIX`] (how
//! rdscred recognises a policy it may delete):
//!
//! - `RdscredAllowReaders`: Allow `GetSecretValue` and `DescribeSecret` to the credential's
//!   readers and the database's `alwaysAllowed` roles (`Principal: {"AWS": [...]}`);
//! - `RdscredDenyEveryoneElse` (restricted only): Deny `GetSecretValue` to `Principal: "*"`
//!   unless `aws:PrincipalArn` is one of the readers, the `alwaysAllowed` roles or the role the
//!   controller acts as for this database. AWS services acting as themselves
//!   (`aws:PrincipalIsAWSService`) are not denied. The controller and the break-glass roles are
//!   always in the exemption: rdscred can never lock itself (or the emergency path) out.
//!
//! `aws:PrincipalArn` is the role's ARN (not the session's) for a role session, so one entry
//! covers every session of a role — IRSA, Pod Identity and AssumeRole alike.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Every statement rdscred writes has a Sid starting with this.
pub const SID_PREFIX: &str = "Rdscred";
pub const SID_ALLOW: &str = "RdscredAllowReaders";
pub const SID_DENY: &str = "RdscredDenyEveryoneElse";

/// Secrets Manager's limit on a resource policy (characters).
pub const MAX_POLICY_LEN: usize = 20_480;

static ROLE_ARN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(crate::crd::ROLE_ARN_PATTERN).expect("the role ARN pattern compiles")
});

/// What the policy of one secret is made of.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessSpec {
    /// `RdsCredential.spec.secret.readers`.
    pub readers: Vec<String>,
    /// `RdsDatabase.spec.accessPolicy.alwaysAllowed`.
    pub always_allowed: Vec<String>,
    pub restricted: bool,
    /// `RdsDatabase.spec.accessPolicy.allowedAccounts`.
    pub allowed_accounts: Vec<String>,
    pub allowed_principal_pattern: Option<String>,
    /// The role the controller acts as on this database's secrets (`RdsDatabase.spec.roleArn`,
    /// else `--controller-role-arn`), if known.
    pub controller_role: Option<String>,
}

/// The policy to apply (or none) and who it lets read.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessPlan {
    /// `None`: the secret should carry no policy of ours.
    pub policy: Option<Value>,
    /// Principals allowed to read (sorted, deduplicated): readers, always-allowed roles and,
    /// when restricted, the controller's role.
    pub readers: Vec<String>,
    pub restricted: bool,
}

impl AccessPlan {
    /// Digest of the policy, recorded in status to tell an outside edit from a spec change.
    pub fn digest(&self) -> Option<String> {
        self.policy.as_ref().map(policy_digest)
    }
}

/// Why a policy is refused. Every variant names the field to fix; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error(
        "{field}: {arn:?} is not an IAM role ARN (arn:PARTITION:iam::ACCOUNT:role/NAME; no users, account roots, sessions or wildcards)"
    )]
    MalformedArn { field: String, arn: String },
    #[error(
        "{field}: {arn:?} is in account {account}, which the database does not allow (spec.accessPolicy.allowedAccounts of the RdsDatabase: {allowed})"
    )]
    AccountNotAllowed {
        field: String,
        arn: String,
        account: String,
        allowed: String,
    },
    #[error(
        "{field}: {arn:?} does not match the database's spec.accessPolicy.allowedPrincipalPattern {pattern:?}"
    )]
    PatternMismatch {
        field: String,
        arn: String,
        pattern: String,
    },
    #[error(
        "{field}: the database sets neither spec.accessPolicy.allowedAccounts nor allowedPrincipalPattern, and the secrets' account is unknown (no spec.roleArn, no --controller-role-arn): set one of them"
    )]
    NoAllowedAccount { field: String },
    #[error(
        "spec.accessPolicy.restricted: the controller's own role is unknown, so a restricted policy could lock it out: set spec.roleArn on the RdsDatabase or --controller-role-arn (chart: aws.controllerRoleArn or serviceAccount.irsaRoleArn)"
    )]
    ControllerRoleUnknown,
    #[error("the rendered policy would be public (statement {sid} allows every principal)")]
    Public { sid: String },
    #[error(
        "the rendered policy has {len} characters, over Secrets Manager's limit of {MAX_POLICY_LEN}"
    )]
    TooLarge { len: usize },
}

impl AccessError {
    pub fn reason(&self) -> &'static str {
        match self {
            AccessError::MalformedArn { .. } => "MalformedPrincipal",
            AccessError::AccountNotAllowed { .. }
            | AccessError::PatternMismatch { .. }
            | AccessError::NoAllowedAccount { .. } => "PrincipalNotAllowed",
            AccessError::ControllerRoleUnknown => "ControllerRoleUnknown",
            AccessError::Public { .. } => "PublicPolicy",
            AccessError::TooLarge { .. } => "PolicyTooLarge",
        }
    }
}

/// The account id of a role ARN, if it is one.
pub fn role_account(arn: &str) -> Option<&str> {
    ROLE_ARN
        .is_match(arn)
        .then(|| arn.split(':').nth(4))
        .flatten()
}

/// `*` any run of characters; everything else literal (the IAM `StringLike` rule).
pub fn glob(pattern: &str, value: &str) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < v.len() {
        if i < p.len() && p[i] == v[j] && p[i] != '*' {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    while i < p.len() && p[i] == '*' {
        i += 1;
    }
    i == p.len()
}

fn sorted(items: impl IntoIterator<Item = String>) -> Vec<String> {
    items
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Validates the spec and renders the policy. Refuses before anything is written: malformed
/// ARNs, readers outside the database's limits, a restricted policy without a known controller
/// role, a policy that would be public or is too large.
pub fn plan(spec: &AccessSpec) -> Result<AccessPlan, AccessError> {
    for (i, arn) in spec.always_allowed.iter().enumerate() {
        if role_account(arn).is_none() {
            return Err(AccessError::MalformedArn {
                field: format!("RdsDatabase spec.accessPolicy.alwaysAllowed[{i}]"),
                arn: arn.clone(),
            });
        }
    }
    // The secrets' own account: the default limit for readers.
    let home = spec.controller_role.as_deref().and_then(role_account);
    for (i, arn) in spec.readers.iter().enumerate() {
        let field = format!("spec.secret.readers[{i}]");
        let Some(account) = role_account(arn) else {
            return Err(AccessError::MalformedArn {
                field,
                arn: arn.clone(),
            });
        };
        let allowed: Vec<&str> = if spec.allowed_accounts.is_empty() {
            if spec.allowed_principal_pattern.is_some() {
                vec![]
            } else {
                match home {
                    Some(h) => vec![h],
                    None => return Err(AccessError::NoAllowedAccount { field }),
                }
            }
        } else {
            spec.allowed_accounts.iter().map(String::as_str).collect()
        };
        if !allowed.is_empty() && !allowed.contains(&account) {
            return Err(AccessError::AccountNotAllowed {
                field,
                arn: arn.clone(),
                account: account.to_string(),
                allowed: allowed.join(", "),
            });
        }
        if let Some(pattern) = &spec.allowed_principal_pattern
            && !glob(pattern, arn)
        {
            return Err(AccessError::PatternMismatch {
                field,
                arn: arn.clone(),
                pattern: pattern.clone(),
            });
        }
    }
    if spec.restricted
        && spec
            .controller_role
            .as_deref()
            .is_none_or(|r| role_account(r).is_none())
    {
        return Err(AccessError::ControllerRoleUnknown);
    }

    let allowed = sorted(
        spec.readers
            .iter()
            .chain(&spec.always_allowed)
            .cloned()
            .collect::<Vec<_>>(),
    );
    if allowed.is_empty() && !spec.restricted {
        return Ok(AccessPlan {
            policy: None,
            readers: vec![],
            restricted: false,
        });
    }
    let mut statements = Vec::new();
    if !allowed.is_empty() {
        statements.push(json!({
            "Sid": SID_ALLOW,
            "Effect": "Allow",
            "Principal": { "AWS": allowed },
            "Action": ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"],
            "Resource": "*",
        }));
    }
    let mut readers = allowed.clone();
    if spec.restricted {
        let controller = spec.controller_role.clone().expect("checked above");
        readers = sorted(allowed.iter().cloned().chain([controller]));
        statements.push(json!({
            "Sid": SID_DENY,
            "Effect": "Deny",
            "Principal": "*",
            "Action": "secretsmanager:GetSecretValue",
            "Resource": "*",
            "Condition": {
                "StringNotEquals": { "aws:PrincipalArn": readers },
                "BoolIfExists": { "aws:PrincipalIsAWSService": "false" },
            },
        }));
    }
    let policy = json!({ "Version": "2012-10-17", "Statement": statements });
    if let Some(sid) = public_statements(&policy).into_iter().next() {
        return Err(AccessError::Public { sid });
    }
    let len = policy.to_string().len();
    if len > MAX_POLICY_LEN {
        return Err(AccessError::TooLarge { len });
    }
    Ok(AccessPlan {
        policy: Some(policy),
        readers,
        restricted: spec.restricted,
    })
}

fn as_strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => vec![],
    }
}

/// Condition keys that, compared with fixed values (no wildcard), keep an Allow to `*` from
/// being public — the keys Secrets Manager's BlockPublicPolicy accepts as restricting.
const RESTRICTING_KEYS: [&str; 6] = [
    "aws:principalarn",
    "aws:principalaccount",
    "aws:principalorgid",
    "aws:sourceaccount",
    "aws:sourcearn",
    "aws:sourcevpce",
];

/// Sids (or `#index`) of Allow statements that grant every principal: `Principal: "*"` or
/// `{"AWS": "*"}` (or an ARN with a wildcard) without an equality condition on a restricting
/// key. A conservative reading of what BlockPublicPolicy refuses: anything it might call
/// public is refused here first.
pub fn public_statements(policy: &Value) -> Vec<String> {
    let statements = match &policy["Statement"] {
        Value::Array(a) => a.clone(),
        s @ Value::Object(_) => vec![s.clone()],
        _ => vec![],
    };
    let mut out = Vec::new();
    for (i, s) in statements.iter().enumerate() {
        if s["Effect"] != "Allow" {
            continue;
        }
        let everyone = s.get("NotPrincipal").is_some()
            || match &s["Principal"] {
                Value::String(p) => p == "*",
                Value::Object(m) => m
                    .values()
                    .flat_map(as_strings)
                    .any(|p| p.contains('*') || p.contains('?')),
                _ => false,
            };
        if !everyone {
            continue;
        }
        let restricted = s["Condition"].as_object().is_some_and(|ops| {
            ops.iter().any(|(op, keys)| {
                let exact = matches!(
                    op.as_str(),
                    "StringEquals" | "ArnEquals" | "StringEqualsIgnoreCase"
                );
                exact
                    && keys.as_object().is_some_and(|k| {
                        k.iter().any(|(key, v)| {
                            RESTRICTING_KEYS.contains(&key.to_ascii_lowercase().as_str())
                                && !as_strings(v).is_empty()
                                && as_strings(v).iter().all(|x| !x.contains(['*', '?']))
                        })
                    })
            })
        });
        if !restricted {
            out.push(
                s["Sid"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("#{i}")),
            );
        }
    }
    out
}

/// A policy in a canonical form: one-element lists as their element, string lists sorted,
/// statements sorted by Sid. Secrets Manager may hand a policy back reformatted; two policies
/// that mean the same compare equal after this.
pub fn normalize(v: &Value) -> Value {
    match v {
        Value::Array(a) => {
            let mut items: Vec<Value> = a.iter().map(normalize).collect();
            if items.len() == 1 {
                return items.pop().expect("one item");
            }
            items.sort_by_key(|x| match x {
                Value::Object(m) => m
                    .get("Sid")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                other => other.to_string(),
            });
            Value::Array(items)
        }
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), normalize(v))).collect())
        }
        other => other.clone(),
    }
}

/// Whether the policy text read back from Secrets Manager means `wanted`. Text that is not
/// JSON never does.
pub fn same_policy(actual: &str, wanted: &Value) -> bool {
    serde_json::from_str::<Value>(actual).is_ok_and(|a| normalize(&a) == normalize(wanted))
}

/// Whether every statement of the policy text is one rdscred writes (a Sid with
/// [`SID_PREFIX`]): only then may rdscred delete it when the spec no longer asks for one.
pub fn is_ours(actual: &str) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(actual) else {
        return false;
    };
    let statements = match &v["Statement"] {
        Value::Array(a) => a.clone(),
        s @ Value::Object(_) => vec![s.clone()],
        _ => return false,
    };
    !statements.is_empty()
        && statements.iter().all(|s| {
            s["Sid"]
                .as_str()
                .is_some_and(|sid| sid.starts_with(SID_PREFIX))
        })
}

/// Short digest of a policy's canonical form.
pub fn policy_digest(policy: &Value) -> String {
    let hash = Sha256::digest(normalize(policy).to_string().as_bytes());
    hash.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// What to do about the secret's policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyAction {
    /// It already is what the spec says (or there is nothing of ours to remove).
    Keep,
    /// Put the rendered policy. `restore`: the policy we last applied is the one wanted, so
    /// AWS differing means someone changed or removed it outside rdscred.
    Put { restore: bool },
    /// The spec no longer asks for a policy and the one on the secret is ours.
    Delete,
    /// The spec no longer asks for a policy; the one on the secret has statements rdscred did
    /// not write, so it is left alone.
    LeaveForeign,
}

/// Decides from the policy read back just now (`actual`), the wanted one and the digest of
/// the one last applied (status).
pub fn decide(
    wanted: Option<&Value>,
    actual: Option<&str>,
    last_applied: Option<&str>,
) -> PolicyAction {
    match (wanted, actual) {
        (Some(w), Some(a)) if same_policy(a, w) => PolicyAction::Keep,
        (Some(w), _) => PolicyAction::Put {
            restore: last_applied == Some(policy_digest(w).as_str()),
        },
        (None, None) => PolicyAction::Keep,
        (None, Some(a)) if is_ours(a) => PolicyAction::Delete,
        (None, Some(_)) => PolicyAction::LeaveForeign,
    }
}

#[cfg(test)]
mod tests;
