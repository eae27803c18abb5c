//! The RBAC authorizer, evaluated on the Role/ClusterRole/RoleBinding/ClusterRoleBinding
//! objects in the store (`rbac.authorization.k8s.io/v1`), with the real server's rule
//! semantics: verbs, apiGroups, resources with `resource/subresource` and `*/subresource`,
//! resourceNames; ClusterRoleBindings grant everywhere, RoleBindings in their namespace
//! (to a Role of that namespace or a ClusterRole). Denials render as the real 403 Status.
//!
//! Also: the RBAC kinds' own validation (roleRef immutable, required fields) and
//! `SelfSubjectAccessReview` (what `kubectl auth can-i` asks).

use serde_json::{Value, json};

use crate::auth::{RequestAttributes, UserInfo};
use crate::error::{ApiError, FieldError};
use crate::registry::{GroupResource, ResourceType};
use crate::store::State;

pub const GROUP: &str = "rbac.authorization.k8s.io";

fn gr(resource: &str) -> GroupResource {
    GroupResource {
        group: GROUP.into(),
        resource: resource.into(),
    }
}

fn strings(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The outcome of authorizing one request. `reason` is what the real RBAC authorizer adds to
/// a denial when a binding points at a role that does not exist.
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

/// Whether one PolicyRule allows the request (`rbac.RuleAllows` upstream).
pub fn rule_allows(rule: &Value, a: &RequestAttributes) -> bool {
    let verbs = strings(rule.get("verbs"));
    let groups = strings(rule.get("apiGroups"));
    let resources = strings(rule.get("resources"));
    let names = strings(rule.get("resourceNames"));
    let combined = a.combined_resource();
    let verb_ok = verbs.iter().any(|v| *v == "*" || *v == a.verb);
    let group_ok = groups.iter().any(|g| *g == "*" || *g == a.api_group);
    let resource_ok = resources.iter().any(|r| {
        *r == "*"
            || *r == combined
            || (!a.subresource.is_empty() && *r == format!("*/{}", a.subresource))
    });
    let name_ok = names.is_empty() || (!a.name.is_empty() && names.contains(&a.name.as_str()));
    verb_ok && group_ok && resource_ok && name_ok
}

/// Whether a binding's subject is this user (`appliesToUser` upstream). ServiceAccount
/// subjects without a namespace take the binding's.
fn subject_applies(subject: &Value, user: &UserInfo, binding_namespace: &str) -> bool {
    let name = str_at(subject, "/name");
    match str_at(subject, "/kind") {
        "User" => name == user.name,
        "Group" => user.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let ns = match str_at(subject, "/namespace") {
                "" => binding_namespace,
                ns => ns,
            };
            !ns.is_empty() && user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

/// Evaluates the request against every binding that applies to `user`.
pub fn authorize(st: &State, user: &UserInfo, a: &RequestAttributes) -> Decision {
    if user.is_superuser() {
        return Decision {
            allowed: true,
            reason: String::new(),
        };
    }
    let mut errors = Vec::new();
    let mut role_rules = |kind: &str, namespace: &str, name: &str| -> &[Value] {
        let (resource, ns) = match kind {
            "ClusterRole" => ("clusterroles", ""),
            "Role" => ("roles", namespace),
            _ => return &[],
        };
        match st.get_raw(&gr(resource), ns, name) {
            Some(role) => role
                .get("rules")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default(),
            None => {
                errors.push(format!(
                    "{}.{GROUP} \"{name}\" not found",
                    kind.to_lowercase()
                ));
                &[]
            }
        }
    };
    let mut bindings: Vec<(&Value, &str)> = st
        .iter_objects(&gr("clusterrolebindings"), None)
        .map(|b| (b, ""))
        .collect();
    if !a.namespace.is_empty() {
        bindings.extend(
            st.iter_objects(&gr("rolebindings"), Some(&a.namespace))
                .map(|b| (b, a.namespace.as_str())),
        );
    }
    for (binding, ns) in bindings {
        let subjects = binding
            .get("subjects")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if !subjects.iter().any(|s| subject_applies(s, user, ns)) {
            continue;
        }
        let rules = role_rules(
            str_at(binding, "/roleRef/kind"),
            ns,
            str_at(binding, "/roleRef/name"),
        );
        if rules.iter().any(|r| rule_allows(r, a)) {
            return Decision {
                allowed: true,
                reason: String::new(),
            };
        }
    }
    let reason = match errors.len() {
        0 => String::new(),
        1 => format!("RBAC: {}", errors[0]),
        _ => format!("RBAC: [{}]", errors.join(", ")),
    };
    Decision {
        allowed: false,
        reason,
    }
}

/// The real server's 403 for a denied resource request (`responsewriters.Forbidden` with
/// `apierrors.NewForbidden`): `secrets "x" is forbidden: User "u" cannot get resource
/// "secrets" in API group "" in the namespace "ns"`.
pub fn forbidden(user: &str, a: &RequestAttributes, reason: &str) -> ApiError {
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", a.namespace)
    };
    let mut why = format!(
        "User \"{user}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
        a.verb,
        a.combined_resource(),
        a.api_group
    );
    if !reason.is_empty() {
        why = format!("{why}: {reason}");
    }
    let qualified = if a.api_group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.api_group)
    };
    let message = if a.name.is_empty() {
        format!("{qualified} is forbidden: {why}")
    } else {
        format!("{qualified} \"{}\" is forbidden: {why}", a.name)
    };
    let mut details = json!({"kind": a.resource});
    if !a.api_group.is_empty() {
        details["group"] = json!(a.api_group);
    }
    if !a.name.is_empty() {
        details["name"] = json!(a.name);
    }
    ApiError::forbidden(message).with_details(details)
}

