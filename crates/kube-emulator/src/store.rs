//! The object store: one global resourceVersion counter, the objects, the bounded event
//! history watches resume from, and the write semantics of the real server (optimistic
//! concurrency, status subresource, generation, finalizers, namespaces, CRD registration,
//! garbage collection of dependents).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::apply::{self, ApplyRequest, Types};
use crate::error::{ApiError, FieldError};
use crate::patch;
use crate::registry::{self, Flavor, GroupResource, Registry, ResourceType};
use crate::validation;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One committed write, as watches see it.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub gr: GroupResource,
    pub namespace: String,
    pub kind: ChangeKind,
    /// The object after the change (for Deleted: its last state, with the deletion's RV).
    pub object: Value,
    /// The object before the change (lets selector-filtered watches turn a change that
    /// leaves/enters the selection into DELETED/ADDED, as the real watch cache does).
    pub old: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    Main,
    Status,
}

impl Sub {
    fn name(self) -> &'static str {
        match self {
            Sub::Main => "",
            Sub::Status => "status",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    pub manager: String,
    pub dry_run: bool,
    /// fieldValidation=Strict: unknown fields are an error instead of being pruned.
    pub strict: bool,
    pub force: bool,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub orphan: bool,
    pub dry_run: bool,
}

pub struct ListResult {
    pub items: Vec<Value>,
    pub resource_version: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<u64>,
}

type ObjKey = (String, String);

pub struct State {
    pub rv: u64,
    pub registry: Registry,
    objects: HashMap<GroupResource, BTreeMap<ObjKey, Value>>,
    uids: HashMap<String, (GroupResource, ObjKey)>,
    pub history: VecDeque<Arc<Change>>,
    /// Watches from a resourceVersion below this get 410 Gone.
    pub history_floor: u64,
    pub history_limit: usize,
    tx: broadcast::Sender<Arc<Change>>,
}

pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub fn new_uid() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("OS randomness");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut b = [0u8; 5];
    getrandom::fill(&mut b).expect("OS randomness");
    b.iter()
        .map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char)
        .collect()
}

fn meta(obj: &Value) -> &Value {
    obj.get("metadata").unwrap_or(&Value::Null)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("just made an object")
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    meta(obj).get(field).and_then(Value::as_str).unwrap_or("")
}

