//! Authentication and RBAC: tokens, rule matching (verbs, groups, subresources,
//! resourceNames), cluster vs namespace scope, the 403 Status, the record of decisions,
//! SelfSubjectAccessReview, and kubectl with a token kubeconfig.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube_emulator::{Emulator, RequestAttributes, UserInfo};
use serde_json::json;

use crate::{Widget, api_err, emulator, widget};

const SA: &str = "system:serviceaccount:ops:ctl";

fn rbac(emu: &Emulator, yaml: &str) {
    emu.apply_objects_yaml(yaml).expect("RBAC objects load");
}

async fn setup() -> (Emulator, kube::Client) {
    let emu = emulator();
    let admin = emu.client();
    for ns in ["ops", "apps", "other"] {
        let n: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        Api::<Namespace>::all(admin.clone())
            .create(&PostParams::default(), &n)
            .await
            .unwrap();
    }
    let token = emu.service_account_token("ops", "ctl");
    (emu.clone(), emu.client_with_token(&token))
}

fn secret(name: &str) -> Secret {
    serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {"k": "v"}})).unwrap()
}

#[tokio::test]
async fn no_binding_is_denied_with_the_real_403() {
    let (emu, sa) = setup().await;
    let s = api_err(
        Api::<Secret>::namespaced(sa.clone(), "apps")
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(s.code, 403);
    assert_eq!(s.reason, "Forbidden");
    assert_eq!(
        s.message,
        format!(
            r#"secrets is forbidden: User "{SA}" cannot list resource "secrets" in API group "" in the namespace "apps""#
        )
    );
    let s = api_err(
        Api::<Secret>::namespaced(sa.clone(), "apps")
            .get("db")
            .await,
    );
    assert_eq!(
        s.message,
        format!(
            r#"secrets "db" is forbidden: User "{SA}" cannot get resource "secrets" in API group "" in the namespace "apps""#
        )
    );
    let s = api_err(
        Api::<Namespace>::all(sa.clone())
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(
        s.message,
        format!(
            r#"namespaces is forbidden: User "{SA}" cannot list resource "namespaces" in API group "" at the cluster scope"#
        )
    );
    let s = api_err(
        Api::<Widget>::namespaced(sa, "apps")
            .create(&PostParams::default(), &widget("w", "a"))
            .await,
    );
    assert_eq!(
        s.message,
        format!(
            r#"widgets.test.kube-emulator.io is forbidden: User "{SA}" cannot create resource "widgets" in API group "test.kube-emulator.io" in the namespace "apps""#
        )
    );
    // The raw Status body, as a real server sends it.
    let denied = emu.denied_requests(SA);
    assert_eq!(denied.len(), 4);
    assert_eq!(
        denied[1].attributes,
        RequestAttributes {
            verb: "get".into(),
            api_group: "".into(),
            resource: "secrets".into(),
            subresource: "".into(),
            namespace: "apps".into(),
            name: "db".into(),
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_status_body_has_details() {
    let emu = Emulator::new();
    let served = emu.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let token = emu.service_account_token("default", "x");
    let out = std::process::Command::new("curl")
        .args(["-sS", "-H", &format!("Authorization: Bearer {token}")])
        .arg(format!(
            "{}/api/v1/namespaces/default/secrets/s1",
            served.url()
        ))
        .output()
        .expect("curl runs");
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON Status");
    assert_eq!(
        body,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "secrets \"s1\" is forbidden: User \"system:serviceaccount:default:x\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\"",
            "reason": "Forbidden", "code": 403,
            "details": {"name": "s1", "kind": "secrets"},
        })
    );
    // An unknown token is 401, no credentials at all is the administrator.
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Authorization: Bearer nope",
        ])
        .arg(format!("{}/api/v1/namespaces", served.url()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
    let out = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{}/api/v1/namespaces", served.url()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
}

#[tokio::test]
async fn role_binding_grants_in_its_namespace_only() {
    let (emu, sa) = setup().await;
    rbac(
        &emu,
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: secrets, namespace: apps}
rules:
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "create"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: secrets, namespace: apps}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: secrets}
subjects:
- {kind: ServiceAccount, name: ctl, namespace: ops}
"#,
    );
    let apps: Api<Secret> = Api::namespaced(sa.clone(), "apps");
    apps.create(&PostParams::default(), &secret("s"))
        .await
        .unwrap();
    apps.get("s").await.unwrap();
    apps.list(&ListParams::default()).await.unwrap();
    // Not the verb, not the namespace, not cluster-wide, not another resource.
    assert_eq!(
        api_err(apps.delete("s", &Default::default()).await).code,
        403
    );
    let other: Api<Secret> = Api::namespaced(sa.clone(), "other");
    assert_eq!(api_err(other.list(&ListParams::default()).await).code, 403);
    assert_eq!(
        api_err(
            Api::<Secret>::all(sa.clone())
                .list(&ListParams::default())
                .await
        )
        .code,
        403
    );
    let cms: Api<ConfigMap> = Api::namespaced(sa, "apps");
    assert_eq!(api_err(cms.list(&ListParams::default()).await).code, 403);
    // The record: distinct authorized attributes.
    let verbs: Vec<(String, String)> = emu
        .authorized_requests(SA)
        .into_iter()
        .map(|a| (a.verb, a.namespace))
        .collect();
    assert_eq!(
        verbs,
        vec![
            ("create".to_string(), "apps".to_string()),
            ("get".into(), "apps".into()),
            ("list".into(), "apps".into())
        ]
    );
}

