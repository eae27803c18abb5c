//! Standard `metav1.Condition` bookkeeping: set a condition, keeping `lastTransitionTime`
//! unless the status actually changes.

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
