//! Validation of built-in objects as kube-apiserver does it: `metadata.name`, label and
//! annotation keys and values (apimachinery `ValidateObjectMeta`), and the data keys and sizes
//! of Secrets and ConfigMaps (`ValidateSecret`, `ValidateConfigMap`). The message texts are
//! apimachinery's (`k8s.io/apimachinery/pkg/util/validation`), so a client's error handling
//! sees what a real server sends.

use serde_json::{Value, json};

use crate::error::FieldError;
use crate::registry::{Flavor, ResourceType};

const DNS1123_SUBDOMAIN: &str = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1123_LABEL: &str = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const QUALIFIED_NAME: &str = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE: &str = r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const CONFIG_KEY: &str = r"[-._a-zA-Z0-9]+";
const CONFIG_KEY_MSG: &str =
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'";

/// Total size of all annotation keys and values (`TotalAnnotationSizeLimitB`).
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;
/// Total size of a Secret's or ConfigMap's data (`MaxSecretSize`).
pub const MAX_DATA_BYTES: usize = 1024 * 1024;

/// Whether `s` matches all of `pattern` (one of the constants above). Compiled once per
/// pattern: every write of every object comes through here, under the store's lock.
fn full_match(pattern: &'static str, s: &str) -> bool {
    use std::collections::HashMap;
    use std::sync::{LazyLock, Mutex};
    static CACHE: LazyLock<Mutex<HashMap<&'static str, regex::Regex>>> =
        LazyLock::new(Default::default);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry(pattern)
        .or_insert_with(|| regex::Regex::new(&format!("^(?:{pattern})$")).expect("static regex"))
        .is_match(s)
}

/// apimachinery's `RegexError`: the message, examples, and the regex.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let mut s = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            s.push_str(" or ");
        }
        s.push_str(&format!("'{e}', "));
    }
    s.push_str(&format!("regex used for validation is '{fmt}')"));
    s
}

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

/// `IsDNS1123Subdomain`.
pub fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push(max_len_error(253));
    }
    if !full_match(DNS1123_SUBDOMAIN, s) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_MSG,
            DNS1123_SUBDOMAIN,
            &["example.com"],
        ));
    }
    errs
}

/// `IsDNS1123Label`.
pub fn dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !full_match(DNS1123_LABEL, s) {
        errs.push(regex_error(
            DNS1123_LABEL_MSG,
            DNS1123_LABEL,
            &["my-name", "123-abc"],
        ));
    }
    errs
}

