//! Event-driven change detection: Secrets Manager's EventBridge events, routed by a rule to an
//! SQS queue, tell the controller within seconds that a secret it follows changed; the bulk
//! poll then only runs as a slow backstop.
//!
//! The consumer long-polls the queue (20 s, 10 messages a call), drains what is waiting into one
//! batch, parses the envelopes ([`envelope`]), drops events about secrets no credential follows
//! (in memory: credentials, their status and the metadata cache), groups the rest by secret
//! ([`coalesce`]) and re-reads each changed secret once with DescribeSecret (not again for
//! events that happened well before its last re-read began) — the event is only
//! a hint; what the secret now holds is always read from Secrets Manager, so duplicates and
//! events delivered out of order are harmless. Credentials whose AWSCURRENT moved (or that have
//! a rotation half done) are handed to their controller through the poller's
//! [`Triggers`](crate::runtime::poller::Triggers).
//!
//! Messages are deleted only after their secret was handled; malformed and irrelevant ones are
//! counted and deleted at once. Handling is bounded by the queue's visibility timeout: work
//! not finished in time is abandoned (its messages are not deleted and come back), so no
//! message is handled twice at the same time and none is deleted after it became visible again.
//!
//! The queue being unreachable (deleted, AccessDenied, network) is reported on a transition
//! (log, `rdscred_events_queue_up`, a Kubernetes Event on the controller's Pod), the poller
//! falls back to its normal interval, and the consumer keeps probing with GetQueueAttributes
//! until the queue answers again.

pub mod coalesce;
pub mod envelope;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::events::EventType;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::poller::{Triggers, needs_reconcile};
use crate::aws::sqs::{MAX_BATCH, QueueAttributes, QueueMessage};
use crate::aws::{Aws, AwsError, Queue, SecretMeta};
use crate::context::Context;
use crate::crd::{RdsCredential, RdsDatabase};

use coalesce::{Followed, Index, Scope, Work, coalesce};
use envelope::{Ignored, Parsed, SecretEvent};

/// Long-poll wait of ReceiveMessage (the SQS maximum).
const LONG_POLL: Duration = Duration::from_secs(20);
/// Most messages drained into one batch: bounds memory and the time to gather them.
const MAX_GATHER: usize = 1_000;
/// Secrets described at once while handling a batch.
const DESCRIBE_CONCURRENCY: usize = 8;

pub use crate::context::EventsConfig;

/// Re-reads a secret's metadata (DescribeSecret); an interface so tests can slow it down.
pub trait DescribeSecret: Sync {
    fn describe(
        &self,
        scope: &Scope,
        id: &str,
    ) -> impl Future<Output = Result<Option<SecretMeta>, AwsError>> + Send;
}

/// DescribeSecret through the controller's AWS clients (counted like every call).
pub struct AwsDescribe<'a>(pub &'a Aws);

impl DescribeSecret for AwsDescribe<'_> {
    async fn describe(&self, scope: &Scope, id: &str) -> Result<Option<SecretMeta>, AwsError> {
        let (region, role) = scope;
        self.0
            .scoped(Some(region), role.as_deref())
            .await?
            .secrets
            .describe(id)
            .await
    }
}

/// Consumes the queue until the future is dropped (the controllers stop with it). `up` tells
/// the poller whether events are flowing.
pub async fn run(ctx: &Context, cfg: &EventsConfig, triggers: &Triggers, up: &watch::Sender<bool>) {
    consume(ctx, cfg, triggers, up, &AwsDescribe(&ctx.aws)).await
}

/// [`run`] with a given way to re-read secrets.
pub async fn consume<D: DescribeSecret>(
    ctx: &Context,
    cfg: &EventsConfig,
    triggers: &Triggers,
    up: &watch::Sender<bool>,
    describer: &D,
) {
    let queue = match ctx
        .aws
        .queue(
            &cfg.queue_url,
            cfg.region.as_deref(),
            cfg.role_arn.as_deref(),
        )
        .await
    {
        Ok(q) => q,
        Err(e) => {
            // Only a malformed role ARN gets here: say so, and keep polling instead.
            warn!(queue = %cfg.queue_url, error = %e, "event queue not usable; polling only");
            ctx.metrics.set_queue_up(&cfg.queue_url, false);
            return std::future::pending().await;
        }
    };
    let mut consumer = Consumer {
        ctx,
        cfg,
        queue,
        triggers,
        up,
        describer,
        health: Health::Unknown,
        last_read: Default::default(),
    };
    consumer.run().await
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Health {
    Unknown,
    Up,
    Down,
}

struct Consumer<'a, D> {
    ctx: &'a Context,
    cfg: &'a EventsConfig,
    queue: Queue,
    triggers: &'a Triggers,
    up: &'a watch::Sender<bool>,
    describer: &'a D,
    health: Health,
    /// When the last successful re-read of each secret started (our clock).
    last_read: std::sync::Mutex<HashMap<String, jiff::Timestamp>>,
}

