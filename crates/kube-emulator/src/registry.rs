//! The resource types the emulator serves: the built-in kinds and one entry per installed
//! CustomResourceDefinition (rebuilt whenever a CRD object is written).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

/// How the type's objects are handled beyond generic storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Secret,
    ConfigMap,
    Namespace,
    Pod,
    CoreEvent,
    Event,
    Lease,
    Deployment,
    StatefulSet,
    DaemonSet,
    /// batch/v1 CronJob and Job: stored and validated (pod-template metadata), no
    /// controller schedules Jobs.
    CronJob,
    Job,
    /// Role, ClusterRole, RoleBinding, ClusterRoleBinding (`rbac` validates them and
    /// authorizes every token-authenticated request with them).
    Rbac,
    Crd,
    /// A custom resource: schema validation, pruning, defaulting, CEL.
    Custom,
}

impl Flavor {
    pub fn is_workload(self) -> bool {
        matches!(
            self,
            Flavor::Deployment | Flavor::StatefulSet | Flavor::DaemonSet
        )
    }
    /// Strategic merge patch is only defined for compiled-in types.
    pub fn supports_strategic_merge(self) -> bool {
        self != Flavor::Custom
    }
}

#[derive(Debug, Clone)]
pub struct VersionDef {
    pub name: String,
    /// openAPIV3Schema of this version (custom resources only).
    pub schema: Option<Value>,
    pub status_subresource: bool,
    pub printer_columns: Vec<Value>,
}

#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Served versions, in the CRD's order.
    pub versions: Vec<VersionDef>,
    /// The version objects are stored in (their `apiVersion` is rewritten on read).
    pub storage_version: String,
    pub flavor: Flavor,
    /// Whether `metadata.generation` is maintained.
    pub has_generation: bool,
    /// Whether PUT without `metadata.resourceVersion` is accepted (true for most built-ins,
    /// false for custom resources, as in the real server).
    pub allow_unconditional_update: bool,
}

impl ResourceType {
    pub fn version(&self, v: &str) -> Option<&VersionDef> {
        self.versions.iter().find(|d| d.name == v)
    }
    pub fn api_version(&self, v: &str) -> String {
        if self.group.is_empty() {
            v.to_string()
        } else {
            format!("{}/{v}", self.group)
        }
    }
    pub fn group_resource_string(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
    pub fn has_status(&self, v: &str) -> bool {
        self.version(v).is_some_and(|d| d.status_subresource)
    }
    pub fn key(&self) -> GroupResource {
        GroupResource {
            group: self.group.clone(),
            resource: self.plural.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupResource {
    pub group: String,
    pub resource: String,
}

#[derive(Default)]
pub struct Registry {
    pub types: BTreeMap<GroupResource, Arc<ResourceType>>,
}

impl Registry {
    pub fn with_builtins() -> Self {
        let mut r = Registry::default();
        use Flavor::*;
        // (group, version, plural, kind, namespaced, shortNames, categories, status, generation, flavor)
        type Builtin = (
            &'static str,
            &'static str,
            &'static str,
            &'static str,
            bool,
            &'static [&'static str],
            &'static [&'static str],
            bool,
            bool,
            Flavor,
        );
        let builtins: &[Builtin] = &[
            (
                "",
                "v1",
                "secrets",
                "Secret",
                true,
                &[],
                &[],
                false,
                false,
                Secret,
            ),
            (
                "",
                "v1",
                "configmaps",
                "ConfigMap",
                true,
                &["cm"],
                &[],
                false,
                false,
                ConfigMap,
            ),
            (
                "",
                "v1",
                "namespaces",
                "Namespace",
                false,
                &["ns"],
                &[],
                true,
                false,
                Namespace,
            ),
            (
                "",
                "v1",
                "pods",
                "Pod",
                true,
                &["po"],
                &["all"],
                true,
                false,
                Pod,
            ),
            (
                "",
                "v1",
                "events",
                "Event",
                true,
                &["ev"],
                &[],
                false,
                false,
                CoreEvent,
            ),
            (
                "events.k8s.io",
                "v1",
                "events",
                "Event",
                true,
                &["ev"],
                &[],
                false,
                false,
                Event,
            ),
            (
                "coordination.k8s.io",
                "v1",
                "leases",
                "Lease",
                true,
                &[],
                &[],
                false,
                false,
                Lease,
            ),
            (
                "apps",
                "v1",
                "deployments",
                "Deployment",
                true,
                &["deploy"],
                &["all"],
                true,
                true,
                Deployment,
            ),
            (
                "apps",
                "v1",
                "statefulsets",
                "StatefulSet",
                true,
                &["sts"],
                &["all"],
                true,
                true,
                StatefulSet,
            ),
            (
                "apps",
                "v1",
                "daemonsets",
                "DaemonSet",
                true,
                &["ds"],
                &["all"],
                true,
                true,
                DaemonSet,
            ),
            (
                "batch",
                "v1",
                "cronjobs",
                "CronJob",
                true,
                &["cj"],
                &["all"],
                true,
                true,
                CronJob,
            ),
            (
                "batch",
                "v1",
                "jobs",
                "Job",
                true,
                &[],
                &["all"],
                true,
                true,
                Job,
            ),
            (
                "rbac.authorization.k8s.io",
                "v1",
                "roles",
                "Role",
                true,
                &[],
                &[],
                false,
                false,
                Rbac,
            ),
            (
                "rbac.authorization.k8s.io",
                "v1",
                "rolebindings",
                "RoleBinding",
                true,
                &[],
                &[],
                false,
                false,
                Rbac,
            ),
            (
                "rbac.authorization.k8s.io",
                "v1",
                "clusterroles",
                "ClusterRole",
                false,
                &[],
                &[],
                false,
                false,
                Rbac,
            ),
            (
                "rbac.authorization.k8s.io",
                "v1",
                "clusterrolebindings",
                "ClusterRoleBinding",
                false,
                &[],
                &[],
                false,
                false,
                Rbac,
            ),
            (
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
                &["crd", "crds"],
                &["api-extensions"],
                true,
                true,
                Crd,
            ),
        ];
        for (group, version, plural, kind, namespaced, short, cats, status, generation, flavor) in
            builtins
        {
            let rt = ResourceType {
                group: group.to_string(),
                plural: plural.to_string(),
                singular: kind.to_lowercase(),
                kind: kind.to_string(),
                list_kind: format!("{kind}List"),
                namespaced: *namespaced,
                short_names: short.iter().map(|s| s.to_string()).collect(),
                categories: cats.iter().map(|s| s.to_string()).collect(),
                versions: vec![VersionDef {
                    name: version.to_string(),
                    schema: None,
                    status_subresource: *status,
                    printer_columns: vec![],
                }],
                storage_version: version.to_string(),
                flavor: *flavor,
                has_generation: *generation,
                allow_unconditional_update: true,
            };
            r.types.insert(rt.key(), Arc::new(rt));
        }
        r
    }

    /// The type served at `group/version/plural`, if that version is served.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        let rt = self.types.get(&GroupResource {
            group: group.into(),
            resource: plural.into(),
        })?;
        rt.version(version)?;
        Some(rt.clone())
    }

    pub fn get(&self, gr: &GroupResource) -> Option<Arc<ResourceType>> {
        self.types.get(gr).cloned()
    }

    /// Groups and their served versions (preferred first), for discovery.
    pub fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for rt in self.types.values() {
            let e = out.entry(rt.group.clone()).or_default();
            for v in &rt.versions {
                if !e.contains(&v.name) {
                    e.push(v.name.clone());
                }
            }
        }
        for versions in out.values_mut() {
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        out
    }
}

