//! A small evaluator of identity-based IAM policies, for the tests only: AWS's documented
//! evaluation logic for one policy and one request (explicit Deny beats Allow, Allow beats the
//! implicit deny), `Action`/`NotAction` (case-insensitive) and `Resource`/`NotResource` with
//! `*`/`?` wildcards, and the condition operators rdscred's policy can contain: `String*`
//! (incl. `Like`, `IgnoreCase`, `Not…`, `…IfExists`), `Null`, `Bool`, the `ForAnyValue:` and
//! `ForAllValues:` set qualifiers. Anything else (policy variables, other operators, a
//! `Principal` in an identity policy) fails the test: an evaluator that guessed would prove
//! nothing. Resource-based policies (a secret's, `evaluate_resource`) match `Principal` by role
//! ARN, account or `*`, and `evaluate_access` combines both kinds the way AWS does for one
//! account (either may allow) and across accounts (both must), explicit Deny first.
//!
//! Why not a library: scratchstack-aspen has no set qualifiers (the policy uses
//! `ForAnyValue:StringEquals`); wami-condition evaluates condition blocks only (actions,
//! resources and the decision would still be ours); fakecloud-iam is AGPL; the most complete
//! simulator (@cloud-copilot/iam-simulate) is an npm package and would bring Node into the
//! test ground. The logic needed here is small and is pinned by the table tests below, which
//! follow the IAM User Guide's "Policy evaluation logic" and "Condition operators" pages.

use std::collections::BTreeMap;

use serde_json::Value;

/// One authorization request: an action on a resource with its request context (every key
/// multi-valued; single-valued keys hold one value).
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// `secretsmanager:CreateSecret`.
    pub action: String,
    /// The resource ARN (`*` for actions without resource-level permissions).
    pub resource: String,
    /// Condition keys (case-insensitive names) -> values.
    pub context: BTreeMap<String, Vec<String>>,
}

impl Request {
    pub fn new(action: &str, resource: &str) -> Request {
        Request {
            action: action.into(),
            resource: resource.into(),
            context: BTreeMap::new(),
        }
    }

    pub fn with(mut self, key: &str, values: &[&str]) -> Request {
        self.context.insert(
            key.to_ascii_lowercase(),
            values.iter().map(|v| v.to_string()).collect(),
        );
        self
    }

