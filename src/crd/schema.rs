//! Schema pieces the derive macros cannot express: bounds on types from k8s-openapi, and
//! `Option<enum>` without a `null` enum value.
//!
//! Every list and map carries a bound and every string a CEL rule reads a `maxLength`: the API
//! server sizes unbounded ones from its 3 MiB request limit when it estimates the cost of the
//! `x-kubernetes-validations` rules, and refuses CRDs whose estimate is over budget.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

/// Label values and names (the part after an optional `prefix/`): DNS labels.
const LABEL_VALUE_MAX: u64 = 63;
/// A label key: a 253-character DNS subdomain prefix, `/`, a 63-character name.
const LABEL_KEY_MAX: u64 = 253 + 1 + 63;

/// `T` (an enum) as an optional field: nullable, but no `null` among the enum values, which
/// API servers from 1.34 warn about and tools like `kubectl explain` print.
pub fn optional_enum<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    let mut s = g.subschema_for::<T>();
    s.insert("nullable".into(), true.into());
    s
}

/// A namespace label selector (`RdsDatabase.spec.namespaceSelector`) with bounds: at most 64
/// `matchLabels`, 16 `matchExpressions` of 64 values each, the operators Kubernetes defines.
pub fn namespace_selector(_: &mut SchemaGenerator) -> Schema {
    let label_value = json_schema!({ "type": "string", "maxLength": LABEL_VALUE_MAX });
    json_schema!({
        "description": "A label selector: matchLabels and matchExpressions are ANDed; `{}` selects everything.",
        "type": "object",
        "nullable": true,
        "properties": {
            "matchLabels": {
                "description": "Labels a namespace must carry (key: value).",
                "type": "object",
                "maxProperties": 64,
                "additionalProperties": label_value,
            },
            "matchExpressions": {
                "description": "Label requirements, ANDed.",
                "type": "array",
                "maxItems": 16,
                "items": {
                    "type": "object",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": { "description": "The label key.", "type": "string", "minLength": 1, "maxLength": LABEL_KEY_MAX },
                        "operator": {
                            "description": "In and NotIn need values; Exists and DoesNotExist take none.",
                            "type": "string",
                            "enum": ["In", "NotIn", "Exists", "DoesNotExist"],
                        },
                        "values": {
                            "type": "array",
                            "maxItems": 64,
                            "items": label_value,
                        },
                    },
                },
            },
        },
    })
}