fn finalizers(obj: &Value) -> Vec<Value> {
    meta(obj)
        .get("finalizers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

pub fn rv_of(obj: &Value) -> &str {
    meta_str(obj, "resourceVersion")
}

/// Everything but metadata and status: a change here bumps metadata.generation.
fn spec_part(obj: &Value) -> Value {
    let mut o = obj.as_object().cloned().unwrap_or_default();
    for k in ["metadata", "status", "apiVersion", "kind"] {
        o.remove(k);
    }
    Value::Object(o)
}

fn validate_metadata(rt: &ResourceType, obj: &Value) -> Vec<FieldError> {
    let mut errs = crate::objmeta::validate_object_meta(rt, obj);
    errs.extend(crate::objmeta::validate_pod_templates(rt, obj));
    errs
}

impl State {
    pub fn new(tx: broadcast::Sender<Arc<Change>>, history_limit: usize) -> Self {
        let mut s = State {
            rv: 0,
            registry: Registry::with_builtins(),
            objects: HashMap::new(),
            uids: HashMap::new(),
            history: VecDeque::new(),
            history_floor: 0,
            history_limit,
            tx,
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let rt = s.registry.lookup("", "v1", "namespaces").expect("built-in");
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            s.create(
                &rt,
                "v1",
                "",
                obj,
                &WriteOpts {
                    manager: "kube-apiserver".into(),
                    ..Default::default()
                },
            )
            .expect("built-in namespace");
        }
        s
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.tx.subscribe()
    }

    /// Forgets all history: watches from any resourceVersion before now get 410 Gone.
    pub fn compact(&mut self) {
        self.history.clear();
        self.history_floor = self.rv;
    }

    fn emit(
        &mut self,
        gr: GroupResource,
        namespace: &str,
        kind: ChangeKind,
        object: Value,
        old: Option<Value>,
    ) {
        let change = Arc::new(Change {
            rv: self.rv,
            gr,
            namespace: namespace.to_string(),
            kind,
            object,
            old,
        });
        self.history.push_back(change.clone());
        while self.history.len() > self.history_limit {
            if let Some(evicted) = self.history.pop_front() {
                self.history_floor = evicted.rv;
            }
        }
        let _ = self.tx.send(change);
    }

    fn bucket(&mut self, gr: &GroupResource) -> &mut BTreeMap<ObjKey, Value> {
        self.objects.entry(gr.clone()).or_default()
    }

    pub fn get_raw(&self, gr: &GroupResource, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(gr)?
            .get(&(ns.to_string(), name.to_string()))
    }

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.get_raw(&rt.key(), ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// Objects of a type, optionally in one namespace, in key order.
    pub fn iter_objects<'a>(
        &'a self,
        gr: &GroupResource,
        ns: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .get(gr)
            .into_iter()
            .flat_map(|b| b.iter())
            .filter(move |((ons, _), _)| ns.is_none_or(|n| n == ons))
            .map(|(_, v)| v)
    }

    pub fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        matches: &dyn Fn(&Value) -> bool,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<ListResult, ApiError> {
        // The continue token carries the list's resourceVersion and the last key returned.
        let (mut rv, after) = match continue_token {
            Some(t) => {
                let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(t)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                    .ok_or_else(|| ApiError::bad_request("continue key is not valid"))?;
                let rv = decoded["rv"].as_u64().unwrap_or(self.rv);
                let key = (
                    decoded["ns"].as_str().unwrap_or("").to_string(),
                    decoded["name"].as_str().unwrap_or("").to_string(),
                );
                (rv, Some(key))
            }
            None => (self.rv, None),
        };
        if rv < self.history_floor {
            return Err(ApiError::gone(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
            ));
        }
        let empty = BTreeMap::new();
        let bucket = self.objects.get(&rt.key()).unwrap_or(&empty);
        let mut items = Vec::new();
        let mut last_key = None;
        let mut remaining = 0u64;
        let mut more = false;
        for (key, obj) in bucket.iter() {
            if ns.is_some_and(|n| n != key.0)
                || after.as_ref().is_some_and(|a| key <= a)
                || !matches(obj)
            {
                continue;
            }
            if limit.is_some_and(|l| l > 0 && items.len() >= l) {
                more = true;
                remaining += 1;
                continue;
            }
            items.push(obj.clone());
            last_key = Some(key.clone());
        }
        let continue_token = match (more, last_key) {
            (true, Some((kns, kname))) => {
                let raw =
                    serde_json::to_vec(&json!({"rv": rv, "ns": kns, "name": kname})).expect("json");
                Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
            }
            _ => None,
        };
        if continue_token.is_none() && after.is_none() {
            rv = self.rv;
        }
        Ok(ListResult {
            items,
            resource_version: rv,
            continue_token,
            remaining: more.then_some(remaining),
        })
    }

    fn namespace_check(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<(), ApiError> {
        if !rt.namespaced {
            return Ok(());
        }
        let ns_gr = GroupResource {
            group: String::new(),
            resource: "namespaces".into(),
        };
        match self.get_raw(&ns_gr, "", ns) {
            None => Err(ApiError::not_found_raw("", "namespaces", ns)),
            Some(n) if !meta_str(n, "deletionTimestamp").is_empty() => Err(ApiError::forbidden(format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                rt.group_resource_string(),
                name
            ))
            .with_details(json!({"kind": rt.plural, "group": rt.group}))),
            Some(_) => Ok(()),
        }
    }

    /// Kind-specific preparation shared by create and update (before validation).
    fn prepare(
        &self,
        rt: &ResourceType,
        version: &str,
        obj: &mut Value,
        old: Option<&Value>,
        opts: &WriteOpts,
    ) -> Result<(), ApiError> {
        let name = meta_str(obj, "name").to_string();
        match rt.flavor {
            Flavor::Secret | Flavor::ConfigMap => {
                if rt.flavor == Flavor::Secret {
                    if let Some(Value::Object(sd)) =
                        obj.as_object_mut().and_then(|o| o.remove("stringData"))
                    {
                        let data = obj
                            .as_object_mut()
                            .expect("object")
                            .entry("data")
                            .or_insert(json!({}));
                        if !data.is_object() {
                            *data = json!({});
                        }
                        for (k, v) in sd {
                            let s = v.as_str().unwrap_or_default();
                            data[k] = json!(base64::engine::general_purpose::STANDARD.encode(s));
                        }
                    }
                    if obj.get("type").is_none() {
                        obj["type"] = json!("Opaque");
                    }
                }
                if let Some(old) = old
                    && old.get("immutable").and_then(Value::as_bool) == Some(true)
                {
                    let mut errs = Vec::new();
                    for f in ["data", "binaryData"] {
                        if old.get(f) != obj.get(f) {
                            errs.push(FieldError::forbidden(
                                f,
                                "field is immutable when `immutable` is set",
                            ));
                        }
                    }
                    if obj.get("immutable") != old.get("immutable") {
                        errs.push(FieldError::forbidden(
                            "immutable",
                            "field is immutable when `immutable` is set",
                        ));
                    }
                    if !errs.is_empty() {
                        return Err(ApiError::invalid(rt, &name, errs));
                    }
                }
            }
            Flavor::Namespace => {
                let m = meta_mut(obj);
                let labels = m.entry("labels").or_insert(json!({}));
                labels["kubernetes.io/metadata.name"] = json!(name);
                if old.is_none() {
                    obj["spec"] = json!({"finalizers": ["kubernetes"]});
                    obj["status"] = json!({"phase": "Active"});
                }
            }
            Flavor::Deployment | Flavor::StatefulSet => {
                if obj.pointer("/spec/replicas").is_none()
                    && obj.get("spec").is_some_and(Value::is_object)
                {
                    obj["spec"]["replicas"] = json!(1);
                }
            }
            Flavor::Crd => {
                let new_rt = registry::from_crd(obj).map_err(|e| {
                    ApiError::invalid(
                        rt,
                        &name,
                        vec![FieldError {
                            field: String::new(),
                            reason: "FieldValueInvalid",
                            message: e,
                        }],
                    )
                })?;
                for v in &new_rt.versions {
                    if let Some(schema) = &v.schema
                        && let Err(e) = validation::check_crd_rules(schema)
                    {
                        let field = format!("spec.validation.openAPIV3Schema[{}]", v.name);
                        return Err(ApiError::invalid(
                            rt,
                            &name,
                            vec![FieldError::invalid(
                                &field,
                                &json!("object"),
                                &format!("compilation failed: {e}"),
                            )],
                        ));
                    }
                }
                // The API server's CEL cost limits (per rule, per CRD).
                crate::cel_cost::check_crd(obj)
                    .map_err(|errs| ApiError::invalid(rt, &name, errs))?;
                if old.is_none() {
                    obj["status"] = json!({
                        "conditions": [
                            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now_rfc3339()},
                            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now_rfc3339()},
                        ],
                        "acceptedNames": obj.pointer("/spec/names").cloned().unwrap_or(json!({})),
                        "storedVersions": [new_rt.storage_version],
                    });
                }
            }
            Flavor::Custom => match validation::admit_custom(rt, version, obj, old) {
                Ok(pruned) if opts.strict && !pruned.is_empty() => {
                    let list: Vec<String> = pruned
                        .iter()
                        .map(|p| format!("unknown field \"{p}\""))
                        .collect();
                    // The real server's text: the decoder's prefix, then the field list.
                    return Err(ApiError::bad_request(format!(
                        "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
                        list.join(", "),
                        kind = rt.kind
                    )));
                }
                Ok(_) => {}
                Err(errs) => return Err(ApiError::invalid(rt, &name, errs)),
            },
            Flavor::Pod
            | Flavor::CoreEvent
            | Flavor::Event
            | Flavor::Lease
            | Flavor::DaemonSet
            | Flavor::CronJob
            | Flavor::Job => {}
            Flavor::Rbac => crate::rbac::admit(rt, obj, old)?,
        }
        Ok(())
    }

    /// POST. `managed` = the managedFields were already computed (server-side apply).
    pub fn create(
        &mut self,
        rt: &Arc<ResourceType>,
        version: &str,
        ns: &str,
        mut obj: Value,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        self.create_inner(rt, version, ns, &mut obj, opts, false)
    }

    fn create_inner(
        &mut self,
        rt: &Arc<ResourceType>,
        version: &str,
        ns: &str,
        obj: &mut Value,
        opts: &WriteOpts,
        managed: bool,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        if let Some(k) = obj.get("kind").and_then(Value::as_str)
            && k != rt.kind
        {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                rt.kind
            )));
        }
        obj["apiVersion"] = json!(rt.api_version(&rt.storage_version));
        obj["kind"] = json!(rt.kind);
        let m = meta_mut(obj);
        if m.get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            match m.get("generateName").and_then(Value::as_str) {
                Some(g) if !g.is_empty() => {
                    let n = format!("{g}{}", random_suffix());
                    m.insert("name".into(), json!(n));
                }
                _ => {
                    return Err(ApiError::invalid(
                        rt,
                        "",
                        vec![FieldError::required(
                            "metadata.name",
                            "name or generateName is required",
                        )],
                    ));
                }
            }
        }
        if rt.namespaced {
            match m.get("namespace").and_then(Value::as_str) {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {
                    m.insert("namespace".into(), json!(ns));
                }
            }
        } else {
            m.remove("namespace");
        }
        for f in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
        ] {
            m.remove(f);
        }
        if !managed {
            m.remove("managedFields");
        }
        let name = meta_str(obj, "name").to_string();
        let ns = if rt.namespaced { ns } else { "" };
        self.namespace_check(rt, ns, &name)?;
        let errs = validate_metadata(rt, obj);
        if !errs.is_empty() {
            return Err(ApiError::invalid(rt, &name, errs));
        }
        if self.get_raw(&rt.key(), ns, &name).is_some() {
            return Err(ApiError::already_exists(rt, &name));
        }
        if rt.has_status(version) && rt.flavor != Flavor::Namespace {
            obj.as_object_mut().expect("object").remove("status");
        }
        self.prepare(rt, version, obj, None, opts)?;
        let errs = crate::objmeta::validate_data(rt, obj);
        if !errs.is_empty() {
            return Err(ApiError::invalid(rt, &name, errs));
        }
        let now = now_rfc3339();
        if !managed {
            apply::record_update(
                None,
                obj,
                &opts.manager,
                "",
                &rt.api_version(version),
                &now,
                Types::for_type(rt, version),
            );
        }
        let m = meta_mut(obj);
        m.insert("uid".into(), json!(new_uid()));
        m.insert("creationTimestamp".into(), json!(now));
        if rt.has_generation {
            m.insert("generation".into(), json!(1));
        }
        if opts.dry_run {
            return Ok(obj.clone());
        }
        self.rv += 1;
        meta_mut(obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let uid = meta_str(obj, "uid").to_string();
        self.bucket(&rt.key())
            .insert((ns.to_string(), name.clone()), obj.clone());
        self.uids.insert(uid, (rt.key(), (ns.to_string(), name)));
        if rt.flavor == Flavor::Crd {
            self.register_crd(obj);
        }
        self.emit(rt.key(), ns, ChangeKind::Added, obj.clone(), None);
        Ok(obj.clone())
    }

    fn register_crd(&mut self, crd: &Value) {
        if let Ok(t) = registry::from_crd(crd) {
            self.registry.types.insert(t.key(), Arc::new(t));
        }
    }

    /// PUT (`put` = true: the body must carry a resourceVersion unless the type allows
    /// unconditional updates) and the common path of patches.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        rt: &Arc<ResourceType>,
        version: &str,
        ns: &str,
        name: &str,
        new: Value,
        sub: Sub,
        opts: &WriteOpts,
        put: bool,
    ) -> Result<Value, ApiError> {
        self.update_inner(rt, version, ns, name, new, sub, opts, put, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn update_inner(
        &mut self,
        rt: &Arc<ResourceType>,
        version: &str,
        ns: &str,
        name: &str,
        mut new: Value,
        sub: Sub,
        opts: &WriteOpts,
        put: bool,
        managed: bool,
    ) -> Result<Value, ApiError> {
        let ns = if rt.namespaced { ns } else { "" };
        let old = self.get(rt, ns, name)?;
        if !new.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        if let Some(k) = new.get("kind").and_then(Value::as_str)
            && k != rt.kind
        {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                rt.kind
            )));
        }
        let body_name = meta_str(&new, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let body_ns = meta_str(&new, "namespace");
        if rt.namespaced && !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let new_rv = rv_of(&new).to_string();
        if new_rv.is_empty() {
            if put && !rt.allow_unconditional_update {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    vec![FieldError::invalid(
                        "metadata.resourceVersion",
                        &json!("0x0"),
                        "must be specified for an update",
                    )],
                ));
            }
        } else if new_rv != rv_of(&old) {
            return Err(ApiError::conflict(rt, name));
        }
        // Subresource semantics: the main resource cannot write status, /status writes nothing else.
        if sub == Sub::Status {
            let status = new.get("status").cloned();
            let mut from_old = old.clone();
            match status {
                Some(s) => from_old["status"] = s,
                None => {
                    from_old.as_object_mut().expect("object").remove("status");
                }
            }
            new = from_old;
        } else if rt.has_status(version) {
            let o = new.as_object_mut().expect("object");
            match old.get("status") {
                Some(s) => {
                    o.insert("status".into(), s.clone());
                }
                None => {
                    o.remove("status");
                }
            }
        }
        new["apiVersion"] = old["apiVersion"].clone();
        new["kind"] = old["kind"].clone();
        {
            let om = meta(&old).as_object().cloned().unwrap_or_default();
            let m = meta_mut(&mut new);
            for f in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "resourceVersion",
                "generateName",
            ] {
                match om.get(f) {
                    Some(v) => m.insert(f.into(), v.clone()),
                    None => m.remove(f),
                };
            }
            if !managed {
                match om.get("managedFields") {
                    Some(v) => m.insert("managedFields".into(), v.clone()),
                    None => m.remove("managedFields"),
                };
            }
        }
        let deleting = !meta_str(&old, "deletionTimestamp").is_empty();
        if deleting {
            let old_f = finalizers(&old);
            let added: Vec<String> = finalizers(&new)
                .into_iter()
                .filter(|f| !old_f.contains(f))
                .map(|f| f.as_str().unwrap_or("").to_string())
                .collect();
            if !added.is_empty() {
                let quoted: Vec<String> = added.iter().map(|f| format!("{f:?}")).collect();
                return Err(ApiError::invalid(
                    rt,
                    name,
                    vec![FieldError::forbidden(
                        "metadata.finalizers",
                        &format!(
                            "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                            quoted.join(", ")
                        ),
                    )],
                ));
            }
        }
        let errs = validate_metadata(rt, &new);
        if !errs.is_empty() {
            return Err(ApiError::invalid(rt, name, errs));
        }
        self.prepare(rt, version, &mut new, Some(&old), opts)?;
        let errs = crate::objmeta::validate_data(rt, &new);
        if !errs.is_empty() {
            return Err(ApiError::invalid(rt, name, errs));
        }
        if rt.has_generation && spec_part(&new) != spec_part(&old) {
            let g = meta(&old)
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                + 1;
            meta_mut(&mut new).insert("generation".into(), json!(g));
        }
        if !managed {
            apply::record_update(
                Some(&old),
                &mut new,
                &opts.manager,
                sub.name(),
                &rt.api_version(version),
                &now_rfc3339(),
                Types::for_type(rt, version),
            );
        }
        // A write that changes nothing is not a write: no new resourceVersion, no event.
        let strip_times = |v: &Value| {
            let mut v = v.clone();
            if let Some(Value::Array(mf)) = v.pointer_mut("/metadata/managedFields") {
                for e in mf.iter_mut() {
                    if let Some(o) = e.as_object_mut() {
                        o.remove("time");
                    }
                }
            }
            v
        };
        if strip_times(&new) == strip_times(&old) {
            return Ok(old);
        }
        if opts.dry_run {
            return Ok(new);
        }
        self.rv += 1;
        meta_mut(&mut new).insert("resourceVersion".into(), json!(self.rv.to_string()));
        if deleting && finalizers(&new).is_empty() && !self.needs_cleanup(rt, &new) {
            self.remove(rt, ns, name, new.clone(), old);
            self.after_removal();
            return Ok(new);
        }
        self.bucket(&rt.key())
            .insert((ns.to_string(), name.to_string()), new.clone());
        if rt.flavor == Flavor::Crd {
            self.register_crd(&new);
        }
        self.emit(rt.key(), ns, ChangeKind::Modified, new.clone(), Some(old));
        Ok(new)
    }

    /// PATCH of any type. Returns the object and whether it was created (apply only).
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        rt: &Arc<ResourceType>,
        version: &str,
        ns: &str,
        name: &str,
        ptype: PatchType,
        body: &Value,
        sub: Sub,
        opts: &WriteOpts,
    ) -> Result<(Value, bool), ApiError> {
        let ns = if rt.namespaced { ns } else { "" };
        if ptype == PatchType::Apply {
            return self.server_side_apply(rt, version, ns, name, body, sub, opts);
        }
        let mut doc = self.get(rt, ns, name)?;
        doc["apiVersion"] = json!(rt.api_version(version));
        match ptype {
            PatchType::Merge => patch::merge_patch(&mut doc, body),
            PatchType::Json => patch::json_patch(&mut doc, body)?,
            PatchType::Strategic => {
                if !rt.flavor.supports_strategic_merge() {
                    return Err(ApiError::unsupported_media_type(
                        "application/strategic-merge-patch+json",
                    ));
                }
                patch::strategic_merge(&mut doc, body)?
            }
            PatchType::Apply => unreachable!("handled above"),
        }
        self.update_inner(rt, version, ns, name, doc, sub, opts, false, false)
            .map(|o| (o, false))
    }

    #[allow(clippy::too_many_arguments)]
    fn server_side_apply(
        &mut self,
        rt: &Arc<ResourceType>,
        version: &str,
        ns: &str,
        name: &str,
        body: &Value,
        sub: Sub,
        opts: &WriteOpts,
    ) -> Result<(Value, bool), ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "error decoding YAML: the applied configuration must be an object",
            ));
        }
        for f in ["apiVersion", "kind"] {
            if body.get(f).and_then(Value::as_str).unwrap_or("").is_empty() {
                return Err(ApiError::bad_request(format!("{f} must be set")));
            }
        }
        let body_name = meta_str(body, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let mut applied = body.clone();
        // Apply to the main resource never sets status; apply to /status only sets status.
        if sub == Sub::Status {
            let mut only =
                json!({"apiVersion": body["apiVersion"], "kind": body["kind"], "metadata": {}});
            if let Some(s) = body.get("status") {
                only["status"] = s.clone();
            }
            applied = only;
        } else if rt.has_status(version) {
            applied.as_object_mut().expect("object").remove("status");
        }
        let now = now_rfc3339();
        let api_version = rt.api_version(version);
        let req = ApplyRequest {
            manager: &opts.manager,
            subresource: sub.name(),
            api_version: &api_version,
            time: &now,
            force: opts.force,
            types: Types::for_type(rt, version),
        };
        let existing = self.get_raw(&rt.key(), ns, name).cloned();
        let conflict_err = |conflicts: Vec<apply::Conflict>| {
            // The real server's wording: grouped by manager, one path inline or a list.
            let n = conflicts.len();
            let mut groups: Vec<(String, Vec<String>)> = Vec::new();
            for c in &conflicts {
                let who = format!("\"{}\" using {}", c.manager, c.api_version);
                match groups.iter_mut().find(|(w, _)| *w == who) {
                    Some((_, paths)) => paths.push(c.path.clone()),
                    None => groups.push((who, vec![c.path.clone()])),
                }
            }
            let parts: Vec<String> = groups
                .iter()
                .map(|(who, paths)| match paths.as_slice() {
                    [one] => format!("conflict with {who}: {one}"),
                    many => format!("conflicts with {who}:\n- {}", many.join("\n- ")),
                })
                .collect();
            let causes: Vec<Value> = conflicts
                .iter()
                .map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{}\" using {}", c.manager, c.api_version), "field": c.path}))
                .collect();
            ApiError::new(
                409,
                "Conflict",
                format!(
                    "Apply failed with {n} conflict{}: {}",
                    if n == 1 { "" } else { "s" },
                    parts.join("\n")
                ),
            )
            .with_details(
                json!({"name": name, "group": rt.group, "kind": rt.plural, "causes": causes}),
            )
        };
        match existing {
            None => {
                if sub == Sub::Status {
                    return Err(ApiError::not_found(rt, name));
                }
                let mut skeleton =
                    json!({"apiVersion": api_version, "kind": rt.kind, "metadata": {"name": name}});
                if let Some(gn) = meta(body).get("generateName") {
                    skeleton["metadata"]["generateName"] = gn.clone();
                }
                let mut obj = apply::apply(&skeleton, &applied, &req).map_err(conflict_err)?;
                let created = self.create_inner(rt, version, ns, &mut obj, opts, true)?;
                Ok((created, true))
            }
            Some(live) => {
                let rv = rv_of(&applied).to_string();
                if !rv.is_empty() && rv != rv_of(&live) {
                    return Err(ApiError::conflict(rt, name));
                }
                let merged = apply::apply(&live, &applied, &req).map_err(conflict_err)?;
                self.update_inner(rt, version, ns, name, merged, sub, opts, false, true)
                    .map(|o| (o, false))
            }
        }
    }

    /// Namespaces and CRDs stay (terminating) while they still contain objects.
    fn needs_cleanup(&self, rt: &ResourceType, obj: &Value) -> bool {
        match rt.flavor {
            Flavor::Namespace => {
                let ns = meta_str(obj, "name");
                self.objects.iter().any(|(gr, b)| {
                    self.registry.get(gr).is_some_and(|t| t.namespaced)
                        && b.keys().any(|(n, _)| n == ns)
                })
            }
            Flavor::Crd => match registry::from_crd(obj) {
                Ok(t) => self.objects.get(&t.key()).is_some_and(|b| !b.is_empty()),
                Err(_) => false,
            },
            _ => false,
        }
    }

    /// DELETE: with finalizers (or contents, for namespaces/CRDs) only marks the object.
    /// Returns the object while it still exists (marked for deletion, or a dry run) and
    /// `Err(last state)` once it is gone, which the HTTP layer answers with a
    /// `Status{Success}` as the real server does.
    pub fn delete(
        &mut self,
        rt: &Arc<ResourceType>,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Result<Value, Value>, ApiError> {
        let ns = if rt.namespaced { ns } else { "" };
        let old = self.get(rt, ns, name)?;
        if let Some(uid) = &opts.uid
            && uid != meta_str(&old, "uid")
        {
            return Err(ApiError::conflict_msg(
                rt,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&old, "uid")
                ),
            ));
        }
        if let Some(rv) = &opts.resource_version
            && rv != rv_of(&old)
        {
            return Err(ApiError::conflict_msg(
                rt,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in meta: {}",
                    rv_of(&old)
                ),
            ));
        }
        if opts.dry_run {
            return Ok(Ok(old));
        }
        if opts.orphan {
            self.orphan_dependents(meta_str(&old, "uid"));
        }
        let result = self.delete_object(rt, ns, name);
        self.after_removal();
        match self.get_raw(&rt.key(), ns, name) {
            Some(still_there) => Ok(Ok(still_there.clone())),
            None => Ok(Err(result.unwrap_or(old))),
        }
    }

    /// Marks or removes one object; returns its state afterwards (None if it was gone).
    fn delete_object(&mut self, rt: &Arc<ResourceType>, ns: &str, name: &str) -> Option<Value> {
        let old = self.get_raw(&rt.key(), ns, name)?.clone();
        let deleting = !meta_str(&old, "deletionTimestamp").is_empty();
        let container = matches!(rt.flavor, Flavor::Namespace | Flavor::Crd);
        if deleting && !container {
            return Some(old);
        }
        if !finalizers(&old).is_empty() || container {
            let mut new = old.clone();
            if !deleting {
                self.rv += 1;
                let m = meta_mut(&mut new);
                m.insert("deletionTimestamp".into(), json!(now_rfc3339()));
                m.insert("deletionGracePeriodSeconds".into(), json!(0));
                m.insert("resourceVersion".into(), json!(self.rv.to_string()));
                if rt.has_generation {
                    let g = m.get("generation").and_then(Value::as_i64).unwrap_or(0) + 1;
                    m.insert("generation".into(), json!(g));
                }
                if rt.flavor == Flavor::Namespace {
                    new["status"] = json!({"phase": "Terminating"});
                }
                self.bucket(&rt.key())
                    .insert((ns.to_string(), name.to_string()), new.clone());
                self.emit(rt.key(), ns, ChangeKind::Modified, new.clone(), Some(old));
            }
            if container {
                self.delete_contents(rt, &new);
            }
            if finalizers(&new).is_empty() && !self.needs_cleanup(rt, &new) {
                self.rv += 1;
                meta_mut(&mut new).insert("resourceVersion".into(), json!(self.rv.to_string()));
                let prev = self
                    .get_raw(&rt.key(), ns, name)
                    .cloned()
                    .unwrap_or_else(|| new.clone());
                self.remove(rt, ns, name, new.clone(), prev);
                return None;
            }
            return self.get_raw(&rt.key(), ns, name).cloned();
        }
        self.rv += 1;
        let mut last = old.clone();
        meta_mut(&mut last).insert("resourceVersion".into(), json!(self.rv.to_string()));
        self.remove(rt, ns, name, last.clone(), old);
        Some(last)
    }

    /// Deletes what a terminating namespace or CRD contains.
    fn delete_contents(&mut self, rt: &ResourceType, container: &Value) {
        let targets: Vec<(Arc<ResourceType>, String, String)> = match rt.flavor {
            Flavor::Namespace => {
                let ns = meta_str(container, "name");
                self.objects
                    .iter()
                    .filter_map(|(gr, b)| {
                        self.registry
                            .get(gr)
                            .filter(|t| t.namespaced)
                            .map(|t| (t, b))
                    })
                    .flat_map(|(t, b)| {
                        b.keys()
                            .filter(|(n, _)| n == ns)
                            .map(move |(n, name)| (t.clone(), n.clone(), name.clone()))
                    })
                    .collect()
            }
            Flavor::Crd => match registry::from_crd(container)
                .ok()
                .and_then(|t| self.registry.get(&t.key()))
            {
                Some(t) => self
                    .objects
                    .get(&t.key())
                    .map(|b| {
                        b.keys()
                            .map(|(n, name)| (t.clone(), n.clone(), name.clone()))
                            .collect()
                    })
                    .unwrap_or_default(),
                None => vec![],
            },
            _ => vec![],
        };
        for (t, ns, name) in targets {
            self.delete_object(&t, &ns, &name);
        }
    }

    /// Takes an object out of the store and emits DELETED.
    fn remove(&mut self, rt: &ResourceType, ns: &str, name: &str, last: Value, old: Value) {
        self.bucket(&rt.key())
            .remove(&(ns.to_string(), name.to_string()));
        self.uids.remove(meta_str(&last, "uid"));
        if rt.flavor == Flavor::Crd
            && let Ok(t) = registry::from_crd(&last)
        {
            self.registry.types.remove(&t.key());
            self.objects.remove(&t.key());
        }
        self.emit(rt.key(), ns, ChangeKind::Deleted, last, Some(old));
    }

    /// After any removal: collect garbage (dependents whose owners are all gone) and finish
    /// terminating namespaces/CRDs that became empty, until nothing changes.
    fn after_removal(&mut self) {
        loop {
            let mut progressed = false;
            let orphans: Vec<(Arc<ResourceType>, String, String)> = self
                .objects
                .iter()
                .flat_map(|(gr, b)| b.iter().map(move |(k, v)| (gr, k, v)))
                .filter(|(_, _, v)| meta_str(v, "deletionTimestamp").is_empty())
                .filter(|(_, _, v)| {
                    let refs = meta(v).get("ownerReferences").and_then(Value::as_array);
                    refs.is_some_and(|r| {
                        !r.is_empty()
                            && r.iter().all(|o| {
                                !self.uids.contains_key(
                                    o.get("uid").and_then(Value::as_str).unwrap_or(""),
                                )
                            })
                    })
                })
                .filter_map(|(gr, (ns, name), _)| {
                    self.registry.get(gr).map(|t| (t, ns.clone(), name.clone()))
                })
                .collect();
            for (t, ns, name) in orphans {
                self.delete_object(&t, &ns, &name);
                progressed = true;
            }
            let pending: Vec<(Arc<ResourceType>, String)> = self
                .objects
                .iter()
                .filter_map(|(gr, b)| {
                    self.registry
                        .get(gr)
                        .filter(|t| matches!(t.flavor, Flavor::Namespace | Flavor::Crd))
                        .map(|t| (t, b))
                })
                .flat_map(|(t, b)| {
                    b.iter()
                        .filter(|(_, v)| !meta_str(v, "deletionTimestamp").is_empty())
                        .map(move |((_, name), _)| (t.clone(), name.clone()))
                })
                .collect();
            for (t, name) in pending {
                let Some(obj) = self.get_raw(&t.key(), "", &name).cloned() else {
                    continue;
                };
                if finalizers(&obj).is_empty() && !self.needs_cleanup(&t, &obj) {
                    self.rv += 1;
                    let mut last = obj.clone();
                    meta_mut(&mut last)
                        .insert("resourceVersion".into(), json!(self.rv.to_string()));
                    self.remove(&t, "", &name, last, obj);
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
    }

    /// propagationPolicy=Orphan: dependents lose their reference to the owner.
    fn orphan_dependents(&mut self, owner_uid: &str) {
        let dependents: Vec<(GroupResource, ObjKey)> = self
            .objects
            .iter()
            .flat_map(|(gr, b)| b.iter().map(move |(k, v)| (gr, k, v)))
            .filter(|(_, _, v)| {
                meta(v)
                    .get("ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|r| r.iter().any(|o| o["uid"] == owner_uid))
            })
            .map(|(gr, k, _)| (gr.clone(), k.clone()))
            .collect();
        for (gr, (ns, name)) in dependents {
            let Some(old) = self.get_raw(&gr, &ns, &name).cloned() else {
                continue;
            };
            let mut new = old.clone();
            if let Some(refs) = meta_mut(&mut new)
                .get_mut("ownerReferences")
                .and_then(Value::as_array_mut)
            {
                refs.retain(|o| o["uid"] != owner_uid);
            }
            self.rv += 1;
            meta_mut(&mut new).insert("resourceVersion".into(), json!(self.rv.to_string()));
            self.bucket(&gr).insert((ns.clone(), name), new.clone());
            self.emit(gr, &ns, ChangeKind::Modified, new, Some(old));
        }
    }

    /// DELETE on a collection (selectors applied by the caller's `matches`).
    pub fn delete_collection(
        &mut self,
        rt: &Arc<ResourceType>,
        ns: Option<&str>,
        matches: &dyn Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let keys: Vec<ObjKey> = self
            .objects
            .get(&rt.key())
            .map(|b| {
                b.iter()
                    .filter(|((n, _), v)| ns.is_none_or(|x| x == n) && matches(v))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        let mut out = Vec::new();
        for (n, name) in keys {
            if let Some(v) = self.delete_object(rt, &n, &name) {
                out.push(v);
            }
        }
        self.after_removal();
        out
    }
}
