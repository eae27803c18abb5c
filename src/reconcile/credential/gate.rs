//! When a rotation may run: the schedule, and what makes a due rotation wait (AWSCURRENT not
//! yet synced, the minimum interval, dependents still rolling under alternating users).

use std::time::Duration;

use jiff::Timestamp;

use super::{Error, Progress, parse_time, until};
use crate::context::Settings;
use crate::crd::{RdsCredential, RdsCredentialStatus, RotationSpec, RotationStrategy};
use crate::propagation;
use crate::reconcile::Reason;
use crate::schedule::{Due, RotationPlan};

/// Whether the schedule is due now; when it is not, reports the next time in status and
/// requeues for it.
pub(super) fn schedule_due(
    cred: &RdsCredential,
    spec: &RotationSpec,
    now: Timestamp,
    p: &mut Progress,
) -> Result<bool, Error> {
    let Some(schedule) = &spec.schedule else {
        return Ok(false);
    };
    let last = parse_time(p.status.last_rotation_time.as_deref())
        .or_else(|| cred.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now);
    let plan = RotationPlan::from_spec(schedule)?;
    match plan.due(last, now) {
        Due::Now => Ok(true),
        Due::At(t) => {
            p.status.next_rotation_time = Some(t.to_string());
            p.requeue_within(until(now, t));
            Ok(false)
        }
    }
}

pub(super) fn schedule_next_rotation(
    spec: &RotationSpec,
    now: Timestamp,
    p: &mut Progress,
) -> Result<(), Error> {
    p.status.next_rotation_time = match &spec.schedule {
        Some(s) => match RotationPlan::from_spec(s)?.due(now, now) {
            Due::At(t) => Some(t.to_string()),
            Due::Now => Some(now.to_string()),
        },
        None => None,
    };
    Ok(())
}

/// Why a due rotation must wait, and when to look again.
pub(super) struct Blocked {
    pub reason: Reason,
    pub message: String,
    pub retry: Duration,
    /// The wait is work in progress (kstatus `Reconciling`): the rotation goes on as soon as
    /// a rollout or the Secret sync it waits for is done. A minimum interval is not: that is
    /// a time in the future, like the schedule's next rotation.
    pub in_progress: bool,
}

