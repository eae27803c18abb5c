//! The API server's CEL cost limits: CRDs whose rules are estimated over budget are refused on
//! every path (Rust API, HTTP API, kubectl against the served emulator), and objects whose
//! rules cost too much to evaluate are refused at admission. Also the list-map and
//! `date-time` checks the rdscred CRDs rely on.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use crate::api_err;

const OVER_BUDGET: &str = "estimated rule cost exceeds budget by factor of more than 100x";

fn crd(spec: Value, status: Value) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": "gadgets.cost.kube-emulator.io" },
        "spec": {
            "group": "cost.kube-emulator.io", "scope": "Namespaced",
            "names": { "plural": "gadgets", "singular": "gadget", "kind": "Gadget" },
            "versions": [{ "name": "v1", "served": true, "storage": true,
                "subresources": { "status": {} },
                "schema": { "openAPIV3Schema": { "type": "object",
                    "properties": { "spec": spec, "status": status } } } }]
        }
    })
}

/// The documented refusal: a rule over an unbounded list of unbounded strings.
fn unbounded_crd() -> Value {
    crd(
        json!({ "type": "object", "properties": { "names": {
            "type": "array", "items": { "type": "string" },
            "x-kubernetes-validations": [{ "rule": "self.all(x, x.contains('a string'))" }] } } }),
        json!({ "type": "object" }),
    )
}

fn bounded_crd() -> Value {
    let mut c = unbounded_crd();
    let names = &mut c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["names"];
    names["maxItems"] = json!(25);
    names["items"]["maxLength"] = json!(10);
    c
}

fn gadgets(emu: &kube_emulator::Emulator) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cost.kube-emulator.io", "v1", "Gadget"),
        "gadgets",
    );
    Api::namespaced_with(emu.client(), "default", &ar)
}

fn gadget(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(
        json!({ "apiVersion": "cost.kube-emulator.io/v1", "kind": "Gadget",
        "metadata": { "name": name }, "spec": spec }),
    )
    .unwrap()
}

#[tokio::test]
async fn crds_over_the_cost_budget_are_refused() {
    let emu = kube_emulator::Emulator::new();
    let err = emu
        .install_crds_yaml(&serde_json::to_string(&unbounded_crd()).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("spec.validation.openAPIV3Schema.properties[spec].properties[names].x-kubernetes-validations[0].rule: Forbidden: {OVER_BUDGET}")),
        "{err}"
    );

    let crds: Api<CustomResourceDefinition> = Api::all(emu.client());
    let body: CustomResourceDefinition = serde_json::from_value(unbounded_crd()).unwrap();
    let e = api_err(crds.create(&PostParams::default(), &body).await);
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(
        e.message.starts_with("CustomResourceDefinition.apiextensions.k8s.io \"gadgets.cost.kube-emulator.io\" is invalid: ["),
        "{}",
        e.message
    );
    assert!(e.message.contains("x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget"), "{}", e.message);

    // Bounded, it installs; making it unbounded again on update is refused as well.
    let bounded: CustomResourceDefinition = serde_json::from_value(bounded_crd()).unwrap();
    let created = crds.create(&PostParams::default(), &bounded).await.unwrap();
    let mut worse = body;
    worse.metadata.resource_version = created.metadata.resource_version;
    let e = api_err(
        crds.replace(
            "gadgets.cost.kube-emulator.io",
            &PostParams::default(),
            &worse,
        )
        .await,
    );
    assert!(e.message.contains(OVER_BUDGET), "{}", e.message);
}

