//! Horizontal sharding (docs/sharding.md): every replica contends for every shard's Lease
//! `<lease>-shard-<k>` and runs one controller instance per shard it holds.
//!
//! - A shard's controllers start only once its Lease is held, each time with a fresh
//!   [`Context`] (caches, backoffs, rotation slots start empty, as in a new process).
//! - Losing a shard's Lease drops that shard's controllers at once, in-flight reconciles
//!   included, exactly as losing the leader Lease does: the elector publishes "not held"
//!   strictly before anyone else may take the Lease (its renew deadline), and reconciles are
//!   written to survive being cut off anywhere. Nothing a reconcile starts outlives it (no
//!   spawned tasks), so dropping the future stops all work of the shard. The other shards
//!   keep running and the replica keeps contending for the lost one.
//! - On shutdown every shard drains (bounded by the shutdown timeout) before its Lease is
//!   released, so the next holder never overlaps with our in-flight reconciles.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kube::ResourceExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::context::Context;
use crate::leader::{LeaderElector, LeaseConfig};
use crate::runtime::controller::{self, Scope};
use crate::shard::{self, ShardScope};
use crate::telemetry::Metrics;

/// How the replica takes part in sharding.
#[derive(Clone, Debug)]
pub struct ShardedConfig {
    /// Number of shards (> 1).
    pub shards: u32,
    /// Namespace, identity and timing of the Leases; `name` is the base of the shard Leases'
    /// names (`<name>-shard-<k>`).
    pub lease: LeaseConfig,
    /// After shutdown, how long in-flight reconciles of a shard may take before they are
    /// cancelled.
    pub shutdown_timeout: Duration,
}

/// Runs the controllers of every shard this replica holds until `shutdown`, then releases
/// the Leases. `new_context` builds the Context of a shard each time it is acquired.
pub async fn run(
    client: kube::Client,
    cfg: ShardedConfig,
    scope: Scope,
    metrics: Metrics,
    new_context: impl Fn() -> Arc<Context>,
    shutdown: CancellationToken,
) {
    let preferred = shard::preferred_shard(&cfg.lease.identity, cfg.shards);
    info!(shards = cfg.shards, preferred, identity = %cfg.lease.identity, "sharded: contending for every shard, preferred first");
    let held = Held {
        count: AtomicUsize::new(0),
        metrics: metrics.clone(),
    };
    let loops = (0..cfg.shards).map(|index| {
        one_shard(
            &client,
            &cfg,
            ShardScope {
                index,
                count: cfg.shards,
            },
            preferred,
            &scope,
            &held,
            &new_context,
            &shutdown,
        )
    });
    futures::future::join_all(loops).await;
}

/// The shards held right now, published as `rdscred_shards_held` and `rdscred_leader`.
struct Held {
    count: AtomicUsize,
    metrics: Metrics,
}

impl Held {
    fn now(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    fn change(&self, up: bool) {
        let now = if up {
            self.count.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            self.count.fetch_sub(1, Ordering::SeqCst) - 1
        };
        self.metrics.set_shards_held(now);
        self.metrics.set_leader(now > 0);
    }
}

/// Contends for shard `shard` (at once if it is the `preferred` one, else from the first
/// contention round this replica joins) and runs its controllers while holding it.
#[allow(clippy::too_many_arguments)]
async fn one_shard(
    client: &kube::Client,
    cfg: &ShardedConfig,
    shard: ShardScope,
    preferred: u32,
    scope: &Scope,
    held: &Held,
    new_context: &impl Fn() -> Arc<Context>,
    shutdown: &CancellationToken,
) {
    let index = shard.index;
    if index != preferred {
        let started = tokio::time::Instant::now();
        let mut round = 1;
        loop {
            let at = shard::contention_round_at(
                index,
                preferred,
                shard.count,
                round,
                cfg.lease.lease_duration,
            );
            tokio::select! {
                () = tokio::time::sleep_until(started + at) => {}
                () = shutdown.cancelled() => return,
            }
            if shard::joins_in_round(round, held.now(), shard.count) {
                break;
            }
            round += 1;
        }
    }
    // Tests wait for this line: from here on a dead holder is replaced within a lease duration.
    info!(
        shard = index,
        preferred = index == preferred,
        "contending for the shard"
    );
    let lease = LeaseConfig {
        name: shard::lease_name(&cfg.lease.name, index),
        ..cfg.lease.clone()
    };
    let lease_name = lease.name.clone();
    let elector = LeaderElector::new(client.clone(), lease);
    let mut holding = elector.subscribe();
    // Stopped (and the Lease released) only after this shard's controllers have stopped.
    let elector_stop = CancellationToken::new();
    let election = tokio::spawn(elector.run(elector_stop.clone().cancelled_owned()));

    loop {
        let acquired = tokio::select! {
            result = holding.wait_for(|h| *h) => result.is_ok(),
            () = shutdown.cancelled() => false,
        };
        if !acquired {
            break;
        }
        info!(shard = index, lease = %lease_name, "holding the shard: starting its controllers");
        held.change(true);
        let ctx = new_context();
        let controllers = controller::run(
            ctx.clone(),
            Scope {
                shard: Some(shard),
                ..scope.clone()
            },
            shutdown.clone().cancelled_owned(),
        );
        let lost = async {
            let _ = holding.wait_for(|h| !*h).await;
        };
        let lost = tokio::select! {
            () = controller::drain(controllers, shutdown, cfg.shutdown_timeout) => false,
            () = lost => true,
        };
        forget_metrics(&ctx, shard);
        held.change(false);
        if !lost {
            break;
        }
        warn!(shard = index, lease = %lease_name, "lost the shard lease: its controllers stopped; contending again");
    }
    elector_stop.cancel();
    let _ = election.await;
}

/// The per-credential series of a shard no longer held: its new holder exports them, and two
/// replicas exporting one credential would double it in sums and alerts.
fn forget_metrics(ctx: &Context, shard: ShardScope) {
    for cred in ctx.all_credentials() {
        let (ns, name) = (cred.namespace().unwrap_or_default(), cred.name_any());
        if shard.owns(&ns, &name, cred.metadata.labels.as_ref()) {
            ctx.metrics.forget_credential(&ns, &name);
        }
    }
}
