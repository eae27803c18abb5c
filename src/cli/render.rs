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
