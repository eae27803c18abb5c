//! `rdscred status` / `rdscred explain` against the emulator with the real controller running:
//! what a person sees for each state (Ready, refused, database missing, drifted, a rotation
//! held by a rollout that has not finished, a scheduled rotation), as text and as JSON — read
//! under an identity that may not read Secrets at all, so the CLI provably never does.

use std::time::Duration;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Client;
use kube::api::{Api, PostParams};
use kube_emulator::UserInfo;
use rdscred::cli::{ExplainArgs, Output, StatusArgs};
use rdscred::crd::PasswordSpec;
use rdscred::engine::Admin;
use rdscred::secret::generate_password;
use serde_json::{Value, json};

use crate::rotation_e2e::{admitted_namespace, deployment, new_cred, request_rotation, status};
use crate::support::{DbServer, Ground, unique, wait_for};

/// A person with read access to what the CLI documents it reads, and nothing else: no
/// Secrets. Any Secret read by the CLI is a 403 the emulator records.
async fn viewer(g: &Ground) -> (Client, String) {
    let user = unique("viewer-");
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": { "name": user },
        "rules": [
            { "apiGroups": ["rdscred.io"], "resources": ["rdscredentials", "rdsdatabases"], "verbs": ["get", "list"] },
            { "apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"] },
            { "apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["list"] },
        ],
    }))
    .unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": { "name": user },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user }],
    }))
    .unwrap();
    Api::<ClusterRole>::all(g.client.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(g.client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let emulator = g
        .emulator
        .as_ref()
        .expect("the CLI test runs on the emulator");
    let token = emulator.issue_token(UserInfo {
        name: user.clone(),
        groups: vec!["system:authenticated".into()],
    });
    (emulator.client_with_token(&token), user)
}

async fn explain(client: &Client, ns: &str, name: &str) -> String {
    rdscred::cli::explain(
        client.clone(),
        ExplainArgs {
            target: format!("{ns}/{name}"),
            output: Output::Table,
        },
    )
    .await
    .unwrap()
}

async fn detail_json(client: &Client, ns: &str, name: &str) -> Value {
    let out = rdscred::cli::status(
        client.clone(),
        StatusArgs {
            namespace: Some(ns.into()),
            all_namespaces: false,
            name: Some(name.into()),
            output: Output::Json,
        },
    )
    .await
    .unwrap();
    serde_json::from_str(&out).unwrap()
}

/// Waits until `explain` says `want` (the controller gets there on its own time).
async fn explained(client: &Client, ns: &str, name: &str, want: &str) -> String {
    wait_for(
        &format!("explain {ns}/{name} saying {want:?}"),
        Duration::from_secs(60),
        || async {
            let text = explain(client, ns, name).await;
            text.contains(want).then_some(text)
        },
    )
    .await
}

#[tokio::test]
async fn status_and_explain_for_each_state_without_reading_a_secret() {
    let server = DbServer::postgres();
    let mut g = Ground::new().await;
    g.start().await;
    let (cli, user) = viewer(&g).await;
    let ns = admitted_namespace(&g).await;
    let db = g.database(&server, json!({})).await;

    // 1. Ready, rotating only on request.
    new_cred(&g, &server, &db, &ns, "ready", Value::Null, json!({})).await;
    let text = explained(&cli, &ns, "ready", "ready: nothing to repair").await;
    assert!(text.contains("rotation: no schedule"), "{text}");
    let j = detail_json(&cli, &ns, "ready").await;
    assert_eq!(j["ready"], json!(true), "{j}");
    assert_eq!(j["admission"]["state"], "admitted", "{j}");
    assert!(
        j["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains("SecretSynced")),
        "the last Events are listed: {j}"
    );

    // 2. Scheduled: not due, with the next window.
    new_cred(
        &g,
        &server,
        &db,
        &ns,
        "scheduled",
        json!({ "schedule": { "automaticallyAfterDays": 30 } }),
        json!({}),
    )
    .await;
    let text = explained(&cli, &ns, "scheduled", "rotation: not due; next at").await;
    assert!(text.starts_with("ready: nothing to repair"), "{text}");

    // 3. Refused: a namespace the database does not admit.
    let outsider = unique("ns-");
    g.namespace(&outsider, &[]).await;
    g.credential(
        &outsider,
        "refused",
        json!({ "databaseRef": { "name": db.0 }, "username": unique("cli_"), "secret": { "name": format!("{}x", db.1) } }),
    )
    .await
    .unwrap();
    let text = explained(&cli, &outsider, "refused", "refused: namespace").await;
    assert!(
        text.contains(&format!("not admitted by RdsDatabase {}", db.0)),
        "{text}"
    );
    let j = detail_json(&cli, &outsider, "refused").await;
    assert_eq!(j["admission"]["state"], "notAdmitted", "{j}");

    // 4. The database does not exist.
    g.credential(
        &ns,
        "orphan",
        json!({ "databaseRef": { "name": "no-such-db" }, "username": unique("cli_"), "secret": { "name": format!("{}y", db.1) } }),
    )
    .await
    .unwrap();
    let j = wait_for(
        "orphan refused in status",
        Duration::from_secs(60),
        || async {
            let j = detail_json(&cli, &ns, "orphan").await;
            (j["ready"] == json!(false)).then_some(j)
        },
    )
    .await;
    assert_eq!(j["admission"]["state"], "databaseMissing", "{j}");
    let text = explain(&cli, &ns, "orphan").await;
    assert!(text.starts_with("refused:"), "{text}");

    // 5. Drifted: the password changed behind rdscred's back, report only.
    let drifty = new_cred(
        &g,
        &server,
        &db,
        &ns,
        "drifty",
        Value::Null,
        json!({ "drift": { "policy": "report", "interval": "1s" } }),
    )
    .await;
    let mut admin = Admin::connect(&server.target(), &server.admin)
        .await
        .unwrap();
    admin
        .set_password(
            &drifty.user,
            &generate_password(&PasswordSpec::default(), server.engine).unwrap(),
        )
        .await
        .unwrap();
    admin.close().await;
    let text = explained(
        &cli,
        &ns,
        "drifty",
        "drift: the password was changed outside rdscred",
    )
    .await;
    assert!(text.contains("PasswordChanged"), "{text}");

    // 6. A requested rotation held by a dependent whose rollout has not finished (no workload
    //    controller runs here, so the first rotation's rollout never completes).
    let held = new_cred(
        &g,
        &server,
        &db,
        &ns,
        "held",
        json!({ "strategy": "alternating-users", "minimumInterval": "1s" }),
        json!({}),
    )
    .await;
    deployment(&g, &ns, "web", "held", 2).await;
    request_rotation(&g, &held, "first").await;
    wait_for(
        "the first rotation rolled web",
        Duration::from_secs(60),
        || async {
            let s = status(&g, &held).await;
            (s.last_rotation_request.as_deref() == Some("first")
                && s.rolled_workloads
                    .iter()
                    .any(|w| w.name == "web" && w.completed_at.is_none()))
            .then_some(())
        },
    )
    .await;
    request_rotation(&g, &held, "second").await;
    let text = explained(&cli, &ns, "held", "rotation: requested (second), held:").await;
    assert!(text.contains("Deployment/web"), "{text}");
    assert!(text.contains("has not completed its rollout"), "{text}");
    // The controller agrees: the second request waits, as work in progress (kstatus
    // Reconciling) on a credential that works (Ready).
    let s = wait_for(
        "Reconciling=True Waiting on held",
        Duration::from_secs(60),
        || async {
            let s = status(&g, &held).await;
            s.conditions
                .iter()
                .any(|c| c.type_ == "Reconciling" && c.status == "True" && c.reason == "Waiting")
                .then_some(s)
        },
    )
    .await;
    assert_eq!(s.last_rotation_request.as_deref(), Some("first"), "{s:?}");
    assert!(
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        "{s:?}"
    );

    // The table lists every credential of the namespace with its state.
    let table = rdscred::cli::status(
        cli.clone(),
        StatusArgs {
            namespace: Some(ns.clone()),
            all_namespaces: false,
            name: None,
            output: Output::Table,
        },
    )
    .await
    .unwrap();
    for name in ["ready", "scheduled", "orphan", "drifty", "held"] {
        assert!(
            table.lines().any(|l| l.contains(name)),
            "{name} in\n{table}"
        );
    }
    let list: Vec<Value> = serde_json::from_str(
        &rdscred::cli::status(
            cli.clone(),
            StatusArgs {
                namespace: None,
                all_namespaces: true,
                name: None,
                output: Output::Json,
            },
        )
        .await
        .unwrap(),
    )
    .unwrap();
    assert!(
        list.iter()
            .any(|v| v["name"] == "refused" && v["namespace"] == json!(outsider))
    );

    // Never a Secret: nothing was denied (the role has no Secret access at all), and no
    // request of the viewer named a Secret.
    let emulator = g.emulator.as_ref().unwrap();
    let denied = emulator.denied_requests(&user);
    assert!(
        denied.is_empty(),
        "the CLI asked for more than it documents: {denied:?}"
    );
    let asked = emulator.authorized_requests(&user);
    assert!(!asked.is_empty());
    assert!(asked.iter().all(|r| r.resource != "secrets"), "{asked:?}");
    // Guard against a vacuous check: the same identity is refused a Secret.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(cli.clone(), &ns);
    assert!(
        secrets.get_opt("ready").await.is_err(),
        "the viewer cannot read Secrets"
    );
}

/// The binary as a person runs it (`rdscred explain` / `kubectl rdscred explain`) when the
/// answer is an error: one line on stderr saying what is wrong, exit code 1, and no backtrace
/// even with RUST_BACKTRACE set (returning the error from main would print one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_says_why_in_one_line_without_a_backtrace() {
    let g = Ground::new().await;
    let (_, user) = viewer(&g).await;
    let emulator = g.emulator.as_ref().expect("runs against the emulator");
    let token = emulator.issue_token(UserInfo {
        name: user,
        groups: vec!["system:authenticated".into()],
    });
    let served = emulator
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .expect("serve emulator");
    let dir = crate::runtime::Workdir::new();
    let kubeconfig = crate::runtime::write_kubeconfig(&dir, &served.url(), &token);
    let missing = unique("missing-");
    let target = format!("default/{missing}");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_rdscred"))
            .args(["explain", &target])
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_BACKTRACE", "1")
            .output()
            .expect("run rdscred explain")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout: {:?}", out.stdout);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(
        stderr.contains(&missing),
        "names what was not found: {stderr}"
    );
    assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
}
