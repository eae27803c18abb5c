//! Server-side apply and `metadata.managedFields`, simplified.
//!
//! Field ownership is tracked per (manager, operation, subresource) as a set of leaf paths in
//! the FieldsV1 notation (`f:spec`, `f:name`, `k:{"name":"a"}`, `v:"x"`). Leaves are scalar
//! fields, atomic lists and empty maps; items of associative lists (`x-kubernetes-list-type:
//! map`, and the well-known built-in lists) and values of set lists are owned individually.
//!
//! Apply: conflicts are reported for fields another manager owns whose value would change
//! (unless `force`, which takes them over); fields the manager applied before and no longer
//! applies are removed when nobody else owns them; the applied object is merged in (maps
//! recursively, associative lists by key, sets by union, everything else replaced).
//! Update (POST/PUT/PATCH): changed leaves move to the updating manager.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::patch::{ListStrategy, builtin_list_strategy};
use crate::registry::ResourceType;

pub type FieldPath = Vec<String>;
pub type FieldSet = BTreeSet<FieldPath>;

/// Where list strategies come from: the CRD schema node, or built-in knowledge.
#[derive(Clone, Copy)]
pub struct Types<'a> {
    pub schema: Option<&'a Value>,
    pub builtin: bool,
}

impl<'a> Types<'a> {
    pub fn for_type(rt: &'a ResourceType, version: &str) -> Types<'a> {
        let schema = rt.version(version).and_then(|v| v.schema.as_ref());
        Types {
            schema,
            builtin: schema.is_none(),
        }
    }
    fn child(self, field: &str) -> Types<'a> {
        let schema = self.schema.and_then(|s| {
            s.get("properties")
                .and_then(|p| p.get(field))
                .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
        });
        Types {
            schema,
            builtin: self.builtin,
        }
    }
    fn items(self) -> Types<'a> {
        Types {
            schema: self.schema.and_then(|s| s.get("items")),
            builtin: self.builtin,
        }
    }
    fn list_strategy(self, field: &str, in_metadata: bool) -> ListStrategy {
        if in_metadata && matches!(field, "finalizers" | "ownerReferences") {
            return builtin_list_strategy(field);
        }
        if let Some(s) = self.schema {
            return match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
                Some("map") => ListStrategy::Map(
                    s.get("x-kubernetes-list-map-keys")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|k| k.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default(),
                ),
                Some("set") => ListStrategy::Set,
                _ => ListStrategy::Atomic,
            };
        }
        if self.builtin {
            builtin_list_strategy(field)
        } else {
            ListStrategy::Atomic
        }
    }
}

