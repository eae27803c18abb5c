//! Custom resource types (API group `rdscred.io/v1alpha1`) and the generated CRD YAML.

mod common;
mod credential;
mod database;
mod schema;

pub use common::*;
pub use credential::*;
pub use database::*;

use kube::CustomResourceExt;

/// API group of both kinds.
pub const GROUP: &str = "rdscred.io";

/// Both CRDs as multi-document YAML, exactly what `crds/` holds and `rdscred crd` prints.
pub fn crds_yaml() -> String {
    let mut out = String::new();
    for crd in [RdsDatabase::crd(), RdsCredential::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd).expect("CRD serializes"));
    }
    out
}

/// File names under `crds/` and their contents.
pub fn crd_files() -> Vec<(&'static str, String)> {
    vec![
        (
            "rdsdatabases.rdscred.io.yaml",
            serde_yaml::to_string(&RdsDatabase::crd()).expect("CRD serializes"),
        ),
        (
            "rdscredentials.rdscred.io.yaml",
            serde_yaml::to_string(&RdsCredential::crd()).expect("CRD serializes"),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn crd_values() -> Vec<(&'static str, Value)> {
        crd_files()
            .into_iter()
            .map(|(name, yaml)| (name, serde_yaml::from_str(&yaml).expect("CRD YAML")))
            .collect()
    }

    /// The API server's CEL cost estimate, per rule and per CRD, as the emulator computes it
    /// (`cargo test -- --nocapture crd::` prints the table). Real servers refuse a rule over
    /// 10M and a CRD over 100M; ours stay orders of magnitude below.
    #[test]
    fn cel_rules_are_far_inside_the_api_servers_cost_budget() {
        use kube_emulator::cel_cost::{crd_schemas, estimate_schema};
        for (name, crd) in crd_values() {
            for (field, schema) in crd_schemas(&crd) {
                let cost = estimate_schema(schema, &field);
                println!("{name}: total {}", cost.total);
                for r in &cost.rules {
                    println!(
                        "  {:>6} = {:>5} x {:<3} {}",
                        r.cost, r.per_call, r.cardinality, r.rule
                    );
                }
                assert_eq!(cost.refusals(&field), Vec::<String>::new(), "{name}");
                assert!(
                    cost.total < 100_000,
                    "{name}: total {} is no longer small",
                    cost.total
                );
            }
        }
    }

    fn walk<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
        out.push((path.clone(), v));
        if let Some(props) = v.get("properties").and_then(Value::as_object) {
            for (k, p) in props {
                walk(p, format!("{path}.{k}"), out);
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(sub) = v.get(key).filter(|s| s.is_object()) {
                walk(sub, format!("{path}.{key}"), out);
            }
        }
    }

    /// What `kubectl explain` and API servers from 1.34 show: a real root description, no
    /// `uint*` formats ("unrecognized format"), no `null` among enum values, a bound on every
    /// list and map of the spec, conditions as a list-map keyed by type, RFC 3339 timestamps.
    #[test]
    fn crds_follow_the_api_conventions() {
        for (name, crd) in crd_values() {
            let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
            let description = root["description"].as_str().unwrap_or("");
            assert!(
                description.len() > 80 && !description.contains("Auto-generated"),
                "{name}: root description {description:?}"
            );
            let mut nodes = Vec::new();
            walk(root, String::new(), &mut nodes);
            for (path, node) in &nodes {
                if let Some(f) = node.get("format").and_then(Value::as_str) {
                    assert!(
                        ["int32", "int64", "date-time"].contains(&f),
                        "{name}{path}: format {f}"
                    );
                }
                if let Some(e) = node.get("enum").and_then(Value::as_array) {
                    assert!(!e.contains(&Value::Null), "{name}{path}: null in enum");
                }
                let is_map = node.get("additionalProperties").is_some();
                if path.starts_with(".spec") && node["type"] == "array" {
                    assert!(
                        node.get("maxItems").is_some(),
                        "{name}{path}: list without maxItems"
                    );
                }
                if path.starts_with(".spec") && is_map {
                    assert!(
                        node.get("maxProperties").is_some(),
                        "{name}{path}: map without maxProperties"
                    );
                }
                if path.ends_with("Time") || path.ends_with("At") || path.ends_with("Check") {
                    assert_eq!(node["format"], "date-time", "{name}{path}");
                }
            }
            let conditions = &root["properties"]["status"]["properties"]["conditions"];
            assert_eq!(conditions["x-kubernetes-list-type"], "map", "{name}");
            assert_eq!(
                conditions["x-kubernetes-list-map-keys"],
                serde_json::json!(["type"]),
                "{name}"
            );
        }
    }

    /// One of each privilege fits: the list bound is the size of the allowlist.
    #[test]
    fn privilege_list_bound_is_the_allowlist_size() {
        let crd = &crd_values()[1].1;
        let grant = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["privileges"]["items"]["properties"]["privileges"];
        let allowlist = grant["items"]["enum"].as_array().unwrap().len();
        assert_eq!(grant["maxItems"], allowlist);
    }

    /// `crds/` is what users apply and what the integration tests install: it must be exactly
    /// what the code generates.
    #[test]
    fn checked_in_crds_match_the_code() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        for (name, yaml) in crd_files() {
            let on_disk = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
            assert!(
                on_disk == yaml,
                "crds/{name} is out of date: run `cargo run -q -- crd --out-dir crds`"
            );
        }
    }
}
