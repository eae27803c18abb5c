//! The view of one credential the CLI shows: built from the RdsCredential, its RdsDatabase and
//! its namespace's labels (never a Secret), by pure functions reusing the controller's own
//! decisions (namespace selector, rotation schedule). Its JSON is the `-o json` shape.

use std::collections::BTreeMap;

use jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;

use crate::crd::{RdsCredential, RdsDatabase};
use crate::reconcile::conditions;
use crate::reconcile::credential::{ROTATE_ANNOTATION, selector};
use crate::reconcile::request::{Request, Trigger, due_request};
use crate::schedule::{Due, RotationPlan};

/// Whether the credential's namespace may use its database (the controller's admission rule).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum Admission {
    Admitted,
    DatabaseMissing,
    NoSelector,
    NotAdmitted {
        selector: String,
    },
    /// The namespace could not be read (the CLI's identity may lack `get namespaces`).
    Unknown,
}

/// Whether a scheduled rotation is due, from the controller's own [`RotationPlan`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum RotationDue {
    /// A rotation request (the `rdscred.io/rotate-requested-at` annotation) not answered yet:
    /// the next reconcile rotates unless something holds it.
    Requested {
        value: String,
    },
    NotScheduled,
    DueSince {
        since: String,
    },
    ScheduledAt {
        at: String,
    },
    InvalidSchedule {
        error: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadView {
    /// The kind as written in the CRD (rendered generically: any kind the CRD gains shows up).
    pub kind: String,
    pub name: String,
    pub version_id: String,
    pub rolled_at: String,
    pub completed_at: Option<String>,
}

/// `-o json`: stable field names (camelCase); fields absent in status are `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialView {
    pub namespace: String,
    pub name: String,
    pub database: String,
    pub admission: Admission,
    pub ready: Option<bool>,
    pub reason: Option<String>,
    pub current_user: Option<String>,
    pub synced_version: Option<String>,
    pub synced_at: Option<String>,
    pub last_rotation: Option<String>,
    pub next_rotation: Option<String>,
    pub rotation: RotationDue,
    pub drifted: Option<bool>,
    pub workloads: Vec<WorkloadView>,
    pub conditions: Vec<ConditionView>,
}

/// The pure decision: a credential, its database (if found) and its namespace's labels (if
/// readable) at `now`.
pub fn credential_view(
    cred: &RdsCredential,
    db: Option<&RdsDatabase>,
    ns_labels: Option<&BTreeMap<String, String>>,
    now: Timestamp,
) -> CredentialView {
    let status = cred.status.clone().unwrap_or_default();
    let cond = |t: &str| status.conditions.iter().find(|c| c.type_ == t);
    let ready = cond(conditions::READY);
    CredentialView {
        namespace: cred.namespace().unwrap_or_default(),
        name: cred.name_any(),
        database: cred.spec.database_ref.name.clone(),
        admission: admission(db, ns_labels),
        ready: ready.map(|c| c.status == "True"),
        reason: ready.map(|c| c.reason.clone()),
        current_user: status.current_username.clone(),
        synced_version: status.synced_version_id.clone(),
        synced_at: status.synced_at.clone(),
        last_rotation: status.last_rotation_time.clone(),
        next_rotation: status.next_rotation_time.clone(),
        rotation: rotation_due(cred, db, now),
        drifted: cond(conditions::DRIFTED).map(|c| c.status == "True"),
        workloads: status
            .rolled_workloads
            .iter()
            .map(|w| WorkloadView {
                kind: serde_json::to_value(w.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("{:?}", w.kind)),
                name: w.name.clone(),
                version_id: w.version_id.clone(),
                rolled_at: w.rolled_at.clone(),
                completed_at: w.completed_at.clone(),
            })
            .collect(),
        conditions: status
            .conditions
            .iter()
            .map(|c| ConditionView {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
            })
            .collect(),
    }
}

fn admission(db: Option<&RdsDatabase>, ns_labels: Option<&BTreeMap<String, String>>) -> Admission {
    let Some(db) = db else {
        return Admission::DatabaseMissing;
    };
    let Some(sel) = &db.spec.namespace_selector else {
        return Admission::NoSelector;
    };
    match ns_labels {
        None => Admission::Unknown,
        Some(labels) if selector::matches(sel, labels) => Admission::Admitted,
        Some(_) => Admission::NotAdmitted {
            selector: serde_json::to_string(sel).unwrap_or_default(),
        },
    }
}