/// Why a due rotation must wait, if it must: AWSCURRENT not yet in the Kubernetes Secret (its
/// workloads have not even been rolled onto it), the minimum interval between rotations, and
/// (alternating users) dependents still rolling onto the last switch, since the next rotation
/// re-passwords the user their old pods still use. A rollout past its timeout is reported
/// (`RolloutTimedOut`) but still blocks: old pods may be the only ones serving, and
/// re-passwording their user would take them down.
pub(super) fn rotation_blocked(
    spec: &RotationSpec,
    status: &RdsCredentialStatus,
    current_version: &str,
    unsettled: Option<&propagation::rollout::Unsettled>,
    now: Timestamp,
    settings: &Settings,
) -> Option<Blocked> {
    if status
        .synced_version_id
        .as_deref()
        .is_some_and(|synced| synced != current_version)
    {
        return Some(Blocked {
            reason: Reason::Waiting,
            message: format!(
                "AWSCURRENT version {current_version} is not in the Kubernetes Secret yet; its workloads are rolled first"
            ),
            retry: Duration::from_secs(1),
            in_progress: true,
        });
    }
    let min = spec
        .minimum_interval
        .map(Duration::from)
        .unwrap_or(settings.default_min_rotation_interval);
    if let Some(last) = parse_time(status.last_rotation_time.as_deref()) {
        let earliest = last + jiff::SignedDuration::try_from(min).unwrap_or_default();
        if earliest > now {
            return Some(Blocked {
                reason: Reason::Waiting,
                message: format!("minimum interval between rotations: next allowed at {earliest}"),
                retry: until(now, earliest),
                in_progress: false,
            });
        }
    }
    if spec.strategy == RotationStrategy::AlternatingUsers {
        let timeout = spec
            .rollout_timeout
            .map(Duration::from)
            .unwrap_or(settings.default_rollout_timeout);
        if let Some(w) = unsettled {
            // Rolled when its pod template got the version annotation; one not even rolled
            // yet (a rollout cut short) counts from when the Secret got the version.
            let since = w
                .restarted_at
                .or_else(|| parse_time(status.synced_at.as_deref()))
                .unwrap_or(now);
            let waited = until(since, now);
            let what = if w.rolled {
                "to finish rolling out"
            } else {
                "to be rolled onto AWSCURRENT"
            };
            return Some(if waited < timeout {
                Blocked {
                    reason: Reason::Waiting,
                    message: format!(
                        "waiting for {:?} {} {what} before re-passwording the previous user",
                        w.kind, w.name
                    ),
                    // The wait ends with the rollout: look again soon, so the next rotation
                    // starts within about a second of it.
                    retry: (timeout - waited).min(Duration::from_millis(500)),
                    in_progress: true,
                }
            } else {
                Blocked {
                    reason: Reason::RolloutTimedOut,
                    message: format!(
                        "{:?} {} has not finished rolling out {}s after the last rotation (rolloutTimeout {}s); the previous user keeps its password until it does",
                        w.kind,
                        w.name,
                        waited.as_secs(),
                        timeout.as_secs()
                    ),
                    retry: Duration::from_secs(30),
                    // Still waiting: the rotation goes on when the rollout finishes (the
                    // Warning Event says it is late; a stuck rollout is the workload's
                    // problem, and the credential itself works).
                    in_progress: true,
                }
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::crd::WorkloadKind;
    use crate::propagation::rollout::Unsettled;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn spec(strategy: &str, extra: serde_json::Value) -> RotationSpec {
        let mut v = json!({ "strategy": strategy });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    fn status(
        synced: Option<&str>,
        synced_at: Option<&str>,
        last: Option<&str>,
    ) -> RdsCredentialStatus {
        RdsCredentialStatus {
            synced_version_id: synced.map(Into::into),
            synced_at: synced_at.map(Into::into),
            last_rotation_time: last.map(Into::into),
            ..Default::default()
        }
    }

    fn unsettled(rolled: bool, restarted_at: Option<&str>) -> Unsettled {
        Unsettled {
            kind: WorkloadKind::Deployment,
            name: "api".into(),
            rolled,
            restarted_at: restarted_at.map(t),
        }
    }

    /// (what, spec, status, a dependent still rolling, None = may rotate now or the reason and
    /// a part of the message).
    type Case<'a> = (
        &'a str,
        &'a RotationSpec,
        RdsCredentialStatus,
        Option<&'a Unsettled>,
        Option<(Reason, &'a str)>,
    );

    /// Settings: 1h minimum interval, 15 min rollout timeout by default.
    #[test]
    fn what_holds_a_due_rotation() {
        let settings = Settings::default();
        let now = t("2026-06-01T12:00:00Z");
        let alt = spec("alternating-users", json!({}));
        let single = spec("single-user", json!({}));
        let quick = spec(
            "alternating-users",
            json!({ "minimumInterval": "1m", "rolloutTimeout": "2m" }),
        );
        let long_ago = Some("2026-06-01T10:00:00Z");
        let rolling = unsettled(true, Some("2026-06-01T11:59:00Z"));
        let not_rolled = unsettled(false, None);
        let stuck = unsettled(true, Some("2026-06-01T11:00:00Z"));
        // (what, spec, status, dependent still rolling, want: None = may rotate now)
        let cases: Vec<Case> = vec![
            (
                "nothing holds it",
                &alt,
                status(Some("v2"), long_ago, long_ago),
                None,
                None,
            ),
            (
                "never rotated, never synced",
                &alt,
                status(None, None, None),
                None,
                None,
            ),
            (
                "AWSCURRENT not in the Secret yet",
                &alt,
                status(Some("v1"), long_ago, long_ago),
                None,
                Some((Reason::Waiting, "not in the Kubernetes Secret yet")),
            ),
            (
                "minimum interval (default 1h)",
                &alt,
                status(Some("v2"), long_ago, Some("2026-06-01T11:30:00Z")),
                None,
                Some((Reason::Waiting, "next allowed at 2026-06-01T12:30:00Z")),
            ),
            (
                "minimum interval from the spec",
                &quick,
                status(Some("v2"), long_ago, Some("2026-06-01T11:59:30Z")),
                None,
                Some((Reason::Waiting, "minimum interval")),
            ),
            (
                "minimum interval passed",
                &quick,
                status(Some("v2"), long_ago, Some("2026-06-01T11:58:00Z")),
                None,
                None,
            ),
            (
                "a dependent still rolling out",
                &alt,
                status(Some("v2"), long_ago, long_ago),
                Some(&rolling),
                Some((Reason::Waiting, "Deployment api to finish rolling out")),
            ),
            (
                "a dependent not rolled yet",
                &alt,
                status(Some("v2"), long_ago, long_ago),
                Some(&not_rolled),
                Some((
                    Reason::RolloutTimedOut,
                    "has not finished rolling out 7200s",
                )),
            ),
            (
                "a rollout past its timeout still holds",
                &alt,
                status(Some("v2"), long_ago, long_ago),
                Some(&stuck),
                Some((
                    Reason::RolloutTimedOut,
                    "the previous user keeps its password",
                )),
            ),
            (
                "the spec's rollout timeout",
                &quick,
                status(Some("v2"), long_ago, long_ago),
                Some(&rolling),
                Some((Reason::Waiting, "to finish rolling out")),
            ),
            // Single user: pods on the old password fail anyway; rollouts never hold it.
            (
                "single user ignores rollouts",
                &single,
                status(Some("v2"), long_ago, long_ago),
                Some(&stuck),
                None,
            ),
        ];
        for (what, spec, status, dependent, want) in cases {
            let got = rotation_blocked(spec, &status, "v2", dependent, now, &settings);
            match (&got, want) {
                (None, None) => {}
                (Some(b), Some((reason, text))) => {
                    assert_eq!(b.reason, reason, "{what}: {}", b.message);
                    assert!(
                        b.message.contains(text),
                        "{what}: {:?} lacks {text:?}",
                        b.message
                    );
                    assert!(b.retry > Duration::ZERO, "{what}: a wait is retried");
                    // kstatus Reconciling: waiting for a sync or a rollout is work in
                    // progress; a minimum interval is a time in the future.
                    let interval =
                        text.contains("minimum interval") || text.contains("next allowed");
                    assert_eq!(b.in_progress, !interval, "{what}: in progress");
                }
                _ => panic!("{what}: got {:?}", got.as_ref().map(|b| &b.message)),
            }
        }
    }

    #[test]
    fn a_wait_for_a_rollout_is_checked_again_within_half_a_second() {
        let now = t("2026-06-01T12:00:00Z");
        let st = status(
            Some("v2"),
            Some("2026-06-01T10:00:00Z"),
            Some("2026-06-01T10:00:00Z"),
        );
        let rolling = unsettled(true, Some("2026-06-01T11:59:59Z"));
        let b = rotation_blocked(
            &spec("alternating-users", json!({})),
            &st,
            "v2",
            Some(&rolling),
            now,
            &Settings::default(),
        )
        .expect("held");
        assert!(b.retry <= Duration::from_millis(500), "{:?}", b.retry);
        // The minimum interval is waited out exactly.
        let st = status(Some("v2"), None, Some("2026-06-01T11:30:00Z"));
        let b = rotation_blocked(
            &spec("alternating-users", json!({})),
            &st,
            "v2",
            None,
            now,
            &Settings::default(),
        )
        .expect("held");
        assert_eq!(b.retry, Duration::from_secs(30 * 60));
    }
}
