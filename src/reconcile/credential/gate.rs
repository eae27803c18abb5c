//! When a rotation may run: the schedule, and what makes a due rotation wait (AWSCURRENT not
//! yet synced, the minimum interval, dependents still rolling under alternating users).

use std::time::Duration;

use jiff::Timestamp;

use super::{Error, Progress, parse_time, until};
use crate::context::Context;
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
    ctx: &Context,
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
        });
    }
    let min = spec
        .minimum_interval
        .map(Duration::from)
        .unwrap_or(ctx.settings.default_min_rotation_interval);
    if let Some(last) = parse_time(status.last_rotation_time.as_deref()) {
        let earliest = last + jiff::SignedDuration::try_from(min).unwrap_or_default();
        if earliest > now {
            return Some(Blocked {
                reason: Reason::Waiting,
                message: format!("minimum interval between rotations: next allowed at {earliest}"),
                retry: until(now, earliest),
            });
        }
    }
    if spec.strategy == RotationStrategy::AlternatingUsers {
        let timeout = spec
            .rollout_timeout
            .map(Duration::from)
            .unwrap_or(ctx.settings.default_rollout_timeout);
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
                }
            });
        }
    }
    None
}
