//! Discovery documents (/api, /apis, resource lists), /version, and server-side `Table`
//! rendering for `kubectl get`.

use serde_json::{Value, json};

use crate::registry::{Flavor, Registry, ResourceType};

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-kube-emulator",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
        "emulationMajor": "1",
        "emulationMinor": "33",
    })
}

pub fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    })
}

fn group_doc(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({
        "name": name,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(json!({})),
    })
}

pub fn group_list(reg: &Registry) -> Value {
    let groups: Vec<Value> = reg
        .groups()
        .iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| group_doc(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn group(reg: &Registry, name: &str) -> Option<Value> {
    let groups = reg.groups();
    let vs = groups.get(name)?;
    let mut d = group_doc(name, vs);
    d["kind"] = json!("APIGroup");
    d["apiVersion"] = json!("v1");
    Some(d)
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for rt in reg.types.values().filter(|t| t.group == group) {
        let Some(v) = rt.version(version) else {
            continue;
        };
        let mut r = json!({
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": VERBS,
        });
        if !rt.short_names.is_empty() {
            r["shortNames"] = json!(rt.short_names);
        }
        if !rt.categories.is_empty() {
            r["categories"] = json!(rt.categories);
        }
        if rt.flavor != Flavor::Custom {
            r["storageVersionHash"] = json!(format!("{:x}", fxhash(&rt.group_resource_string())));
        }
        resources.push(r);
        if v.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", rt.plural),
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// `5s`, `3m`, `2h`, `4d` - kubectl's age format (coarsened).
fn age(ts: &str) -> String {
    let Ok(t) = ts.parse::<jiff::Timestamp>() else {
        return "<unknown>".into();
    };
    let secs = (jiff::Timestamp::now().as_second() - t.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 * 2 => format!("{}m", s / 60),
        s if s < 86400 * 2 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// A tiny JSONPath subset for printer columns: `.a.b`, `.a[0]`, `.a[?(@.k=="v")].b`.
fn json_path<'v>(obj: &'v Value, path: &str) -> Option<&'v Value> {
    let re = regex::Regex::new(
        r#"\.([A-Za-z0-9_\-]+)|\[(\d+)\]|\[\?\(@\.([A-Za-z0-9_]+)\s*==\s*["']([^"']*)["']\)\]"#,
    )
    .expect("static regex");
    let mut cur = obj;
    for c in re.captures_iter(path.trim_start_matches('{').trim_end_matches('}')) {
        cur = if let Some(f) = c.get(1) {
            cur.get(f.as_str())?
        } else if let Some(i) = c.get(2) {
            cur.get(i.as_str().parse::<usize>().ok()?)?
        } else {
            let (k, v) = (c.get(3)?.as_str(), c.get(4)?.as_str());
            cur.as_array()?
                .iter()
                .find(|x| x.get(k).and_then(Value::as_str) == Some(v))?
        };
    }
    Some(cur)
}

fn cell(v: Option<&Value>, ty: &str) -> Value {
    match v {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) if ty == "date" => json!(age(s)),
        Some(v) => v.clone(),
    }
}

fn columns(rt: &ResourceType, version: &str) -> Vec<(String, String, String)> {
    // (name, type, jsonPath or a built-in marker)
    let c = |n: &str, t: &str, p: &str| (n.to_string(), t.to_string(), p.to_string());
    let mut cols = vec![c("Name", "string", ".metadata.name")];
    match rt.flavor {
        Flavor::Secret => cols.extend([c("Type", "string", ".type"), c("Data", "string", "#data")]),
        Flavor::ConfigMap => cols.push(c("Data", "string", "#data")),
        Flavor::Namespace => cols.push(c("Status", "string", ".status.phase")),
        Flavor::Deployment => cols.extend([
            c("Ready", "string", "#ready"),
            c("Up-to-date", "integer", ".status.updatedReplicas"),
            c("Available", "integer", ".status.availableReplicas"),
        ]),
        Flavor::StatefulSet => cols.push(c("Ready", "string", "#ready")),
        Flavor::Custom => {
            if let Some(v) = rt.version(version) {
                for pc in &v.printer_columns {
                    let s = |k: &str| pc.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                    cols.push((s("name"), s("type"), s("jsonPath")));
                }
                if !v.printer_columns.is_empty() {
                    return cols;
                }
            }
        }
        _ => {}
    }
    cols.push(c("Age", "date", ".metadata.creationTimestamp"));
    cols
}

/// A `meta.k8s.io/v1 Table` of objects, as the server renders for `kubectl get`.
pub fn table(
    rt: &ResourceType,
    version: &str,
    objs: &[Value],
    rv: &str,
    include_object: bool,
) -> Value {
    let cols = columns(rt, version);
    let defs: Vec<Value> = cols
        .iter()
        .map(|(n, t, _)| json!({"name": n, "type": if t == "date" { "string" } else { t.as_str() }, "format": if n == "Name" { "name" } else { "" }, "description": "", "priority": 0}))
        .collect();
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let cells: Vec<Value> = cols
                .iter()
                .map(|(_, t, p)| match p.as_str() {
                    "#data" => json!(o.get("data").and_then(Value::as_object).map_or(0, |m| m.len())),
                    "#ready" => json!(format!(
                        "{}/{}",
                        o.pointer("/status/readyReplicas").and_then(Value::as_i64).unwrap_or(0),
                        o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)
                    )),
                    path => cell(json_path(o, path), t),
                })
                .collect();
            let object = if include_object {
                o.clone()
            } else {
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or(json!({}))})
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv}, "columnDefinitions": defs, "rows": rows})
}

