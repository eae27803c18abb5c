//! rdscred: one controller for the whole life of an application's database credential on AWS.
//!
//! Module map (one concern each):
//! - [`crd`]: the two custom resources and their generated CRDs;
//! - [`secret`]: secret values (redacted `Debug`), the RDS credential JSON, CSPRNG passwords;
//! - [`engine`]: database engines (PostgreSQL, MySQL/MariaDB): users, privileges, logins;
//! - [`aws`]: Secrets Manager and RDS access, ownership tags, bulk change detection, the cache
//!   of secret metadata;
//! - [`context`]: the shared context of every reconcile (clients, caches, limiters, settings);
//! - [`reconcile`]: reconcile of each kind (+ conditions, errors, namespace admission);
//! - [`runtime`]: the kube-runtime controllers, watches and the bulk poller;
//! - [`events`]: event-driven change detection (EventBridge → SQS), the poll's fast path;
//! - [`rotation`]: the four-step rotation protocol; [`schedule`]: when rotations are due;
//! - [`propagation`]: Kubernetes Secret sync and workload rollouts; [`template`]: key templates;
//! - [`telemetry`]: logs, metrics, the HTTP surface; [`leader`]: leader election on a Lease;
//! - [`iam`]: the least-privilege IAM policy the controller needs;
//! - [`access`]: who may read a credential's secret (its resource policy), rendered and decided.
//! - [`store`]: what the reflector stores keep of an object; [`shard`]: which shard owns a credential.

pub mod access;
pub mod aws;
pub mod context;
pub mod crd;
pub mod engine;
pub mod events;
pub mod iam;
pub mod leader;
pub mod propagation;
pub mod reconcile;
pub mod rotation;
pub mod runtime;
pub mod schedule;
pub mod secret;
pub mod shard;
pub mod store;
pub mod telemetry;
pub mod template;

/// `0.1.0 (commit 1a2b3c4...)`: the crate version and the commit the binary was built from,
/// taken from `RDSCRED_GIT_COMMIT` at compile time (the image build passes it in, as its
/// context has no `.git`), `unknown` otherwise. What `rdscred --version` prints.
pub fn version() -> &'static str {
    static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let commit = option_env!("RDSCRED_GIT_COMMIT")
            .filter(|c| !c.is_empty())
            .unwrap_or("unknown");
        format!("{} (commit {commit})", env!("CARGO_PKG_VERSION"))
    });
    &VERSION
}
