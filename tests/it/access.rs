//! Who may read a credential's secret: the resource policy the controller puts on it, against
//! moto (made strict for resource policies by `scripts/moto_strict.py`), real PostgreSQL and
//! MariaDB and the emulator. The rendered policy is then evaluated (`iam_eval`) to prove who
//! can read: moto does not enforce resource policies at all, so that part is the evaluator's.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, Patch, PatchParams};
use rdscred::access::same_policy;
use rdscred::aws::AwsError;
use rdscred::aws::policy::Validation;
use rdscred::context::Settings;
use rdscred::crd::{RdsCredential, RdsDatabase};
use rdscred::iam::policy_document;
use serde_json::{Value, json};

use crate::iam::{
    ACCOUNT, Model, REGION, admin_secrets, admitted, assert_allowed, expect_actions, input,
    patch_credential,
};
use crate::iam_eval::{Decision, Request, evaluate_access};
use crate::support::{DbServer, Ground, unique, wait_for};

fn role(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/{name}")
}

async fn events(g: &Ground, ns: &str, reason: &str) -> Vec<String> {
    Api::<Event>::namespaced(g.client.clone(), ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.note)
        .collect()
}

/// Creates IAM roles in moto (boto3 from the test venv): the strict ground, like AWS, refuses
/// a resource policy naming a role of the account that does not exist.
fn moto_roles(arns: &[&str]) {
    let venv = std::env::var("RDSCRED_TEST_VENV").expect("test ground is up");
    let script = r#"
import json, os, sys, boto3
iam = boto3.client("iam", endpoint_url=os.environ["RDSCRED_TEST_AWS_ENDPOINT"], region_name="us-east-1")
trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
for arn in sys.argv[1:]:
    iam.create_role(RoleName=arn.split("/")[-1], AssumeRolePolicyDocument=trust)
"#;
    let out = std::process::Command::new(format!("{venv}/bin/python"))
        .arg("-c")
        .arg(script)
        .args(arns)
        .output()
        .expect("run the venv's python");
    assert!(
        out.status.success(),
        "creating IAM roles in moto: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// How often an Event with `reason` was published (the recorder folds repeats into a series).
async fn event_count(g: &Ground, ns: &str, reason: &str) -> i32 {
    Api::<Event>::namespaced(g.client.clone(), ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| e.series.map_or(1, |s| s.count))
        .sum()
}

async fn patch_database(g: &Ground, name: &str, patch: Value) {
    Api::<RdsDatabase>::all(g.client.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch database");
}

/// The secret's policy (`None`: no policy, or no secret yet).
async fn policy_of(g: &Ground, secret: &str) -> Option<Value> {
    match g.scope.secrets.resource_policy(secret).await {
        Ok(p) => p.map(|p| serde_json::from_str(&p).expect("policy JSON")),
        Err(AwsError::NotFound { .. }) => None,
        Err(e) => panic!("GetResourcePolicy: {e}"),
    }
}

/// Waits until the credential's status and the secret's policy satisfy `check`.
async fn wait_policy(
    g: &Ground,
    ns: &str,
    name: &str,
    secret: &str,
    what: &str,
    check: impl Fn(&RdsCredential, Option<&Value>) -> bool,
) -> (RdsCredential, Option<Value>) {
    wait_for(what, Duration::from_secs(60), || async {
        let c = g.get_credential(ns, name).await?;
        let p = policy_of(g, secret).await;
        check(&c, p.as_ref()).then_some((c, p))
    })
    .await
}

fn condition<'a>(c: &'a RdsCredential, type_: &str) -> Option<(&'a str, &'a str, &'a str)> {
    c.status.as_ref()?.conditions.iter().find_map(|x| {
        (x.type_ == type_).then_some((x.status.as_str(), x.reason.as_str(), x.message.as_str()))
    })
}

fn readers(c: &RdsCredential) -> Vec<String> {
    c.status
        .as_ref()
        .and_then(|s| s.access.as_ref())
        .map(|a| a.readers.clone())
        .unwrap_or_default()
}

fn principals(policy: &Value, sid: &str) -> Vec<String> {
    let st = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == sid)
        .unwrap_or_else(|| panic!("no statement {sid} in {policy}"));
    let v = if sid == rdscred::access::SID_DENY {
        &st["Condition"]["StringNotEquals"]["aws:PrincipalArn"]
    } else {
        &st["Principal"]["AWS"]
    };
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// The whole life of a policy on a PostgreSQL credential with a replica: workload roles only,
/// then restricted with a break-glass and an audit role from the database, a spec change, an
/// edit and a removal made outside (both restored, with an Event), and the spec dropping it
/// (deleted). Every request is then checked against the printed IAM policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_follows_the_spec_and_outside_edits_are_restored() {
    let controller = role(&unique("rdscred-controller-"));
    let app = role(&unique("orders-app-"));
    let worker = role(&unique("orders-worker-"));
    let glass = role(&unique("break-glass-"));
    let audit = role(&unique("audit-"));
    let intruder = role(&unique("intruder-"));
    moto_roles(&[&app, &worker, &glass, &audit, &intruder]);
    let mut g = Ground::new().await;
    let settings = Settings {
        controller_role_arn: Some(controller.clone()),
        ..g.settings()
    };
    g.start_with(settings).await;
    let ns = admitted(&g).await;
    let (db, prefix) = g.database(&DbServer::postgres(), json!({})).await;
    let user = unique("acc_");
    let secret = format!("{prefix}{user}");
    g.credential(
        &ns,
        "app",
        json!({ "databaseRef": { "name": db }, "username": user,
                "secret": { "name": secret, "readers": [app], "replicaRegions": [{ "region": "us-west-2" }] } }),
    )
    .await
    .expect("create credential");

    // 1. Workload roles only: an Allow, no Deny.
    let (c, policy) = wait_policy(&g, &ns, "app", &secret, "policy applied", |c, p| {
        condition(c, "AccessPolicyReady").is_some_and(|x| x.0 == "True") && p.is_some()
    })
    .await;
    let policy = policy.unwrap();
    assert_eq!(policy["Statement"].as_array().unwrap().len(), 1, "{policy}");
    assert_eq!(
        principals(&policy, rdscred::access::SID_ALLOW),
        vec![app.clone()]
    );
    assert_eq!(readers(&c), vec![app.clone()]);
    assert!(
        !c.status
            .as_ref()
            .unwrap()
            .access
            .as_ref()
            .unwrap()
            .restricted
    );
    assert!(!events(&g, &ns, "AccessPolicyApplied").await.is_empty());

    // 2. The database restricts access and names a break-glass and an audit role.
    patch_database(
        &g,
        &db,
        json!({ "spec": { "accessPolicy": { "alwaysAllowed": [glass, audit], "restricted": true } } }),
    )
    .await;
    let (c, policy) = wait_policy(&g, &ns, "app", &secret, "restricted policy", |c, p| {
        c.status
            .as_ref()
            .and_then(|s| s.access.as_ref())
            .is_some_and(|a| a.restricted)
            && p.is_some_and(|p| p["Statement"].as_array().unwrap().len() == 2)
    })
    .await;
    let policy = policy.unwrap();
    let mut allowed = vec![app.clone(), glass.clone(), audit.clone()];
    allowed.sort();
    assert_eq!(principals(&policy, rdscred::access::SID_ALLOW), allowed);
    let mut exempt = vec![
        app.clone(),
        glass.clone(),
        audit.clone(),
        controller.clone(),
    ];
    exempt.sort();
    assert_eq!(principals(&policy, rdscred::access::SID_DENY), exempt);
    assert_eq!(readers(&c), exempt);

    // A credential that names no readers still gets the database's roles (and the Deny).
    let other_user = unique("acc_");
    let other_secret = format!("{prefix}{other_user}");
    g.credential(
        &ns,
        "audited",
        json!({ "databaseRef": { "name": db }, "username": other_user, "secret": { "name": other_secret } }),
    )
    .await
    .expect("create credential");
    let (c2, p2) = wait_policy(
        &g,
        &ns,
        "audited",
        &other_secret,
        "database-level policy",
        |c, p| condition(c, "AccessPolicyReady").is_some_and(|x| x.0 == "True") && p.is_some(),
    )
    .await;
    let p2 = p2.unwrap();
    let mut db_roles = vec![glass.clone(), audit.clone()];
    db_roles.sort();
    assert_eq!(principals(&p2, rdscred::access::SID_ALLOW), db_roles);
    let mut db_exempt = vec![glass.clone(), audit.clone(), controller.clone()];
    db_exempt.sort();
    assert_eq!(principals(&p2, rdscred::access::SID_DENY), db_exempt);
    assert_eq!(readers(&c2), db_exempt);

    // Who can read, evaluated: the controller with the IAM policy `rdscred iam-policy` prints,
    // everyone else with no identity policy or one that allows everything.
    let mut controller_input = input();
    controller_input.secret_prefixes = vec![prefix.clone()];
    controller_input.admin_secret_arns = admin_secrets(&g, &[&db]).await;
    let controller_policy = policy_document(&controller_input);
    let everything = json!({ "Version": "2012-10-17", "Statement": [{ "Effect": "Allow", "Action": "*", "Resource": "*" }] });
    let arn = g
        .scope
        .secrets
        .describe(&secret)
        .await
        .unwrap()
        .unwrap()
        .arn;
    let read = Request::new("secretsmanager:GetSecretValue", &arn);
    let random = role(&unique("random-"));
    let decide = |identity: Option<&Value>, who: &str| {
        evaluate_access(identity, Some(&policy), who, ACCOUNT, &read)
    };
    assert_eq!(
        decide(None, &app),
        Decision::Allow,
        "the workload role reads"
    );
    assert_eq!(decide(None, &glass), Decision::Allow, "break-glass reads");
    assert_eq!(decide(None, &audit), Decision::Allow, "audit reads");
    assert_eq!(
        decide(Some(&controller_policy), &controller),
        Decision::Allow,
        "the controller is never locked out"
    );
    assert_eq!(
        decide(Some(&everything), &random),
        Decision::ExplicitDeny,
        "a random role of the account is denied whatever its identity policy says"
    );
    assert_eq!(decide(None, &random), Decision::ExplicitDeny);
    // Only reading is denied: the random role may still describe (the Deny is GetSecretValue).
    let describe = Request::new("secretsmanager:DescribeSecret", &arn);
    assert_eq!(
        evaluate_access(
            Some(&everything),
            Some(&policy),
            &random,
            ACCOUNT,
            &describe
        ),
        Decision::Allow
    );

    // 3. An edit made outside rdscred is restored, with an Event.
    let intruder = json!({ "Version": "2012-10-17", "Statement": [{ "Sid": "Intruder", "Effect": "Allow",
        "Principal": { "AWS": intruder }, "Action": "secretsmanager:GetSecretValue", "Resource": "*" }] });
    g.scope
        .secrets
        .put_resource_policy(&secret, &intruder)
        .await
        .unwrap();
    let wanted = policy.clone();
    wait_policy(&g, &ns, "app", &secret, "edit restored", |_, p| {
        p.is_some_and(|p| same_policy(&p.to_string(), &wanted))
    })
    .await;
    let restored = events(&g, &ns, "AccessPolicyRestored").await;
    assert!(!restored.is_empty(), "AccessPolicyRestored Event");
    // ... and so is a removal.
    g.scope
        .secrets
        .delete_resource_policy(&secret)
        .await
        .unwrap();
    wait_policy(&g, &ns, "app", &secret, "removal restored", |_, p| {
        p.is_some_and(|p| same_policy(&p.to_string(), &wanted))
    })
    .await;
    wait_for("second restore Event", Duration::from_secs(10), || async {
        (event_count(&g, &ns, "AccessPolicyRestored").await >= 2).then_some(())
    })
    .await;

    // 4. A spec change updates it.
    patch_credential(
        &g,
        &ns,
        "app",
        json!({ "spec": { "secret": { "readers": [app, worker] } } }),
    )
    .await;
    wait_policy(&g, &ns, "app", &secret, "worker added", |c, p| {
        readers(c).contains(&worker)
            && p.is_some_and(|p| {
                principals(p, rdscred::access::SID_DENY).contains(&worker)
                    && principals(p, rdscred::access::SID_ALLOW).contains(&worker)
            })
    })
    .await;

    // 5. The spec drops it: deleted, status and condition gone.
    patch_database(&g, &db, json!({ "spec": { "accessPolicy": null } })).await;
    patch_credential(
        &g,
        &ns,
        "app",
        json!({ "spec": { "secret": { "readers": null } } }),
    )
    .await;
    let (c, _) = wait_policy(&g, &ns, "app", &secret, "policy removed", |c, p| {
        p.is_none()
            && c.status.as_ref().is_some_and(|s| s.access.is_none())
            && condition(c, "AccessPolicyReady").is_none()
    })
    .await;
    assert!(condition(&c, "Ready").is_some_and(|x| x.0 == "True"));
    assert!(!events(&g, &ns, "AccessPolicyRemoved").await.is_empty());
    // The database dropping its roles removes the policy of the credential that had only those.
    wait_policy(
        &g,
        &ns,
        "audited",
        &other_secret,
        "database-level policy removed",
        |c, p| p.is_none() && c.status.as_ref().is_some_and(|s| s.access.is_none()),
    )
    .await;

    // Every request allowed by the printed IAM policy; every Put with BlockPublicPolicy; the
    // replica is never written (Secrets Manager copies the primary's policy to it).
    let log = g.calls.request_log().unwrap().snapshot();
    let puts: Vec<_> = log
        .iter()
        .filter(|r| r.operation == "PutResourcePolicy")
        .collect();
    assert!(puts.len() >= 4, "{} puts", puts.len());
    for put in &puts {
        assert_eq!(put.params["BlockPublicPolicy"], json!(true));
        assert_eq!(put.region, REGION);
    }
    assert!(
        log.iter()
            .filter(|r| r.operation.contains("ResourcePolicy"))
            .all(|r| r.region == REGION)
    );
    let actions = assert_allowed(
        &g,
        &mut Model::default(),
        &HashMap::from([(None, controller_policy.clone())]),
    )
    .await;
    expect_actions(
        &actions,
        &[
            "secretsmanager:PutResourcePolicy",
            "secretsmanager:GetResourcePolicy",
            "secretsmanager:ValidateResourcePolicy",
            "secretsmanager:DeleteResourcePolicy",
        ],
    );
    // The printed policy refuses a Put without BlockPublicPolicy.
    let mut without = (*puts[0]).clone();
    without.params["BlockPublicPolicy"] = json!(false);
    let check = Model::default().checks(&without).remove(0);
    assert_eq!(
        crate::iam_eval::evaluate(&controller_policy, &check).0,
        Decision::ImplicitDeny
    );
}

/// Refusals, before anything is written (no secret, no database user, no policy): a reader
/// outside the database's accounts, one outside its pattern, a restricted policy while the
/// controller's own role is unknown. Malformed and public principals are refused at admission.
/// On MariaDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_have_no_side_effect() {
    let mut g = Ground::new().await;
    g.start().await; // no --controller-role-arn
    let ns = admitted(&g).await;
    let (db, prefix) = g
        .database(
            &DbServer::mariadb(),
            json!({ "accessPolicy": {
                "allowedAccounts": [ACCOUNT],
                "allowedPrincipalPattern": format!("arn:aws:iam::*:role/shop-*"),
            } }),
        )
        .await;
    let (restricted_db, restricted_prefix) = g
        .database(
            &DbServer::mariadb(),
            json!({ "accessPolicy": { "restricted": true, "allowedAccounts": [ACCOUNT] } }),
        )
        .await;
    let cases = [
        (
            "other-account",
            &db,
            &prefix,
            "arn:aws:iam::999988887777:role/shop-api".to_string(),
            "PrincipalNotAllowed",
            "999988887777",
        ),
        (
            "pattern",
            &db,
            &prefix,
            role("payments-api"),
            "PrincipalNotAllowed",
            "allowedPrincipalPattern",
        ),
        (
            "restricted",
            &restricted_db,
            &restricted_prefix,
            role("shop-api"),
            "ControllerRoleUnknown",
            "--controller-role-arn",
        ),
    ];
    for (name, db, prefix, reader, reason, needle) in &cases {
        let user = unique("ref_");
        g.credential(
            &ns,
            name,
            json!({ "databaseRef": { "name": db }, "username": user,
                    "secret": { "name": format!("{prefix}{user}"), "readers": [reader] } }),
        )
        .await
        .expect("admitted: the limits are the database's, checked by the controller");
        let c = wait_for(
            &format!("{name} refused"),
            Duration::from_secs(60),
            || async {
                let c = g.get_credential(&ns, name).await?;
                condition(&c, "Ready")
                    .is_some_and(|x| x.0 == "False" && x.1 == *reason)
                    .then_some(c)
            },
        )
        .await;
        let (_, _, message) = condition(&c, "Ready").unwrap();
        assert!(message.contains(needle), "{name}: {message}");
        let access = condition(&c, "AccessPolicyReady").expect("AccessPolicyReady");
        assert_eq!((access.0, access.1), ("False", *reason));
        assert!(!events(&g, &ns, reason).await.is_empty(), "{name}: Event");
        assert!(
            g.scope
                .secrets
                .describe(&format!("{prefix}{user}"))
                .await
                .unwrap()
                .is_none(),
            "{name}: no secret was created"
        );
    }
    // Nothing was written: not one write call to AWS (reads of the admin logins only).
    let log = g.calls.request_log().unwrap().snapshot();
    let writes: Vec<_> = log
        .iter()
        .filter(|r| {
            !matches!(
                r.operation.as_str(),
                "DescribeSecret" | "GetSecretValue" | "ListSecrets"
            )
        })
        .map(|r| r.operation.clone())
        .collect();
    assert!(writes.is_empty(), "writes after refusals: {writes:?}");
    // Fixed in the spec, the same credential proceeds.
    let shop_api = role(&unique("shop-api-"));
    moto_roles(&[&shop_api]);
    patch_credential(
        &g,
        &ns,
        "pattern",
        json!({ "spec": { "secret": { "readers": [shop_api] } } }),
    )
    .await;
    g.wait_condition(
        &ns,
        "pattern",
        "AccessPolicyReady",
        "True",
        Duration::from_secs(60),
    )
    .await;

    // Malformed or public principals never reach the controller: the CRD refuses them.
    for bad in [
        "*",
        "arn:aws:iam::123456789012:root",
        "arn:aws:iam::123456789012:user/alice",
        "arn:aws:iam::12345678901:role/app",
        "arn:aws:iam::123456789012:role/app*",
        "arn:aws:sts::123456789012:assumed-role/app/session",
        "123456789012",
    ] {
        let user = unique("bad_");
        let e = g
            .credential(
                &ns,
                &unique("bad-"),
                json!({ "databaseRef": { "name": db }, "username": user,
                        "secret": { "name": format!("{prefix}{user}"), "readers": [bad] } }),
            )
            .await
            .expect_err(bad);
        assert!(
            matches!(&e, kube::Error::Api(s) if s.code == 422),
            "{bad}: {e}"
        );
    }
    // sync-only credentials cannot name readers (the secret is not ours).
    let e = g
        .credential(
            &ns,
            "sync",
            json!({ "databaseRef": { "name": db }, "mode": "sync-only",
                    "secret": { "name": format!("{prefix}x"), "readers": [role("shop-api")] } }),
        )
        .await
        .expect_err("sync-only with readers");
    assert!(e.to_string().contains("secret.readers"), "{e}");
}