/// The schedule the controller applies: the credential's rotation spec, else the database's
/// defaults; "last" is the last rotation, else the credential's creation (as the gate does).
fn rotation_due(cred: &RdsCredential, db: Option<&RdsDatabase>, now: Timestamp) -> RotationDue {
    // A request first, decided like the controller does (reconcile::request::due_request).
    let answered = cred
        .status
        .as_ref()
        .and_then(|s| s.last_rotation_request.as_deref());
    let annotation = cred
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ROTATE_ANNOTATION))
        .map(String::as_str);
    if let Some(Request {
        trigger: Trigger::Annotation,
        value: Some(value),
    }) = due_request(annotation, answered, false, true, None, false)
    {
        return RotationDue::Requested { value };
    }
    let spec = cred
        .spec
        .rotation
        .as_deref()
        .or_else(|| db.and_then(|d| d.spec.rotation_defaults.as_ref()));
    let Some(schedule) = spec.and_then(|s| s.schedule.as_ref()) else {
        return RotationDue::NotScheduled;
    };
    let plan = match RotationPlan::from_spec(schedule) {
        Ok(p) => p,
        Err(e) => {
            return RotationDue::InvalidSchedule {
                error: e.to_string(),
            };
        }
    };
    let last = cred
        .status
        .as_ref()
        .and_then(|s| s.last_rotation_time.as_deref())
        .and_then(|t| t.parse::<Timestamp>().ok())
        .or_else(|| cred.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now);
    match plan.due(last, now) {
        // Due since the end of the interval after the last rotation (the window it opened).
        Due::Now => RotationDue::DueSince {
            since: plan.window_after(last).0.to_string(),
        },
        Due::At(t) => RotationDue::ScheduledAt { at: t.to_string() },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn cred(status: serde_json::Value, rotation: serde_json::Value) -> RdsCredential {
        serde_json::from_value(json!({
            "apiVersion": "rdscred.io/v1alpha1", "kind": "RdsCredential",
            "metadata": {"name": "app", "namespace": "team", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"databaseRef": {"name": "pg"}, "secret": {"name": "rds/app"}, "rotation": rotation},
            "status": status,
        }))
        .unwrap()
    }

    pub(crate) fn db(selector: serde_json::Value) -> RdsDatabase {
        serde_json::from_value(json!({
            "apiVersion": "rdscred.io/v1alpha1", "kind": "RdsDatabase",
            "metadata": {"name": "pg"},
            "spec": {"endpoint": {"host": "h", "port": 5432}, "engine": "postgres",
                     "adminLogin": {"secretArn": "arn:aws:secretsmanager:us-east-1:1:secret:a"},
                     "secretNamePrefix": "rds/", "namespaceSelector": selector},
        }))
        .unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn now() -> Timestamp {
        "2026-03-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn admission_table() {
        let c = cred(json!({}), json!(null));
        let sel = json!({"matchLabels": {"db": "pg"}});
        let d = db(sel.clone());
        let ok = labels(&[("db", "pg")]);
        let no = labels(&[("db", "mysql")]);
        type Case<'a> = (
            Option<&'a RdsDatabase>,
            Option<&'a BTreeMap<String, String>>,
            &'a str,
        );
        let cases: Vec<Case> = vec![
            (Some(&d), Some(&ok), "admitted"),
            (Some(&d), Some(&no), "notAdmitted"),
            (Some(&d), None, "unknown"),
            (None, Some(&ok), "databaseMissing"),
        ];
        for (db, l, want) in cases {
            let v = credential_view(&c, db, l, now());
            assert_eq!(serde_json::to_value(&v.admission).unwrap()["state"], want);
        }
        let mut no_sel = db(json!(null));
        no_sel.spec.namespace_selector = None;
        let v = credential_view(&c, Some(&no_sel), Some(&ok), now());
        assert_eq!(v.admission, Admission::NoSelector);
    }

    #[test]
    fn a_pending_request_comes_before_the_schedule() {
        let daily = json!({"schedule": {"automaticallyAfterDays": 1}});
        let mut c = cred(json!({"lastRotationRequest": "r1"}), daily);
        let annotate = |c: &mut RdsCredential, v: &str| {
            c.metadata.annotations = Some([(ROTATE_ANNOTATION.to_string(), v.to_string())].into());
        };
        // Answered already: the schedule decides.
        annotate(&mut c, "r1");
        assert!(!matches!(
            credential_view(&c, None, None, now()).rotation,
            RotationDue::Requested { .. }
        ));
        // Not answered yet: requested, whatever the schedule says.
        annotate(&mut c, "r2");
        assert_eq!(
            credential_view(&c, None, None, now()).rotation,
            RotationDue::Requested { value: "r2".into() }
        );
    }

    #[test]
    fn rotation_due_table() {
        let daily = json!({"schedule": {"automaticallyAfterDays": 1}});
        let never = credential_view(&cred(json!({}), json!(null)), None, None, now());
        assert_eq!(never.rotation, RotationDue::NotScheduled);
        // Last rotated long ago: due since the window after it.
        let old = cred(
            json!({"lastRotationTime": "2026-02-01T00:00:00Z"}),
            daily.clone(),
        );
        let v = credential_view(&old, None, None, now());
        assert!(
            matches!(&v.rotation, RotationDue::DueSince { since } if since.starts_with("2026-02-0")),
            "{:?}",
            v.rotation
        );
        // Rotated an hour ago: scheduled in the future.
        let recent = cred(json!({"lastRotationTime": "2026-03-01T11:00:00Z"}), daily);
        let v = credential_view(&recent, None, None, now());
        assert!(
            matches!(&v.rotation, RotationDue::ScheduledAt { at } if at.as_str() > "2026-03-01T12"),
            "{:?}",
            v.rotation
        );
        let bad = cred(
            json!({}),
            json!({"schedule": {"scheduleExpression": "rate(nonsense)"}}),
        );
        let v = credential_view(&bad, None, None, now());
        assert!(
            matches!(v.rotation, RotationDue::InvalidSchedule { .. }),
            "{:?}",
            v.rotation
        );
    }

    #[test]
    fn json_shape_is_stable() {
        let c = cred(
            json!({"currentUsername": "app_a", "syncedVersionId": "0123456789abcdef",
                   "conditions": [{"type": "Ready", "status": "True", "reason": "Synced", "message": "ok",
                                   "lastTransitionTime": "2026-03-01T00:00:00Z"}]}),
            json!(null),
        );
        let v = serde_json::to_value(credential_view(&c, None, None, now())).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 15, "{v}");
        for k in [
            "namespace",
            "name",
            "database",
            "admission",
            "ready",
            "reason",
            "currentUser",
            "syncedVersion",
            "syncedAt",
            "lastRotation",
            "nextRotation",
            "rotation",
            "drifted",
            "workloads",
            "conditions",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert_eq!(v["ready"], true);
        assert_eq!(v["currentUser"], "app_a");
        assert_eq!(v["conditions"][0]["type"], "Ready");
    }
}