/// The OpenAPI v3 document of one group/version: only paths with their operations and the
/// `x-kubernetes-group-version-kind` extension and query parameters. That is what kubectl
/// reads to learn that the server validates fields itself (`fieldValidation`), so it skips
/// client-side schema validation. No component schemas (`kubectl explain` does not work).
pub fn openapi_v3_group_version(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let param = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    for rt in reg
        .types
        .values()
        .filter(|t| t.group == group && t.version(version).is_some())
    {
        let gvk = json!({"group": rt.group, "version": version, "kind": rt.kind});
        let op = |action: &str, params: Vec<Value>| {
            json!({
                "operationId": format!("{action}{}", rt.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
            })
        };
        let write_params = || {
            vec![
                param("dryRun"),
                param("fieldManager"),
                param("fieldValidation"),
            ]
        };
        let mut patch_params = write_params();
        patch_params.push(param("force"));
        let base = if rt.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", rt.plural)
        } else {
            format!("{prefix}/{}", rt.plural)
        };
        paths.insert(base.clone(), json!({
            "get": op("list", vec![param("labelSelector"), param("fieldSelector"), param("limit"), param("continue"), param("watch")]),
            "post": op("post", write_params()),
            "delete": op("deletecollection", vec![]),
        }));
        paths.insert(
            format!("{base}/{{name}}"),
            json!({
                "get": op("get", vec![]),
                "put": op("put", write_params()),
                "patch": op("patch", patch_params.clone()),
                "delete": op("delete", vec![param("dryRun")]),
            }),
        );
        if rt.has_status(version) {
            paths.insert(
                format!("{base}/{{name}}/status"),
                json!({
                    "get": op("get", vec![]),
                    "put": op("put", write_params()),
                    "patch": op("patch", patch_params),
                }),
            );
        }
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

/// The OpenAPI v3 root: one entry per group/version, with a content hash in the URL so
/// kubectl's disk cache never serves another emulator instance's document.
pub fn openapi_v3_root(reg: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    for (group, versions) in reg.groups() {
        for v in versions {
            let key = if group.is_empty() {
                format!("api/{v}")
            } else {
                format!("apis/{group}/{v}")
            };
            if let Some(doc) = openapi_v3_group_version(reg, &group, &v) {
                let hash = format!("{:016X}", fxhash(&doc.to_string()));
                paths.insert(
                    key.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")}),
                );
            }
        }
    }
    json!({"paths": paths})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_path_filter() {
        let o = json!({"status": {"conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        assert_eq!(
            json_path(&o, r#".status.conditions[?(@.type=="Ready")].status"#),
            Some(&json!("True"))
        );
        assert_eq!(
            json_path(&o, ".status.conditions[0].type"),
            Some(&json!("A"))
        );
    }
}
