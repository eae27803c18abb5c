//! What can go wrong while propagating: propagation reports it, the reconcile decides what it
//! means for the credential (condition, Event, backoff) — see `reconcile::Error`'s
//! `From<PropagationError>`.

use crate::template::TemplateError;

#[derive(Debug, thiserror::Error)]
pub enum PropagationError {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// A Secret of the target's name exists and this credential does not control it: it is
    /// never overwritten.
    #[error(
        "Secret {namespace}/{name} exists and is not controlled by this RdsCredential; choose another target.name or delete it"
    )]
    TargetSecretNotOwned { namespace: String, name: String },
    /// An optional workload kind is enabled but the API server does not serve it (the Argo
    /// Rollouts CRDs are not installed): every roll in the namespace would fail the same way.
    #[error(
        "rolling {kind}s is enabled ({flag}) but the cluster does not serve {resource}: install its CRDs, or turn it off ({value}: false)"
    )]
    KindNotServed {
        kind: &'static str,
        flag: &'static str,
        resource: &'static str,
        value: &'static str,
    },
    #[error("target.templates[{key}]: {source}")]
    Template { key: String, source: TemplateError },
}
