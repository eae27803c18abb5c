//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's semantics.
//!
//! - Every write is a `replace` carrying the `resourceVersion` that was read, so two
//!   candidates racing for an expired lease cannot both win: the API server accepts one
//!   write and answers the other with 409 Conflict.
//! - A lease held by someone else is taken over only once `renewTime +
//!   leaseDurationSeconds` (the holder's own duration, from the record) has passed;
//!   an empty `holderIdentity` means "released" and is taken at once.
//! - The leader stops believing it leads `lease_duration - renew_period` after the start
//!   of its last successful renewal (client-go's renew deadline), i.e. strictly before
//!   anyone else may take over. The margin absorbs clock skew between nodes up to
//!   `renew_period`; the holder steps down on its monotonic clock, exactly at the
//!   deadline, even if a renew request is still hanging.
//! - Graceful shutdown first publishes "not leader", then releases the lease (empty
//!   holder) so a standby takes over on its next poll instead of after expiry.
//!
//! Leadership is published on a `watch` channel; the controller only acts while it reads
//! `true`. If the task running [`LeaderElector::run`] ends or is aborted, the channel
//! drops to `false` (without releasing: an aborted task cannot make API calls).

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

/// Where and how to hold the lease.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per instance (the pod name): a restarted pod must not be mistaken for
    /// the instance that held the lease before.
    pub identity: String,
    /// How long a lease stays valid without renewal: the takeover time after a crash.
    /// Written to the Lease in whole seconds, rounded up.
    pub lease_duration: Duration,
    /// How often the leader renews and standbys poll. Should be well below
    /// `lease_duration` (client-go defaults: 15 s lease, 2 s retry).
    pub renew_period: Duration,
}

/// Runs leader election for one instance. Create, [`subscribe`](Self::subscribe), then
/// spawn [`run`](Self::run).
pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    leader: watch::Sender<bool>,
}

/// What one acquire/renew attempt found.
enum Attempt {
    /// We hold the lease (created, renewed or taken over).
    Holding,
    /// Someone else validly holds it, or won a race for it.
    HeldByOther(Option<String>),
}

impl LeaderElector {
    pub fn new(client: kube::Client, cfg: LeaseConfig) -> Self {
        let api = Api::namespaced(client, &cfg.namespace);
        let (leader, _) = watch::channel(false);
        Self { api, cfg, leader }
    }

