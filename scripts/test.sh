#!/usr/bin/env bash
# The whole test suite, from nothing: checks formatting and lints, brings up the test ground (moto in a pinned venv,
# PostgreSQL and MariaDB, installing them if absent), then runs every Rust test (unit,
# integration against the ground and the Kubernetes API emulator, the emulator's own
# conformance suite), the Helm chart tests (real Helm library via helm-python-sdk) and the
# delivery tests (the image's build context, the Dockerfile and workflow lints).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The lint gate first: formatting and clippy (the workspace's [workspace.lints] policy, every
# warning an error) fail in a minute, before the long tests.
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings

bash scripts/test-env.sh up
# shellcheck disable=SC1091
source .test-env/env

if ! command -v cargo-nextest >/dev/null 2>&1 && ! cargo nextest --version >/dev/null 2>&1; then
  echo "[test] cargo-nextest not found; installing it from crates.io" >&2
  cargo install --locked cargo-nextest
fi

# Every controller-running test records the chart RBAC grants it exercised here; the check
# after the suite fails on any grant no test needed (tests/it/rbac.rs).
RDSCRED_RBAC_RECORDS="$(pwd)/target/rbac-records"
export RDSCRED_RBAC_RECORDS
rm -rf "$RDSCRED_RBAC_RECORDS"

cargo nextest run --locked --workspace --no-fail-fast --profile ci
cargo nextest run --locked --profile ci --test it --run-ignored only rbac::chart_grants_nothing_the_suite_did_not_use

# The hot-path bench, in the test profile and shortened: keeps it building and running (the
# figures come from `cargo bench --bench hotpaths`).
RDSCRED_BENCH_QUICK=1 cargo test --locked --bench hotpaths
# Event-driven change detection: latency with events vs polling, calls per hour (quick mode;
# the figures come from `cargo bench --bench events`).
RDSCRED_BENCH_QUICK=1 cargo test --locked --bench events
# Rotation under concurrency: failed logins, rotation time spaced vs back to back, rollout
# complete -> next rotation (quick mode; the figures come from `cargo bench --bench rotation`).
RDSCRED_BENCH_QUICK=1 cargo test --locked --bench rotation
# Scale: the controller process against the served emulator, moto (calls counted on the wire)
# and both databases: time to Ready, RSS, CPU, calls, propagation (quick mode, N=20; the
# figures come from `cargo bench --bench scale`, RDSCRED_SCALE_N=100 / 1000).
RDSCRED_BENCH_QUICK=1 cargo test --locked --bench scale

bash tests/chart/run.sh

# Delivery: the image's build context built with the Dockerfile's own cargo command (a release
# build into target/image-context, kept between runs), hadolint, actionlint on the workflows.
"$RDSCRED_TEST_VENV/bin/python" -m pytest -q -p no:cacheprovider tests/delivery