/// What became of one message of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Done with it: delete.
    Delete,
    /// Leave it on the queue: it comes back after the visibility timeout.
    Keep,
}

impl<D: DescribeSecret> Consumer<'_, D> {
    async fn run(&mut self) {
        let mut attributes: Option<QueueAttributes> = None;
        let mut retry = Duration::from_secs(1);
        loop {
            if attributes.is_none() {
                match self.queue.attributes().await {
                    Ok(a) => {
                        if a.visibility_timeout < Duration::from_secs(10) {
                            warn!(queue = %self.cfg.queue_url, visibility_timeout = ?a.visibility_timeout, "the queue's visibility timeout is short: messages whose handling outlasts it are abandoned and redelivered; 60s or more is recommended");
                        }
                        attributes = Some(a);
                        self.set_health(Health::Up, None).await;
                        retry = Duration::from_secs(1);
                    }
                    Err(e) => {
                        self.failed(&e).await;
                        tokio::time::sleep(retry).await;
                        retry = (retry * 2).min(self.cfg.retry_max.max(Duration::from_secs(1)));
                        continue;
                    }
                }
            }
            let visibility = attributes
                .as_ref()
                .map(|a| a.visibility_timeout)
                .unwrap_or_default();
            match self.next_batch(visibility).await {
                Ok(None) => {}
                Ok(Some((batch, received))) => {
                    if let Err(e) = self.handle(&batch, received, visibility).await {
                        self.failed(&e).await;
                        attributes = None;
                    }
                }
                Err(e) => {
                    self.failed(&e).await;
                    attributes = None;
                    tokio::time::sleep(retry).await;
                }
            }
        }
    }

    /// Long-polls for messages, then drains what is already waiting (without waiting) into the
    /// same batch, so a burst is coalesced as a whole. Returns the batch and when it was
    /// received (the visibility timeout runs from there).
    async fn next_batch(
        &self,
        visibility: Duration,
    ) -> Result<Option<(Vec<QueueMessage>, Instant)>, AwsError> {
        let mut batch = self.queue.receive(LONG_POLL, MAX_BATCH).await?;
        if batch.is_empty() {
            return Ok(None);
        }
        let received = Instant::now();
        let gather_until = received + budget(visibility) / 4;
        while batch.len() < MAX_GATHER && Instant::now() < gather_until {
            let more = self.queue.receive(Duration::ZERO, MAX_BATCH).await?;
            if more.is_empty() {
                break;
            }
            batch.extend(more);
        }
        Ok(Some((batch, received)))
    }

    /// Handles one batch received at `received`; an error is the queue failing (deleting).
    async fn handle(
        &self,
        batch: &[QueueMessage],
        received: Instant,
        visibility: Duration,
    ) -> Result<(), AwsError> {
        let deadline = received + budget(visibility);
        let metrics = &self.ctx.metrics;
        let mut fates = vec![Fate::Delete; batch.len()];
        let mut types = vec!["unknown"; batch.len()];
        let mut events: Vec<(usize, SecretEvent)> = Vec::new();
        for (i, m) in batch.iter().enumerate() {
            match envelope::parse(&m.body) {
                Ok(Parsed::Event(e)) => {
                    types[i] = e.detail_type.label();
                    events.push((i, e));
                }
                Ok(Parsed::Ignored(reason, t)) => {
                    types[i] = t.map(|t| t.label()).unwrap_or("other");
                    metrics.event_ignored(types[i], reason.label());
                }
                Err(e) => {
                    debug!(message = %m.id, reason = %e, "malformed message deleted");
                    metrics.event_malformed();
                }
            }
            metrics.event_received(types[i]);
        }
        let redelivered = batch.iter().filter(|m| m.receive_count > 1).count();
        if !events.is_empty() {
            let index = self.followed().await;
            let index = &index;
            let plan = coalesce(index, &events);
            for &m in &plan.unmanaged {
                metrics.event_ignored(types[m], Ignored::Unmanaged.label());
            }
            let limit = tokio::sync::Semaphore::new(DESCRIBE_CONCURRENCY);
            let outcomes = futures::future::join_all(plan.work.iter().map(|work| {
                let limit = &limit;
                async move {
                    let work_done = async {
                        let _permit = limit.acquire().await;
                        self.handle_work(work, index).await
                    };
                    (
                        work,
                        tokio::time::timeout_at(deadline, work_done).await.ok(),
                    )
                }
            }))
            .await;
            let mut abandoned = 0;
            for (work, fate) in outcomes {
                let fate = fate.unwrap_or_else(|| {
                    abandoned += 1;
                    Fate::Keep
                });
                for &m in &work.messages {
                    if fate == Fate::Keep {
                        fates[m] = Fate::Keep;
                    }
                }
            }
            if abandoned > 0 {
                warn!(queue = %self.cfg.queue_url, secrets = abandoned, "handling outlasted the queue's visibility timeout: left for redelivery");
            }
            let handled: BTreeSet<usize> = plan
                .work
                .iter()
                .flat_map(|w| w.messages.iter().copied())
                .collect();
            for m in handled {
                if fates[m] == Fate::Delete {
                    metrics.event_handled(types[m]);
                }
            }
        }
        let done: Vec<&QueueMessage> = batch
            .iter()
            .zip(&fates)
            .filter(|(_, f)| **f == Fate::Delete)
            .map(|(m, _)| m)
            .collect();
        if Instant::now() >= received + visibility {
            // Past the visibility timeout the messages may be someone else's again.
            warn!(queue = %self.cfg.queue_url, "batch finished after the visibility timeout; not deleting it");
            return Ok(());
        }
        let refused = self.queue.delete(&done).await?;
        if refused > 0 {
            warn!(queue = %self.cfg.queue_url, refused, "SQS refused to delete some handled messages; they will be handled again");
        }
        debug!(
            messages = batch.len(),
            deleted = done.len() - refused,
            redelivered,
            "event batch handled"
        );
        Ok(())
    }

    /// One secret named by events: re-read it (unless an AWSCURRENT label event says what the
    /// cache already knows) and hand every credential whose AWSCURRENT moved to its controller.
    async fn handle_work(&self, work: &Work, index: &Index<Arc<RdsCredential>>) -> Fate {
        let last_read = self.last_read().get(&work.secret_id).copied();
        if coalesce::covered(work, last_read) {
            // An earlier batch's re-read started after these events: it saw their changes.
            return Fate::Delete;
        }
        let cached = work.claimed_current.as_deref().and_then(|claimed| {
            self.ctx
                .secrets
                .latest(&work.secret_id)
                .filter(|m| m.current_version() == Some(claimed))
        });
        let meta = match cached {
            Some(meta) => Some(meta),
            None => match self.describe(work).await {
                Ok(meta) => {
                    if let Some(meta) = &meta {
                        self.ctx.secrets.remember_after_event(meta, work.earliest);
                    }
                    meta
                }
                Err(e) if e.is_retryable() => {
                    warn!(secret = %work.secret_id, error = %e, "re-reading a secret after an event failed; it will be retried");
                    return Fate::Keep;
                }
                Err(e) => {
                    // Not going to get better by retrying; the reconcile reports it.
                    warn!(secret = %work.secret_id, error = %e, "re-reading a secret after an event failed");
                    None
                }
            },
        };
        for &i in &work.followers {
            let cred = &index.entry(i).credential;
            // Gone or unreadable: the reconcile says so in the credential's status.
            if meta.as_ref().is_none_or(|m| needs_reconcile(cred, m)) {
                self.triggers.send(cred);
            }
        }
        Fate::Delete
    }

    /// DescribeSecret for `work`, remembering when a successful one started.
    async fn describe(&self, work: &Work) -> Result<Option<SecretMeta>, AwsError> {
        let started = jiff::Timestamp::now();
        let out = self.describer.describe(&work.scope, &work.secret_id).await;
        if out.is_ok() {
            let mut reads = self.last_read();
            if reads.len() > 10_000 {
                let cutoff = started - jiff::SignedDuration::from_hours(1);
                reads.retain(|_, at| *at > cutoff);
            }
            reads.insert(work.secret_id.clone(), started);
        }
        out
    }

    fn last_read(&self) -> std::sync::MutexGuard<'_, HashMap<String, jiff::Timestamp>> {
        self.last_read.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every secret a watched credential follows, with the scope it is read in.
    async fn followed(&self) -> Index<Arc<RdsCredential>> {
        let credentials = self.ctx.all_credentials();
        if credentials.is_empty() {
            return Index::new(Vec::new());
        }
        let databases: HashMap<String, RdsDatabase> =
            match Api::<RdsDatabase>::all(self.ctx.client.clone())
                .list(&ListParams::default())
                .await
            {
                Ok(list) => list.into_iter().map(|d| (d.name_any(), d)).collect(),
                Err(e) => {
                    warn!(error = %e, "listing RdsDatabases for the event batch failed");
                    HashMap::new()
                }
            };
        let default_region = self.ctx.aws.default_region().to_string();
        let followed = credentials
            .into_iter()
            .filter_map(|cred| {
                let db = databases.get(&cred.spec.database_ref.name)?;
                let region = db
                    .spec
                    .region
                    .clone()
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| default_region.clone());
                let secret = cred.spec.secret.name.clone();
                let arn = cred
                    .status
                    .as_ref()
                    .and_then(|s| s.secret_arn.clone())
                    .or_else(|| self.ctx.secrets.latest(&secret).map(|m| m.arn));
                Some(Followed {
                    scope: (region, db.spec.role_arn.clone().filter(|r| !r.is_empty())),
                    secret,
                    arn,
                    credential: cred,
                })
            })
            .collect();
        Index::new(followed)
    }

    async fn failed(&mut self, error: &AwsError) {
        self.ctx.metrics.queue_error(error.reason());
        self.set_health(Health::Down, Some(error)).await;
    }

    /// Publishes a health transition: poller, metric, log, and an Event on the controller's Pod.
    async fn set_health(&mut self, health: Health, error: Option<&AwsError>) {
        let before = std::mem::replace(&mut self.health, health);
        if before == health {
            return;
        }
        let queue = &self.cfg.queue_url;
        let up = health == Health::Up;
        self.up.send_replace(up);
        self.ctx.metrics.set_queue_up(queue, up);
        let fallback = self.cfg.fallback_poll_interval;
        let backstop = self.ctx.settings.poll_interval;
        let (warning, reason, note) = if up {
            info!(%queue, backstop = ?backstop, "consuming the event queue; the bulk poll is a backstop");
            if before == Health::Unknown {
                return;
            }
            (
                false,
                "EventQueueAvailable",
                format!(
                    "event queue {queue} can be read again: following changes by event, polling every {} as a backstop",
                    human(backstop)
                ),
            )
        } else {
            let error = error.map(ToString::to_string).unwrap_or_default();
            warn!(%queue, %error, fallback = ?fallback, "event queue unavailable: falling back to polling");
            (
                true,
                "EventQueueUnavailable",
                format!(
                    "event queue {queue} cannot be read ({error}): falling back to polling Secrets Manager every {}; retrying the queue",
                    human(fallback)
                ),
            )
        };
        let Some(reference) = &self.cfg.report_to else {
            return;
        };
        let type_ = if warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        self.ctx
            .event_on(reference, type_, reason, "ConsumeEvents", note)
            .await;
    }
}

