//! Rotation requests: which request a due rotation serves, and what a claim found in status
//! means. Pure decisions, table-tested; the reconcile does the reads and writes.
//!
//! Semantics (README, "Rotation"):
//! - One annotation value → at most one rotation. A rotation is claimed in status (guarded by
//!   the resourceVersion the decision was read at) before its first step, naming the request
//!   and the AWSCURRENT version it starts from. The ClientRequestToken is derived from that
//!   version, so however often the claimed rotation is (re)run, it makes one new version.
//! - A value that arrives while a rotation runs or waits for rollouts is not lost and not
//!   queued one by one: the next rotation serves the annotation's value at the time it is
//!   claimed; every value set in between is coalesced into it.
//! - `rotateImmediately` rotates once per credential lifetime: only while nothing was ever
//!   rotated nor claimed.
//! - The schedule fires once per window: the claim and then `lastRotationTime` answer it.

use crate::crd::RotationClaim;

/// What asked for a rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    Annotation,
    Immediately,
}

impl Trigger {
    /// The name recorded in `rotationClaim.trigger`.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Annotation => "annotation",
            Trigger::Immediately => "rotateImmediately",
        }
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Trigger::Schedule => "schedule",
            Trigger::Annotation => "on demand",
            Trigger::Immediately => "rotateImmediately",
        })
    }
}

/// A request that is due: its trigger and (annotation) value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub trigger: Trigger,
    pub value: Option<String>,
}

/// What the claim in status says, given AWSCURRENT now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimState {
    /// No claim.
    None,
    /// AWSCURRENT is still the version the claim starts from: the claimed rotation has not
    /// happened (it may be running, have failed before finishSecret, or been rolled back);
    /// running it again from that version is the same rotation.
    Open,
    /// AWSCURRENT moved to a version this rotation made: the request is answered; record it.
    Completed,
    /// AWSCURRENT moved, but not by this rotation (someone else rotated): the claim is void.
    Void,
}

/// `made_by_us(from, to)`: whether version `to` was made by this credential's rotation from
/// version `from` (its ClientRequestToken).
pub fn claim_state(
    claim: Option<&RotationClaim>,
    current: &str,
    made_by_us: impl Fn(&str, &str) -> bool,
) -> ClaimState {
    match claim {
        None => ClaimState::None,
        Some(c) if c.from_version == current => ClaimState::Open,
        Some(c) if made_by_us(&c.from_version, current) => ClaimState::Completed,
        Some(_) => ClaimState::Void,
    }
}

/// The request due now, if any, in priority order: an annotation value not answered yet,
/// `rotateImmediately` on a credential never rotated nor claimed, the schedule.
/// `claim` is an Open claim (see [`claim_state`]), whose own trigger stays due until answered.
pub fn due_request(
    annotation: Option<&str>,
    last_answered: Option<&str>,
    rotate_immediately: bool,
    ever_rotated: bool,
    open_claim: Option<&RotationClaim>,
    schedule_due: bool,
) -> Option<Request> {
    if let Some(v) = annotation
        && last_answered != Some(v)
    {
        return Some(Request {
            trigger: Trigger::Annotation,
            value: Some(v.to_string()),
        });
    }
    let immediately_claimed =
        open_claim.is_some_and(|c| c.trigger == Trigger::Immediately.as_str());
    if rotate_immediately && !ever_rotated && (open_claim.is_none() || immediately_claimed) {
        return Some(Request {
            trigger: Trigger::Immediately,
            value: None,
        });
    }
    if schedule_due || open_claim.is_some_and(|c| c.trigger == Trigger::Schedule.as_str()) {
        return Some(Request {
            trigger: Trigger::Schedule,
            value: None,
        });
    }
    None
}