/// Top-level fields that are never managed (identity and server-set metadata).
fn managed_top(obj: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in obj {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                let mut m = Map::new();
                if let Some(meta) = v.as_object() {
                    for f in ["labels", "annotations", "finalizers", "ownerReferences"] {
                        if let Some(x) = meta.get(f) {
                            m.insert(f.to_string(), x.clone());
                        }
                    }
                }
                if !m.is_empty() {
                    out.insert(k.clone(), Value::Object(m));
                }
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

fn key_segment(item: &Value, keys: &[String]) -> String {
    let mut m = Map::new();
    for k in keys {
        m.insert(k.clone(), item.get(k).cloned().unwrap_or(Value::Null));
    }
    format!("k:{}", Value::Object(m))
}

/// The leaf field paths of an object.
pub fn field_set(obj: &Value, types: Types) -> FieldSet {
    let mut out = FieldSet::new();
    if let Some(o) = obj.as_object() {
        let top = managed_top(o);
        for (k, v) in &top {
            let mut path = vec![format!("f:{k}")];
            leaves(v, types.child(k), k == "metadata", &mut path, &mut out);
        }
    }
    out
}

fn leaves(v: &Value, types: Types, in_metadata: bool, path: &mut FieldPath, out: &mut FieldSet) {
    match v {
        Value::Object(o) if !o.is_empty() => {
            for (k, child) in o {
                path.push(format!("f:{k}"));
                match child {
                    Value::Array(items) => list_leaves(
                        items,
                        types.child(k),
                        types.list_strategy_for(k, in_metadata),
                        path,
                        out,
                    ),
                    _ => leaves(child, types.child(k), false, path, out),
                }
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

impl Types<'_> {
    fn list_strategy_for(self, field: &str, in_metadata: bool) -> ListStrategy {
        self.child(field).list_strategy(field, in_metadata)
    }
}

fn list_leaves(
    items: &[Value],
    types: Types,
    strategy: ListStrategy,
    path: &mut FieldPath,
    out: &mut FieldSet,
) {
    match strategy {
        ListStrategy::Atomic => {
            out.insert(path.clone());
        }
        ListStrategy::Set => {
            for item in items {
                path.push(format!("v:{item}"));
                out.insert(path.clone());
                path.pop();
            }
        }
        ListStrategy::Map(keys) => {
            for item in items {
                path.push(key_segment(item, &keys));
                // The item itself is owned too (the real server's "." entry), so dropping an
                // item from an apply removes it.
                out.insert(path.clone());
                leaves(item, types.items(), false, path, out);
                path.pop();
            }
        }
    }
}

/// Value at a field path (None when absent).
pub fn get_at<'v>(obj: &'v Value, path: &[String]) -> Option<&'v Value> {
    let mut cur = obj;
    for seg in path {
        cur = step(cur, seg)?;
    }
    Some(cur)
}

fn step<'v>(cur: &'v Value, seg: &str) -> Option<&'v Value> {
    if let Some(f) = seg.strip_prefix("f:") {
        cur.get(f)
    } else if let Some(k) = seg.strip_prefix("k:") {
        let keys: Map<String, Value> = serde_json::from_str(k).ok()?;
        cur.as_array()?.iter().find(|i| {
            keys.iter()
                .all(|(kk, kv)| i.get(kk).unwrap_or(&Value::Null) == kv)
        })
    } else if let Some(v) = seg.strip_prefix("v:") {
        let want: Value = serde_json::from_str(v).ok()?;
        cur.as_array()?.iter().find(|i| **i == want)
    } else {
        None
    }
}

/// Removes the field/item at `path` (no-op when absent).
pub fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for seg in parent_path {
        let next = if let Some(f) = seg.strip_prefix("f:") {
            cur.get_mut(f)
        } else if let Some(k) = seg.strip_prefix("k:") {
            let Ok(keys) = serde_json::from_str::<Map<String, Value>>(k) else {
                return;
            };
            cur.as_array_mut().and_then(|a| {
                a.iter_mut().find(|i| {
                    keys.iter()
                        .all(|(kk, kv)| i.get(kk).unwrap_or(&Value::Null) == kv)
                })
            })
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(o) = cur.as_object_mut() {
            o.remove(f);
        }
    } else if let Some(k) = last.strip_prefix("k:") {
        if let (Ok(keys), Some(a)) = (
            serde_json::from_str::<Map<String, Value>>(k),
            cur.as_array_mut(),
        ) {
            a.retain(|i| {
                !keys
                    .iter()
                    .all(|(kk, kv)| i.get(kk).unwrap_or(&Value::Null) == kv)
            });
        }
    } else if let Some(v) = last.strip_prefix("v:")
        && let (Ok(want), Some(a)) = (serde_json::from_str::<Value>(v), cur.as_array_mut())
    {
        a.retain(|i| *i != want);
    }
}

/// Merges an applied configuration into the live object.
pub fn merge_applied(live: &mut Value, applied: &Value, types: Types, in_metadata: bool) {
    match (live.as_object_mut(), applied.as_object()) {
        (Some(lo), Some(ao)) => {
            for (k, av) in ao {
                let child_types = types.child(k);
                match (lo.get_mut(k), av) {
                    (Some(lv), Value::Object(_)) if lv.is_object() => {
                        merge_applied(lv, av, child_types, k == "metadata")
                    }
                    (Some(lv), Value::Array(items)) if lv.is_array() => merge_list(
                        lv,
                        items,
                        child_types,
                        types.list_strategy_for(k, in_metadata),
                    ),
                    _ => {
                        lo.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        _ => *live = applied.clone(),
    }
}

fn merge_list(live: &mut Value, items: &[Value], types: Types, strategy: ListStrategy) {
    let list = live.as_array_mut().expect("caller checked");
    match strategy {
        ListStrategy::Atomic => *list = items.to_vec(),
        ListStrategy::Set => {
            for i in items {
                if !list.contains(i) {
                    list.push(i.clone());
                }
            }
        }
        ListStrategy::Map(keys) => {
            for item in items {
                let same = |x: &Value| keys.iter().all(|k| x.get(k) == item.get(k));
                match list.iter().position(same) {
                    Some(pos) => merge_applied(&mut list[pos], item, types.items(), false),
                    None => list.push(item.clone()),
                }
            }
        }
    }
}

/// One `managedFields` entry, parsed.
#[derive(Debug, Clone)]
pub struct Manager {
    pub manager: String,
    pub operation: String,
    pub subresource: String,
    pub api_version: String,
    pub time: String,
    pub fields: FieldSet,
}

pub fn read_managers(obj: &Value) -> Vec<Manager> {
    let Some(entries) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return vec![];
    };
    entries
        .iter()
        .map(|e| {
            let mut fields = FieldSet::new();
            if let Some(f) = e.get("fieldsV1") {
                tree_to_set(f, &mut vec![], &mut fields);
            }
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            Manager {
                manager: s("manager"),
                operation: s("operation"),
                subresource: s("subresource"),
                api_version: s("apiVersion"),
                time: s("time"),
                fields,
            }
        })
        .collect()
}

fn tree_to_set(tree: &Value, path: &mut FieldPath, out: &mut FieldSet) {
    let Some(o) = tree.as_object() else { return };
    let children: Vec<_> = o.iter().filter(|(k, _)| k.as_str() != ".").collect();
    if o.contains_key(".") || (children.is_empty() && !path.is_empty()) {
        out.insert(path.clone());
    }
    for (k, v) in children {
        path.push(k.clone());
        tree_to_set(v, path, out);
        path.pop();
    }
}

fn set_to_tree(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for seg in path {
            cur = cur
                .entry(seg.clone())
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("tree nodes are objects");
        }
        // A path that is also a parent of other paths is marked with "." like the real server.
        if !cur.is_empty() {
            cur.insert(".".into(), json!({}));
        }
    }
    // Paths inserted before their children also need the "." marker.
    fn mark(node: &mut Map<String, Value>, path: &mut FieldPath, set: &FieldSet) {
        for (k, v) in node.iter_mut() {
            if k == "." {
                continue;
            }
            path.push(k.clone());
            if let Some(child) = v.as_object_mut() {
                if !child.is_empty() && set.contains(path) && !child.contains_key(".") {
                    child.insert(".".into(), json!({}));
                }
                mark(child, path, set);
            }
            path.pop();
        }
    }
    mark(&mut root, &mut vec![], set);
    Value::Object(root)
}

pub fn write_managers(obj: &mut Value, managers: &[Manager]) {
    let entries: Vec<Value> = managers
        .iter()
        .filter(|m| !m.fields.is_empty())
        .map(|m| {
            let mut e = json!({
                "manager": m.manager,
                "operation": m.operation,
                "apiVersion": m.api_version,
                "time": m.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": set_to_tree(&m.fields),
            });
            if !m.subresource.is_empty() {
                e["subresource"] = json!(m.subresource);
            }
            e
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if entries.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(entries));
        }
    }
}

/// A conflict of an apply with another manager's field.
#[derive(Debug)]
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub path: String,
}

/// `.spec.x[name="a"].y` rendering used in conflict messages.
pub fn render_path(path: &[String]) -> String {
    let mut s = String::new();
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = seg.strip_prefix("k:") {
            if let Ok(m) = serde_json::from_str::<Map<String, Value>>(k) {
                let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
                s.push_str(&format!("[{}]", parts.join(",")));
            }
        } else if let Some(v) = seg.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        }
    }
    s
}

