//! Standard `metav1.Condition` bookkeeping: set a condition, keeping `lastTransitionTime`
//! unless the status actually changes; and the kstatus summary (`Ready`, `Reconciling`,
//! `Stalled`) that Flux, `kstatus`, Argo CD and `kubectl wait` understand.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const SECRET_READY: &str = "SecretReady";
pub const USER_READY: &str = "UserReady";
pub const SYNCED: &str = "Synced";
pub const ROTATING: &str = "Rotating";
pub const DRIFTED: &str = "Drifted";
pub const ACCESS_POLICY_READY: &str = "AccessPolicyReady";
pub const ADMIN_READY: &str = "AdminLoginReady";
pub const ENDPOINT_READY: &str = "EndpointResolved";
/// kstatus: work in progress that ends by itself (provisioning, a dependency not ready yet).
pub const RECONCILING: &str = "Reconciling";
/// kstatus: nothing changes until a person (or a spec change) acts.
pub const STALLED: &str = "Stalled";

/// How one reconcile ended, as far as the kstatus summary cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every step done.
    Ready,
    /// A step failed; `needs_person` is [`super::Error::needs_person`].
    NotReady { needs_person: bool },
}

/// The kstatus summary of an outcome: `(ready, reconciling, stalled)`. kstatus semantics:
/// Stalled and Reconciling are never both True, and Stalled excludes Ready. A Ready credential
/// may still report `Reconciling=True` afterwards, for work in progress that ends by itself (a
/// due rotation waiting for rollouts): kstatus then reads it as in progress, and
/// `kubectl wait --for=condition=Ready` still passes, since the credential works.
pub fn summary(outcome: Outcome) -> (bool, bool, bool) {
    match outcome {
        Outcome::Ready => (true, false, false),
        Outcome::NotReady { needs_person: true } => (false, false, true),
        Outcome::NotReady {
            needs_person: false,
        } => (false, true, false),
    }
}

/// Sets `Ready`, `Reconciling` and `Stalled` from one outcome, all three with the same reason
/// and message (the ones of `Ready`) so that whichever a tool reads says why.
pub fn set_summary(
    conditions: &mut Vec<Condition>,
    outcome: Outcome,
    reason: impl AsRef<str>,
    message: impl Into<String>,
    generation: Option<i64>,
) {
    let (ready, reconciling, stalled) = summary(outcome);
    let (reason, message) = (reason.as_ref(), message.into());
    set(
        conditions,
        READY,
        ready,
        reason,
        message.clone(),
        generation,
    );
    set(
        conditions,
        RECONCILING,
        reconciling,
        reason,
        message.clone(),
        generation,
    );
    set(conditions, STALLED, stalled, reason, message, generation);
}

/// Sets (adds or updates) condition `type_`.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: impl AsRef<str>,
    message: impl Into<String>,
    generation: Option<i64>,
) {
    let reason = reason.as_ref();
    let status = if status { "True" } else { "False" };
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Time(jiff::Timestamp::now());
            }
            c.status = status.into();
            c.reason = reason.into();
            c.message = message;
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time: Time(jiff::Timestamp::now()),
        }),
    }
}

/// Removes condition `type_`.
pub fn remove(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    get(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kstatus_summary_table() {
        // (outcome, ready, reconciling, stalled)
        let table = [
            (Outcome::Ready, true, false, false),
            (Outcome::NotReady { needs_person: true }, false, false, true),
            (
                Outcome::NotReady {
                    needs_person: false,
                },
                false,
                true,
                false,
            ),
        ];
        for (outcome, ready, reconciling, stalled) in table {
            assert_eq!(
                summary(outcome),
                (ready, reconciling, stalled),
                "{outcome:?}"
            );
            assert!(!(reconciling && stalled), "{outcome:?}");
            assert!(!(ready && (reconciling || stalled)), "{outcome:?}");
        }
    }

    #[test]
    fn summary_conditions_share_reason_and_generation() {
        let mut c = Vec::new();
        set_summary(
            &mut c,
            Outcome::NotReady { needs_person: true },
            "NamespaceNotAdmitted",
            "refused",
            Some(3),
        );
        for t in [READY, RECONCILING, STALLED] {
            let cond = get(&c, t).unwrap();
            assert_eq!(cond.reason, "NamespaceNotAdmitted", "{t}");
            assert_eq!(cond.observed_generation, Some(3), "{t}");
        }
        assert!(is_true(&c, STALLED) && !is_true(&c, RECONCILING) && !is_true(&c, READY));
        set_summary(&mut c, Outcome::Ready, "Ready", "ok", Some(4));
        assert!(is_true(&c, READY) && !is_true(&c, STALLED) && !is_true(&c, RECONCILING));
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut c = Vec::new();
        set(&mut c, READY, false, "Pending", "x", Some(1));
        let t0 = c[0].last_transition_time.clone();
        std::thread::sleep(std::time::Duration::from_millis(2));
        set(&mut c, READY, false, "StillPending", "y", Some(2));
        assert_eq!(c[0].last_transition_time, t0);
        assert_eq!(c[0].reason, "StillPending");
        set(&mut c, READY, true, "Ready", "ok", Some(2));
        assert_ne!(c[0].last_transition_time, t0);
        assert!(is_true(&c, READY));
        remove(&mut c, READY);
        assert!(c.is_empty());
    }
}