    /// `true` while this instance leads. Subscribe before calling [`run`](Self::run).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leader.subscribe()
    }

    /// Acquires and renews the lease until `shutdown` completes, then releases it if held.
    /// API errors are logged and retried every `renew_period`; they never end the loop.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let cfg = &self.cfg;
        let publisher = Publisher {
            tx: &self.leader,
            cfg,
        };
        let renew_deadline = renew_deadline(cfg);
        tokio::pin!(shutdown);

        // `Some(deadline)` while leading: the instant this instance must stop acting
        // unless a renewal succeeds before it.
        let mut leading_until: Option<Instant> = None;
        loop {
            let started = Instant::now();
            // A renewal that hangs past the deadline is as good as failed; a standby's
            // attempt is bounded too so a hung request cannot stall polling forever.
            let limit = leading_until.unwrap_or(started + cfg.lease_duration);
            let attempt = tokio::select! {
                () = &mut shutdown => break,
                result = tokio::time::timeout_at(limit, self.try_acquire_or_renew()) => result,
            };
            match attempt {
                // A write that only landed after its own deadline is not acted on: by then
                // others may consider the lease expired. The next renewal will tell.
                Ok(Ok(Attempt::Holding)) if Instant::now() < started + renew_deadline => {
                    leading_until = Some(started + renew_deadline);
                    publisher.set(true, "acquired or renewed the lease");
                }
                Ok(Ok(Attempt::Holding)) => {
                    leading_until = None;
                    publisher.set(false, "renewal completed too late to act on");
                }
                Ok(Ok(Attempt::HeldByOther(holder))) => {
                    leading_until = None;
                    publisher.set(
                        false,
                        &format!(
                            "lease held by {}",
                            holder.as_deref().unwrap_or("another instance")
                        ),
                    );
                }
                Ok(Err(error)) => {
                    tracing::warn!(lease = %cfg.name, identity = %cfg.identity, error = %error, "lease acquire/renew failed");
                }
                Err(_elapsed) => {
                    tracing::warn!(lease = %cfg.name, identity = %cfg.identity, "lease acquire/renew timed out");
                }
            }

            let next = Instant::now() + cfg.renew_period;
            match leading_until {
                Some(deadline) if deadline <= Instant::now() => {
                    leading_until = None;
                    publisher.set(false, "could not renew the lease in time");
                    continue;
                }
                Some(deadline) => {
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep_until(next) => {}
                        // Only reachable when renewals keep failing: stop acting on time,
                        // not at the next poll.
                        () = tokio::time::sleep_until(deadline), if deadline < next => {
                            leading_until = None;
                            publisher.set(false, "could not renew the lease in time");
                        }
                    }
                }
                None => {
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep_until(next) => {}
                    }
                }
            }
        }

        // Stop acting before the lease is handed over, never after.
        // Release even after a deadline step-down: a renewal may have landed after its
        // timeout. `release` only writes if the lease still names us.
        publisher.stand_down();
        {
            match tokio::time::timeout(cfg.lease_duration, self.release()).await {
                Ok(Ok(())) => {
                    tracing::info!(lease = %cfg.name, identity = %cfg.identity, "released leader lease")
                }
                Ok(Err(error)) => {
                    tracing::warn!(lease = %cfg.name, error = %error, "releasing the lease failed; it will expire")
                }
                Err(_) => {
                    tracing::warn!(lease = %cfg.name, "releasing the lease timed out; it will expire")
                }
            }
        }
    }

    async fn try_acquire_or_renew(&self) -> Result<Attempt, kube::Error> {
        let cfg = &self.cfg;
        let now = jiff::Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.identity.clone()),
                    lease_duration_seconds: Some(lease_seconds(cfg.lease_duration)),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Holding),
                // Another candidate created it first.
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    Ok(Attempt::HeldByOther(None))
                }
                Err(error) => Err(error),
            };
        };

        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec
            .holder_identity
            .clone()
            .filter(|holder| !holder.is_empty());
        let ours = holder.as_deref() == Some(cfg.identity.as_str());
        if let Some(other) = holder.as_ref().filter(|_| !ours) {
            if valid_holder(spec, now, cfg.lease_duration).is_some() {
                return Ok(Attempt::HeldByOther(Some(other.clone())));
            }
            tracing::info!(lease = %cfg.name, identity = %cfg.identity, previous = %other, "lease expired; taking over");
        }

        if !ours {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(cfg.identity.clone());
        spec.lease_duration_seconds = Some(lease_seconds(cfg.lease_duration));
        spec.renew_time = Some(MicroTime(now));

        // `lease.metadata.resource_version` is the one we read: if anyone wrote since,
        // the API server rejects this with 409 and we lost the race.
        match self
            .api
            .replace(&cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Attempt::Holding),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::HeldByOther(None)),
            Err(error) => Err(error),
        }
    }

    /// Hands the lease back: empty holder, so the next candidate's poll takes it without
    /// waiting for expiry. Only touches the lease if we still hold it.
    async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(());
        }
        let now = MicroTime(jiff::Timestamp::now());
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now.clone());
        spec.acquire_time = Some(now);
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            // 409: someone wrote in between, so it is not ours to release any more.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            result => result.map(|_| ()),
        }
    }
}

/// Publishes leadership changes and logs transitions; drops to `false` when dropped, so
/// an aborted or finished `run` never leaves a stale `true` behind.
struct Publisher<'a> {
    tx: &'a watch::Sender<bool>,
    cfg: &'a LeaseConfig,
}

impl Publisher<'_> {
    /// `why` explains the new state in the transition's log line.
    fn set(&self, leading: bool, why: &str) {
        let changed = self
            .tx
            .send_if_modified(|current| std::mem::replace(current, leading) != leading);
        if !changed {
            return;
        }
        let (lease, identity) = (&self.cfg.name, &self.cfg.identity);
        if leading {
            tracing::info!(%lease, %identity, why, "became leader");
        } else {
            tracing::warn!(%lease, %identity, why, "stopped leading");
        }
    }
}

impl Publisher<'_> {
    /// Stops leading because the process shuts down: expected, so logged at info.
    fn stand_down(&self) {
        if self
            .tx
            .send_if_modified(|current| std::mem::replace(current, false))
        {
            tracing::info!(lease = %self.cfg.name, identity = %self.cfg.identity, "stopped leading: shutting down");
        }
    }
}

