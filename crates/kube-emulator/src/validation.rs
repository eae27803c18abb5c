//! Custom resource admission against the CRD's openAPIV3Schema, in the real server's order:
//! prune unknown fields, apply `default`s, validate the structural schema, then evaluate
//! `x-kubernetes-validations` CEL rules (kube-cel), transition rules with `oldSelf` on update.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde_json::{Map, Value};

use crate::error::{FieldError, render_value};
use crate::registry::ResourceType;

/// Metadata fields a custom resource keeps (everything else under `metadata` is pruned).
const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
    "selfLink",
];

fn preserves_unknown(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// Removes fields the schema does not declare, returning their paths (for
/// `fieldValidation=Strict`). The root keeps apiVersion/kind/metadata as the server does.
pub fn prune_root(obj: &mut Value, schema: &Value) -> Vec<String> {
    let mut removed = Vec::new();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.retain(|k, _| {
            let keep = OBJECT_META_FIELDS.contains(&k.as_str());
            if !keep {
                removed.push(format!("metadata.{k}"));
            }
            keep
        });
    }
    let Some(o) = obj.as_object_mut() else {
        return removed;
    };
    let props = schema.get("properties").and_then(Value::as_object);
    let keep_all = preserves_unknown(schema);
    let keys: Vec<String> = o.keys().cloned().collect();
    for k in keys {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match props.and_then(|p| p.get(&k)) {
            Some(sub) => prune(
                o.get_mut(&k).expect("key listed above"),
                sub,
                &k,
                &mut removed,
            ),
            None if keep_all => {}
            None => {
                o.remove(&k);
                removed.push(k);
            }
        }
    }
    removed
}

fn prune(v: &mut Value, schema: &Value, path: &str, removed: &mut Vec<String>) {
    // Embedded resources keep their own apiVersion/kind/metadata.
    let embedded = schema
        .get("x-kubernetes-embedded-resource")
        .and_then(Value::as_bool)
        == Some(true);
    match v {
        Value::Object(o) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let keep_all = preserves_unknown(schema);
            let keys: Vec<String> = o.keys().cloned().collect();
            for k in keys {
                let child = join(path, &k);
                if let Some(sub) = props.and_then(|p| p.get(&k)) {
                    prune(
                        o.get_mut(&k).expect("key listed above"),
                        sub,
                        &child,
                        removed,
                    );
                } else if let Some(sub) = additional.filter(|a| a.is_object()) {
                    prune(
                        o.get_mut(&k).expect("key listed above"),
                        sub,
                        &child,
                        removed,
                    );
                } else if keep_all
                    || additional == Some(&Value::Bool(true))
                    || (embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
                {
                } else {
                    o.remove(&k);
                    removed.push(child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(item, sub, &format!("{path}[{i}]"), removed);
                }
            }
        }
        _ => {}
    }
}

/// Applies `default:` values where the parent object exists (a missing parent is not created),
/// and replaces `null` by the default for non-nullable fields, as the real server does.
pub fn apply_defaults(v: &mut Value, schema: &Value) {
    match v {
        Value::Object(o) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, sub) in props {
                    let nullable = sub.get("nullable").and_then(Value::as_bool) == Some(true);
                    if let Some(d) = sub.get("default") {
                        match o.get(k) {
                            None => {
                                o.insert(k.clone(), d.clone());
                            }
                            Some(Value::Null) if !nullable => {
                                o.insert(k.clone(), d.clone());
                            }
                            _ => {}
                        }
                    }
                    if let Some(child) = o.get_mut(k) {
                        apply_defaults(child, sub);
                    }
                }
            }
            if let Some(sub) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                let props = schema.get("properties").and_then(Value::as_object);
                for (k, child) in o.iter_mut() {
                    if props.is_none_or(|p| !p.contains_key(k)) {
                        apply_defaults(child, sub);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for item in items {
                    apply_defaults(item, sub);
                }
            }
        }
        _ => {}
    }
}

