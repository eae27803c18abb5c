//! The target Kubernetes Secret: default keys plus templated ones, the AWSCURRENT version id in
//! an annotation, an owner reference to the credential. Written only when something differs.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use super::{PropagationError as Error, SyncedValue};
use crate::aws::cache::SecretCache;
use crate::crd::RdsCredential;
use crate::secret::{RdsSecretValue, SecretString};
use crate::template::{self, TemplateValues};

/// AWSCURRENT version id the Secret holds.
pub const VERSION_ANNOTATION: &str = "rdscred.io/version-id";
/// Label on every Secret rdscred writes (for watches and `kubectl get -l`).
pub const CREDENTIAL_LABEL: &str = "rdscred.io/credential";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// Keys written for every credential, in the RDS JSON's names.
pub const DEFAULT_KEYS: [&str; 6] = ["username", "password", "host", "port", "dbname", "engine"];

pub struct SyncOutcome {
    pub secret_name: String,
    /// False when the Secret already held exactly this.
    pub written: bool,
    /// The Secret's resourceVersion after our write (`None` when nothing was written): how
    /// the watch event of our own write is told from someone else's edit.
    pub resource_version: Option<String>,
}

/// Name of the target Secret.
pub fn target_name(cred: &RdsCredential) -> String {
    cred.spec
        .target
        .name
        .clone()
        .unwrap_or_else(|| cred.name_any())
}

/// Writes the target Secret if it differs from `synced`. Refuses to touch a Secret of the
/// same name that this credential does not control.
/// What was written is recorded in `secrets` (what a later [`read_synced`] trusts).
pub async fn write_target_secret(
    client: &Client,
    secrets: &SecretCache,
    cred: &RdsCredential,
    synced: &SyncedValue<'_>,
) -> Result<SyncOutcome, Error> {
    let name = target_name(cred);
    let ns = cred.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let desired = desired_secret(cred, &name, synced)?;
    let key = format!("{ns}/{name}");
    let data = desired.data.clone().unwrap_or_default();
    let existing = api.get_opt(&name).await?;
    let Some(existing) = existing else {
        let created = api
            .create(
                &PostParams {
                    field_manager: Some("rdscred".into()),
                    ..Default::default()
                },
                &desired,
            )
            .await?;
        secrets.record_synced(&key, synced.version_id, &data);
        return Ok(SyncOutcome {
            secret_name: name,
            written: true,
            resource_version: created.resource_version(),
        });
    };
    if !controlled_by(&existing, cred) {
        return Err(Error::TargetSecretNotOwned {
            namespace: ns,
            name,
        });
    }
    if up_to_date(&existing, &desired) {
        secrets.record_synced(&key, synced.version_id, &data);
        return Ok(SyncOutcome {
            secret_name: name,
            written: false,
            resource_version: None,
        });
    }
    let patched = api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(merge_patch(&existing, &desired)),
        )
        .await?;
    secrets.record_synced(&key, synced.version_id, &data);
    Ok(SyncOutcome {
        secret_name: name,
        written: true,
        resource_version: patched.resource_version(),
    })
}

