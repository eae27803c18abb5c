//! Client-side rate limits: a token bucket shared by every caller of one kind of request
//! (CreateSecret: the Secrets Manager quota is 50 requests/s per account; drift re-checks,
//! which must leave room for provisioning).
//!
//! The bucket is kept as a GCRA (the "theoretical arrival time" of the next request): one
//! timestamp, no refill task. A caller reserves the earliest slot and sleeps until it, so
//! callers are served in the order they asked and at most `burst + rate × t` requests start in
//! any window of length `t`.

use std::sync::Mutex;
use std::time::Duration;

/// `d` scaled by a random factor in [1-spread, 1+spread]: spreads waits (retries, polls,
/// requeues) so that callers started together do not stay together.
pub fn jitter(d: Duration, spread: f64) -> Duration {
    let mut b = [0u8; 2];
    let r = if getrandom::fill(&mut b).is_ok() {
        u16::from_le_bytes(b) as f64 / u16::MAX as f64
    } else {
        0.5
    };
    d.mul_f64(1.0 - spread + 2.0 * spread * r)
}

/// The bucket's state and decision, on a clock given as time since an origin (pure, tested
/// with made-up times).
#[derive(Clone, Debug, PartialEq)]
pub struct Gcra {
    /// Time between two requests at the sustained rate.
    interval: Duration,
    /// How far ahead of the sustained rate requests may run (`burst - 1` intervals).
    tolerance: Duration,
    /// When the next request would be due at the sustained rate.
    tat: Duration,
}

impl Gcra {
    /// `per_second` requests per second sustained, `burst` (at least 1) at once.
    pub fn new(per_second: f64, burst: u32) -> Gcra {
        let interval = Duration::from_secs_f64(1.0 / per_second.max(f64::MIN_POSITIVE));
        Gcra {
            interval,
            tolerance: interval.saturating_mul(burst.max(1) - 1),
            tat: Duration::ZERO,
        }
    }

    /// Reserves the next slot for a request made at `now`: when it may start (`now` or later).
    pub fn reserve(&mut self, now: Duration) -> Duration {
        let start = now.max(self.tat.saturating_sub(self.tolerance));
        self.tat = self.tat.max(start) + self.interval;
        start
    }

    /// Takes the slot if a request made at `now` may start now; otherwise reserves nothing and
    /// says how long until it could.
    pub fn try_take(&mut self, now: Duration) -> Result<(), Duration> {
        let earliest = self.tat.saturating_sub(self.tolerance);
        if earliest > now {
            return Err(earliest - now);
        }
        self.reserve(now);
        Ok(())
    }
}

/// A shared bucket; `None` rate: unlimited.
#[derive(Debug)]
pub struct RateLimiter {
    origin: tokio::time::Instant,
    bucket: Option<Mutex<Gcra>>,
}

impl RateLimiter {
    /// `per_second` ≤ 0: unlimited.
    pub fn new(per_second: f64, burst: u32) -> RateLimiter {
        RateLimiter {
            origin: tokio::time::Instant::now(),
            bucket: (per_second > 0.0).then(|| Mutex::new(Gcra::new(per_second, burst))),
        }
    }

    pub fn unlimited() -> RateLimiter {
        RateLimiter::new(0.0, 1)
    }

