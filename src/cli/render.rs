//! Text rendering of [`CredentialView`]s: pure functions, so the exact output is unit-tested.

use std::fmt::Write as _;

use super::view::{Admission, CredentialView, RotationDue};

/// AWS version ids are UUIDs: eight characters identify one in a table.
fn short(v: &Option<String>) -> String {
    v.as_deref()
        .map(|s| s.chars().take(8).collect())
        .unwrap_or_else(|| "-".into())
}

fn or_dash(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".into())
}

fn ready_cell(v: &CredentialView) -> String {
    match (v.ready, &v.reason) {
        (Some(true), _) => "True".into(),
        (Some(false), Some(r)) => format!("False/{r}"),
        (Some(false), None) => "False".into(),
        (None, _) => "Unknown".into(),
    }
}

fn drift_cell(v: &CredentialView) -> &'static str {
    match v.drifted {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    }
}

/// The `status` table (no name given).
pub fn table(views: &[CredentialView]) -> String {
    let header = [
        "NAMESPACE",
        "NAME",
        "DATABASE",
        "READY",
        "USER",
        "VERSION",
        "SYNCED",
        "LAST ROTATION",
        "NEXT ROTATION",
        "DRIFT",
    ];
    let rows: Vec<[String; 10]> = views
        .iter()
        .map(|v| {
            [
                v.namespace.clone(),
                v.name.clone(),
                v.database.clone(),
                ready_cell(v),
                or_dash(&v.current_user),
                short(&v.synced_version),
                or_dash(&v.synced_at),
                or_dash(&v.last_rotation),
                or_dash(&v.next_rotation),
                drift_cell(v).into(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let joined: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(joined.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

fn admission_line(v: &CredentialView) -> String {
    match &v.admission {
        Admission::Admitted => format!(
            "namespace {} is admitted by RdsDatabase {}",
            v.namespace, v.database
        ),
        Admission::DatabaseMissing => format!("RdsDatabase {} does not exist", v.database),
        Admission::NoSelector => format!(
            "RdsDatabase {} admits no namespace (spec.namespaceSelector is not set)",
            v.database
        ),
        Admission::NotAdmitted { selector } => format!(
            "namespace {} is not admitted by RdsDatabase {} (selector {selector})",
            v.namespace, v.database
        ),
        Admission::Unknown => format!("namespace {} could not be read", v.namespace),
    }
}

/// One line per rolled workload that has not completed: what holds an alternating-users
/// rotation (the next one would re-password the user those old pods still use).
fn unsettled(v: &CredentialView) -> Vec<String> {
    v.workloads
        .iter()
        .filter(|w| w.completed_at.is_none())
        .map(|w| {
            format!(
                "{}/{} (rolled at {}) has not completed its rollout",
                w.kind, w.name, w.rolled_at
            )
        })
        .collect()
}

/// The `explain` text: what the next reconcile would do, and why.
pub fn explain(v: &CredentialView) -> Vec<String> {
    let mut out = Vec::new();
    if v.admission != Admission::Admitted && v.admission != Admission::Unknown {
        out.push(format!("refused: {}", admission_line(v)));
        return out;
    }
    if let Some(c) = v
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.status != "True")
    {
        out.push(format!("not ready: {}: {}", c.reason, c.message));
    }
    if v.drifted == Some(true) {
        let msg = v
            .conditions
            .iter()
            .find(|c| c.type_ == "Drifted")
            .map(|c| format!("{}: {}", c.reason, c.message))
            .unwrap_or_default();
        out.push(format!(
            "drift: the password was changed outside rdscred ({msg})"
        ));
    }
    let held = unsettled(v);
    match &v.rotation {
        RotationDue::Requested { value } if held.is_empty() => out.push(format!(
            "rotation: requested ({value}); the next reconcile rotates (unless the minimum interval holds it)"
        )),
        RotationDue::Requested { value } => {
            out.push(format!("rotation: requested ({value}), held: {}", held.join("; ")))
        }
        RotationDue::NotScheduled => out.push("rotation: no schedule; rotates only on request".into()),
        RotationDue::InvalidSchedule { error } => out.push(format!("rotation: schedule is invalid: {error}")),
        RotationDue::ScheduledAt { at } => out.push(format!("rotation: not due; next at {at}")),
        RotationDue::DueSince { since } if held.is_empty() => {
            out.push(format!("rotation: due since {since}; the next reconcile rotates (unless the minimum interval holds it)"))
        }
        RotationDue::DueSince { since } => {
            out.push(format!("rotation: due since {since}, held: {}", held.join("; ")))
        }
    }
    if out.iter().all(|l| l.starts_with("rotation:")) && v.ready == Some(true) {
        out.insert(0, "ready: nothing to repair".into());
    }
    out
}

/// Recent Events, already formatted by the caller: "age type reason: note".
pub fn detail(v: &CredentialView, events: &[String]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Name:          {}/{}", v.namespace, v.name);
    let _ = writeln!(s, "Database:      {} ({})", v.database, admission_line(v));
    let _ = writeln!(s, "Ready:         {}", ready_cell(v));
    let _ = writeln!(s, "Current user:  {}", or_dash(&v.current_user));
    let _ = writeln!(
        s,
        "AWSCURRENT:    {} (synced {})",
        or_dash(&v.synced_version),
        or_dash(&v.synced_at)
    );
    let _ = writeln!(s, "Last rotation: {}", or_dash(&v.last_rotation));
    let _ = writeln!(s, "Next rotation: {}", or_dash(&v.next_rotation));
    let _ = writeln!(s, "Drift:         {}", drift_cell(v));
    let _ = writeln!(s, "Workloads:");
    if v.workloads.is_empty() {
        let _ = writeln!(s, "  (none rolled)");
    }
    for w in &v.workloads {
        let done = w
            .completed_at
            .as_deref()
            .map(|t| format!("completed {t}"))
            .unwrap_or_else(|| "in progress".into());
        let _ = writeln!(
            s,
            "  {}/{}  version {}  rolled {}  {done}",
            w.kind, w.name, w.version_id, w.rolled_at
        );
    }
    let _ = writeln!(s, "Conditions:");
    for c in &v.conditions {
        let _ = writeln!(
            s,
            "  {:<18} {:<6} {:<24} {}",
            c.type_, c.status, c.reason, c.message
        );
    }
    let _ = writeln!(s, "Explain:");
    for l in explain(v) {
        let _ = writeln!(s, "  {l}");
    }
    let _ = writeln!(s, "Events:");
    if events.is_empty() {
        let _ = writeln!(s, "  (none)");
    }
    for e in events {
        let _ = writeln!(s, "  {e}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::view::credential_view;
    use crate::cli::view::tests::{cred, db};
    use serde_json::json;
    use std::collections::BTreeMap;

    fn now() -> jiff::Timestamp {
        "2026-03-01T12:00:00Z".parse().unwrap()
    }

    fn admitted() -> BTreeMap<String, String> {
        [("db".to_string(), "pg".to_string())].into()
    }

    #[test]
    fn table_aligns_and_shortens_versions() {
        let c = cred(
            json!({"currentUsername": "app_a", "syncedVersionId": "0123456789abcdef",
                   "conditions": [{"type": "Ready", "status": "False", "reason": "NamespaceNotAdmitted",
                                   "message": "m", "lastTransitionTime": "2026-03-01T00:00:00Z"}]}),
            json!(null),
        );
        let v = credential_view(&c, None, None, now());
        let t = table(&[v]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2, "{t}");
        assert!(
            lines[0].starts_with("NAMESPACE  NAME  DATABASE  READY"),
            "{t}"
        );
        assert!(lines[1].contains("False/NamespaceNotAdmitted"), "{t}");
        assert!(lines[1].contains(" 01234567 "), "{t}");
        assert!(!t.contains("89abcdef"), "{t}");
        assert_eq!(lines[0].find("READY"), lines[1].find("False"), "{t}");
    }

    #[test]
    fn explain_refusal_wins() {
        let d = db(json!({"matchLabels": {"db": "pg"}}));
        let other: BTreeMap<String, String> = [("db".to_string(), "mysql".to_string())].into();
        let v = credential_view(&cred(json!({}), json!(null)), Some(&d), Some(&other), now());
        let lines = explain(&v);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("refused: namespace team is not admitted by RdsDatabase pg (selector {\"matchLabels\":{\"db\":\"pg\"}})"),
            "{lines:?}"
        );
    }

    #[test]
    fn explain_due_rotation_held_by_running_rollout() {
        let d = db(json!({"matchLabels": {"db": "pg"}}));
        let status = json!({"lastRotationTime": "2026-02-01T00:00:00Z", "rolledWorkloads": [
            {"kind": "Deployment", "name": "api", "versionId": "v2", "rolledAt": "2026-02-01T00:01:00Z"},
            {"kind": "StatefulSet", "name": "db-sync", "versionId": "v2", "rolledAt": "2026-02-01T00:01:00Z",
             "completedAt": "2026-02-01T00:02:00Z"}]});
        let v = credential_view(
            &cred(status, json!({"schedule": {"automaticallyAfterDays": 1}})),
            Some(&d),
            Some(&admitted()),
            now(),
        );
        let text = explain(&v).join("\n");
        assert!(text.contains("rotation: due since 2026-02-0"), "{text}");
        assert!(
            text.contains(
                "held: Deployment/api (rolled at 2026-02-01T00:01:00Z) has not completed"
            ),
            "{text}"
        );
        assert!(!text.contains("db-sync"), "{text}");
    }

    #[test]
    fn explain_drift_and_not_ready() {
        let d = db(json!({"matchLabels": {"db": "pg"}}));
        let status = json!({"conditions": [
            {"type": "Ready", "status": "False", "reason": "Drifted", "message": "AWSCURRENT does not log in", "lastTransitionTime": "2026-03-01T00:00:00Z"},
            {"type": "Drifted", "status": "True", "reason": "DriftDetected", "message": "login failed", "lastTransitionTime": "2026-03-01T00:00:00Z"}]});
        let v = credential_view(
            &cred(status, json!(null)),
            Some(&d),
            Some(&admitted()),
            now(),
        );
        let text = explain(&v).join("\n");
        assert!(
            text.contains("not ready: Drifted: AWSCURRENT does not log in"),
            "{text}"
        );
        assert!(
            text.contains(
                "drift: the password was changed outside rdscred (DriftDetected: login failed)"
            ),
            "{text}"
        );
        assert!(text.contains("rotation: no schedule"), "{text}");
        let detail = detail(
            &v,
            &["2026-03-01T00:00:00Z Warning DriftDetected: login failed".into()],
        );
        assert!(detail.contains("Drift:         yes"), "{detail}");
        assert!(
            detail.contains("Events:\n  2026-03-01T00:00:00Z Warning DriftDetected"),
            "{detail}"
        );
    }

    #[test]
    fn explain_ready_and_scheduled() {
        let d = db(json!({"matchLabels": {"db": "pg"}}));
        let status = json!({"lastRotationTime": "2026-03-01T11:00:00Z", "conditions": [
            {"type": "Ready", "status": "True", "reason": "Synced", "message": "ok", "lastTransitionTime": "2026-03-01T00:00:00Z"}]});
        let v = credential_view(
            &cred(status, json!({"schedule": {"automaticallyAfterDays": 1}})),
            Some(&d),
            Some(&admitted()),
            now(),
        );
        let lines = explain(&v);
        assert_eq!(lines[0], "ready: nothing to repair");
        assert!(
            lines[1].starts_with("rotation: not due; next at 2026-03-0"),
            "{lines:?}"
        );
    }
}