/// How much of the visibility timeout handling may use: 80%, the rest is for deleting.
fn budget(visibility: Duration) -> Duration {
    visibility.mul_f64(0.8).max(Duration::from_millis(500))
}

/// `1h30m`, `5m`, `30s`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out += &format!("{h}h");
    }
    if m > 0 {
        out += &format!("{m}m");
    }
    if s > 0 || out.is_empty() {
        out += &format!("{s}s");
    }
    out
}

/// The bulk poll interval: the backstop while events flow, the fallback otherwise.
pub fn poll_interval(
    backstop: Duration,
    events: Option<&EventsConfig>,
    events_up: bool,
) -> Duration {
    match events {
        Some(cfg) if !events_up => cfg.fallback_poll_interval,
        _ => backstop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(fallback: u64) -> EventsConfig {
        EventsConfig {
            queue_url: "https://sqs.us-east-1.amazonaws.com/1/q".into(),
            region: None,
            role_arn: None,
            fallback_poll_interval: Duration::from_secs(fallback),
            retry_max: Duration::from_secs(30),
            report_to: None,
        }
    }

    #[test]
    fn poll_interval_is_the_backstop_only_while_events_flow() {
        let backstop = Duration::from_secs(1800);
        let events = cfg(300);
        let cases = [
            (None, false, 1800),
            (None, true, 1800),
            (Some(&events), true, 1800),
            (Some(&events), false, 300),
        ];
        for (events, up, want) in cases {
            assert_eq!(
                poll_interval(backstop, events, up),
                Duration::from_secs(want),
                "events {} up {up}",
                events.is_some()
            );
        }
    }

    #[test]
    fn budget_leaves_a_fifth_of_the_visibility_timeout_for_deleting() {
        assert_eq!(budget(Duration::from_secs(30)), Duration::from_secs(24));
        assert_eq!(budget(Duration::from_secs(2)), Duration::from_millis(1600));
        assert_eq!(budget(Duration::ZERO), Duration::from_millis(500));
    }

    #[test]
    fn durations_for_humans() {
        assert_eq!(human(Duration::from_secs(1800)), "30m");
        assert_eq!(human(Duration::from_secs(5400)), "1h30m");
        assert_eq!(human(Duration::from_secs(2)), "2s");
        assert_eq!(human(Duration::ZERO), "0s");
    }
}