#[tokio::test]
async fn kubectl_apply_of_an_over_budget_crd_fails_like_a_real_server() {
    let emu = kube_emulator::Emulator::new();
    let served = emu.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = std::env::temp_dir().join(format!("kube-emulator-cel-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, served.kubeconfig_yaml()).unwrap();
    let manifest = dir.join("crd.json");
    std::fs::write(&manifest, serde_json::to_string(&unbounded_crd()).unwrap()).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("kubectl")
            .args([
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "apply",
                "--server-side",
                "-f",
            ])
            .arg(&manifest)
            .output()
            .expect("kubectl runs")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "kubectl apply succeeded: {stderr}");
    assert!(stderr.contains(OVER_BUDGET), "{stderr}");
    served.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// One string, twelve rules of about 0.9M each at a million characters: accepted at CRD
/// creation (each well within 10M), but together over the 10M per-object budget for such
/// an object, and each over the 1M per-call limit at 1.2M characters.
#[tokio::test]
async fn objects_whose_rules_cost_too_much_to_evaluate_are_refused() {
    let emu = kube_emulator::Emulator::new();
    let rule = json!({ "rule": "self.matches('^(a|b|c|d|e|f|g|h|i|j|k|l|m|n|o)+$')", "message": "letters a-o" });
    let c = crd(
        json!({ "type": "object", "properties": {
            "text": { "type": "string", "maxLength": 1_200_000, "x-kubernetes-validations": vec![rule; 12] } } }),
        json!({ "type": "object" }),
    );
    emu.install_crds_yaml(&serde_json::to_string(&c).unwrap())
        .unwrap();
    let api = gadgets(&emu);
    let pp = PostParams::default();
    api.create(
        &pp,
        &gadget("small", json!({ "text": "a".repeat(500_000) })),
    )
    .await
    .unwrap();
    let e = api_err(
        api.create(
            &pp,
            &gadget("large", json!({ "text": "a".repeat(1_000_000) })),
        )
        .await,
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message.contains("spec.text: Invalid value: \"string\": validation failed due to running out of cost budget, no further validation rules will be run"),
        "{}",
        e.message
    );
    let e = api_err(
        api.create(
            &pp,
            &gadget("huge", json!({ "text": "a".repeat(1_200_000) })),
        )
        .await,
    );
    assert!(
        e.message.contains("'operation cancelled: actual cost limit exceeded': no further validation rules will be run due to call cost exceeds limit for rule: letters a-o"),
        "{}",
        e.message
    );
}

/// Conditions as a list-map keyed by type: one entry per type; timestamps in RFC 3339.
#[tokio::test]
async fn list_map_keys_are_unique_and_date_times_are_rfc3339() {
    let emu = kube_emulator::Emulator::new();
    let condition = json!({ "type": "object", "required": ["type", "status"], "properties": {
        "type": { "type": "string" }, "status": { "type": "string" },
        "lastTransitionTime": { "type": "string", "format": "date-time" } } });
    let c = crd(
        json!({ "type": "object" }),
        json!({ "type": "object", "properties": {
            "conditions": { "type": "array", "maxItems": 8, "items": condition,
                "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"] },
            "syncedAt": { "type": "string", "format": "date-time" } } }),
    );
    emu.install_crds_yaml(&serde_json::to_string(&c).unwrap())
        .unwrap();
    let api = gadgets(&emu);
    api.create(&PostParams::default(), &gadget("g", json!({})))
        .await
        .unwrap();
    let status = |s: Value| Patch::Merge(json!({ "status": s }));
    let pp = PatchParams::default();
    api.patch_status("g", &pp, &status(json!({ "syncedAt": "2026-12-01T23:12:44.123456789Z",
        "conditions": [{ "type": "Ready", "status": "True", "lastTransitionTime": "2026-12-01T23:12:44Z" },
                       { "type": "Synced", "status": "True" }] })))
        .await
        .unwrap();

    let e = api_err(
        api.patch_status(
            "g",
            &pp,
            &status(json!({ "conditions": [
        { "type": "Ready", "status": "True" }, { "type": "Ready", "status": "False" }] })),
        )
        .await,
    );
    assert!(
        e.message.contains(
            "status.conditions[1]: Duplicate value: map[string]interface {}{\"type\":\"Ready\"}"
        ),
        "{}",
        e.message
    );
    let e = api_err(
        api.patch_status("g", &pp, &status(json!({ "syncedAt": "yesterday" })))
            .await,
    );
    assert!(
        e.message.contains("status.syncedAt: Invalid value: \"yesterday\": status.syncedAt in body must be of type date-time: \"yesterday\""),
        "{}",
        e.message
    );
}