fn regex_cache(pattern: &str) -> Option<regex::Regex> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<regex::Regex>>>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    cache
        .entry(pattern.to_string())
        .or_insert_with(|| regex::Regex::new(pattern).ok())
        .clone()
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Structural schema validation. `path` uses the server's notation (`spec.items[0].name`).
pub fn validate_schema(v: &Value, schema: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let in_body = |msg: String| format!("{path} in body {msg}");
    if v.is_null()
        && (schema.get("nullable").and_then(Value::as_bool) == Some(true)
            || schema.get("type").is_none())
    {
        return;
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    if int_or_string {
        if !(v.is_string() || type_name(v) == "integer") {
            errs.push(FieldError::invalid(
                path,
                v,
                &in_body(format!("must be of type int-or-string: {:?}", type_name(v))),
            ));
            return;
        }
    } else if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let actual = type_name(v);
        let ok = actual == t || (t == "number" && actual == "integer");
        if !ok {
            errs.push(FieldError::invalid(
                path,
                v,
                &in_body(format!("must be of type {t}: {:?}", actual)),
            ));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        errs.push(FieldError::not_supported(path, v, allowed));
    }
    match v {
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                errs.push(FieldError::invalid(
                    path,
                    v,
                    &in_body(format!("should be at least {min} chars long")),
                ));
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                errs.push(FieldError::too_long(path, max));
            }
            // Of the formats the API server checks, the one rdscred's CRDs declare.
            if schema.get("format").and_then(Value::as_str) == Some("date-time")
                && s.parse::<jiff::Timestamp>().is_err()
            {
                errs.push(FieldError::invalid(
                    path,
                    v,
                    &in_body(format!("must be of type date-time: {}", render_value(v))),
                ));
            }
            if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
                match regex_cache(p) {
                    Some(re) if !re.is_match(s) => errs.push(FieldError::invalid(
                        path,
                        v,
                        &in_body(format!("should match '{p}'")),
                    )),
                    Some(_) => {}
                    None => errs.push(FieldError::invalid(
                        path,
                        v,
                        &format!("pattern {p:?} cannot be compiled by the emulator"),
                    )),
                }
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            let excl_min = schema.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true);
            let excl_max = schema.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true);
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && (x < min || (excl_min && x == min))
            {
                let op = if excl_min {
                    "greater than"
                } else {
                    "greater than or equal to"
                };
                errs.push(FieldError::invalid(
                    path,
                    v,
                    &in_body(format!("should be {op} {}", fmt_num(min))),
                ));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && (x > max || (excl_max && x == max))
            {
                let op = if excl_max {
                    "less than"
                } else {
                    "less than or equal to"
                };
                errs.push(FieldError::invalid(
                    path,
                    v,
                    &in_body(format!("should be {op} {}", fmt_num(max))),
                ));
            }
        }
        Value::Array(items) => {
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                errs.push(FieldError::invalid(
                    path,
                    v,
                    &in_body(format!("should have at least {min} items")),
                ));
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                errs.push(FieldError::too_many(path, items.len(), max));
            }
            if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set") {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].contains(item) {
                        errs.push(FieldError {
                            field: format!("{path}[{i}]"),
                            reason: "FieldValueDuplicate",
                            message: format!("Duplicate value: {}", render_value(item)),
                        });
                    }
                }
            }
            if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
                let keys: Vec<&str> = schema
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|k| k.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let key_of = |item: &Value| -> Vec<Value> {
                    keys.iter()
                        .map(|k| item.get(*k).cloned().unwrap_or(Value::Null))
                        .collect()
                };
                for (i, item) in items.iter().enumerate() {
                    let key = key_of(item);
                    if items[..i].iter().any(|earlier| key_of(earlier) == key) {
                        let rendered: Vec<String> = keys
                            .iter()
                            .zip(&key)
                            .map(|(k, v)| format!("{k:?}:{v}"))
                            .collect();
                        errs.push(FieldError {
                            field: format!("{path}[{i}]"),
                            reason: "FieldValueDuplicate",
                            message: format!(
                                "Duplicate value: map[string]interface {{}}{{{}}}",
                                rendered.join(", ")
                            ),
                        });
                    }
                }
            }
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate_schema(item, sub, &format!("{path}[{i}]"), errs);
                }
            }
        }
        Value::Object(o) => validate_object(o, schema, path, errs),
        _ => {}
    }
    validate_combinators(v, schema, path, errs);
}