    fn values(&self, key: &str) -> Option<&Vec<String>> {
        self.context.get(&key.to_ascii_lowercase())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    ExplicitDeny,
    ImplicitDeny,
}

/// Evaluates `policy` (a policy document) for `request`; the Sids of the statements that
/// decided it come along (for messages).
pub fn evaluate(policy: &Value, request: &Request) -> (Decision, Vec<String>) {
    evaluate_statements(policy, request, None)
}

/// Evaluates a resource-based policy (every statement has a `Principal`) for `request` made by
/// `principal` (a role ARN): a statement applies when its Principal is `"*"`, `{"AWS": "*"}`,
/// names the role's ARN or its account (`ACCOUNT` or `arn:...:root`).
pub fn evaluate_resource(
    policy: &Value,
    principal: &str,
    request: &Request,
) -> (Decision, Vec<String>) {
    evaluate_statements(policy, request, Some(principal))
}

fn account_of(arn: &str) -> &str {
    arn.split(':').nth(4).unwrap_or("")
}

fn principal_matches(statement: &Value, principal: &str) -> bool {
    assert!(
        statement.get("NotPrincipal").is_none(),
        "NotPrincipal is not supported by this evaluator"
    );
    let names = |v: &Value| -> bool {
        strings(v).iter().any(|p| {
            p == "*"
                || p == principal
                || p == account_of(principal)
                || *p == format!("arn:aws:iam::{}:root", account_of(principal))
        })
    };
    match &statement["Principal"] {
        Value::String(s) => s == "*",
        Value::Object(m) => m.iter().all(|(k, _)| k == "AWS") && m.get("AWS").is_some_and(names),
        other => panic!("a resource policy statement needs a Principal: {other}"),
    }
}

/// The decision for a principal of the secret's account reading it: an explicit Deny in either
/// policy wins, else an Allow in either suffices (same account). For a principal of another
/// account both must allow (cross-account access). `identity` is the principal's identity
/// policy (`None`: none at all); the request context gets `aws:PrincipalArn`,
/// `aws:PrincipalAccount` and `aws:PrincipalIsAWSService` like AWS fills them.
pub fn evaluate_access(
    identity: Option<&Value>,
    resource: Option<&Value>,
    principal: &str,
    resource_account: &str,
    request: &Request,
) -> Decision {
    let request = request
        .clone()
        .with("aws:PrincipalArn", &[principal])
        .with("aws:PrincipalAccount", &[account_of(principal)])
        .with("aws:PrincipalIsAWSService", &["false"]);
    let id = identity.map_or(Decision::ImplicitDeny, |p| evaluate(p, &request).0);
    let res = resource.map_or(Decision::ImplicitDeny, |p| {
        evaluate_resource(p, principal, &request).0
    });
    if id == Decision::ExplicitDeny || res == Decision::ExplicitDeny {
        return Decision::ExplicitDeny;
    }
    let allowed = if account_of(principal) == resource_account {
        id == Decision::Allow || res == Decision::Allow
    } else {
        id == Decision::Allow && res == Decision::Allow
    };
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

fn evaluate_statements(
    policy: &Value,
    request: &Request,
    principal: Option<&str>,
) -> (Decision, Vec<String>) {
    let statements = match &policy["Statement"] {
        Value::Array(a) => a.clone(),
        s @ Value::Object(_) => vec![s.clone()],
        other => panic!("policy has no Statement: {other}"),
    };
    let mut allowed_by = Vec::new();
    for s in &statements {
        match principal {
            None => assert!(
                s.get("Principal").is_none() && s.get("NotPrincipal").is_none(),
                "identity policies have no Principal: {s}"
            ),
            Some(p) => {
                if !principal_matches(s, p) {
                    continue;
                }
            }
        }
        if !applies(s, request) {
            continue;
        }
        let sid = s["Sid"].as_str().unwrap_or("").to_string();
        match s["Effect"].as_str() {
            Some("Deny") => return (Decision::ExplicitDeny, vec![sid]),
            Some("Allow") => allowed_by.push(sid),
            other => panic!("statement Effect must be Allow or Deny, got {other:?}"),
        }
    }
    if allowed_by.is_empty() {
        (Decision::ImplicitDeny, vec![])
    } else {
        (Decision::Allow, allowed_by)
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().expect("policy values are strings").to_string())
            .collect(),
        Value::Bool(b) => vec![b.to_string()],
        other => panic!("not a string or list of strings: {other}"),
    }
}

fn applies(s: &Value, r: &Request) -> bool {
    let action = match (s.get("Action"), s.get("NotAction")) {
        (Some(a), None) => strings(a).iter().any(|p| glob(p, &r.action, true)),
        (None, Some(a)) => !strings(a).iter().any(|p| glob(p, &r.action, true)),
        _ => panic!("a statement needs exactly one of Action/NotAction: {s}"),
    };
    let resource = match (s.get("Resource"), s.get("NotResource")) {
        (Some(x), None) => strings(x).iter().any(|p| glob(p, &r.resource, false)),
        (None, Some(x)) => !strings(x).iter().any(|p| glob(p, &r.resource, false)),
        _ => panic!("a statement needs exactly one of Resource/NotResource: {s}"),
    };
    action && resource && s.get("Condition").is_none_or(|c| condition_holds(c, r))
}

/// `*` any run of characters, `?` any one character; everything else literal.
pub fn glob(pattern: &str, value: &str, ignore_case: bool) -> bool {
    assert!(
        !pattern.contains("${"),
        "policy variables are not supported by this evaluator: {pattern}"
    );
    let (p, v): (Vec<char>, Vec<char>) = if ignore_case {
        (
            pattern.to_lowercase().chars().collect(),
            value.to_lowercase().chars().collect(),
        )
    } else {
        (pattern.chars().collect(), value.chars().collect())
    };
    // Iterative wildcard match with backtracking to the last `*`.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < v.len() {
        if i < p.len() && (p[i] == '?' || p[i] == v[j]) {
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

/// Every operator block, every key in it, must hold (AND); any value of a key matches (OR).
fn condition_holds(condition: &Value, r: &Request) -> bool {
    let blocks = condition.as_object().expect("Condition is an object");
    blocks.iter().all(|(operator, keys)| {
        keys.as_object()
            .expect("a condition operator maps keys to values")
            .iter()
            .all(|(key, wanted)| operator_holds(operator, r.values(key), &strings(wanted)))
    })
}

fn operator_holds(operator: &str, present: Option<&Vec<String>>, wanted: &[String]) -> bool {
    let (qualifier, op) = match operator.split_once(':') {
        Some((q, op)) => (Some(q), op),
        None => (None, operator),
    };
    if op == "Null" {
        let want_absent = wanted.iter().any(|w| w == "true");
        return present.is_none_or(|v| v.is_empty()) == want_absent;
    }
    let (op, if_exists) = match op.strip_suffix("IfExists") {
        Some(base) => (base, true),
        None => (op, false),
    };
    let (base, negated) = match op {
        "StringNotEquals" => ("StringEquals", true),
        "StringNotEqualsIgnoreCase" => ("StringEqualsIgnoreCase", true),
        "StringNotLike" => ("StringLike", true),
        "StringEquals" | "StringEqualsIgnoreCase" | "StringLike" | "Bool" => (op, false),
        other => panic!("condition operator {other} is not supported by this evaluator"),
    };
    let matches_one = |value: &str| {
        wanted.iter().any(|w| match base {
            "StringEquals" => w == value,
            "StringEqualsIgnoreCase" => w.eq_ignore_ascii_case(value),
            "StringLike" => glob(w, value, false),
            "Bool" => w.eq_ignore_ascii_case(value),
            _ => unreachable!(),
        })
    };
    let values = present.filter(|v| !v.is_empty());
    match qualifier {
        // Every value in the request must match (true for an absent or empty key).
        Some("ForAllValues") => values.is_none_or(|vs| {
            vs.iter().all(|v| {
                if negated {
                    !matches_one(v)
                } else {
                    matches_one(v)
                }
            })
        }),
        // At least one value in the request must match (false for an absent key).
        Some("ForAnyValue") => values.is_some_and(|vs| {
            vs.iter().any(|v| {
                if negated {
                    !matches_one(v)
                } else {
                    matches_one(v)
                }
            })
        }),
        Some(other) => panic!("set qualifier {other} is not supported"),
        None => match values {
            // An absent key: IfExists holds; negated operators hold; the rest do not.
            None => if_exists || negated,
            Some(vs) => {
                let any = vs.iter().any(|v| matches_one(v));
                if negated { !any } else { any }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(statements: Value) -> Value {
        json!({ "Version": "2012-10-17", "Statement": statements })
    }

    #[test]
    fn wildcards() {
        let table = [
            ("secret:rdscred/a/*", "secret:rdscred/a/x-AbCdEf", true),
            ("secret:rdscred/a/*", "secret:rdscred/b/x", false),
            ("secret:name-??????", "secret:name-AbCdEf", true),
            ("secret:name-??????", "secret:name-AbCdE", false),
            ("secret:name-??????", "secret:name-AbCdEfG", false),
            ("*", "", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            (
                "arn:aws:kms:*:*:key/*",
                "arn:aws:kms:eu-west-1:1:key/k",
                true,
            ),
            ("Secret", "secret", false),
        ];
        for (pattern, value, want) in table {
            assert_eq!(glob(pattern, value, false), want, "{pattern} vs {value}");
        }
        assert!(glob(
            "SecretsManager:Get*",
            "secretsmanager:GetSecretValue",
            true
        ));
    }

    #[test]
    fn explicit_deny_beats_allow_beats_implicit_deny() {
        let allow = json!({ "Sid": "A", "Effect": "Allow", "Action": "s:*", "Resource": "*" });
        let deny = json!({ "Sid": "D", "Effect": "Deny", "Action": "s:Delete", "Resource": "r1" });
        let p = policy(json!([allow, deny]));
        assert_eq!(
            evaluate(&p, &Request::new("s:Delete", "r1")).0,
            Decision::ExplicitDeny
        );
        assert_eq!(
            evaluate(&p, &Request::new("s:Delete", "r2")).0,
            Decision::Allow
        );
        assert_eq!(
            evaluate(&p, &Request::new("t:Delete", "r1")).0,
            Decision::ImplicitDeny
        );
        assert_eq!(
            evaluate(&policy(json!([])), &Request::new("s:Get", "r")).0,
            Decision::ImplicitDeny
        );
        // A single statement object is a valid Statement too.
        let single =
            json!({ "Statement": { "Effect": "Allow", "Action": "s:Get", "Resource": "r" } });
        assert_eq!(
            evaluate(&single, &Request::new("S:GET", "r")).0,
            Decision::Allow
        );
    }

    #[test]
    fn not_action_and_not_resource() {
        let p = policy(
            json!([{ "Effect": "Allow", "NotAction": "s:Delete*", "NotResource": ["r:secret/*"] }]),
        );
        assert_eq!(
            evaluate(&p, &Request::new("s:Get", "r:other")).0,
            Decision::Allow
        );
        assert_eq!(
            evaluate(&p, &Request::new("s:DeleteX", "r:other")).0,
            Decision::ImplicitDeny
        );
        assert_eq!(
            evaluate(&p, &Request::new("s:Get", "r:secret/x")).0,
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn single_valued_operators() {
        let w = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let some = |v: &[&str]| Some(w(v));
        // (operator, request values, policy values, holds)
        type Row = (&'static str, Option<Vec<String>>, Vec<String>, bool);
        let table: &[Row] = &[
            ("StringEquals", some(&["rdscred"]), w(&["rdscred"]), true),
            ("StringEquals", some(&["RDSCRED"]), w(&["rdscred"]), false),
            ("StringEquals", some(&["b"]), w(&["a", "b"]), true),
            ("StringEquals", None, w(&["rdscred"]), false),
            (
                "StringEqualsIgnoreCase",
                some(&["RDSCRED"]),
                w(&["rdscred"]),
                true,
            ),
            ("StringNotEquals", some(&["x"]), w(&["rdscred"]), true),
            (
                "StringNotEquals",
                some(&["rdscred"]),
                w(&["rdscred"]),
                false,
            ),
            // A negated operator holds when the key is absent.
            ("StringNotEquals", None, w(&["rdscred"]), true),
            (
                "StringLike",
                some(&["secretsmanager.eu-west-1.amazonaws.com"]),
                w(&["secretsmanager.*.amazonaws.com"]),
                true,
            ),
            (
                "StringLike",
                some(&["kms.eu-west-1.amazonaws.com"]),
                w(&["secretsmanager.*.amazonaws.com"]),
                false,
            ),
            ("StringNotLike", some(&["a/b"]), w(&["a/*"]), false),
            ("StringEqualsIfExists", None, w(&["x"]), true),
            ("StringEqualsIfExists", some(&["y"]), w(&["x"]), false),
            ("Null", None, w(&["true"]), true),
            ("Null", some(&["v"]), w(&["true"]), false),
            ("Null", some(&["v"]), w(&["false"]), true),
            ("Null", None, w(&["false"]), false),
            ("Bool", some(&["true"]), w(&["true"]), true),
            ("Bool", some(&["false"]), w(&["true"]), false),
        ];
        for (op, present, wanted, want) in table {
            assert_eq!(
                operator_holds(op, present.as_ref(), wanted),
                *want,
                "{op} {present:?} {wanted:?}"
            );
        }
    }

    #[test]
    fn set_qualifiers() {
        let w = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // ForAnyValue: at least one request value matches; an absent key never does.
        assert!(operator_holds(
            "ForAnyValue:StringEquals",
            Some(&w(&["alias/a", "alias/b"])),
            &w(&["alias/b"])
        ));
        assert!(!operator_holds(
            "ForAnyValue:StringEquals",
            Some(&w(&["alias/a"])),
            &w(&["alias/b"])
        ));
        assert!(!operator_holds(
            "ForAnyValue:StringEquals",
            None,
            &w(&["alias/b"])
        ));
        // ForAllValues: every request value matches; an absent key always does.
        assert!(operator_holds(
            "ForAllValues:StringEquals",
            Some(&w(&["a", "b"])),
            &w(&["a", "b", "c"])
        ));
        assert!(!operator_holds(
            "ForAllValues:StringEquals",
            Some(&w(&["a", "d"])),
            &w(&["a", "b"])
        ));
        assert!(operator_holds(
            "ForAllValues:StringEquals",
            None,
            &w(&["a"])
        ));
        assert!(operator_holds(
            "ForAllValues:StringLike",
            Some(&w(&["rdscred.io/x"])),
            &w(&["rdscred.io/*"])
        ));
    }

    #[test]
    fn conditions_and_across_keys_and_operators() {
        let p = policy(json!([{
            "Sid": "C", "Effect": "Allow", "Action": "s:Create", "Resource": "*",
            "Condition": {
                "StringEquals": { "aws:RequestTag/owner": "me", "s:Name": ["a", "b"] },
                "ForAllValues:StringLike": { "aws:TagKeys": ["owner", "x/*"] }
            }
        }]));
        let base = Request::new("s:Create", "r")
            .with("aws:RequestTag/owner", &["me"])
            .with("s:Name", &["b"])
            .with("aws:TagKeys", &["owner", "x/1"]);
        assert_eq!(evaluate(&p, &base).0, Decision::Allow);
        // Condition key names are case-insensitive.
        let mut upper = base.clone();
        upper.context.clear();
        let upper = upper
            .with("AWS:REQUESTTAG/OWNER", &["me"])
            .with("S:NAME", &["a"])
            .with("aws:tagkeys", &["owner"]);
        assert_eq!(evaluate(&p, &upper).0, Decision::Allow);
        assert_eq!(
            evaluate(&p, &base.clone().with("s:Name", &["c"])).0,
            Decision::ImplicitDeny
        );
        assert_eq!(
            evaluate(&p, &base.clone().with("aws:TagKeys", &["owner", "other"])).0,
            Decision::ImplicitDeny
        );
        let mut missing = base.clone();
        missing.context.remove("aws:requesttag/owner");
        assert_eq!(evaluate(&p, &missing).0, Decision::ImplicitDeny);
    }

    #[test]
    fn resource_policies_and_the_combination_with_identity_policies() {
        let app = "arn:aws:iam::111122223333:role/app";
        let other = "arn:aws:iam::111122223333:role/other";
        let foreign = "arn:aws:iam::444455556666:role/app";
        let secret = "arn:aws:secretsmanager:us-east-1:111122223333:secret:s-AbCdEf";
        let read = Request::new("secretsmanager:GetSecretValue", secret);
        let allow_app = json!({ "Statement": [{ "Sid": "A", "Effect": "Allow",
            "Principal": { "AWS": [app, foreign] }, "Action": "secretsmanager:GetSecretValue", "Resource": "*" }] });
        let deny_others = json!({ "Statement": [{ "Sid": "D", "Effect": "Deny", "Principal": "*",
            "Action": "secretsmanager:GetSecretValue", "Resource": "*",
            "Condition": { "StringNotEquals": { "aws:PrincipalArn": [app] },
                           "BoolIfExists": { "aws:PrincipalIsAWSService": "false" } } }] });
        let admin = policy(json!([{ "Effect": "Allow", "Action": "*", "Resource": "*" }]));
        let acct = "111122223333";
        // (identity, resource, principal, decision)
        let table: Vec<(Option<&Value>, Option<&Value>, &str, Decision)> = vec![
            // Same account: the resource policy alone suffices.
            (None, Some(&allow_app), app, Decision::Allow),
            (None, Some(&allow_app), other, Decision::ImplicitDeny),
            // ... and so does the identity policy alone.
            (Some(&admin), None, other, Decision::Allow),
            (Some(&admin), Some(&allow_app), other, Decision::Allow),
            // An explicit Deny in the resource policy beats an identity Allow.
            (
                Some(&admin),
                Some(&deny_others),
                other,
                Decision::ExplicitDeny,
            ),
            (Some(&admin), Some(&deny_others), app, Decision::Allow),
            // Across accounts both must allow.
            (None, Some(&allow_app), foreign, Decision::ImplicitDeny),
            (Some(&admin), Some(&allow_app), foreign, Decision::Allow),
            (Some(&admin), None, foreign, Decision::ImplicitDeny),
        ];
        for (identity, resource, principal, want) in table {
            assert_eq!(
                evaluate_access(identity, resource, principal, acct, &read),
                want,
                "{principal} identity={} resource={}",
                identity.is_some(),
                resource
                    .map(|r| r["Statement"][0]["Sid"].to_string())
                    .unwrap_or_default()
            );
        }
        // Principal by account id and by account root.
        let by_account = json!({ "Statement": [{ "Effect": "Allow", "Principal": { "AWS": "arn:aws:iam::111122223333:root" }, "Action": "*", "Resource": "*" }] });
        assert_eq!(
            evaluate_resource(&by_account, other, &read).0,
            Decision::Allow
        );
        assert_eq!(
            evaluate_resource(&by_account, foreign, &read).0,
            Decision::ImplicitDeny
        );
    }

    #[test]
    #[should_panic(expected = "not supported")]
    fn unknown_operators_fail_closed() {
        operator_holds("NumericLessThan", None, &["1".into()]);
    }
}
