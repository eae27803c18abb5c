//! Propagation: every AWSCURRENT change reaches the target Kubernetes Secret, then the
//! workloads that read it.
//!
//! - [`sync`]: writing the Kubernetes Secret (no write when nothing changed);
//! - [`rollout`]: restarting dependents like `kubectl rollout restart`, rate-limited;
//! - [`discovery`]: which workloads reference a Secret;
//! - [`kinds`]: restart patches and completion decisions for Argo Rollouts and CronJobs (pure;
//!   [`rollout`] lists, patches and waits with them).
//!
//! Propagation takes narrow inputs (a Kubernetes client, the secret-metadata cache, the rollout
//! limiter) and returns what it did ([`sync::SyncOutcome`], [`rollout::Rolls`]) or a
//! [`PropagationError`]; it publishes no Event, metric or status. The reconcile does that.

pub mod discovery;
mod error;
pub mod kinds;
pub mod rollout;
pub mod sync;

pub use error::PropagationError;

use crate::secret::RdsSecretValue;

/// A value to write, with the AWSCURRENT version it came from.
pub struct SyncedValue<'a> {
    pub version_id: &'a str,
    pub value: &'a RdsSecretValue,
}