fn validate_object(o: &Map<String, Value>, schema: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if !o.contains_key(r) {
                errs.push(FieldError::required(&join(path, r), ""));
            }
        }
    }
    if let Some(min) = schema.get("minProperties").and_then(Value::as_u64)
        && (o.len() as u64) < min
    {
        errs.push(FieldError::invalid(
            path,
            &Value::Object(o.clone()),
            &format!("{path} in body should have at least {min} properties"),
        ));
    }
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
        && o.len() as u64 > max
    {
        errs.push(FieldError::too_many(path, o.len(), max));
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    let root = path.is_empty();
    for (k, child) in o {
        if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(sub) = props.and_then(|p| p.get(k)) {
            validate_schema(child, sub, &join(path, k), errs);
        } else if let Some(sub) = additional {
            validate_schema(child, sub, &join(path, k), errs);
        }
    }
}

/// allOf / anyOf / oneOf / not, as value validations (structural schemas allow them).
fn validate_combinators(v: &Value, schema: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let check = |s: &Value| {
        let mut e = Vec::new();
        validate_schema(v, s, path, &mut e);
        e
    };
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            errs.extend(check(s));
        }
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array)
        && !any.is_empty()
        && !any.iter().any(|s| check(s).is_empty())
    {
        errs.push(FieldError::invalid(
            path,
            v,
            &format!("{path} in body must validate at least one schema (anyOf)"),
        ));
    }
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array)
        && !one.is_empty()
    {
        let n = one.iter().filter(|s| check(s).is_empty()).count();
        if n != 1 {
            errs.push(FieldError::invalid(
                path,
                v,
                &format!("{path} in body must validate one and only one schema (oneOf)"),
            ));
        }
    }
    if let Some(not) = schema.get("not")
        && check(not).is_empty()
    {
        errs.push(FieldError::invalid(
            path,
            v,
            &format!("{path} in body should not be valid against the given schema"),
        ));
    }
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{}", x as i64)
    } else {
        x.to_string()
    }
}

/// Schema type at a dotted/indexed field path (for CEL error messages: `Invalid value: "object"`).
fn schema_type_at(schema: &Value, path: &str) -> String {
    let mut cur = schema;
    for seg in path.split('.').filter(|s| !s.is_empty()) {
        let (name, indexes) = match seg.find('[') {
            Some(i) => (&seg[..i], seg[i..].matches('[').count()),
            None => (seg, 0),
        };
        let next = cur
            .pointer(&format!(
                "/properties/{}",
                name.replace('~', "~0").replace('/', "~1")
            ))
            .or_else(|| cur.get("additionalProperties").filter(|a| a.is_object()));
        let Some(mut n) = next else {
            return "object".into();
        };
        for _ in 0..indexes {
            match n.get("items") {
                Some(i) => n = i,
                None => return "object".into(),
            }
        }
        cur = n;
    }
    cur.get("type")
        .and_then(Value::as_str)
        .unwrap_or("object")
        .to_string()
}

