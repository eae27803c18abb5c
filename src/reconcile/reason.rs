//! Every condition and Event reason reconcile itself gives, as one enum: the CamelCase string
//! a person reads in `kubectl describe` (and docs/troubleshooting.md explains, which a test
//! keeps complete), and whether it means done, work in progress, or a person is needed.
//!
//! Reasons carried by typed errors of lower layers (AWS, the engines, access policies, the
//! rotation protocol) come from those errors' own `reason()`; see [`super::Error::reason`].

/// What a reason says about the object: the kstatus view (`Stalled` needs a person or a spec
/// change; `Reconciling` ends by itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The step is done (positive conditions, Events reporting a change made).
    Done,
    /// Work in progress, or waiting for something that resolves by itself.
    Reconciling,
    /// Nothing changes until a person (or a spec change) acts.
    Stalled,
}

macro_rules! reasons {
    ($($(#[$doc:meta])* $name:ident => $kind:ident,)*) => {
        /// A condition or Event reason (see the module docs).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[$doc])* $name,)*
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [Reason] = &[$(Reason::$name,)*];

            /// The CamelCase string conditions and Events carry.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)*
                }
            }

            pub fn kind(self) -> Kind {
                match self {
                    $(Reason::$name => Kind::$kind,)*
                }
            }
        }
    };
}

reasons! {
    // ---- positive conditions (RdsCredential)
    /// `Ready=True`; also the Event of an RdsDatabase turning Ready.
    Ready => Done,
    /// `SecretReady=True` (sync-only): the existing secret was found.
    Found => Done,
    /// `SecretReady=True` (managed): exists, is ours, has the required tags and KMS key.
    Reconciled => Done,
    /// `UserReady=True`: privileges as declared and AWSCURRENT logs in.
    LoginVerified => Done,
    /// `Drifted=False`: AWSCURRENT logs in.
    InSync => Done,
    /// `Drifted=False` after a repair.
    Repaired => Done,
    /// `Rotating=False` after a rotation finished.
    Succeeded => Done,
    /// `Synced=True`: the Kubernetes Secret holds AWSCURRENT and every dependent was rolled.
    Synced => Done,
    /// `AccessPolicyReady=True`.
    Applied => Done,
    // ---- positive conditions (RdsDatabase)
    /// `AdminLoginReady=True`.
    AdminLoginWorks => Done,
    /// `EndpointResolved=True`.
    Resolved => Done,
    /// The admin login was proven (re-check).
    LoginSucceeded => Done,
    // ---- work in progress
    /// `Rotating=True`: a claimed rotation runs.
    InProgress => Reconciling,
    /// `Rotating=False`: waiting for a rotation slot.
    Queued => Reconciling,
    /// `Rotating=False`: a due rotation waits (sync, minimum interval, rollouts).
    Waiting => Reconciling,
    /// `Synced=True`: more dependents roll once the cluster-wide rate limit allows.
    RollingOut => Reconciling,
    SecretNotFound => Reconciling,
    NoCurrentVersion => Reconciling,
    DriftRepairDeferred => Reconciling,
    FinalizerError => Reconciling,
    AdminSecretNotFound => Reconciling,
    DBInstanceNotFound => Reconciling,
    DBClusterNotFound => Reconciling,
    DatabaseNotReady => Reconciling,
    EndpointNotAvailable => Reconciling,
    /// A write lost a race (409); decided again at once.
    Conflict => Reconciling,
    KubernetesApiError => Reconciling,
    /// A rotation step failed; whether it needs a person depends on the typed error (see
    /// [`super::Error::needs_person`]).
    RotationFailed => Reconciling,
    // ---- a person is needed
    /// `Rotating=False`: dependents did not finish rolling within `rolloutTimeout`.
    RolloutTimedOut => Stalled,
    /// `Drifted=True`: the password was changed outside rdscred.
    PasswordChanged => Stalled,
    DatabaseNotFound => Stalled,
    NamespaceNotAdmitted => Stalled,
    AdminSecretSyncNotAllowed => Stalled,
    SecretNameOutsidePrefix => Stalled,
    AlreadyClaimed => Stalled,
    SecretNotOwned => Stalled,
    TargetSecretNotOwned => Stalled,
    UserExists => Stalled,
    UnexpectedUsername => Stalled,
    Drifted => Stalled,
    SecretMalformed => Stalled,
    InvalidSpec => Stalled,
    InvalidUser => Stalled,
    InvalidPrivileges => Stalled,
    InvalidSchedule => Stalled,
    InvalidRotation => Stalled,
    InvalidPasswordPolicy => Stalled,
    InvalidTemplate => Stalled,
    InvalidTarget => Stalled,
    PrincipalNotAllowed => Stalled,
    PolicyValidationFailed => Stalled,
    EngineMismatch => Stalled,
    NoMasterUserSecret => Stalled,
    UnsupportedEngine => Stalled,
    // ---- Events reporting a change made
    SecretCreated => Done,
    SecretRestored => Done,
    SecretUpdated => Done,
    UserCreated => Done,
    PrivilegesChanged => Done,
    /// Warning Event: AWSCURRENT no longer logs in (repaired at once with `driftPolicy: repair`).
    DriftDetected => Stalled,
    DriftResolved => Done,
    DriftRepaired => Done,
    Rotated => Done,
    RotationResumed => Done,
    LambdaRotationConfigured => Done,
    LambdaRotationDisabled => Done,
    SecretSynced => Done,
    /// On the RdsCredential: a dependent workload was restarted.
    WorkloadRolled => Done,
    /// On the workload: restarted because its Secret changed.
    RolledByRdsCredential => Done,
    AccessPolicyApplied => Done,
    AccessPolicyRemoved => Done,
    AccessPolicyRestored => Done,
    Deleted => Done,
}

