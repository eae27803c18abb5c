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
use crate::context::{Context, jitter};
use crate::crd::{CredentialMode, RdsCredential, RdsDatabase};
use crate::reconcile::Error;

/// What one poll did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PollStats {
    pub secrets_seen: usize,
    pub triggered: usize,
}

/// Where to send "reconcile this credential": one channel per watched namespace (or one
/// for all namespaces).
#[derive(Default, Clone)]
pub struct Triggers {
    by_namespace: HashMap<Option<String>, UnboundedSender<ObjectRef<RdsCredential>>>,
}

impl Triggers {
    pub fn add(
        &mut self,
        namespace: Option<String>,
        tx: UnboundedSender<ObjectRef<RdsCredential>>,
    ) {
        self.by_namespace.insert(namespace, tx);
    }

    pub fn send(&self, cred: &RdsCredential) {
        let ns = cred.namespace();
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
        match poll_once(ctx, trigger).await {
            Ok(stats) => debug!(?stats, "bulk poll done"),
            Err(e) => warn!(error = %e, "bulk poll failed"),
        }
        let done = tokio::time::Instant::now();
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
            let due = done + interval.mul_f64(spread);
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
        for meta in scope.secrets.list_owned(&ctx.settings.cluster_name).await? {
            stats.secrets_seen += 1;
            ctx.secrets.remember(&meta);
            let cred = meta
                .owner()
                .and_then(|o| by_owner.get(&(o.namespace, o.name)).copied());
            if let Some(cred) = cred
                && needs_reconcile(cred, &meta)
            {
                stats.triggered += 1;
                trigger.send(cred);
            }
        }
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
            ctx.secrets.remember(&meta);
            if needs_reconcile(cred, &meta) {
                stats.triggered += 1;
                trigger.send(cred);
            }
        }
    }
    Ok(stats)
}

/// AWSCURRENT moved away from what the credential synced, or a rotation is half done.
pub(crate) fn needs_reconcile(cred: &RdsCredential, meta: &SecretMeta) -> bool {
    let synced = cred
        .status
        .as_ref()
        .and_then(|s| s.synced_version_id.as_deref());
    meta.current_version() != synced || meta.pending_version().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

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