/// `IsQualifiedName`: label and annotation keys, `[prefix/]name`.
pub fn qualified_name(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            name
        }
        _ => {
            return vec![format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_MSG,
                    QUALIFIED_NAME,
                    &["MyName", "my.name", "123-abc"]
                )
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63)));
    }
    if !full_match(QUALIFIED_NAME, name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_MSG,
                QUALIFIED_NAME,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// `IsValidLabelValue`.
pub fn label_value(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !full_match(LABEL_VALUE, v) {
        errs.push(regex_error(
            LABEL_VALUE_MSG,
            LABEL_VALUE,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// `IsConfigMapKey`: Secret and ConfigMap data keys (they become file names in volumes).
pub fn config_map_key(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if key.len() > 253 {
        errs.push(max_len_error(253));
    }
    if !full_match(CONFIG_KEY, key) {
        errs.push(regex_error(
            CONFIG_KEY_MSG,
            CONFIG_KEY,
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    if key == "." {
        errs.push("must not be '.'".to_string());
    } else if key == ".." {
        errs.push("must not be '..'".to_string());
    } else if key.starts_with("..") {
        errs.push("must not start with '..'".to_string());
    }
    errs
}

fn meta(obj: &Value) -> &Value {
    obj.get("metadata").unwrap_or(&Value::Null)
}

/// `ValidateObjectMeta` for what the emulator stores: name, labels, annotations.
pub fn validate_object_meta(rt: &ResourceType, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = meta(obj).get("name").and_then(Value::as_str).unwrap_or("");
    let name_errs = if rt.flavor == Flavor::Namespace {
        dns1123_label(name)
    } else {
        dns1123_subdomain(name)
    };
    for m in name_errs {
        errs.push(FieldError::invalid("metadata.name", &json!(name), &m));
    }
    labels_and_annotations(meta(obj), "metadata", &mut errs);
    errs
}

/// Label and annotation rules of `ValidateObjectMeta` on the metadata at `path` (an object's
/// own, or a pod template's: `ValidatePodTemplateSpec` applies the same rules there).
fn labels_and_annotations(meta: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let labels_path = format!("{path}.labels");
    let annotations_path = format!("{path}.annotations");
    if let Some(labels) = meta.get("labels").and_then(Value::as_object) {
        for (k, v) in labels {
            for m in qualified_name(k) {
                errs.push(FieldError::invalid(&labels_path, &json!(k), &m));
            }
            match v.as_str() {
                Some(s) => {
                    for m in label_value(s) {
                        errs.push(FieldError::invalid(&labels_path, v, &m));
                    }
                }
                None => errs.push(FieldError::invalid(
                    &labels_path,
                    v,
                    "label values must be strings",
                )),
            }
        }
    }
    if let Some(annotations) = meta.get("annotations").and_then(Value::as_object) {
        let mut total = 0;
        for (k, v) in annotations {
            // Upstream checks the lower-cased key: annotation names are case-insensitive there.
            for m in qualified_name(&k.to_lowercase()) {
                errs.push(FieldError::invalid(&annotations_path, &json!(k), &m));
            }
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > MAX_ANNOTATIONS_BYTES {
            errs.push(FieldError::too_long(
                &annotations_path,
                MAX_ANNOTATIONS_BYTES as u64,
            ));
        }
    }
}

/// The pod template(s) of a workload kind and the path the real server reports errors at:
/// apps/v1 workloads and Jobs `spec.template`, CronJobs `spec.jobTemplate.spec.template`.
pub fn validate_pod_templates(rt: &ResourceType, obj: &Value) -> Vec<FieldError> {
    let (pointer, path) = match rt.flavor {
        Flavor::Deployment | Flavor::StatefulSet | Flavor::DaemonSet | Flavor::Job => {
            ("/spec/template/metadata", "spec.template.metadata")
        }
        Flavor::CronJob => (
            "/spec/jobTemplate/spec/template/metadata",
            "spec.jobTemplate.spec.template.metadata",
        ),
        _ => return Vec::new(),
    };
    let mut errs = Vec::new();
    if let Some(meta) = obj.pointer(pointer) {
        labels_and_annotations(meta, path, &mut errs);
    }
    errs
}

/// Data keys and total size of Secrets (`data`, after `stringData` is folded in) and
/// ConfigMaps (`data`, `binaryData`, no key in both).
pub fn validate_data(rt: &ResourceType, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let fields: &[&str] = match rt.flavor {
        Flavor::Secret => &["data"],
        Flavor::ConfigMap => &["data", "binaryData"],
        _ => return errs,
    };
    let mut total = 0;
    for field in fields {
        let Some(data) = obj.get(*field).and_then(Value::as_object) else {
            continue;
        };
        for (k, v) in data {
            let path = format!("{field}[{k}]");
            for m in config_map_key(k) {
                errs.push(FieldError::invalid(&path, &json!(k), &m));
            }
            if *field == "binaryData"
                && obj
                    .get("data")
                    .and_then(Value::as_object)
                    .is_some_and(|d| d.contains_key(k))
            {
                errs.push(FieldError::invalid(
                    &path,
                    &json!(k),
                    "duplicate of key present in data",
                ));
            }
            let len = v.as_str().map_or(0, str::len);
            // Secret data and ConfigMap binaryData are base64 on the wire; the limit counts
            // decoded bytes.
            total += if rt.flavor == Flavor::Secret || *field == "binaryData" {
                len / 4 * 3
            } else {
                len
            };
        }
    }
    if total > MAX_DATA_BYTES {
        let path = if rt.flavor == Flavor::Secret {
            "data"
        } else {
            ""
        };
        errs.push(FieldError::too_long(path, MAX_DATA_BYTES as u64));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names_as_apimachinery_judges_them() {
        for ok in [
            "app",
            "app.kubernetes.io/name",
            "rdscred.io/version-id",
            "A_b.c-D",
            "x/y",
        ] {
            assert!(
                qualified_name(ok).is_empty(),
                "{ok}: {:?}",
                qualified_name(ok)
            );
        }
        let cases = [
            (
                "not valid!",
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
            ),
            ("/x", "prefix part must be non-empty"),
            (
                "Bad_Prefix/x",
                "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
            ),
            ("a/b/c", "a qualified name must consist of"),
            ("x/", "name part must be non-empty"),
            ("-x", "name part must consist of"),
        ];
        for (key, want) in cases {
            let errs = qualified_name(key);
            assert!(errs.iter().any(|e| e.starts_with(want)), "{key}: {errs:?}");
        }
        assert_eq!(
            qualified_name(&"a".repeat(64)),
            vec!["name part must be no more than 63 characters"]
        );
    }

    #[test]
    fn label_values_and_config_keys() {
        assert!(label_value("").is_empty());
        assert!(label_value("v1.2_x-y").is_empty());
        assert!(!label_value("has space").is_empty());
        assert_eq!(
            label_value(&"a".repeat(64)),
            vec!["must be no more than 63 characters"]
        );
        for ok in ["DATABASE_URL", "key.name", "key-name", ".hidden", "a..b"] {
            assert!(config_map_key(ok).is_empty(), "{ok}");
        }
        assert_eq!(
            config_map_key("DATABASE URL"),
            vec![
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
            ]
        );
        assert_eq!(config_map_key(".."), vec!["must not be '..'"]);
        assert_eq!(config_map_key("..x"), vec!["must not start with '..'"]);
        assert_eq!(config_map_key("."), vec!["must not be '.'"]);
        assert_eq!(config_map_key("").len(), 1);
        assert_eq!(
            config_map_key(&"a".repeat(254)),
            vec!["must be no more than 253 characters"]
        );
    }
}
