//! rdscred integration tests: one binary, one module per area. They run against the real
//! test ground (`scripts/test-env.sh up`): moto, PostgreSQL, MariaDB, and the in-process
//! Kubernetes API emulator.

mod support;

mod access;
mod aws;
mod cli;
mod concurrency;
mod engine;
mod events;
mod iam;
mod iam_eval;
mod leader;
mod propagation;
mod provision;
mod provisioning_cost;
mod rbac;
mod rotation;
mod rotation_e2e;
mod runtime;
mod shard;
mod validation;
mod validation_refusals;
mod workload_kinds;
mod workloads;
