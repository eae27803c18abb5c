//! Bulk change detection. One ListSecrets page covers 100 secrets with their
//! `SecretVersionsToStages`, so a poll of N owned secrets costs about N/100 calls; a credential
//! is reconciled (and GetSecretValue called) only when its AWSCURRENT version differs from the
//! one it last synced. Sync-only secrets carry no tag of ours and are described one by one.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::aws::SecretMeta;
use crate::context::Context;
use crate::crd::{CredentialMode, RdsCredential, RdsDatabase};
use crate::limit::jitter;
use crate::reconcile::Error;
use crate::shard::ShardScope;

/// What one poll did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PollStats {
    pub secrets_seen: usize,
    pub triggered: usize,
}

/// Where to send "reconcile this credential": one channel per watched namespace (or one
/// for all namespaces). Credentials of other shards are not sent (the poll and the event
/// queue see every secret; only this shard's credentials are its business).
#[derive(Default, Clone)]
pub struct Triggers {
    by_namespace: HashMap<Option<String>, UnboundedSender<ObjectRef<RdsCredential>>>,
    shard: Option<ShardScope>,
}

impl Triggers {
    /// Triggers for the credentials of `shard` only.
    pub fn for_shard(shard: ShardScope) -> Triggers {
        Triggers {
            shard: Some(shard),
            ..Triggers::default()
        }
    }

    pub fn add(
        &mut self,
        namespace: Option<String>,
        tx: UnboundedSender<ObjectRef<RdsCredential>>,
    ) {
        self.by_namespace.insert(namespace, tx);
    }

    pub fn send(&self, cred: &RdsCredential) {
        let ns = cred.namespace();
        if let Some(shard) = self.shard
            && !shard.owns(
                ns.as_deref().unwrap_or_default(),
                &cred.name_any(),
                cred.metadata.labels.as_ref(),
            )
        {
            return;
        }
        let tx = self
            .by_namespace
            .get(&ns)
            .or_else(|| self.by_namespace.get(&None));
        if let Some(tx) = tx {
            let _ = tx.send(ObjectRef::from_obj(cred));
        }
    }
}

