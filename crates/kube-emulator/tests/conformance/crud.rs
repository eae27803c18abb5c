//! CRUD, status codes, selectors, pagination, namespaces, discovery.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{DeleteParams, ListParams, PatchParams, PostParams};
use kube::core::ObjectMeta;
use kube::{Api, ResourceExt};

use crate::{Widget, api_err, emulator, widget};

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
        ..Default::default()
    }
}

#[tokio::test]
async fn crud_and_status_codes() {
    let emu = emulator();
    let api: Api<ConfigMap> = Api::default_namespaced(emu.client());
    let pp = PostParams::default();

    let created = api.create(&pp, &cm("a", &[])).await.unwrap();
    assert!(created.uid().is_some());
    assert!(created.creation_timestamp().is_some());
    let rv1: u64 = created.resource_version().unwrap().parse().unwrap();

    let dup = api_err(api.create(&pp, &cm("a", &[])).await);
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(dup.message, "configmaps \"a\" already exists");

    let missing = api_err(api.get("nope").await);
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "configmaps \"nope\" not found");
    assert!(api.get_opt("nope").await.unwrap().is_none());

    // Optimistic concurrency: a replace with a stale resourceVersion conflicts.
    let mut fresh = api.get("a").await.unwrap();
    fresh.data = Some(BTreeMap::from([("k".into(), "v2".into())]));
    let updated = api.replace("a", &pp, &fresh).await.unwrap();
    let rv2: u64 = updated.resource_version().unwrap().parse().unwrap();
    assert!(rv2 > rv1);
    let stale = api_err(api.replace("a", &pp, &fresh).await);
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
    assert!(
        stale.message.contains("the object has been modified"),
        "{}",
        stale.message
    );

    // A write that changes nothing keeps the resourceVersion.
    let same = api.replace("a", &pp, &updated).await.unwrap();
    assert_eq!(same.resource_version(), updated.resource_version());

    // Missing namespace, invalid name.
    let ghost: Api<ConfigMap> = Api::namespaced(emu.client(), "ghost");
    let e = api_err(ghost.create(&pp, &cm("a", &[])).await);
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "namespaces \"ghost\" not found")
    );
    let e = api_err(api.create(&pp, &cm("Bad_Name", &[])).await);
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(
        e.message.starts_with(
            "ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\""
        ),
        "{}",
        e.message
    );

    // Custom resources: PUT without resourceVersion is refused like the real server does.
    let widgets: Api<Widget> = Api::default_namespaced(emu.client());
    widgets.create(&pp, &widget("w", "ann")).await.unwrap();
    let e = api_err(widgets.replace("w", &pp, &widget("w", "ann")).await);
    assert_eq!(e.code, 422);

    api.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_err(api.get("a").await).code, 404);
    assert_eq!(
        api_err(api.delete("a", &DeleteParams::default()).await).code,
        404
    );
}