/// Validation of the RBAC kinds on create/update (a subset of upstream's).
pub fn admit(rt: &ResourceType, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let name = str_at(obj, "/metadata/name").to_string();
    let mut errs = Vec::new();
    match rt.kind.as_str() {
        "Role" | "ClusterRole" => {
            for (i, rule) in obj
                .get("rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                if strings(rule.get("verbs")).is_empty() {
                    errs.push(FieldError::required(&format!("rules[{i}].verbs"), ""));
                }
                let non_resource = !strings(rule.get("nonResourceURLs")).is_empty();
                if !non_resource && rule.get("apiGroups").is_none() {
                    errs.push(FieldError::required(
                        &format!("rules[{i}].apiGroups"),
                        "resource rules must supply at least one api group",
                    ));
                }
                if !non_resource && strings(rule.get("resources")).is_empty() {
                    errs.push(FieldError::required(
                        &format!("rules[{i}].resources"),
                        "resource rules must supply at least one resource",
                    ));
                }
            }
        }
        _ => {
            let kind = str_at(obj, "/roleRef/kind");
            let allowed: &[&str] = if rt.kind == "ClusterRoleBinding" {
                &["ClusterRole"]
            } else {
                &["Role", "ClusterRole"]
            };
            if !allowed.contains(&kind) {
                let allowed: Vec<Value> = allowed.iter().map(|k| json!(k)).collect();
                errs.push(FieldError::not_supported(
                    "roleRef.kind",
                    &json!(kind),
                    &allowed,
                ));
            }
            if str_at(obj, "/roleRef/name").is_empty() {
                errs.push(FieldError::required("roleRef.name", ""));
            }
            if let Some(old) = old
                && old.get("roleRef") != obj.get("roleRef")
            {
                let r = |v: &Value, p: &str| str_at(v, &format!("/roleRef/{p}")).to_string();
                errs.push(FieldError::invalid(
                    "roleRef",
                    &json!(format!(
                        "rbac.RoleRef{{APIGroup:{:?}, Kind:{:?}, Name:{:?}}}",
                        r(obj, "apiGroup"),
                        r(obj, "kind"),
                        r(obj, "name")
                    )),
                    "cannot change roleRef",
                ));
            }
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(rt, &name, errs))
    }
}

/// Answers a `SelfSubjectAccessReview` (resource attributes only; non-resource URLs are
/// always allowed, as the discovery roles allow them to every authenticated user).
pub fn self_subject_access_review(
    st: &State,
    user: Option<&UserInfo>,
    mut review: Value,
) -> Result<Value, ApiError> {
    let allowed = match review.pointer("/spec/resourceAttributes") {
        Some(ra) => {
            let s = |k: &str| ra.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let a = RequestAttributes {
                verb: s("verb"),
                api_group: s("group"),
                resource: s("resource"),
                subresource: s("subresource"),
                namespace: s("namespace"),
                name: s("name"),
            };
            if a.verb.is_empty() || a.resource.is_empty() {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    "SelfSubjectAccessReview.authorization.k8s.io \"\" is invalid: spec.resourceAttributes: Invalid value: resource and verb are required",
                ));
            }
            user.is_none_or(|u| authorize(st, u, &a).allowed)
        }
        None if review.pointer("/spec/nonResourceAttributes").is_some() => true,
        None => {
            return Err(ApiError::new(
                422,
                "Invalid",
                "SelfSubjectAccessReview.authorization.k8s.io \"\" is invalid: spec: Invalid value: exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ));
        }
    };
    review["status"] = json!({"allowed": allowed});
    if review.get("metadata").is_none() {
        review["metadata"] = json!({});
    }
    Ok(review)
}

/// Decodes a `SelfSubjectAccessReview` sent as protobuf (what `kubectl auth can-i` sends:
/// the `k8s\0` magic, a `runtime.Unknown` envelope, the object in field 2) into its JSON
/// form. Only the fields the review needs are read.
pub fn self_subject_access_review_from_protobuf(body: &[u8]) -> Result<Value, ApiError> {
    let bad = || ApiError::bad_request("malformed protobuf SelfSubjectAccessReview");
    let envelope = body.strip_prefix(b"k8s\0").ok_or_else(bad)?;
    let raw = proto_field(envelope, 2).ok_or_else(bad)?;
    let spec = proto_field(raw, 2).ok_or_else(bad)?;
    let text = |msg: &[u8], n: u64| {
        proto_field(msg, n)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    let mut out = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": {}});
    if let Some(ra) = proto_field(spec, 1) {
        out["spec"]["resourceAttributes"] = json!({
            "namespace": text(ra, 1), "verb": text(ra, 2), "group": text(ra, 3),
            "version": text(ra, 4), "resource": text(ra, 5), "subresource": text(ra, 6),
            "name": text(ra, 7),
        });
    }
    if let Some(nra) = proto_field(spec, 2) {
        out["spec"]["nonResourceAttributes"] = json!({"path": text(nra, 1), "verb": text(nra, 2)});
    }
    Ok(out)
}

/// The first length-delimited field `number` of a protobuf message.
fn proto_field(mut msg: &[u8], number: u64) -> Option<&[u8]> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    while !msg.is_empty() {
        let key = varint(&mut msg)?;
        let len = match key & 7 {
            0 => {
                varint(&mut msg)?;
                continue;
            }
            1 => 8,
            5 => 4,
            2 => usize::try_from(varint(&mut msg)?).ok()?,
            _ => return None,
        };
        let (value, rest) = (msg.get(..len)?, msg.get(len..)?);
        msg = rest;
        if key >> 3 == number && key & 7 == 2 {
            return Some(value);
        }
    }
    None
}