/// Kubernetes version priority: GA > beta > alpha, then by major, then by minor.
pub fn version_priority(v: &str) -> (u8, u32, u32) {
    let re = regex::Regex::new(r"^v(\d+)(?:(alpha|beta)(\d+))?$").expect("static regex");
    match re.captures(v) {
        Some(c) => {
            let major: u32 = c[1].parse().unwrap_or(0);
            let minor: u32 = c
                .get(3)
                .map(|m| m.as_str().parse().unwrap_or(0))
                .unwrap_or(0);
            let stability = match c.get(2).map(|m| m.as_str()) {
                None => 3,
                Some("beta") => 2,
                _ => 1,
            };
            (stability, major, minor)
        }
        None => (0, 0, 0),
    }
}

/// Builds the resource type a CRD object declares. Errors are field errors of the CRD.
pub fn from_crd(crd: &Value) -> Result<ResourceType, String> {
    let spec = crd.get("spec").ok_or("spec: Required value")?;
    let group = spec
        .get("group")
        .and_then(Value::as_str)
        .ok_or("spec.group: Required value")?;
    let names = spec.get("names").ok_or("spec.names: Required value")?;
    let plural = names
        .get("plural")
        .and_then(Value::as_str)
        .ok_or("spec.names.plural: Required value")?;
    let kind = names
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("spec.names.kind: Required value")?;
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name != format!("{plural}.{group}") {
        return Err(format!(
            "metadata.name: Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"
        ));
    }
    let scope = spec
        .get("scope")
        .and_then(Value::as_str)
        .ok_or("spec.scope: Required value")?;
    let namespaced = match scope {
        "Namespaced" => true,
        "Cluster" => false,
        other => {
            return Err(format!(
                "spec.scope: Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""
            ));
        }
    };
    let strs = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut versions = Vec::new();
    let mut storage_version = None;
    for v in spec
        .get("versions")
        .and_then(Value::as_array)
        .ok_or("spec.versions: Required value")?
    {
        let vname = v
            .get("name")
            .and_then(Value::as_str)
            .ok_or("spec.versions[].name: Required value")?;
        if v.get("storage").and_then(Value::as_bool) == Some(true) {
            storage_version = Some(vname.to_string());
        }
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        versions.push(VersionDef {
            name: vname.to_string(),
            schema: v.pointer("/schema/openAPIV3Schema").cloned(),
            status_subresource: v.pointer("/subresources/status").is_some(),
            printer_columns: v
                .get("additionalPrinterColumns")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        });
    }
    let storage_version = storage_version.ok_or(
        "spec.versions: Invalid value: must have exactly one version marked as storage version",
    )?;
    Ok(ResourceType {
        group: group.to_string(),
        plural: plural.to_string(),
        singular: names
            .get("singular")
            .and_then(Value::as_str)
            .map(String::from)
            .unwrap_or_else(|| kind.to_lowercase()),
        kind: kind.to_string(),
        list_kind: names
            .get("listKind")
            .and_then(Value::as_str)
            .map(String::from)
            .unwrap_or_else(|| format!("{kind}List")),
        namespaced,
        short_names: strs(names.get("shortNames")),
        categories: strs(names.get("categories")),
        versions,
        storage_version,
        flavor: Flavor::Custom,
        has_generation: true,
        allow_unconditional_update: false,
    })
}
