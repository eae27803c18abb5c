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
mod tests {
    use super::*;

    const APP: &str = "arn:aws:iam::111122223333:role/orders-app";
    const APP2: &str = "arn:aws:iam::111122223333:role/orders-worker";
    const GLASS: &str = "arn:aws:iam::111122223333:role/break-glass";
    const AUDIT: &str = "arn:aws:iam::444455556666:role/audit";
    const CONTROLLER: &str = "arn:aws:iam::111122223333:role/rdscred";

    fn spec() -> AccessSpec {
        AccessSpec {
            controller_role: Some(CONTROLLER.into()),
            ..AccessSpec::default()
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn role_arns_are_parsed_strictly() {
        let table = [
            (APP, Some("111122223333")),
            (
                "arn:aws-cn:iam::111122223333:role/path/to/app",
                Some("111122223333"),
            ),
            (
                "arn:aws-us-gov:iam::111122223333:role/a+b=c,d.e@f-g_h",
                Some("111122223333"),
            ),
            // Almost valid.
            ("arn:aws:iam::11112222333:role/app", None),
            ("arn:aws:iam::1111222233334:role/app", None),
            ("arn:aws:iam::111122223333:role/", None),
            ("arn:aws:iam::111122223333:role/app*", None),
            ("arn:aws:iam::111122223333:user/alice", None),
            ("arn:aws:iam::111122223333:root", None),
            ("arn:aws:sts::111122223333:assumed-role/app/session", None),
            ("arn:aws:iam:us-east-1:111122223333:role/app", None),
            ("*", None),
            ("111122223333", None),
            (" arn:aws:iam::111122223333:role/app", None),
            ("arn:aws:iam::111122223333:role/app\n", None),
            // Unicode digits and letters: IAM takes ASCII only.
            ("arn:aws:iam::١١١١٢٢٢٢٣٣٣٣:role/app", None),
            ("arn:aws:iam::111122223333:role/äpp", None),
        ];
        for (arn, want) in table {
            assert_eq!(role_account(arn), want, "{arn:?}");
        }
    }

    #[test]
    fn globs() {
        for (p, v, want) in [
            (
                "arn:aws:iam::1:role/orders-*",
                "arn:aws:iam::1:role/orders-app",
                true,
            ),
            (
                "arn:aws:iam::1:role/orders-*",
                "arn:aws:iam::1:role/payments",
                false,
            ),
            (
                "arn:aws:iam::*:role/orders",
                "arn:aws:iam::2:role/orders",
                true,
            ),
            ("a?c", "abc", false),
            ("*", "", true),
        ] {
            assert_eq!(glob(p, v), want, "{p} vs {v}");
        }
    }

    #[test]
    fn workload_roles_only() {
        let plan = plan(&AccessSpec {
            readers: s(&[APP2, APP, APP]),
            ..spec()
        })
        .unwrap();
        assert_eq!(plan.readers, s(&[APP, APP2]));
        assert!(!plan.restricted);
        assert_eq!(
            plan.policy.unwrap(),
            json!({ "Version": "2012-10-17", "Statement": [{
                "Sid": SID_ALLOW, "Effect": "Allow", "Principal": { "AWS": [APP, APP2] },
                "Action": ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"],
                "Resource": "*",
            }]})
        );
    }

    #[test]
    fn restricted_with_break_glass_exempts_the_controller() {
        let plan = plan(&AccessSpec {
            readers: s(&[APP]),
            always_allowed: s(&[GLASS, AUDIT]),
            allowed_accounts: s(&["111122223333"]),
            restricted: true,
            ..spec()
        })
        .unwrap();
        // Sorted: a stable policy text whatever order the specs list them in.
        assert_eq!(plan.readers, s(&[GLASS, APP, CONTROLLER, AUDIT]));
        let policy = plan.policy.unwrap();
        let st = policy["Statement"].as_array().unwrap();
        assert_eq!(st.len(), 2);
        assert_eq!(st[0]["Principal"]["AWS"], json!([GLASS, APP, AUDIT]));
        assert_eq!(st[1]["Sid"], SID_DENY);
        assert_eq!(st[1]["Effect"], "Deny");
        assert_eq!(st[1]["Principal"], "*");
        assert_eq!(st[1]["Action"], "secretsmanager:GetSecretValue");
        assert_eq!(
            st[1]["Condition"]["StringNotEquals"]["aws:PrincipalArn"],
            json!([GLASS, APP, CONTROLLER, AUDIT])
        );
        assert_eq!(
            st[1]["Condition"]["BoolIfExists"]["aws:PrincipalIsAWSService"],
            "false"
        );
    }

    #[test]
    fn restricted_without_readers_still_keeps_the_controller() {
        let plan = plan(&AccessSpec {
            restricted: true,
            ..spec()
        })
        .unwrap();
        let st = plan.policy.unwrap()["Statement"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(st.len(), 1, "no Allow with an empty principal list");
        assert_eq!(
            st[0]["Condition"]["StringNotEquals"]["aws:PrincipalArn"],
            json!([CONTROLLER])
        );
        assert_eq!(plan.readers, s(&[CONTROLLER]));
    }

    #[test]
    fn database_roles_alone() {
        let plan = plan(&AccessSpec {
            always_allowed: s(&[AUDIT]),
            ..spec()
        })
        .unwrap();
        assert_eq!(plan.readers, s(&[AUDIT]));
        let st = plan.policy.unwrap()["Statement"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(st.len(), 1);
        assert_eq!(st[0]["Sid"], SID_ALLOW);
        assert_eq!(st[0]["Principal"]["AWS"], json!([AUDIT]));
    }

    #[test]
    fn no_policy_when_nothing_is_declared() {
        let plan = plan(&spec()).unwrap();
        assert_eq!(plan.policy, None);
        assert!(plan.readers.is_empty());
        // Even with the controller unknown.
        assert_eq!(plan_of(AccessSpec::default()).policy, None);
    }

    fn plan_of(s: AccessSpec) -> AccessPlan {
        plan(&s).unwrap()
    }

    #[test]
    fn refusals_name_the_field() {
        type Row = (AccessSpec, &'static str, &'static str);
        let table: Vec<Row> = vec![
            (
                AccessSpec {
                    readers: s(&[APP, "arn:aws:iam::111122223333:user/bob"]),
                    ..spec()
                },
                "MalformedPrincipal",
                "spec.secret.readers[1]",
            ),
            (
                AccessSpec {
                    always_allowed: s(&["arn:aws:iam::1:role/x"]),
                    ..spec()
                },
                "MalformedPrincipal",
                "alwaysAllowed[0]",
            ),
            // Default limit: the secrets' own account.
            (
                AccessSpec {
                    readers: s(&[AUDIT]),
                    ..spec()
                },
                "PrincipalNotAllowed",
                "account 444455556666",
            ),
            (
                AccessSpec {
                    readers: s(&[APP]),
                    allowed_accounts: s(&["444455556666"]),
                    ..spec()
                },
                "PrincipalNotAllowed",
                "allowedAccounts",
            ),
            (
                AccessSpec {
                    readers: s(&["arn:aws:iam::111122223333:role/payments-app"]),
                    allowed_principal_pattern: Some(
                        "arn:aws:iam::111122223333:role/orders-*".into(),
                    ),
                    ..spec()
                },
                "PrincipalNotAllowed",
                "allowedPrincipalPattern",
            ),
            (
                AccessSpec {
                    readers: s(&[APP]),
                    controller_role: None,
                    ..AccessSpec::default()
                },
                "PrincipalNotAllowed",
                "neither",
            ),
            (
                AccessSpec {
                    restricted: true,
                    controller_role: None,
                    ..AccessSpec::default()
                },
                "ControllerRoleUnknown",
                "--controller-role-arn",
            ),
        ];
        for (input, reason, needle) in table {
            let e = plan(&input).expect_err(needle);
            assert_eq!(e.reason(), reason, "{e}");
            assert!(e.to_string().contains(needle), "{e} should name {needle}");
        }
        // A pattern alone lifts the default account limit; both apply when both are set.
        let other = "arn:aws:iam::444455556666:role/orders-x";
        assert!(
            plan(&AccessSpec {
                readers: s(&[other]),
                allowed_principal_pattern: Some("arn:aws:iam::*:role/orders-*".into()),
                ..spec()
            })
            .is_ok()
        );
        assert!(
            plan(&AccessSpec {
                readers: s(&[other]),
                allowed_principal_pattern: Some("arn:aws:iam::*:role/orders-*".into()),
                allowed_accounts: s(&["111122223333"]),
                ..spec()
            })
            .is_err()
        );
    }

    #[test]
    fn public_policies_are_recognised() {
        let p = |st: Value| json!({ "Statement": [st] });
        let table = [
            (
                p(
                    json!({"Sid": "A", "Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}),
                ),
                true,
            ),
            (
                p(
                    json!({"Sid": "A", "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "*", "Resource": "*"}),
                ),
                true,
            ),
            (
                p(
                    json!({"Sid": "A", "Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam::1:role/x", "*"]}, "Action": "*", "Resource": "*"}),
                ),
                true,
            ),
            (
                p(
                    json!({"Sid": "A", "Effect": "Allow", "NotPrincipal": {"AWS": APP}, "Action": "*", "Resource": "*"}),
                ),
                true,
            ),
            // A wildcard in the restricting value does not restrict.
            (
                p(
                    json!({"Sid": "A", "Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*",
                "Condition": {"StringLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/*"}}}),
                ),
                true,
            ),
            (
                p(
                    json!({"Sid": "A", "Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*",
                "Condition": {"StringEquals": {"aws:PrincipalArn": "*"}}}),
                ),
                true,
            ),
            (
                p(
                    json!({"Sid": "A", "Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*",
                "Condition": {"StringEquals": {"aws:username": "bob"}}}),
                ),
                true,
            ),
            // Restricted to an account: not public.
            (
                p(
                    json!({"Sid": "A", "Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*",
                "Condition": {"StringEquals": {"aws:PrincipalAccount": "111122223333"}}}),
                ),
                false,
            ),
            (
                p(
                    json!({"Sid": "A", "Effect": "Allow", "Principal": {"AWS": APP}, "Action": "*", "Resource": "*"}),
                ),
                false,
            ),
            // Deny to everyone is what restricted mode is.
            (
                p(
                    json!({"Sid": "D", "Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*"}),
                ),
                false,
            ),
        ];
        for (policy, public) in table {
            assert_eq!(!public_statements(&policy).is_empty(), public, "{policy}");
        }
    }

    #[test]
    fn equality_ignores_formatting_and_order() {
        let wanted = plan_of(AccessSpec {
            readers: s(&[APP, APP2]),
            always_allowed: s(&[GLASS]),
            restricted: true,
            ..spec()
        })
        .policy
        .unwrap();
        let mut shuffled = wanted.clone();
        shuffled["Statement"].as_array_mut().unwrap().reverse();
        shuffled["Statement"][1]["Principal"]["AWS"]
            .as_array_mut()
            .unwrap()
            .reverse();
        let text = serde_json::to_string_pretty(&shuffled).unwrap();
        assert!(same_policy(&text, &wanted));
        assert_eq!(policy_digest(&shuffled), policy_digest(&wanted));
        // One-element lists as strings, as AWS may return them.
        let single = plan_of(AccessSpec {
            readers: s(&[APP]),
            ..spec()
        })
        .policy
        .unwrap();
        let mut as_string = single.clone();
        as_string["Statement"] = single["Statement"][0].clone();
        as_string["Statement"]["Principal"]["AWS"] = json!(APP);
        assert!(same_policy(&as_string.to_string(), &single));
        // A real change is one.
        let mut edited = wanted.clone();
        edited["Statement"][0]["Principal"]["AWS"] = json!([APP]);
        assert!(!same_policy(&edited.to_string(), &wanted));
        assert!(!same_policy("{not json", &wanted));
    }

    #[test]
    fn decisions() {
        let w = plan_of(AccessSpec {
            readers: s(&[APP]),
            ..spec()
        })
        .policy
        .unwrap();
        let d = policy_digest(&w);
        let other = plan_of(AccessSpec {
            readers: s(&[APP2]),
            ..spec()
        })
        .policy
        .unwrap()
        .to_string();
        let foreign = json!({"Statement": [{"Sid": "Mine", "Effect": "Allow", "Principal": {"AWS": APP}, "Action": "*", "Resource": "*"}]}).to_string();
        let mixed = json!({"Statement": [w["Statement"][0].clone(), {"Sid": "Mine", "Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*"}]}).to_string();
        let same = w.to_string();
        type Row<'a> = (
            Option<&'a Value>,
            Option<&'a str>,
            Option<&'a str>,
            PolicyAction,
        );
        let table: Vec<Row> = vec![
            (Some(&w), Some(&same), Some(&d), PolicyAction::Keep),
            // First apply: nothing there yet, nothing applied before.
            (Some(&w), None, None, PolicyAction::Put { restore: false }),
            // Spec changed: the applied digest is not the wanted one.
            (
                Some(&w),
                Some(&other),
                Some("0000"),
                PolicyAction::Put { restore: false },
            ),
            // Edited or removed outside rdscred: restored.
            (
                Some(&w),
                Some(&other),
                Some(&d),
                PolicyAction::Put { restore: true },
            ),
            (
                Some(&w),
                None,
                Some(&d),
                PolicyAction::Put { restore: true },
            ),
            (
                Some(&w),
                Some("{garbage"),
                Some(&d),
                PolicyAction::Put { restore: true },
            ),
            (None, None, Some(&d), PolicyAction::Keep),
            (None, Some(&other), Some(&d), PolicyAction::Delete),
            (None, Some(&foreign), None, PolicyAction::LeaveForeign),
            (None, Some(&mixed), Some(&d), PolicyAction::LeaveForeign),
            (None, Some("{garbage"), None, PolicyAction::LeaveForeign),
        ];
        for (wanted, actual, applied, want) in table {
            assert_eq!(
                decide(wanted, actual, applied),
                want,
                "{actual:?} {applied:?}"
            );
        }
    }

    #[test]
    fn large_reader_lists_fit_the_limit() {
        // The CRD bounds: 16 readers and 16 always-allowed roles of 2048 characters would not
        // fit; typical ARNs (~60 characters) do, with room to spare.
        let readers: Vec<String> = (0..16)
            .map(|i| format!("arn:aws:iam::111122223333:role/team/workload-{i:02}"))
            .collect();
        let glass: Vec<String> = (0..16)
            .map(|i| format!("arn:aws:iam::111122223333:role/ops/break-glass-{i:02}"))
            .collect();
        let p = plan_of(AccessSpec {
            readers,
            always_allowed: glass,
            restricted: true,
            ..spec()
        });
        assert!(p.policy.unwrap().to_string().len() < MAX_POLICY_LEN);
        let huge = AccessSpec {
            readers: (0..16)
                .map(|i| format!("arn:aws:iam::111122223333:role/{}{i}", "x".repeat(1500)))
                .collect(),
            ..spec()
        };
        assert_eq!(plan(&huge).unwrap_err().reason(), "PolicyTooLarge");
    }
}
