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
