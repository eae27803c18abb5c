"""The Argo CD resource actions for RdsCredential (deploy/argocd/resource_customizations/
rdscred.io/RdsCredential/actions, Argo CD's layout) run by a real Lua 5.1 interpreter (Argo CD
embeds gopher-lua), the argocd-cm snippet carrying exactly those scripts, and the annotation
names equal to the ones the controller reads (src/reconcile/credential/mod.rs)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from test_argocd_health import LUA, SNIPPET, lua_literal, needs_lua

ROOT = Path(__file__).resolve().parents[2]
ACTIONS = ROOT / "deploy" / "argocd" / "resource_customizations" / "rdscred.io" / "RdsCredential" / "actions"
DISCOVERY = ACTIONS / "discovery.lua"
ACTION_NAMES = ["rotate", "refresh"]
ROTATE = "rdscred.io/rotate-requested-at"
REFRESH = "rdscred.io/refresh-requested-at"

# Prints a flat table of strings/booleans as `key=value` lines, sorted (no JSON library in Lua 5.1).
DUMP = """
local function dump(t)
  local keys = {}
  for k, _ in pairs(t or {}) do table.insert(keys, k) end
  table.sort(keys)
  for _, k in ipairs(keys) do io.write(k, "=", tostring(t[k]), "\\n") end