/// Polls until `shutdown` resolves, every poll interval (±10% jitter so replicas and restarts
/// do not line up). With an event queue configured, also consumes it: the poll interval is then
/// the backstop interval while the queue is read, and the normal one while it is not (a poll
/// runs at once when the queue is lost, events may have been missed).
pub async fn run(ctx: Arc<Context>, trigger: Triggers, shutdown: impl Future<Output = ()>) {
    let (events_up, up) = watch::channel(false);
    let events = async {
        match &ctx.settings.events {
            Some(cfg) => crate::runtime::events::run(&ctx, cfg, &trigger, &events_up).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = shutdown => {}
        () = events => {}
        () = poll_loop(&ctx, &trigger, up) => {}
    }
}

async fn poll_loop(ctx: &Context, trigger: &Triggers, mut events_up: watch::Receiver<bool>) {
    loop {
        let started = tokio::time::Instant::now();
        // Event series of credentials that went quiet (or were deleted) would otherwise wait
        // for the next Event to be dropped.
        ctx.expire_event_series();
        match poll_once(ctx, trigger).await {
            Ok(stats) => debug!(?stats, "bulk poll done"),
            Err(e) => warn!(error = %e, "bulk poll failed"),
        }
        // One jitter factor per cycle: the interval itself changes with the queue's health.
        let unit = Duration::from_secs(1000);
        let spread = next_delay(unit).as_secs_f64() / unit.as_secs_f64();
        loop {
            let up = *events_up.borrow_and_update();
            let interval = crate::runtime::events::poll_interval(
                ctx.settings.poll_interval,
                ctx.settings.events.as_ref(),
                up,
            );
            let due = started
                + next_start(
                    interval.mul_f64(spread),
                    tokio::time::Instant::now() - started,
                );
            tokio::select! {
                _ = tokio::time::sleep_until(due) => break,
                changed = events_up.changed() => match changed {
                    // Events lost: poll now. Events back: wait for the (longer) backstop.
                    Ok(()) if !*events_up.borrow() => break,
                    Ok(()) => {}
                    // No event source any more: plain interval.
                    Err(_) => {
                        tokio::time::sleep_until(due).await;
                        break;
                    }
                },
            }
        }
    }
}

/// When the next poll starts, counted from the start of the last one: the first multiple of
/// `period` not yet past after `elapsed` (the last poll's duration). The period does not
/// stretch by the poll's own duration, and a poll that overran skips the starts it missed
/// instead of queueing them.
fn next_start(period: Duration, elapsed: Duration) -> Duration {
    if period.is_zero() {
        return elapsed;
    }
    let periods = (elapsed.as_nanos() / period.as_nanos()) as u32 + 1;
    period.saturating_mul(periods)
}

/// Time to the next poll: the interval ±10%.
fn next_delay(interval: Duration) -> Duration {
    jitter(interval, 0.1)
}

/// One poll over every AWS scope (region + role) the credentials' databases use.
pub async fn poll_once(ctx: &Context, trigger: &Triggers) -> Result<PollStats, Error> {
    let credentials = ctx.all_credentials();
    if credentials.is_empty() {
        return Ok(PollStats::default());
    }
    let databases: HashMap<String, RdsDatabase> = Api::<RdsDatabase>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .into_iter()
        .map(|d| (d.name_any(), d))
        .collect();
    // Owner (namespace, name) -> credential: one lookup per listed secret, not a scan.
    let by_owner: HashMap<(String, String), &Arc<RdsCredential>> = credentials
        .iter()
        .map(|c| ((c.namespace().unwrap_or_default(), c.name_any()), c))
        .collect();
    let mut stats = PollStats::default();
    let scopes: BTreeSet<(Option<String>, Option<String>)> = credentials
        .iter()
        .filter_map(|c| databases.get(&c.spec.database_ref.name))
        .map(|d| (d.spec.region.clone(), d.spec.role_arn.clone()))
        .collect();
    for (region, role) in scopes {
        let scope = ctx.aws.scoped(region.as_deref(), role.as_deref()).await?;
        scope
            .secrets
            .for_each_owned(&ctx.settings.cluster_name, |meta| {
                stats.secrets_seen += 1;
                // Only the secrets of live credentials go into the cache: the listing also
                // returns those of deleted credentials (scheduled for deletion, or retained)
                // for as long as they exist, and nothing would ever read or remove their
                // entries.
                let Some(cred) = meta
                    .owner()
                    .and_then(|o| by_owner.get(&(o.namespace, o.name)).copied())
                    .filter(|c| c.metadata.deletion_timestamp.is_none())
                else {
                    return;
                };
                let seen_before = remember(ctx, &meta);
                if poll_needs_reconcile(ctx, cred, &meta, seen_before.as_deref()) {
                    stats.triggered += 1;
                    trigger.send(cred);
                }
            })
            .await?;
    }
    for cred in credentials
        .iter()
        .filter(|c| c.spec.mode == CredentialMode::SyncOnly)
    {
        let Some(db) = databases.get(&cred.spec.database_ref.name) else {
            continue;
        };
        let scope = ctx
            .aws
            .scoped(db.spec.region.as_deref(), db.spec.role_arn.as_deref())
            .await?;
        if let Some(meta) = scope.secrets.describe(&cred.spec.secret.name).await? {
            stats.secrets_seen += 1;
            let seen_before = remember(ctx, &meta);
            if poll_needs_reconcile(ctx, cred, &meta, seen_before.as_deref()) {
                stats.triggered += 1;
                trigger.send(cred);
            }
        }
    }
    Ok(stats)
}

/// Puts what the poll saw into the secret cache; returns the AWSCURRENT the cache knew before
/// (what "moved since we last saw it" compares with).
fn remember(ctx: &Context, meta: &SecretMeta) -> Option<String> {
    let before = ctx.secrets.known_current(&meta.arn);
    ctx.secrets.remember(meta);
    before
}

/// What the poll knows about one credential's secret.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Observed<'a> {
    /// AWSCURRENT as the credential last synced it (status).
    pub synced: Option<&'a str>,
    /// AWSCURRENT now.
    pub current: Option<&'a str>,
    /// AWSCURRENT as this process saw it before this poll (secret cache).
    pub seen_before: Option<&'a str>,
    pub pending: bool,
    /// The credential failed and waits out its error backoff.
    pub in_backoff: bool,
    /// A reconcile of the credential's current generation has finished (status says so). Until
    /// then its watch event's reconcile is queued or running and decides from fresh state: a
    /// poll trigger would only reconcile it once more (a new credential's secret shows up in
    /// a poll before its status says it synced it).
    pub observed: bool,
}