/// What the test ground refuses (moto as made strict by `scripts/moto_strict.py`, standing in
/// for AWS): a public policy with BlockPublicPolicy, malformed JSON, a principal that does
/// not exist; ValidateResourcePolicy
/// reports a public policy; a role that does not exist. Plain moto accepts all of them and
/// answers Validate with a 500.
#[tokio::test]
async fn the_ground_refuses_public_and_malformed_policies() {
    let g = Ground::new().await;
    // Any secret will do: the ground's calls bypass the controller.
    let admin = g.admin_secret(&DbServer::postgres()).await;
    let public = json!({ "Version": "2012-10-17", "Statement": [{ "Sid": "Everyone", "Effect": "Allow",
        "Principal": "*", "Action": "secretsmanager:GetSecretValue", "Resource": "*" }] });
    let app = role(&unique("ground-app-"));
    let ok = json!({ "Version": "2012-10-17", "Statement": [{ "Sid": "App", "Effect": "Allow",
        "Principal": { "AWS": app }, "Action": "secretsmanager:GetSecretValue", "Resource": "*" }] });
    let s = &g.scope.secrets;
    // A role that does not exist (yet) is refused, like AWS does.
    let unknown = s.put_resource_policy(&admin, &ok).await.unwrap_err();
    assert!(
        matches!(&unknown, AwsError::InvalidRequest { detail, .. } if detail.contains("unsupported principal")),
        "{unknown}"
    );
    moto_roles(&[&app]);
    let refused = s.put_resource_policy(&admin, &public).await.unwrap_err();
    assert!(
        matches!(&refused, AwsError::InvalidRequest { detail, .. } if detail.contains("PublicPolicyException")),
        "{refused}"
    );
    assert!(
        !refused.is_retryable(),
        "a refused policy waits for a spec change"
    );
    assert_eq!(s.resource_policy(&admin).await.unwrap(), None);
    assert!(matches!(
        s.validate_resource_policy(&admin, &public).await.unwrap(),
        Validation::Failed(e) if e[0].contains("Everyone")
    ));
    assert_eq!(
        s.validate_resource_policy(&admin, &ok).await.unwrap(),
        Validation::Passed
    );
    let malformed = s
        .put_resource_policy(&admin, &json!("not a policy"))
        .await
        .unwrap_err();
    assert!(
        matches!(&malformed, AwsError::InvalidRequest { detail, .. } if detail.contains("MalformedPolicyDocument")),
        "{malformed}"
    );
    s.put_resource_policy(&admin, &ok).await.unwrap();
    assert!(same_policy(
        &s.resource_policy(&admin).await.unwrap().unwrap(),
        &ok
    ));
    s.delete_resource_policy(&admin).await.unwrap();
    assert_eq!(s.resource_policy(&admin).await.unwrap(), None);
}