/// The Secret's values, if it holds exactly AWSCURRENT version `version_id` (so reconciles
/// need no GetSecretValue in steady state).
///
/// The version annotation alone proves nothing: anyone who can edit the Secret can change a
/// password and leave the annotation. Its data is trusted only if it is byte for byte what this
/// process last wrote or verified for that version; otherwise (an edit, or a restart) the
/// caller reads AWSCURRENT from Secrets Manager, and the sync puts the Secret back. Without
/// this, an edited password would be taken for AWSCURRENT: never restored, and with
/// `drift.policy: repair` even set on the database user.
pub async fn read_synced(
    client: &Client,
    secrets: &SecretCache,
    cred: &RdsCredential,
    version_id: &str,
) -> Result<Option<RdsSecretValue>, Error> {
    let ns = cred.namespace().unwrap_or_default();
    let name = target_name(cred);
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let Some(secret) = api.get_opt(&name).await? else {
        return Ok(None);
    };
    if !controlled_by(&secret, cred)
        || secret
            .annotations()
            .get(VERSION_ANNOTATION)
            .map(String::as_str)
            != Some(version_id)
    {
        return Ok(None);
    }
    let data = secret.data.unwrap_or_default();
    if !secrets.synced_unchanged(&format!("{ns}/{name}"), version_id, &data) {
        return Ok(None);
    }
    let text = |k: &str| {
        data.get(k)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    };
    let (Some(username), Some(password), Some(host), Some(port), Some(engine)) = (
        text("username"),
        text("password"),
        text("host"),
        text("port").and_then(|p| p.parse().ok()),
        text("engine"),
    ) else {
        return Ok(None);
    };
    Ok(Some(RdsSecretValue {
        engine,
        host,
        port,
        username,
        password: SecretString::new(password),
        dbname: text("dbname").filter(|d| !d.is_empty()),
        db_instance_identifier: None,
        db_cluster_identifier: None,
        masterarn: None,
    }))
}

fn controlled_by(secret: &Secret, cred: &RdsCredential) -> bool {
    let uid = cred.meta().uid.as_deref();
    secret
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
}

fn desired_secret(
    cred: &RdsCredential,
    name: &str,
    synced: &SyncedValue<'_>,
) -> Result<Secret, Error> {
    let target = &cred.spec.target;
    let mut labels = target.labels.clone();
    labels.insert(MANAGED_BY_LABEL.into(), "rdscred".into());
    labels.insert(CREDENTIAL_LABEL.into(), cred.name_any());
    let mut annotations = target.annotations.clone();
    annotations.insert(VERSION_ANNOTATION.into(), synced.version_id.into());
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: cred.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![
                cred.controller_owner_ref(&())
                    .expect("credential has a name and uid"),
            ]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(secret_data(cred, synced.value)?),
        ..Default::default()
    })
}

/// Default keys plus rendered templates.
pub fn secret_data(
    cred: &RdsCredential,
    v: &RdsSecretValue,
) -> Result<BTreeMap<String, ByteString>, Error> {
    let mut data = BTreeMap::new();
    let mut put = |k: &str, s: &str| {
        data.insert(k.to_string(), ByteString(s.as_bytes().to_vec()));
    };
    put("username", &v.username);
    put("password", v.password.expose());
    put("host", &v.host);
    put("port", &v.port.to_string());
    put("dbname", v.dbname.as_deref().unwrap_or(""));
    put("engine", &v.engine);
    let values = TemplateValues {
        username: &v.username,
        password: &v.password,
        host: &v.host,
        port: v.port,
        dbname: v.dbname.as_deref(),
        engine: &v.engine,
    };
    for (key, tpl) in &cred.spec.target.templates {
        let rendered = template::render(tpl, &values).map_err(|source| Error::Template {
            key: key.clone(),
            source,
        })?;
        data.insert(
            key.clone(),
            ByteString(rendered.expose().as_bytes().to_vec()),
        );
    }
    Ok(data)
}

fn up_to_date(existing: &Secret, desired: &Secret) -> bool {
    let subset = |want: &Option<BTreeMap<String, String>>,
                  have: &Option<BTreeMap<String, String>>| {
        want.iter()
            .flatten()
            .all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
    };
    existing.data == desired.data
        && subset(&desired.metadata.labels, &existing.metadata.labels)
        && subset(
            &desired.metadata.annotations,
            &existing.metadata.annotations,
        )
}

/// Merge patch to `desired`: keys we no longer write are removed (null).
fn merge_patch(existing: &Secret, desired: &Secret) -> serde_json::Value {
    let mut data = serde_json::to_value(&desired.data).expect("data serializes");
    if let (Some(obj), Some(old)) = (data.as_object_mut(), &existing.data) {
        for k in old.keys() {
            obj.entry(k.clone()).or_insert(serde_json::Value::Null);
        }
    }
    json!({
        "metadata": { "labels": desired.metadata.labels, "annotations": desired.metadata.annotations },
        "data": data,
    })
}
