//! Propagation: every AWSCURRENT change reaches the target Kubernetes Secret, then the
//! workloads that read it.
//!
//! - [`poller`]: bulk change detection from Secrets Manager metadata (ListSecrets, 100 a page);
//! - [`cache`]: the secret metadata it saw, so reconciles cost no AWS call in steady state;
//! - [`sync`]: writing the Kubernetes Secret (no write when nothing changed);
//! - [`rollout`]: restarting dependents like `kubectl rollout restart`, rate-limited;
//! - [`discovery`]: which workloads reference a Secret; [`selector`]: label selectors.

pub mod cache;
pub mod discovery;
pub mod poller;
pub mod rollout;
pub mod selector;
pub mod sync;

use crate::secret::RdsSecretValue;

/// A value to write, with the AWSCURRENT version it came from.
pub struct SyncedValue<'a> {
    pub version_id: &'a str,
    pub value: &'a RdsSecretValue,
}