pub struct ApplyRequest<'a> {
    pub manager: &'a str,
    pub subresource: &'a str,
    pub api_version: &'a str,
    pub time: &'a str,
    pub force: bool,
    pub types: Types<'a>,
}

/// Server-side apply of `applied` onto `live` (which already carries its managedFields).
pub fn apply(live: &Value, applied: &Value, req: &ApplyRequest) -> Result<Value, Vec<Conflict>> {
    let mut managers = read_managers(live);
    let new_fields = field_set(applied, req.types);
    let is_me = |m: &Manager| m.manager == req.manager && m.subresource == req.subresource;
    let mut conflicts = Vec::new();
    for m in managers
        .iter_mut()
        .filter(|m| !is_me(m) && m.subresource == req.subresource)
    {
        let taken: Vec<FieldPath> = m
            .fields
            .iter()
            .filter(|p| new_fields.contains(*p) && get_at(live, p) != get_at(applied, p))
            .cloned()
            .collect();
        for p in taken {
            if req.force {
                m.fields.remove(&p);
            } else {
                conflicts.push(Conflict {
                    manager: m.manager.clone(),
                    api_version: m.api_version.clone(),
                    path: render_path(&p),
                });
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    let previous: FieldSet = managers
        .iter()
        .filter(|m| is_me(m) && m.operation == "Apply")
        .flat_map(|m| m.fields.iter().cloned())
        .collect();
    let mut out = live.clone();
    // Fields this manager applied before and dropped now go away, unless someone else owns them.
    let mut dropped: Vec<&FieldPath> = previous
        .iter()
        .filter(|p| !new_fields.contains(*p))
        .filter(|p| {
            !managers
                .iter()
                .any(|m| !(is_me(m) && m.operation == "Apply") && m.fields.contains(*p))
        })
        .collect();
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in dropped {
        remove_at(&mut out, p);
    }
    let mut body = applied.clone();
    if let Some(o) = body.as_object_mut() {
        // Identity is not merged from the applied object; the server owns it.
        o.remove("apiVersion");
        o.remove("kind");
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            let kept = managed_top(&Map::from_iter([(
                "metadata".to_string(),
                Value::Object(m.clone()),
            )]));
            *m = kept
                .get("metadata")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
        }
    }
    merge_applied(&mut out, &body, req.types, false);
    managers.retain(|m| !(is_me(m) && m.operation == "Apply"));
    managers.push(Manager {
        manager: req.manager.to_string(),
        operation: "Apply".into(),
        subresource: req.subresource.to_string(),
        api_version: req.api_version.to_string(),
        time: req.time.to_string(),
        fields: new_fields,
    });
    write_managers(&mut out, &managers);
    Ok(out)
}

/// Records a non-apply write: leaves that changed between `old` and `new` now belong to
/// `manager` (operation Update); leaves that disappeared are dropped from every manager.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: &str,
    api_version: &str,
    time: &str,
    types: Types,
) {
    let mut managers = old.map(read_managers).unwrap_or_default();
    let new_fields = field_set(new, types);
    let changed: FieldSet = new_fields
        .iter()
        .filter(|p| old.is_none_or(|o| get_at(o, p) != get_at(new, p)))
        .cloned()
        .collect();
    for m in managers.iter_mut() {
        m.fields
            .retain(|p| new_fields.contains(p) && !changed.contains(p));
    }
    if !changed.is_empty() {
        match managers.iter_mut().find(|m| {
            m.manager == manager && m.operation == "Update" && m.subresource == subresource
        }) {
            Some(m) => {
                m.fields.extend(changed);
                m.time = time.to_string();
                m.api_version = api_version.to_string();
            }
            None => managers.push(Manager {
                manager: manager.to_string(),
                operation: "Update".into(),
                subresource: subresource.to_string(),
                api_version: api_version.to_string(),
                time: time.to_string(),
                fields: changed,
            }),
        }
    }
    write_managers(new, &managers);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(manager: &str, force: bool) -> ApplyRequest<'_> {
        ApplyRequest {
            manager,
            subresource: "",
            api_version: "v1",
            time: "t",
            force,
            types: Types {
                schema: None,
                builtin: true,
            },
        }
    }

    #[test]
    fn apply_merges_removes_and_conflicts() {
        let live =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}});
        let a1 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        let o1 = apply(&live, &a1, &req("m1", false)).unwrap();
        assert_eq!(o1["data"], json!({"a": "1", "b": "2"}));
        // m1 drops b: removed.
        let a2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
        let o2 = apply(&o1, &a2, &req("m1", false)).unwrap();
        assert_eq!(o2["data"], json!({"a": "1"}));
        // m2 changes a: conflict, unless forced.
        let a3 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "9"}});
        let c = apply(&o2, &a3, &req("m2", false)).unwrap_err();
        assert_eq!(c[0].path, ".data.a");
        let o3 = apply(&o2, &a3, &req("m2", true)).unwrap();
        assert_eq!(o3["data"]["a"], "9");
        let ms = read_managers(&o3);
        assert!(
            ms.iter().all(|m| m.manager != "m1"),
            "m1 lost its only field: {ms:?}"
        );
    }
}