impl Reason {
    /// Whether this reason means nothing changes until a person (or a spec change) acts.
    pub fn needs_person(self) -> bool {
        self.kind() == Kind::Stalled
    }
}

impl AsRef<str> for Reason {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_unique_camel_case() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            let s = r.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                s.chars().next().is_some_and(|c| c.is_ascii_uppercase()),
                "{s}"
            );
            assert!(s.chars().all(|c| c.is_ascii_alphanumeric()), "{s}");
        }
    }

    #[test]
    fn refusals_need_a_person_and_waits_do_not() {
        for r in [
            Reason::NamespaceNotAdmitted,
            Reason::SecretNotOwned,
            Reason::AlreadyClaimed,
            Reason::InvalidSpec,
            Reason::RolloutTimedOut,
        ] {
            assert!(r.needs_person(), "{r}");
        }
        for r in [
            Reason::Waiting,
            Reason::Queued,
            Reason::InProgress,
            Reason::DatabaseNotReady,
            Reason::Conflict,
        ] {
            assert_eq!(r.kind(), Kind::Reconciling, "{r}");
        }
        assert_eq!(Reason::Ready.kind(), Kind::Done);
    }

    /// docs/troubleshooting.md explains every reason reconcile gives.
    #[test]
    fn troubleshooting_lists_every_reason() {
        let root = env!("CARGO_MANIFEST_DIR");
        let doc = std::fs::read_to_string(format!("{root}/docs/troubleshooting.md")).unwrap();
        let missing: Vec<&str> = Reason::ALL
            .iter()
            .map(|r| r.as_str())
            .filter(|r| !doc.contains(&format!("`{r}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/troubleshooting.md does not list {missing:?}"
        );
    }

    /// Reasons are passed as [`Reason`], never as string literals that could drift from the
    /// enum and the docs: no `.condition(…, "Literal", …)`, `event(…, "Literal", …)`,
    /// `Error::refused("Literal", …)` or `Refusal::new("Literal", …)` in reconcile/ or
    /// propagation/.
    #[test]
    fn no_reason_is_a_string_literal() {
        let patterns = [
            r#"Error::(refused|not_ready)\(\s*""#,
            r#"Refusal::new\(\s*""#,
            r#"\.condition\(\s*[A-Z_]+,\s*[a-z_.()!]+,\s*""#,
            r#"\bset\(\s*[a-z_&. ]+,\s*(true|false),\s*""#,
            r#"conditions::set\([^;"]*?,\s*(true|false),\s*""#,
            r#"\.event\(\s*[a-z_&.()]+,\s*EventType::\w+,\s*""#,
            r#"reason:\s*""#,
        ]
        .map(|p| regex::Regex::new(p).unwrap());
        let mut found = Vec::new();
        for (path, text) in
            crate::reconcile::rust_sources_under(&["src/reconcile", "src/propagation"])
        {
            if path.ends_with("reason.rs") {
                continue;
            }
            // Test modules build conditions of their own.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for re in &patterns {
                for m in re.find_iter(code) {
                    found.push(format!("{}: {}", path.display(), m.as_str()));
                }
            }
        }
        assert!(found.is_empty(), "string literal reasons: {found:#?}");
    }
}