#[tokio::test]
async fn cluster_role_binding_grants_everywhere_and_role_binding_to_cluster_role_in_one_namespace()
{
    let (emu, sa) = setup().await;
    rbac(
        &emu,
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: read-ns}
rules:
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: read-ns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: read-ns}
subjects:
- {kind: Group, name: "system:serviceaccounts:ops", apiGroup: rbac.authorization.k8s.io}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: cm-reader}
rules:
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: cm-reader, namespace: apps}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cm-reader}
subjects:
- {kind: User, name: "system:serviceaccount:ops:ctl", apiGroup: rbac.authorization.k8s.io}
"#,
    );
    Api::<Namespace>::all(sa.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    Api::<Namespace>::all(sa.clone()).get("apps").await.unwrap();
    Api::<ConfigMap>::namespaced(sa.clone(), "apps")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(
        api_err(
            Api::<ConfigMap>::namespaced(sa.clone(), "other")
                .list(&ListParams::default())
                .await
        )
        .code,
        403
    );
    // A RoleBinding never grants cluster-wide.
    assert_eq!(
        api_err(Api::<ConfigMap>::all(sa).list(&ListParams::default()).await).code,
        403
    );
}

#[tokio::test]
async fn resource_names_and_subresources() {
    let (emu, sa) = setup().await;
    rbac(
        &emu,
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: w, namespace: apps}
rules:
- apiGroups: ["test.kube-emulator.io"]
  resources: ["widgets"]
  resourceNames: ["mine"]
  verbs: ["get", "watch", "list"]
- apiGroups: ["test.kube-emulator.io"]
  resources: ["widgets/status"]
  verbs: ["patch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: w, namespace: apps}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: w}
subjects:
- {kind: ServiceAccount, name: ctl, namespace: ops}
"#,
    );
    let admin: Api<Widget> = Api::namespaced(emu.client(), "apps");
    for n in ["mine", "theirs"] {
        admin
            .create(&PostParams::default(), &widget(n, "a"))
            .await
            .unwrap();
    }
    let w: Api<Widget> = Api::namespaced(sa, "apps");
    w.get("mine").await.unwrap();
    let s = api_err(w.get("theirs").await);
    assert_eq!(
        s.message,
        format!(
            r#"widgets.test.kube-emulator.io "theirs" is forbidden: User "{SA}" cannot get resource "widgets" in API group "test.kube-emulator.io" in the namespace "apps""#
        )
    );
    // A list is only authorized by name through a metadata.name field selector.
    assert_eq!(api_err(w.list(&ListParams::default()).await).code, 403);
    w.list(&ListParams::default().fields("metadata.name=mine"))
        .await
        .unwrap();
    // The status subresource is its own resource: patching status is allowed, the main
    // resource is not.
    let status = Patch::Merge(json!({"status": {"ready": true}}));
    w.patch_status("theirs", &PatchParams::default(), &status)
        .await
        .unwrap();
    let s = api_err(
        w.patch(
            "mine",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 2}})),
        )
        .await,
    );
    assert_eq!(
        s.message,
        format!(
            r#"widgets.test.kube-emulator.io "mine" is forbidden: User "{SA}" cannot patch resource "widgets" in API group "test.kube-emulator.io" in the namespace "apps""#
        )
    );
    let got = emu.authorized_requests(SA);
    assert!(
        got.iter()
            .any(|a| a.subresource == "status" && a.verb == "patch" && a.name == "theirs")
    );
    assert!(got.iter().any(|a| a.verb == "list" && a.name == "mine"));
}

#[tokio::test]
async fn wildcards_and_star_subresource() {
    let (emu, sa) = setup().await;
    rbac(
        &emu,
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: status-all}
rules:
- apiGroups: ["*"]
  resources: ["*/status"]
  verbs: ["*"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: status-all}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: status-all}
subjects:
- {kind: ServiceAccount, name: ctl, namespace: ops}
"#,
    );
    emu.client();
    Api::<Widget>::namespaced(emu.client(), "apps")
        .create(&PostParams::default(), &widget("w", "a"))
        .await
        .unwrap();
    let w: Api<Widget> = Api::namespaced(sa, "apps");
    w.get_status("w").await.unwrap();
    assert_eq!(api_err(w.get("w").await).code, 403);
}