/// AWSCURRENT moved away from what the credential synced, or a rotation is half done. A
/// credential in error backoff is left to its backoff unless AWSCURRENT moved since we last
/// saw it: re-reconciling it on every poll costs a GetSecretValue, a failed login and a
/// Warning each time, and cannot succeed before something changes.
pub(crate) fn needs_reconcile_given(o: Observed<'_>) -> bool {
    if !o.observed {
        return false;
    }
    let out_of_sync = o.current != o.synced || o.pending;
    out_of_sync && (!o.in_backoff || o.seen_before != o.current)
}

/// [`needs_reconcile_given`] without backoff (events: an event is news by itself).
pub(crate) fn needs_reconcile(cred: &RdsCredential, meta: &SecretMeta) -> bool {
    needs_reconcile_given(observed(cred, meta, None, false))
}

fn poll_needs_reconcile(
    ctx: &Context,
    cred: &RdsCredential,
    meta: &SecretMeta,
    seen_before: Option<&str>,
) -> bool {
    let in_backoff = ctx.in_backoff(&crate::context::object_key(cred));
    needs_reconcile_given(observed(cred, meta, seen_before, in_backoff))
}

fn observed<'a>(
    cred: &'a RdsCredential,
    meta: &'a SecretMeta,
    seen_before: Option<&'a str>,
    in_backoff: bool,
) -> Observed<'a> {
    Observed {
        synced: cred
            .status
            .as_ref()
            .and_then(|s| s.synced_version_id.as_deref()),
        current: meta.current_version(),
        seen_before,
        pending: meta.pending_version().is_some(),
        in_backoff,
        observed: cred.status.as_ref().is_some_and(|s| {
            s.observed_generation.is_some() && s.observed_generation == cred.metadata.generation
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_reconcile_table() {
        let (v1, v2) = (Some("v1"), Some("v2"));
        // (synced, current, seen_before, pending, in_backoff) -> reconcile
        let table = [
            ((v1, v1, v1, false, false), false, "in sync"),
            ((v1, v2, v1, false, false), true, "AWSCURRENT moved"),
            ((None, v1, None, false, false), true, "never synced"),
            ((v1, v1, v1, true, false), true, "rotation half done"),
            (
                (v1, v2, v2, false, true),
                false,
                "backoff, nothing new since the failure",
            ),
            (
                (v1, v2, v1, false, true),
                true,
                "backoff, but AWSCURRENT moved",
            ),
            (
                (v1, v2, None, false, true),
                true,
                "backoff, first look (restart)",
            ),
            (
                (v1, v1, v1, true, true),
                false,
                "backoff, same pending rotation",
            ),
            ((v1, v1, v1, false, true), false, "backoff but in sync"),
        ];
        for ((synced, current, seen_before, pending, in_backoff), want, why) in table {
            let o = Observed {
                synced,
                current,
                seen_before,
                pending,
                in_backoff,
                observed: true,
            };
            assert_eq!(needs_reconcile_given(o), want, "{why}: {o:?}");
            // Not reconciled yet at this generation: its own reconcile is on the way.
            let o = Observed {
                observed: false,
                ..o
            };
            assert!(!needs_reconcile_given(o), "{why}, not observed yet: {o:?}");
        }
    }

    #[test]
    fn the_next_poll_starts_a_period_after_the_last_start_and_skips_missed_starts() {
        let s = Duration::from_secs;
        let table = [
            (s(10), s(0), s(10), "instant poll"),
            (s(10), s(4), s(10), "a 4 s poll does not stretch the period"),
            (s(10), s(10), s(20), "exactly one period: the next start"),
            (s(10), s(25), s(30), "overrun: starts at 10 and 20 skipped"),
            (Duration::ZERO, s(3), s(3), "no period: at once"),
        ];
        for (period, elapsed, want, why) in table {
            assert_eq!(next_start(period, elapsed), want, "{why}");
        }
    }

    #[test]
    fn polls_are_jittered_by_ten_percent() {
        let interval = Duration::from_secs(300);
        let delays: Vec<Duration> = (0..200).map(|_| next_delay(interval)).collect();
        assert!(
            delays
                .iter()
                .all(|d| (Duration::from_secs(270)..=Duration::from_secs(330)).contains(d)),
            "within ±10%"
        );
        let distinct: BTreeSet<u128> = delays.iter().map(Duration::as_millis).collect();
        assert!(
            distinct.len() > 50,
            "spread out, not one instant: {} distinct delays",
            distinct.len()
        );
        let (lo, hi) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
        assert!(
            *hi - *lo > Duration::from_secs(30),
            "uses the range: {lo:?}..{hi:?}"
        );
    }
}
