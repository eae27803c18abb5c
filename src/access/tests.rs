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
                allowed_principal_pattern: Some("arn:aws:iam::111122223333:role/orders-*".into()),
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
