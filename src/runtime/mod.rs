//! Runtime wiring: what runs for the life of the process and decides when reconciles happen.
//!
//! - [`controller`]: the kube-runtime controllers for both kinds, their watches and error policy;
//! - [`poller`]: bulk change detection from Secrets Manager metadata (ListSecrets, 100 a page);
//! - [`events`]: event-driven change detection (an SQS queue fed by EventBridge), which makes
//!   the bulk poll a backstop;
//! - [`shards`]: horizontal sharding, one controller instance per held shard Lease.

pub mod controller;
pub mod events;
pub mod poller;
pub mod shards;