    /// Waits for this caller's slot. Cancel-safe in the sense that matters here: a dropped
    /// wait leaves its slot unused (the rate only gets lower).
    pub async fn acquire(&self) {
        let Some(bucket) = &self.bucket else { return };
        let now = self.origin.elapsed();
        let start = bucket.lock().expect("rate limiter lock").reserve(now);
        if start > now {
            tokio::time::sleep_until(self.origin + start).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn reserve_table() {
        // (rate/s, burst, request times in ms, expected start times in ms)
        type Row = (f64, u32, &'static [u64], &'static [u64], &'static str);
        let table: [Row; 5] = [
            (
                5.0,
                1,
                &[0, 0, 0],
                &[0, 200, 400],
                "a queue at once is spread",
            ),
            (
                5.0,
                1,
                &[0, 500, 1000],
                &[0, 500, 1000],
                "slower than the rate: no wait",
            ),
            (
                5.0,
                3,
                &[0, 0, 0, 0],
                &[0, 0, 0, 200],
                "a burst of 3, then the rate",
            ),
            (
                5.0,
                1,
                &[0, 0, 1000],
                &[0, 200, 1000],
                "an idle bucket does not save up",
            ),
            (
                50.0,
                1,
                &[0, 0, 0],
                &[0, 20, 40],
                "the Secrets Manager quota",
            ),
        ];
        for (rate, burst, at, want, why) in table {
            let mut b = Gcra::new(rate, burst);
            let got: Vec<u64> = at
                .iter()
                .map(|t| b.reserve(ms(*t)).as_millis() as u64)
                .collect();
            assert_eq!(got, want, "{why}");
        }
    }

    #[test]
    fn no_window_holds_more_than_burst_plus_rate_times_its_length() {
        // Requests arriving in clumps at pseudo-random times.
        let mut b = Gcra::new(5.0, 2);
        let mut seed = 7u64;
        let mut starts = Vec::new();
        let mut now = 0u64;
        for _ in 0..200 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            now += (seed >> 33) % 150;
            starts.push(b.reserve(ms(now)).as_millis() as u64);
        }
        for (i, a) in starts.iter().enumerate() {
            for (j, z) in starts.iter().enumerate().skip(i) {
                let count = (j - i + 1) as f64;
                let window = (z - a) as f64 / 1000.0;
                assert!(count <= 2.0 + 5.0 * window + 1e-9, "{count} in {window}s");
            }
        }
    }
}

/// The drift lane: periodic drift checks (a Ready credential whose next pass is due only to
/// re-prove that AWSCURRENT logs in) run at most `per_second` and `concurrency` at once, in a
/// budget of their own, so new credentials, generation changes and outside changes go first
/// (issue 15: at 5,000 credentials drift checks starved provisioning to 1–3 credentials/s).
/// A pass that finds no slot is deferred to one, not queued behind a lock: it holds no
/// reconcile slot while it waits.
///
/// After a (re)start, the first pass of a settled credential is such a drift check too, due at
/// a random point in [½, 1) of the drift interval: it was checked at most an interval before
/// the restart, and the whole fleet re-checking at once (a GetSecretValue each) is the
/// thundering herd a restart must not cause.
#[derive(Debug)]
pub struct DriftLane {
    origin: tokio::time::Instant,
    bucket: Mutex<Gcra>,
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    /// The spread of first checks after a start.
    interval: Duration,
    passes: Mutex<std::collections::HashMap<String, Next>>,
}

/// What a credential's next pass is, as its last reconcile left it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Next {
    /// Something other than a drift check is due (or the last pass failed): a normal pass.
    Work,
    /// A drift check at `due` (time since the lane's origin), deferred to `slot` if reserved.
    Drift {
        due: Duration,
        slot: Option<Duration>,
    },
}

/// How a pass proceeds.
#[derive(Debug)]
pub enum Admit {
    /// A normal pass (the controller's own concurrency bound applies).
    Work,
    /// A drift check, run within the lane's budget (held by the permit).
    Drift(tokio::sync::OwnedSemaphorePermit),
    /// Not now: come back after this long.
    Later(Duration),
}

/// A timer fires at its due time, not before; an event arriving this close to it counts as
/// the timer.
const EARLY: Duration = Duration::from_millis(500);

/// Whether a pass at `now` is the drift check `next` says is due (the pure decision): only for
/// a settled credential (status current for its generation, Ready, not being deleted) whose
/// last pass left nothing but a drift check due, once that is due. Anything arriving earlier
/// is an event (a spec or Secret change, an AWSCURRENT move) and is a normal pass.
pub fn is_drift_pass(settled: bool, next: Option<Next>, now: Duration) -> bool {
    match next {
        Some(Next::Drift { due, .. }) => settled && now + EARLY >= due,
        Some(Next::Work) | None => false,
    }
}

impl DriftLane {
    /// `per_second` ≤ 0: no rate limit (the concurrency bound stays).
    pub fn new(per_second: f64, concurrency: usize, interval: Duration) -> DriftLane {
        let rate = if per_second > 0.0 { per_second } else { 1e9 };
        DriftLane {
            origin: tokio::time::Instant::now(),
            bucket: Mutex::new(Gcra::new(rate, 1)),
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency.max(1))),
            interval,
            passes: Mutex::default(),
        }
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Decides how the pass of `key` that is starting now proceeds.
    pub fn admit(&self, key: &str, settled: bool, jitter: f64) -> Admit {
        let now = self.now();
        let mut passes = self.passes.lock().expect("drift lane lock");
        let next = passes.get(key).copied();
        if next.is_none() && settled {
            // First sight since the start: checked before it, so no need to check at once.
            let due = now + self.interval.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
            passes.insert(key.to_string(), Next::Drift { due, slot: None });
            return Admit::Later(due - now);
        }
        if !is_drift_pass(settled, next, now) {
            passes.insert(key.to_string(), Next::Work);
            return Admit::Work;
        }
        let Some(Next::Drift { due, slot }) = next else {
            unreachable!("is_drift_pass holds only for Next::Drift")
        };
        let mut bucket = self.bucket.lock().expect("drift bucket lock");
        let slot = slot.unwrap_or_else(|| bucket.reserve(now));
        if slot <= now + EARLY
            && let Ok(permit) = self.slots.clone().try_acquire_owned()
        {
            passes.insert(key.to_string(), Next::Work);
            return Admit::Drift(permit);
        }
        // Its slot is later, or every drift check slot is busy: reserve a slot and come back.
        let slot = if slot > now + EARLY {
            slot
        } else {
            // The bucket's next slot: after the one just taken, as reservations only move on.
            bucket.reserve(now)
        };
        passes.insert(
            key.to_string(),
            Next::Drift {
                due,
                slot: Some(slot),
            },
        );
        Admit::Later((slot - now).max(Duration::from_millis(100)))
    }

