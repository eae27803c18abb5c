//! Guarded status writes of an RdsCredential.
//!
//! Every write carries the resourceVersion of the object the reconcile read (a quorum GET at
//! its start, never the reflector cache), so a reconcile working from an older object can never
//! replace status written by a newer one: the API server answers 409 and the reconcile is
//! requeued at once, to decide again from a fresh read.
//!
//! One conflict is resolved here: when the object changed but its status did not (a user
//! annotated it or edited the spec meanwhile), nothing this write reports is stale, so it is
//! retried once against the new resourceVersion. A change of status by anyone else is
//! never overwritten.

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::Error;
use crate::crd::{RdsCredential, RdsCredentialStatus};

/// The status as last read or written, and the resourceVersion it was read or written at.
#[derive(Clone, Debug)]
pub struct StatusBase {
    pub resource_version: Option<String>,
    pub status: RdsCredentialStatus,
}

impl StatusBase {
    pub fn of(cred: &RdsCredential) -> StatusBase {
        StatusBase {
            resource_version: cred.resource_version(),
            status: cred.status.clone().unwrap_or_default(),
        }
    }
}

/// The merge patch replacing the whole status (keys present in `old` but not in `new` are
/// set to null: a merge patch keeps keys it does not mention), guarded by `resource_version`.
pub fn status_patch(
    old: &RdsCredentialStatus,
    new: &RdsCredentialStatus,
    resource_version: Option<&str>,
) -> serde_json::Value {
    let mut status = serde_json::to_value(new).expect("status serializes");
    if let (Some(obj), Ok(serde_json::Value::Object(prev))) =
        (status.as_object_mut(), serde_json::to_value(old))
    {
        for key in prev.keys() {
            obj.entry(key.clone()).or_insert(serde_json::Value::Null);
        }
    }
    match resource_version {
        Some(rv) => json!({ "metadata": { "resourceVersion": rv }, "status": status }),
        None => json!({ "status": status }),
    }
}

/// Writes `new` over `base` (nothing when equal), guarded by `base`'s resourceVersion, and
/// moves `base` on to what was written.
pub async fn write(
    api: &Api<RdsCredential>,
    name: &str,
    base: &mut StatusBase,
    new: &RdsCredentialStatus,
) -> Result<(), Error> {
    if base.status == *new {
        return Ok(());
    }
    let pp = PatchParams::default();
    let patch = status_patch(&base.status, new, base.resource_version.as_deref());
    let written = match api.patch_status(name, &pp, &Patch::Merge(&patch)).await {
        Ok(obj) => obj,
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let Some(fresh) = api.get_opt(name).await? else {
                return Err(Error::Kube(kube::Error::Api(s)));
            };
            if fresh.status.clone().unwrap_or_default() != base.status {
                // Someone (another replica, a reconcile of a newer object) wrote status since
                // this reconcile read it: its decisions are stale. Decide again.
                return Err(Error::Kube(kube::Error::Api(s)));
            }
            let patch = status_patch(&base.status, new, fresh.resource_version().as_deref());
            api.patch_status(name, &pp, &Patch::Merge(&patch)).await?
        }
        Err(e) => return Err(e.into()),
    };
    base.resource_version = written.resource_version();
    base.status = new.clone();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_replaces_the_whole_status_and_carries_the_precondition() {
        let old = RdsCredentialStatus {
            synced_version_id: Some("v1".into()),
            last_rotation_request: Some("r1".into()),
            ..Default::default()
        };
        let new = RdsCredentialStatus {
            synced_version_id: Some("v2".into()),
            ..Default::default()
        };
        let p = status_patch(&old, &new, Some("42"));
        assert_eq!(p["metadata"]["resourceVersion"], "42");
        assert_eq!(p["status"]["syncedVersionId"], "v2");
        assert!(
            p["status"]["lastRotationRequest"].is_null()
                && p["status"]
                    .as_object()
                    .unwrap()
                    .contains_key("lastRotationRequest"),
            "a removed key is nulled: {p}"
        );
        assert!(status_patch(&old, &new, None).get("metadata").is_none());
    }
}