impl Drop for Publisher<'_> {
    fn drop(&mut self) {
        self.tx
            .send_if_modified(|current| std::mem::replace(current, false));
    }
}

/// The holder of a lease that is still valid at `now`: a non-empty `holderIdentity` whose
/// `renewTime` (else `acquireTime`) plus the holder's own `leaseDurationSeconds` (else
/// `default_duration`: instances may be configured differently) is in the future. A lease
/// with a holder but no time at all cannot be judged and counts as expired rather than
/// deadlocking on a malformed object.
pub fn valid_holder(
    spec: &LeaseSpec,
    now: jiff::Timestamp,
    default_duration: Duration,
) -> Option<&str> {
    let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty())?;
    let duration = spec
        .lease_duration_seconds
        .unwrap_or_else(|| lease_seconds(default_duration));
    let last = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0)?;
    let expiry = last
        .checked_add(jiff::SignedDuration::from_secs(duration.into()))
        .ok()?;
    (now < expiry).then_some(holder)
}

/// Whole seconds for `leaseDurationSeconds`, rounded up (never claim less than we assume).
fn lease_seconds(duration: Duration) -> i32 {
    let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    i32::try_from(seconds.max(1)).unwrap_or(i32::MAX)
}

/// How long after starting a successful renewal the leader may keep acting:
/// `lease_duration - renew_period`, but at least half the lease for odd configurations.
fn renew_deadline(cfg: &LeaseConfig) -> Duration {
    cfg.lease_duration
        .saturating_sub(cfg.renew_period)
        .max(cfg.lease_duration / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_holder_table() {
        let now: jiff::Timestamp = "2026-01-01T00:00:10Z".parse().unwrap();
        let at = |s: &str| Some(MicroTime(s.parse().unwrap()));
        let spec = |holder: Option<&str>, renew, acquire, seconds| LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            renew_time: renew,
            acquire_time: acquire,
            lease_duration_seconds: seconds,
            ..LeaseSpec::default()
        };
        let d = Duration::from_secs(15);
        // (case, spec, valid holder)
        let cases = [
            (
                "renewed 5s ago, 15s lease",
                spec(Some("a"), at("2026-01-01T00:00:05Z"), None, Some(15)),
                Some("a"),
            ),
            (
                "expired",
                spec(Some("a"), at("2026-01-01T00:00:01Z"), None, Some(5)),
                None,
            ),
            (
                "expires exactly now",
                spec(Some("a"), at("2026-01-01T00:00:05Z"), None, Some(5)),
                None,
            ),
            (
                "released (empty holder)",
                spec(Some(""), at("2026-01-01T00:00:09Z"), None, Some(15)),
                None,
            ),
            (
                "no holder",
                spec(None, at("2026-01-01T00:00:09Z"), None, Some(15)),
                None,
            ),
            (
                "acquire time when never renewed",
                spec(Some("a"), None, at("2026-01-01T00:00:09Z"), Some(15)),
                Some("a"),
            ),
            (
                "no time at all",
                spec(Some("a"), None, None, Some(15)),
                None,
            ),
            (
                "default duration",
                spec(Some("a"), at("2026-01-01T00:00:00Z"), None, None),
                Some("a"),
            ),
            (
                "holder's duration, not ours",
                spec(Some("a"), at("2026-01-01T00:00:00Z"), None, Some(3600)),
                Some("a"),
            ),
        ];
        for (case, spec, want) in &cases {
            assert_eq!(valid_holder(spec, now, d), *want, "{case}");
        }
    }

    #[test]
    fn lease_seconds_round_up() {
        assert_eq!(lease_seconds(Duration::from_secs(15)), 15);
        assert_eq!(lease_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(lease_seconds(Duration::from_millis(200)), 1);
    }

    #[test]
    fn renew_deadline_leaves_a_margin_before_expiry() {
        let cfg = |lease_ms, renew_ms| LeaseConfig {
            namespace: "ns".into(),
            name: "l".into(),
            identity: "me".into(),
            lease_duration: Duration::from_millis(lease_ms),
            renew_period: Duration::from_millis(renew_ms),
        };
        assert_eq!(renew_deadline(&cfg(15_000, 2_000)), Duration::from_secs(13));
        assert_eq!(renew_deadline(&cfg(1_000, 200)), Duration::from_millis(800));
        assert_eq!(
            renew_deadline(&cfg(1_000, 2_000)),
            Duration::from_millis(500)
        );
    }
}
