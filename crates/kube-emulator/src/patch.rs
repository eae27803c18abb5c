//! JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch.
//!
//! Strategic merge patch knows no Go struct tags here: list merge keys come from the field
//! name (`containers`/`env`/`volumes` by `name`, `volumeMounts` by `mountPath`, ...), which
//! covers pod templates, metadata and conditions - the shapes controllers patch.

use serde_json::{Map, Value};

use crate::error::ApiError;

pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let p: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
    let mut doc = target.clone();
    for op in p.0 {
        // The API server's JSON patch library treats a missing path as null in `test`
        // (kube-runtime's finalizer helper relies on `test /metadata/finalizers == null`).
        if let json_patch::PatchOperation::Test(t) = &op
            && t.value.is_null()
            && doc.pointer(t.path.as_str()).is_none()
        {
            continue;
        }
        json_patch::patch(&mut doc, &[op]).map_err(|e| {
            ApiError::new(
                422,
                "Invalid",
                format!("the server rejected our request due to an error in our request: {e}"),
            )
        })?;
    }
    *target = doc;
    Ok(())
}

/// How a list field is merged by strategic merge patch (and server-side apply for built-ins).
#[derive(Debug, Clone, PartialEq)]
pub enum ListStrategy {
    /// Replace the whole list.
    Atomic,
    /// Merge items with equal values of these keys.
    Map(Vec<String>),
    /// Union of primitive values.
    Set,
}

/// Merge strategy of well-known list fields of built-in types (and of every object's metadata).
pub fn builtin_list_strategy(field: &str) -> ListStrategy {
    let key = |k: &str| ListStrategy::Map(vec![k.to_string()]);
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "hostAliases"
        | "readinessGates" => key("name"),
        "volumeMounts" => key("mountPath"),
        "volumeDevices" => key("devicePath"),
        "ports" => key("containerPort"),
        "ownerReferences" => key("uid"),
        "conditions" => key("type"),
        "finalizers" => ListStrategy::Set,
        _ => ListStrategy::Atomic,
    }
}

/// Applies a strategic merge patch for a built-in type.
pub fn strategic_merge(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    if !patch.is_object() {
        return Err(ApiError::bad_request(
            "strategic merge patch must be a JSON object",
        ));
    }
    smp_object(target, patch);
    Ok(())
}

fn smp_object(target: &mut Value, patch: &Value) {
    let Some(pm) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if pm.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = pm.clone();
        replaced.remove("$patch");
        *target = Value::Object(replaced);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let retain: Option<Vec<String>> = pm.get("$retainKeys").and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect()
    });
    for (k, v) in pm {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        let tm = target.as_object_mut().expect("made an object above");
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(del)) = (tm.get_mut(field), v.as_array()) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        match v {
            Value::Null => {
                tm.remove(k);
            }
            Value::Object(o) if o.get("$patch").and_then(Value::as_str) == Some("delete") => {
                tm.remove(k);
            }
            Value::Object(_) => smp_object(tm.entry(k.clone()).or_insert(Value::Null), v),
            Value::Array(items) => {
                let cur = tm.entry(k.clone()).or_insert(Value::Array(vec![]));
                smp_list(cur, items, builtin_list_strategy(k));
            }
            _ => {
                tm.insert(k.clone(), v.clone());
            }
        }
    }
    if let (Some(keep), Some(tm)) = (retain, target.as_object_mut()) {
        tm.retain(|k, _| keep.contains(k));
    }
}

fn smp_list(target: &mut Value, items: &[Value], strategy: ListStrategy) {
    // `{"$patch": "replace"}` inside a list replaces the list with the other items.
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *target = Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .cloned()
                .collect(),
        );
        return;
    }
    if !target.is_array() {
        *target = Value::Array(vec![]);
    }
    let list = target.as_array_mut().expect("made an array above");
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
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match list.iter().position(same) {
                    Some(pos) if delete => {
                        list.remove(pos);
                    }
                    Some(pos) => smp_object(&mut list[pos], item),
                    None if delete => {}
                    None => {
                        let mut fresh = Value::Object(Map::new());
                        smp_object(&mut fresh, item);
                        list.push(fresh);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merges_containers_by_name() {
        let mut t = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "x", "env": [{"name": "A", "value": "1"}]},
            {"name": "b", "image": "y"}
        ]}}}});
        let p = json!({"spec": {"template": {
            "metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "now"}},
            "spec": {"containers": [{"name": "a", "env": [{"name": "B", "value": "2"}]}]}
        }}});
        strategic_merge(&mut t, &p).unwrap();
        let cs = &t["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs.as_array().unwrap().len(), 2);
        assert_eq!(cs[0]["image"], "x");
        assert_eq!(cs[0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(
            t["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
            "now"
        );
    }

    #[test]
    fn strategic_delete_directive() {
        let mut t =
            json!({"env": [{"name": "A"}, {"name": "B"}], "metadata": {"finalizers": ["x"]}});
        let p =
            json!({"env": [{"name": "A", "$patch": "delete"}], "metadata": {"finalizers": ["y"]}});
        strategic_merge(&mut t, &p).unwrap();
        assert_eq!(t["env"], json!([{"name": "B"}]));
        assert_eq!(t["metadata"]["finalizers"], json!(["x", "y"]));
    }
}