/// Evaluates every `x-kubernetes-validations` rule of the schema against the object.
pub fn validate_cel(
    rt: &ResourceType,
    version: &str,
    schema: &Value,
    obj: &Value,
    old: Option<&Value>,
) -> Vec<FieldError> {
    // The API server's per-request CEL cost limits stop evaluation before the rules run here.
    let over_budget = crate::cel_cost::check_object(schema, obj, old);
    if !over_budget.is_empty() {
        return over_budget;
    }
    let validator = kube_cel::Validator::new();
    let root = kube_cel::RootContext {
        api_version: rt.api_version(version),
        api_group: rt.group.clone(),
        kind: rt.kind.clone(),
    };
    match validator.validate_with_context(schema, obj, old, Some(&root)) {
        Ok(()) => vec![],
        Err(errors) => errors
            .into_iter()
            .map(|e| {
                let ty = schema_type_at(schema, &e.field_path);
                let message = match e.kind {
                    kube_cel::ErrorKind::ValidationFailure => e.message.clone(),
                    // A rule kube-cel cannot evaluate: reject (fail closed) but say whose gap it is.
                    kube_cel::ErrorKind::UnsupportedReference
                    | kube_cel::ErrorKind::CompilationFailure => {
                        format!(
                            "kube-emulator could not evaluate rule {:?} with kube-cel: {}",
                            e.rule, e.message
                        )
                    }
                    _ => e.message.clone(),
                };
                match e.reason.as_deref() {
                    Some("FieldValueForbidden") => FieldError::forbidden(&e.field_path, &message),
                    Some("FieldValueRequired") => FieldError::required(&e.field_path, &message),
                    Some("FieldValueDuplicate") => FieldError {
                        field: e.field_path.clone(),
                        reason: "FieldValueDuplicate",
                        message: format!("Duplicate value: {message}"),
                    },
                    _ => FieldError::invalid(&e.field_path, &Value::String(ty), &message),
                }
            })
            .collect(),
    }
}

/// Checks a CRD's rules compile with kube-cel (the real server rejects CRDs whose rules do not).
pub fn check_crd_rules(schema: &Value) -> Result<(), String> {
    let compiled = kube_cel::compile_schema(schema);
    let errors = compiled.compilation_errors();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; "))
    }
}

/// Full admission of a custom resource: prune, default, validate (schema, then CEL).
/// Returns the pruned field paths on success (for strict field validation).
pub fn admit_custom(
    rt: &ResourceType,
    version: &str,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<Vec<String>, Vec<FieldError>> {
    let Some(schema) = rt.version(version).and_then(|v| v.schema.clone()) else {
        return Ok(vec![]);
    };
    let pruned = prune_root(obj, &schema);
    apply_defaults(obj, &schema);
    let mut errs = Vec::new();
    validate_schema(obj, &schema, "", &mut errs);
    let mut old_defaulted = old.cloned();
    if let Some(o) = old_defaulted.as_mut() {
        apply_defaults(o, &schema);
    }
    errs.extend(validate_cel(
        rt,
        version,
        &schema,
        obj,
        old_defaulted.as_ref(),
    ));
    if errs.is_empty() {
        Ok(pruned)
    } else {
        Err(errs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prune_default_validate() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "required": ["a"],
            "properties": {"a": {"type": "string", "pattern": "^[a-z]+$"}, "b": {"type": "integer", "default": 3, "minimum": 1}}}}});
        let mut obj = json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "n", "junk": 1}, "spec": {"a": "ok", "zzz": 1}, "top": 1});
        let pruned = prune_root(&mut obj, &schema);
        assert_eq!(pruned, vec!["metadata.junk", "spec.zzz", "top"]);
        apply_defaults(&mut obj, &schema);
        assert_eq!(obj["spec"]["b"], 3);
        let mut errs = vec![];
        validate_schema(
            &json!({"spec": {"a": "NO", "b": 0}}),
            &schema,
            "",
            &mut errs,
        );
        let r: Vec<String> = errs.iter().map(FieldError::render).collect();
        assert_eq!(
            r,
            vec![
                "spec.a: Invalid value: \"NO\": spec.a in body should match '^[a-z]+$'",
                "spec.b: Invalid value: 0: spec.b in body should be greater than or equal to 1",
            ]
        );
    }
}