end
"""


def run_lua(tmp_path: Path, obj: dict, body: str) -> dict[str, str]:
    harness = tmp_path / "harness.lua"
    harness.write_text(f"obj = {lua_literal(obj)}\n{DUMP}\n{body}\n")
    out = subprocess.run([LUA, str(harness)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return dict(line.split("=", 1) for line in out.stdout.splitlines())


def discover(obj: dict, tmp_path: Path) -> dict[str, str]:
    """Action name -> its `disabled` flag ("true"/"false")."""
    return run_lua(
        tmp_path,
        obj,
        f"local actions = dofile({json.dumps(str(DISCOVERY))})\n"
        "local flags = {}\n"
        "for name, a in pairs(actions) do flags[name] = a.disabled == true end\n"
        "dump(flags)",
    )


def act(name: str, obj: dict, tmp_path: Path) -> dict[str, str]:
    """The annotations of the object the action returns."""
    script = ACTIONS / name / "action.lua"
    return run_lua(
        tmp_path,
        obj,
        f"local out = dofile({json.dumps(str(script))})\n"
        "assert(out.metadata.name == 'x' and out.spec ~= nil, 'the action returns the whole object')\n"
        "dump(out.metadata.annotations)",
    )


def cred(annotations: dict | None = None, rotation: dict | None = None, status: dict | None = None) -> dict:
    o = {
        "apiVersion": "rdscred.io/v1alpha1",
        "kind": "RdsCredential",
        "metadata": {"name": "x", "namespace": "shop", "generation": 1},
        "spec": {"databaseRef": {"name": "orders"}, "username": "app"},
    }
    if annotations is not None:
        o["metadata"]["annotations"] = annotations
    if rotation is not None:
        o["spec"]["rotation"] = rotation
    if status is not None:
        o["status"] = status
    return o


def assert_now_rfc3339(value: str):
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", value), value
    at = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert abs((datetime.now(timezone.utc) - at).total_seconds()) < 60, "UTC now, not local time"


@needs_lua
def test_both_actions_offered_for_a_plain_credential(tmp_path):
    assert discover(cred(), tmp_path) == {"rotate": "false", "refresh": "false"}


@needs_lua
def test_rotate_disabled_when_a_lambda_rotates(tmp_path):
    flags = discover(cred(rotation={"rotator": "lambda", "lambdaArn": "arn:aws:lambda:eu-west-1:1:function:r"}), tmp_path)
    assert flags == {"rotate": "true", "refresh": "false"}


@needs_lua
def test_rotate_offered_when_the_controller_rotates(tmp_path):
    assert discover(cred(rotation={"rotator": "controller"}), tmp_path)["rotate"] == "false"


@needs_lua
def test_rotate_disabled_while_a_request_is_pending(tmp_path):
    pending = cred(annotations={ROTATE: "2026-01-02T00:00:00Z"}, status={"lastRotationRequest": "2026-01-01T00:00:00Z"})
    assert discover(pending, tmp_path)["rotate"] == "true"
    no_status = cred(annotations={ROTATE: "2026-01-02T00:00:00Z"})
    assert discover(no_status, tmp_path)["rotate"] == "true"


@needs_lua
def test_rotate_offered_again_once_the_request_was_served(tmp_path):
    served = cred(annotations={ROTATE: "2026-01-02T00:00:00Z"}, status={"lastRotationRequest": "2026-01-02T00:00:00Z"})
    assert discover(served, tmp_path)["rotate"] == "false"


@needs_lua
@pytest.mark.parametrize("name,key", [("rotate", ROTATE), ("refresh", REFRESH)])
def test_action_sets_its_annotation_to_now_on_an_object_without_annotations(name, key, tmp_path):
    annotations = act(name, cred(), tmp_path)
    assert list(annotations) == [key]
    assert_now_rfc3339(annotations[key])


@needs_lua
@pytest.mark.parametrize("name,key", [("rotate", ROTATE), ("refresh", REFRESH)])
def test_action_keeps_other_annotations_and_replaces_an_old_value(name, key, tmp_path):
    annotations = act(name, cred(annotations={"team": "shop", key: "2020-01-01T00:00:00Z"}), tmp_path)
    assert annotations["team"] == "shop"
    assert annotations[key] != "2020-01-01T00:00:00Z"
    assert_now_rfc3339(annotations[key])


@needs_lua
def test_refresh_does_not_request_a_rotation(tmp_path):
    assert ROTATE not in act("refresh", cred(), tmp_path)


def test_annotation_names_are_the_controllers():
    src = (ROOT / "src" / "reconcile" / "credential" / "mod.rs").read_text()
    assert f'pub const ROTATE_ANNOTATION: &str = "{ROTATE}";' in src
    assert f'pub const REFRESH_ANNOTATION: &str = "{REFRESH}";' in src
    for path in [DISCOVERY, ACTIONS / "rotate" / "action.lua", ACTIONS / "refresh" / "action.lua"]:
        names = set(re.findall(r'"(rdscred\.io/[a-z-]+)"', path.read_text()))
        assert names <= {ROTATE, REFRESH}, (path, names)


def test_argocd_cm_snippet_carries_the_action_scripts():
    cm = yaml.safe_load(SNIPPET.read_text())
    actions = yaml.safe_load(cm["data"]["resource.customizations.actions.rdscred.io_RdsCredential"])
    assert actions["discovery.lua"] == DISCOVERY.read_text()
    assert [d["name"] for d in actions["definitions"]] == ACTION_NAMES
    for d in actions["definitions"]:
        assert d["action.lua"] == (ACTIONS / d["name"] / "action.lua").read_text()
    assert sorted(p.name for p in ACTIONS.iterdir() if p.is_dir()) == sorted(ACTION_NAMES)


JQ = shutil.which("jq")
DOCS = ROOT / "docs" / "argocd.md"


def documented_jq_paths(kind: str) -> list[str]:
    block = re.search(r"resource\.customizations\.ignoreDifferences\." + re.escape(kind) + r": \|\n\s+jqPathExpressions:\n((?:\s+- '.+'\n)+)", DOCS.read_text())
    assert block, f"docs/argocd.md shows the ignoreDifferences setting for {kind}"
    return re.findall(r"- '(.+)'", block.group(1))


def documented_jq_path() -> str:
    (path,) = documented_jq_paths("apps_Deployment")
    return path


def written_keys() -> list[str]:
    rollout_rs = (ROOT / "src" / "propagation" / "rollout.rs").read_text()
    restarted = re.search(r'pub const RESTARTED_AT_ANNOTATION: &str = "([^"]+)";', rollout_rs).group(1)
    version_fmt = re.search(r'format!\("\{secret_name\}(\.[^"]+)"\)', rollout_rs).group(1)
    return [restarted, "db-app" + version_fmt, "other" + version_fmt]


def annotations(written):
    return {
        **{k: "x" for k in written},
        "team": "shop",  # the user's own: still compared
        "rdscred.io/restartedAt.bak": "y",
        "version-id": "z",
    }


def jq_paths(expressions, obj):
    paths = []
    for e in expressions:
        out = subprocess.run([JQ, "-c", f"path({e})"], input=json.dumps(obj), capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        paths += [json.loads(line) for line in out.stdout.splitlines()]
    return paths


@pytest.mark.skipif(JQ is None, reason="jq not installed")
def test_documented_ignore_differences_selects_exactly_what_the_controller_writes():
    written = written_keys()
    rolled = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "spec": {"template": {"metadata": {"annotations": annotations(written)}}},
    }
    paths = jq_paths([documented_jq_path()], rolled)
    assert sorted(paths) == sorted(["spec", "template", "metadata", "annotations", k] for k in written)


@pytest.mark.skipif(JQ is None, reason="jq not installed")
def test_documented_ignore_differences_for_cronjobs_and_rollouts():
    written = written_keys()
    cronjob = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        # The CronJob's own annotations are not what rdscred writes: still compared.
        "metadata": {"annotations": annotations(written)},
        "spec": {"jobTemplate": {"spec": {"template": {"metadata": {"annotations": annotations(written)}}}}},
    }
    paths = jq_paths(documented_jq_paths("batch_CronJob"), cronjob)
    assert sorted(paths) == sorted(["spec", "jobTemplate", "spec", "template", "metadata", "annotations", k] for k in written)
    # What the controller writes (rollout.rs restart_patch + kinds.rs rollout_restart_patch).
    kinds_rs = (ROOT / "src" / "propagation" / "kinds.rs").read_text()
    assert '"spec": { "restartAt"' in kinds_rs
    rollout = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"annotations": annotations(written)},
        "spec": {
            "restartAt": "2026-12-02T13:00:00Z",
            "paused": False,
            # The pod template is never written by rdscred for a Rollout: still compared.
            "template": {"metadata": {"annotations": annotations(written)}},
        },
    }
    paths = jq_paths(documented_jq_paths("argoproj.io_Rollout"), rollout)
    assert sorted(paths) == sorted([["spec", "restartAt"]] + [["metadata", "annotations", k] for k in written])
    # Harmless on objects without any of it.
    assert jq_paths(documented_jq_paths("argoproj.io_Rollout"), {"spec": {}, "metadata": {}}) == [["spec", "restartAt"]]
    assert jq_paths(documented_jq_paths("batch_CronJob"), {"spec": {"jobTemplate": {"spec": {"template": {"metadata": {}}}}}}) == []


@pytest.mark.skipif(JQ is None, reason="jq not installed")
def test_documented_ignore_differences_is_harmless_without_annotations():
    out = subprocess.run([JQ, "-c", f"path({documented_jq_path()})"], input=json.dumps({"spec": {"template": {"metadata": {}}}}), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == "", out.stderr
