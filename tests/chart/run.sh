#!/usr/bin/env bash
# Chart, examples and Argo CD health-check tests (pytest + the real Helm library from
# helm-python-sdk; Lua 5.1 for the Argo CD health script, as Argo CD's gopher-lua).
#   VENV=.venv tests/chart/run.sh [pytest args...]
# The venv comes from `scripts/test-env.sh up`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
VENV="${VENV:-.venv}"

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import helm_python, pytest, yaml' 2>/dev/null; then
  echo "[chart-tests] $VENV lacks helm-python-sdk/pytest/pyyaml: run scripts/test-env.sh up" >&2
  exit 1
fi

if ! command -v lua5.1 >/dev/null 2>&1; then
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"; else return 1; fi; }
  echo "[chart-tests] installing lua5.1 (Debian) for the Argo CD health-check tests" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
    && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lua5.1 >/dev/null \
    || echo "[chart-tests] could not install lua5.1; the Lua tests will be skipped" >&2
fi

exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/chart "$@"