#[tokio::test]
async fn generate_name_and_secret_string_data() {
    let emu = emulator();
    let api: Api<ConfigMap> = Api::default_namespaced(emu.client());
    let mut c = cm("", &[]);
    c.metadata.name = None;
    c.metadata.generate_name = Some("gen-".into());
    let created = api.create(&PostParams::default(), &c).await.unwrap();
    assert!(created.name_any().starts_with("gen-") && created.name_any().len() == 9);

    let secrets: Api<Secret> = Api::default_namespaced(emu.client());
    let s = Secret {
        metadata: ObjectMeta {
            name: Some("s".into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([(
            "password".to_string(),
            "hunter2".to_string(),
        )])),
        ..Default::default()
    };
    let created = secrets.create(&PostParams::default(), &s).await.unwrap();
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    assert!(created.string_data.is_none());
    assert_eq!(created.data.unwrap()["password"].0, b"hunter2");
}

#[tokio::test]
async fn selectors_all_namespaces_and_pagination() {
    let emu = emulator();
    let client = emu.client();
    let pp = PostParams::default();
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns = nss
        .create(
            &pp,
            &Namespace {
                metadata: ObjectMeta {
                    name: Some("other".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(ns.labels()["kubernetes.io/metadata.name"], "other");

    let default: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let other: Api<ConfigMap> = Api::namespaced(client.clone(), "other");
    default
        .create(&pp, &cm("a", &[("app", "web"), ("tier", "front")]))
        .await
        .unwrap();
    default
        .create(&pp, &cm("b", &[("app", "db")]))
        .await
        .unwrap();
    default.create(&pp, &cm("c", &[])).await.unwrap();
    other
        .create(&pp, &cm("d", &[("app", "web")]))
        .await
        .unwrap();

    let names = |l: kube::core::ObjectList<ConfigMap>| {
        l.items.iter().map(|c| c.name_any()).collect::<Vec<_>>()
    };
    let sel = |s: &str| ListParams::default().labels(s);
    assert_eq!(names(default.list(&sel("app=web")).await.unwrap()), ["a"]);
    assert_eq!(
        names(default.list(&sel("app!=web")).await.unwrap()),
        ["b", "c"]
    );
    assert_eq!(
        names(default.list(&sel("app in (web,db)")).await.unwrap()),
        ["a", "b"]
    );
    assert_eq!(
        names(default.list(&sel("app notin (web)")).await.unwrap()),
        ["b", "c"]
    );
    assert_eq!(names(default.list(&sel("tier")).await.unwrap()), ["a"]);
    assert_eq!(names(default.list(&sel("!app")).await.unwrap()), ["c"]);
    assert_eq!(
        names(
            default
                .list(&ListParams::default().fields("metadata.name=b"))
                .await
                .unwrap()
        ),
        ["b"]
    );

    let all: Api<ConfigMap> = Api::all(client.clone());
    assert_eq!(names(all.list(&sel("app=web")).await.unwrap()), ["a", "d"]);
    let in_other = all
        .list(&ListParams::default().fields("metadata.namespace=other"))
        .await
        .unwrap();
    assert_eq!(names(in_other), ["d"]);

    // limit/continue walks the whole list in order.
    let mut seen = Vec::new();
    let mut lp = ListParams::default().limit(2);
    loop {
        let page = all.list(&lp).await.unwrap();
        assert!(page.items.len() <= 2);
        let cont = page.metadata.continue_.clone();
        seen.extend(names(page));
        match cont {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(seen, ["a", "b", "c", "d"]);

    // Deleting a namespace deletes what it contains.
    nss.delete("other", &DeleteParams::default()).await.unwrap();
    crate::wait_until("namespace other gone", || async {
        nss.get_opt("other").await.unwrap().is_none()
    })
    .await;
    assert!(other.get_opt("d").await.unwrap().is_none());
}

#[tokio::test]
async fn discovery_finds_builtins_and_crds() {
    let emu = emulator();
    let discovery = kube::discovery::Discovery::new(emu.client())
        .run()
        .await
        .unwrap();
    let kinds: Vec<String> = discovery
        .groups()
        .flat_map(|g| {
            g.recommended_resources()
                .into_iter()
                .map(|(ar, _)| format!("{}/{}", ar.api_version, ar.kind))
        })
        .collect();
    for want in [
        "v1/Secret",
        "v1/Namespace",
        "events.k8s.io/v1/Event",
        "coordination.k8s.io/v1/Lease",
        "apps/v1/Deployment",
        "apps/v1/StatefulSet",
        "apps/v1/DaemonSet",
        "apiextensions.k8s.io/v1/CustomResourceDefinition",
        "test.kube-emulator.io/v1/Widget",
    ] {
        assert!(
            kinds.iter().any(|k| k == want),
            "{want} missing from {kinds:?}"
        );
    }
    let (_, caps) = discovery
        .resolve_gvk(&kube::core::GroupVersionKind::gvk(
            "test.kube-emulator.io",
            "v1",
            "Widget",
        ))
        .unwrap();
    assert!(
        caps.subresources
            .iter()
            .any(|(s, _)| s.plural == "widgets/status" || s.plural == "status"),
        "{:?}",
        caps.subresources
    );
    let info = emu.client().apiserver_version().await.unwrap();
    assert_eq!(info.major, "1");
}

/// Built-in objects are validated as kube-apiserver does, with its messages: Secret data keys
/// (after `stringData` is folded in), label and annotation keys and values, on create and on
/// every kind of update.
#[tokio::test]
async fn built_in_objects_are_validated_like_a_real_server() {
    let emu = emulator();
    let secrets: Api<Secret> = Api::default_namespaced(emu.client());
    let pp = PostParams::default();
    let secret = |name: &str, key: &str| Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([(key.to_string(), "v".to_string())])),
        ..Default::default()
    };
    let e = api_err(secrets.create(&pp, &secret("s", "DATABASE URL")).await);
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        e.message,
        "Secret \"s\" is invalid: data[DATABASE URL]: Invalid value: \"DATABASE URL\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
    );
    let causes = e.details.as_ref().unwrap().causes.clone();
    assert_eq!(causes[0].field, "data[DATABASE URL]");
    let e = api_err(secrets.create(&pp, &secret("s", "..x")).await);
    assert!(
        e.message.ends_with("must not start with '..'"),
        "{}",
        e.message
    );

    let mut ok = secret("s", "DATABASE_URL");
    secrets.create(&pp, &ok).await.unwrap();
    // An update (replace, merge patch, server-side apply) is held to the same rules.
    ok = secrets.get("s").await.unwrap();
    ok.metadata.annotations = Some(BTreeMap::from([("not valid!".into(), "x".into())]));
    let e = api_err(secrets.replace("s", &pp, &ok).await);
    assert_eq!(
        e.message,
        "Secret \"s\" is invalid: metadata.annotations: Invalid value: \"not valid!\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
    );
    let patch = |v: serde_json::Value| kube::api::Patch::Merge(v);
    let e = api_err(
        secrets
            .patch(
                "s",
                &Default::default(),
                &patch(serde_json::json!({"stringData": {"a b": "x"}})),
            )
            .await,
    );
    assert!(
        e.message.contains("data[a b]: Invalid value"),
        "{}",
        e.message
    );
    let e = api_err(
        secrets
            .patch(
                "s",
                &Default::default(),
                &patch(serde_json::json!({"metadata": {"labels": {"Bad_Prefix/x": "v"}}})),
            )
            .await,
    );
    assert!(
        e.message.contains("metadata.labels: Invalid value: \"Bad_Prefix/x\": prefix part a lowercase RFC 1123 subdomain"),
        "{}",
        e.message
    );
    let e = api_err(
        secrets
            .patch(
                "s",
                &Default::default(),
                &patch(serde_json::json!({"metadata": {"labels": {"app": "has space"}}})),
            )
            .await,
    );
    assert!(
        e.message.contains(
            "metadata.labels: Invalid value: \"has space\": a valid label must be an empty string"
        ),
        "{}",
        e.message
    );
    let big = "x".repeat(objmeta_limit());
    let e = api_err(
        secrets
            .patch(
                "s",
                &Default::default(),
                &patch(serde_json::json!({"metadata": {"annotations": {"big": big}}})),
            )
            .await,
    );
    assert!(
        e.message
            .ends_with("metadata.annotations: Too long: may not be more than 262144 bytes"),
        "{}",
        e.message
    );
    let ssa = PatchParams::apply("tester");
    let e = api_err(
        secrets
            .patch(
                "s",
                &ssa,
                &kube::api::Patch::Apply(serde_json::json!({
                    "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                    "stringData": {"x y": "1"}
                })),
            )
            .await,
    );
    assert!(e.message.contains("data[x y]"), "{}", e.message);
    // Nothing of the refused writes was stored.
    let stored = secrets.get("s").await.unwrap();
    assert_eq!(
        stored.data.unwrap().keys().collect::<Vec<_>>(),
        vec!["DATABASE_URL"]
    );
    assert!(stored.metadata.annotations.unwrap_or_default().is_empty());
}

fn objmeta_limit() -> usize {
    256 * 1024
}

/// A DELETE that removes the object at once answers with `Status{Success}` (kube-rs:
/// `Either::Right`); one held by a finalizer answers with the object (`Either::Left`).
#[tokio::test]
async fn immediate_delete_answers_with_a_success_status() {
    let emu = emulator();
    let api: Api<ConfigMap> = Api::default_namespaced(emu.client());
    let pp = PostParams::default();
    let created = api.create(&pp, &cm("gone", &[])).await.unwrap();
    let answer = api.delete("gone", &DeleteParams::default()).await.unwrap();
    let status = answer.right().expect("a Status, not the object");
    assert_eq!(
        status.status,
        Some(kube::core::response::StatusSummary::Success)
    );
    let details = status.details.unwrap();
    assert_eq!(details.name, "gone");
    assert_eq!(details.kind, "configmaps");
    assert_eq!(Some(details.uid), created.metadata.uid);

    let mut held = cm("held", &[]);
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&pp, &held).await.unwrap();
    let answer = api.delete("held", &DeleteParams::default()).await.unwrap();
    let obj = answer.left().expect("the object, marked for deletion");
    assert!(obj.metadata.deletion_timestamp.is_some());
}
