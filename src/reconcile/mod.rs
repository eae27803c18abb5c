//! Reconcile of both kinds: typed errors and how they map to conditions and requeues, and
//! small helpers for conditions. The shared context lives in [`crate::context`].

mod access;
pub mod conditions;
pub mod credential;
pub mod database;
mod error;
pub mod plan;
pub mod reason;
pub mod request;
pub mod status_write;

use kube::{Resource, ResourceExt};

pub use error::Error;
pub use reason::Reason;

/// Finalizer both kinds carry while they own something outside Kubernetes.
pub const FINALIZER: &str = "rdscred.io/cleanup";

/// Name of the object for log fields.
pub fn display_name<K: Resource>(obj: &K) -> String {
    match obj.namespace() {
        Some(ns) => format!("{ns}/{}", obj.name_any()),
        None => obj.name_any(),
    }
}
