//! Figures for rotation under concurrency (issue 9): `cargo bench --bench rotation` with the
//! test ground up (`source .test-env/env`). Per engine (PostgreSQL, MariaDB), on the stale
//! ground (watch events 50–500 ms late, stepped rollouts of 2.2 s) with three simulated pods
//! that read the Secret at start and restart 1.0–1.8 s after their pod template changes:
//! - failed logins and the median rotation time (request → answered in status) for spaced
//!   requests (each after the previous rollouts completed) and back-to-back ones (each as soon
//!   as the previous one is answered);
//! - the delay from the last dependent's rollout completing to the next rotation starting
//!   (AWSPENDING appears: createSecret, setSecret milliseconds later), back to back.
//!
//! It runs the scenarios of `tests/it/concurrency.rs` (included below), so the figures come from
//! the code the tests check. `RDSCRED_BENCH_QUICK=1` runs two requests per mode (the test
//! command uses it to keep the bench building and running).

#![allow(dead_code, unused_imports)]

#[path = "../tests/it/support.rs"]
mod support;

#[path = "../tests/it/rotation_e2e.rs"]
mod rotation_e2e;

#[path = "../tests/it/concurrency.rs"]
mod concurrency;

use std::time::Duration;

use concurrency::{Pace, requests_under_load};
use support::DbServer;

fn quick() -> bool {
    std::env::var_os("RDSCRED_BENCH_QUICK").is_some()
}

fn median(mut v: Vec<Duration>) -> Option<Duration> {
    v.sort();
    v.get(v.len() / 2).copied()
}

fn main() {
    if std::env::var_os("RDSCRED_TEST_AWS_ENDPOINT").is_none() {
        println!("rotation bench: skipped (test ground not up: source .test-env/env)");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let n = if quick() { 2 } else { 8 };
    println!(
        "rdscred rotation under concurrency ({} build, {n} requests per mode and engine, alternating-users)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    let mut failed_total = 0;
    for (name, server) in [
        ("PostgreSQL", DbServer::postgres as fn() -> DbServer),
        ("MariaDB", DbServer::mariadb),
    ] {
        for (mode, pace) in [("spaced", Pace::Spaced), ("back-to-back", Pace::BackToBack)] {
            let f = rt.block_on(requests_under_load(server(), n, pace, true));
            failed_total += f.failed;
            // Spaced requests are sent after the rollouts completed: the gap is the test's own pacing.
            let gap = matches!(pace, Pace::BackToBack)
                .then(|| median(f.rollout_to_next.clone()))
                .flatten();
            println!(
                "{name:<10} {mode:<12} failed logins {:>3} of {:>5}  median rotation {:>8.2?}  rollout complete -> next rotation: median {}  (n={})",
                f.failed,
                f.ok + f.failed,
                median(f.rotation_times.clone()).unwrap_or_default(),
                gap.map(|g| format!("{g:.2?}"))
                    .unwrap_or_else(|| "-".into()),
                if gap.is_some() {
                    f.rollout_to_next.len()
                } else {
                    0
                }
            );
        }
    }
    assert_eq!(failed_total, 0, "alternating-users: zero failed logins");
}