/// Whether serving `request` from `current` needs a (new) claim written first: none yet, or
/// the open claim is for another request (a newer annotation value coalesces into it) or
/// another version.
pub fn needs_claim(open_claim: Option<&RotationClaim>, request: &Request, current: &str) -> bool {
    open_claim.is_none_or(|c| {
        c.trigger != request.trigger.as_str()
            || c.request != request.value
            || c.from_version != current
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(trigger: Trigger, request: Option<&str>, from: &str) -> RotationClaim {
        RotationClaim {
            trigger: trigger.as_str().into(),
            request: request.map(str::to_string),
            from_version: from.into(),
            claimed_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn claim_states() {
        let ours = |from: &str, to: &str| from == "v1" && to == "v2";
        let c = claim(Trigger::Annotation, Some("r1"), "v1");
        let cases = [
            (None, "v1", ClaimState::None),
            (Some(&c), "v1", ClaimState::Open),
            (Some(&c), "v2", ClaimState::Completed),
            // Someone else moved AWSCURRENT: our claim no longer says anything.
            (Some(&c), "v9", ClaimState::Void),
        ];
        for (claim, current, want) in cases {
            assert_eq!(
                claim_state(claim, current, ours),
                want,
                "{claim:?} at {current}"
            );
        }
    }

    /// (annotation, last answered, rotateImmediately, ever rotated, open claim, schedule due,
    /// the request due).
    type Case<'a> = (
        Option<&'a str>,
        Option<&'a str>,
        bool,
        bool,
        Option<&'a RotationClaim>,
        bool,
        Option<Request>,
    );

    #[test]
    fn due_requests() {
        let ann = |v: &str| {
            Some(Request {
                trigger: Trigger::Annotation,
                value: Some(v.into()),
            })
        };
        let imm = Some(Request {
            trigger: Trigger::Immediately,
            value: None,
        });
        let sched = Some(Request {
            trigger: Trigger::Schedule,
            value: None,
        });
        let open_imm = claim(Trigger::Immediately, None, "v1");
        let open_ann = claim(Trigger::Annotation, Some("r1"), "v1");
        let open_sched = claim(Trigger::Schedule, None, "v1");
        // (annotation, last answered, rotateImmediately, ever rotated, open claim, schedule due)
        let cases: [Case; 13] = [
            (None, None, false, false, None, false, None),
            (Some("r1"), None, false, false, None, false, ann("r1")),
            // The same value twice: one rotation.
            (Some("r1"), Some("r1"), false, true, None, false, None),
            (Some("r2"), Some("r1"), false, true, None, false, ann("r2")),
            // An annotation beats the schedule and rotateImmediately (one rotation serves all).
            (Some("r2"), Some("r1"), true, false, None, true, ann("r2")),
            (None, None, true, false, None, false, imm.clone()),
            // rotateImmediately: once per lifetime.
            (None, None, true, true, None, false, None),
            // Its own open claim keeps it due; another trigger's claim does not make it due.
            (None, None, true, false, Some(&open_imm), false, imm.clone()),
            (None, Some("r1"), true, false, Some(&open_ann), false, None),
            (None, None, false, true, None, true, sched.clone()),
            (
                None,
                None,
                false,
                true,
                Some(&open_sched),
                false,
                sched.clone(),
            ),
            (None, None, false, false, Some(&open_ann), false, None),
            (
                Some("r1"),
                None,
                false,
                false,
                Some(&open_ann),
                false,
                ann("r1"),
            ),
        ];
        for (i, (a, last, ri, ever, open, due, want)) in cases.into_iter().enumerate() {
            assert_eq!(due_request(a, last, ri, ever, open, due), want, "case {i}");
        }
    }

    #[test]
    fn claims_needed() {
        let c = claim(Trigger::Annotation, Some("r1"), "v1");
        let r = |v: &str| Request {
            trigger: Trigger::Annotation,
            value: Some(v.into()),
        };
        assert!(needs_claim(None, &r("r1"), "v1"));
        assert!(
            !needs_claim(Some(&c), &r("r1"), "v1"),
            "the same rotation again"
        );
        assert!(
            needs_claim(Some(&c), &r("r2"), "v1"),
            "a newer value coalesces: re-claim"
        );
        assert!(
            needs_claim(Some(&c), &r("r1"), "v2"),
            "another version: a new rotation"
        );
        let imm = Request {
            trigger: Trigger::Immediately,
            value: None,
        };
        assert!(needs_claim(Some(&c), &imm, "v1"));
    }
}