#[tokio::test]
async fn binding_to_a_missing_role_says_so() {
    let (emu, sa) = setup().await;
    rbac(
        &emu,
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: dangling, namespace: apps}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: gone}
subjects:
- {kind: ServiceAccount, name: ctl, namespace: ops}
"#,
    );
    let s = api_err(
        Api::<Secret>::namespaced(sa, "apps")
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(
        s.message,
        format!(
            r#"secrets is forbidden: User "{SA}" cannot list resource "secrets" in API group "" in the namespace "apps": RBAC: role.rbac.authorization.k8s.io "gone" not found"#
        )
    );
}

#[tokio::test]
async fn rbac_objects_are_real_kinds_with_validation() {
    let emu = emulator();
    let client = emu.client();
    rbac(
        &emu,
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: a}
rules: [{apiGroups: [""], resources: ["pods"], verbs: ["get"]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: a}
subjects: [{kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}]
"#,
    );
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let roles: Api<ClusterRole> = Api::all(client.clone());
    assert_eq!(
        roles.get("a").await.unwrap().rules.unwrap()[0].verbs,
        vec!["get"]
    );
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let s = api_err(
        bindings
            .patch(
                "a",
                &PatchParams::default(),
                &Patch::Merge(json!({"roleRef": {"name": "b"}})),
            )
            .await,
    );
    assert_eq!(s.code, 422);
    assert!(
        s.message.contains("roleRef: Invalid value")
            && s.message.ends_with("cannot change roleRef"),
        "{}",
        s.message
    );
    let s = api_err(
        roles
            .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "bad"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": []}]})).unwrap())
            .await,
    );
    assert_eq!(s.code, 422);
    assert!(
        s.message.contains("rules[0].verbs: Required value"),
        "{}",
        s.message
    );
    // A User subject by name, with the groups issue_token gives it.
    let alice = emu.client_with_token(&emu.issue_token(UserInfo {
        name: "alice".into(),
        groups: vec!["system:authenticated".into()],
    }));
    let s = api_err(
        Api::<k8s_openapi::api::core::v1::Pod>::namespaced(alice.clone(), "default")
            .get("p")
            .await,
    );
    assert_eq!(s.code, 404, "allowed, then not found");
    // system:masters is a superuser.
    let root = emu.client_with_token(&emu.issue_token(UserInfo {
        name: "root".into(),
        groups: vec!["system:masters".into()],
    }));
    Api::<Secret>::all(root)
        .list(&ListParams::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_subject_access_review_and_token_kubeconfig() {
    let emu = emulator();
    rbac(
        &emu,
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: r, namespace: default}
rules: [{apiGroups: [""], resources: ["secrets"], verbs: ["get"]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: r, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: r}
subjects: [{kind: ServiceAccount, name: x, namespace: default}]
"#,
    );
    let token = emu.service_account_token("default", "x");
    let served = emu.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    // kube's client sends the kubeconfig's token over plain HTTP: RBAC applies.
    let kubeconfig: kube::config::Kubeconfig =
        serde_yaml::from_str(&served.kubeconfig_yaml_with_token(&token)).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    assert_eq!(api_err(secrets.get("s").await).code, 404, "get is allowed");
    assert_eq!(
        api_err(secrets.list(&ListParams::default()).await).code,
        403
    );

    use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
    let review: SelfSubjectAccessReview = serde_json::from_value(json!({
        "spec": {"resourceAttributes": {"namespace": "default", "verb": "get", "resource": "secrets"}}
    }))
    .unwrap();
    let sa: Api<SelfSubjectAccessReview> = Api::all(client);
    assert!(
        sa.create(&PostParams::default(), &review)
            .await
            .unwrap()
            .status
            .unwrap()
            .allowed
    );
    let mut delete = review.clone();
    delete.spec.resource_attributes.as_mut().unwrap().verb = Some("delete".into());
    assert!(
        !sa.create(&PostParams::default(), &delete)
            .await
            .unwrap()
            .status
            .unwrap()
            .allowed
    );
    let admin: Api<SelfSubjectAccessReview> = Api::all(emu.client());
    assert!(
        admin
            .create(&PostParams::default(), &delete)
            .await
            .unwrap()
            .status
            .unwrap()
            .allowed
    );

    // kubectl sends its SelfSubjectAccessReview as protobuf; it never sends credentials over
    // plain HTTP, so against the served emulator it is always the administrator.
    let dir = std::env::temp_dir().join(format!("kube-emulator-rbac-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config");
    std::fs::write(&path, served.kubeconfig_yaml()).unwrap();
    let out = std::process::Command::new("kubectl")
        .args(["auth", "can-i", "delete", "secrets", "-n", "default"])
        .env("KUBECONFIG", &path)
        .env("HOME", &dir)
        .output()
        .expect("kubectl runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "yes",
        "{out:?}"
    );
}