/// A reader role that does not exist yet (AWS refuses to put the policy): the credential is
/// provisioned and synced all the same, `AccessPolicyReady=False` says why, and once the role
/// exists the policy follows without a spec change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_does_not_exist_yet() {
    let mut g = Ground::new().await;
    g.start().await;
    let ns = admitted(&g).await;
    let (db, prefix) = g
        .database(
            &DbServer::postgres(),
            json!({ "accessPolicy": { "allowedAccounts": [ACCOUNT] } }),
        )
        .await;
    let user = unique("acc_");
    let secret = format!("{prefix}{user}");
    let later = role(&unique("created-later-"));
    g.credential(
        &ns,
        "app",
        json!({ "databaseRef": { "name": db }, "username": user,
                "secret": { "name": secret, "readers": [later] }, "target": { "name": "app-db" } }),
    )
    .await
    .expect("create credential");
    let c = g
        .wait_condition(
            &ns,
            "app",
            "AccessPolicyReady",
            "False",
            Duration::from_secs(60),
        )
        .await;
    let (_, reason, message) = condition(&c, "AccessPolicyReady").unwrap();
    assert_eq!(reason, "AwsInvalidRequest", "{message}");
    assert!(message.contains("principal"), "{message}");
    // Everything else is done: the user logs in, the Secret holds AWSCURRENT.
    assert!(
        condition(&c, "Synced").is_some_and(|x| x.0 == "True"),
        "{c:?}"
    );
    assert!(g.k8s_secret(&ns, "app-db").await.is_some());
    assert!(policy_of(&g, &secret).await.is_none());
    moto_roles(&[&later]);
    wait_policy(
        &g,
        &ns,
        "app",
        &secret,
        "policy once the role exists",
        |c, p| {
            condition(c, "AccessPolicyReady").is_some_and(|x| x.0 == "True")
                && p.is_some_and(|p| {
                    principals(p, rdscred::access::SID_ALLOW) == vec![later.clone()]
                })
        },
    )
    .await;
    g.wait_ready(&ns, "app").await;
}
