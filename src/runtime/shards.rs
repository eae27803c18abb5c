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
//! - While the leader Lease of an unsharded rdscred (`<lease>` itself) is validly held by
//!   someone else, no shard runs: during a rollout from one shard to several, the old leader
//!   keeps acting on every credential until it is gone (checked every renew period; a guard
//!   against the common upgrade, not a fence: see docs/sharding.md).
//! - On shutdown every shard drains (bounded by the shutdown timeout) before its Lease is
//!   released, so the next holder never overlaps with our in-flight reconciles.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, ResourceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::context::Context;
use crate::leader::{LeaderElector, LeaseConfig, valid_holder};
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
    // `true` while no unsharded leader holds the leader Lease; `false` until first checked.
    let (clear_tx, clear) = watch::channel(false);
    let unsharded = watch_unsharded_leader(&client, &cfg.lease, clear_tx, &shutdown);
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
            clear.clone(),
            &new_context,
            &shutdown,
        )
    });
    tokio::join!(unsharded, futures::future::join_all(loops));
}

/// Publishes on `clear` whether the leader Lease (`lease.name`, the one unsharded replicas
/// elect on) is free of a valid holder other than us, every renew period until `shutdown`.
/// A failed read keeps the last answer (the shard Leases' own renewals fail then too).
async fn watch_unsharded_leader(
    client: &kube::Client,
    lease: &LeaseConfig,
    clear: watch::Sender<bool>,
    shutdown: &CancellationToken,
) {
    let api = Api::<Lease>::namespaced(client.clone(), &lease.namespace);
    // What was last logged: the first answer is logged too, whichever it is.
    let mut reported: Option<bool> = None;
    loop {
        match api.get_opt(&lease.name).await {
            Ok(found) => {
                let now = jiff::Timestamp::now();
                let other = found
                    .and_then(|l| l.spec)
                    .and_then(|spec| {
                        valid_holder(&spec, now, lease.lease_duration).map(str::to_owned)
                    })
                    .filter(|holder| *holder != lease.identity);
                let is_clear = other.is_none();
                clear.send_if_modified(|c| std::mem::replace(c, is_clear) != is_clear);
                if reported.replace(is_clear) != Some(is_clear) {
                    match other {
                        Some(holder) => {
                            warn!(lease = %lease.name, %holder, "an unsharded rdscred holds the leader lease: no shard runs until it is released or expires")
                        }
                        None => info!(lease = %lease.name, "no unsharded leader: shards may run"),
                    }
                }
            }
            Err(error) => {
                warn!(lease = %lease.name, %error, "reading the leader lease failed")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(lease.renew_period) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Waits until the shard is held and no unsharded leader acts; `false` if a channel closed.
async fn until_runnable(
    holding: &mut watch::Receiver<bool>,
    clear: &mut watch::Receiver<bool>,
) -> bool {
    loop {
        if *holding.borrow_and_update() && *clear.borrow_and_update() {
            return true;
        }
        let open = tokio::select! {
            r = holding.changed() => r.is_ok(),
            r = clear.changed() => r.is_ok(),
        };
        if !open {
            return false;
        }
    }
}

/// Resolves once the shard is no longer held or an unsharded leader appeared (or a channel
/// closed: the elector is gone).
async fn until_not_runnable(
    holding: &mut watch::Receiver<bool>,
    clear: &mut watch::Receiver<bool>,
) {
    loop {
        if !*holding.borrow_and_update() || !*clear.borrow_and_update() {
            return;
        }
        let open = tokio::select! {
            r = holding.changed() => r.is_ok(),
            r = clear.changed() => r.is_ok(),
        };
        if !open {
            return;
        }
    }
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
    mut clear: watch::Receiver<bool>,
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
            runnable = until_runnable(&mut holding, &mut clear) => runnable,
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
        let lost = until_not_runnable(&mut holding, &mut clear);
        let lost = tokio::select! {
            () = controller::drain(controllers, shutdown, cfg.shutdown_timeout) => false,
            () = lost => true,
        };
        forget_metrics(&ctx, shard);
        held.change(false);
        if !lost {
            break;
        }
        warn!(shard = index, lease = %lease_name, "lost the shard lease (or an unsharded leader appeared): its controllers stopped; contending again");
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