    /// What a finished pass left due: a drift check `after` from now, or (`None`) something
    /// else.
    pub fn finished(&self, key: &str, drift_after: Option<Duration>) {
        let next = match drift_after {
            Some(after) => Next::Drift {
                due: self.now() + after,
                slot: None,
            },
            None => Next::Work,
        };
        self.passes
            .lock()
            .expect("drift lane lock")
            .insert(key.to_string(), next);
    }

    /// The credential is gone.
    pub fn remove(&self, key: &str) {
        self.passes.lock().expect("drift lane lock").remove(key);
    }
}

#[cfg(test)]
mod lane_tests {
    use super::*;

    #[test]
    fn drift_pass_table() {
        let s = Duration::from_secs;
        let due = |d| {
            Some(Next::Drift {
                due: s(d),
                slot: None,
            })
        };
        // (settled, next, now, drift pass)
        let table = [
            (true, due(10), s(10), true, "the drift timer fired"),
            (true, due(10), s(11), true, "late timer"),
            (true, due(10), s(5), false, "an event before the timer"),
            (
                false,
                due(10),
                s(10),
                false,
                "not settled (spec change, not Ready, deleting)",
            ),
            (
                true,
                Some(Next::Work),
                s(10),
                false,
                "something else was due",
            ),
            (true, None, s(10), false, "never seen"),
        ];
        for (settled, next, now, want, why) in table {
            assert_eq!(is_drift_pass(settled, next, now), want, "{why}");
        }
    }

    #[tokio::test]
    async fn first_passes_after_a_start_are_spread_over_the_second_half_of_the_interval() {
        let lane = DriftLane::new(5.0, 1, Duration::from_secs(100));
        for (i, jitter) in [0.0, 0.5, 1.0].into_iter().enumerate() {
            match lane.admit(&format!("c{i}"), true, jitter) {
                Admit::Later(d) => {
                    let secs = d.as_secs_f64();
                    assert!((49.0..=100.0).contains(&secs), "{secs}");
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(lane.admit("new", false, 0.3), Admit::Work));
    }

    #[tokio::test]
    async fn due_drift_checks_get_slots_in_turn_and_events_stay_normal_passes() {
        let lane = DriftLane::new(1.0, 1, Duration::from_secs(100));
        for k in ["a", "b", "c"] {
            lane.finished(k, Some(Duration::ZERO));
        }
        let first = lane.admit("a", true, 0.0);
        assert!(matches!(first, Admit::Drift(_)), "{first:?}");
        // b: the bucket's next slot is a second away; c: the one after.
        let (Admit::Later(b), Admit::Later(c)) =
            (lane.admit("b", true, 0.0), lane.admit("c", true, 0.0))
        else {
            panic!("deferred");
        };
        assert!(b < c, "{b:?} {c:?}");
        // An unsettled credential (a new generation) is never held by the lane.
        assert!(matches!(lane.admit("b", false, 0.0), Admit::Work));
        drop(first);
    }
}
