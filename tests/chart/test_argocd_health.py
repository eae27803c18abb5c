"""The Argo CD health check (deploy/argocd/health.lua) run by a real Lua 5.1 interpreter
(Argo CD embeds gopher-lua, a Lua 5.1 implementation) against sample objects of both kinds,
and the argocd-cm snippet carrying exactly that script."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HEALTH = ROOT / "deploy" / "argocd" / "health.lua"
SNIPPET = ROOT / "deploy" / "argocd" / "argocd-cm-snippet.yaml"
LUA = shutil.which("lua5.1") or shutil.which("lua")


def lua_literal(v) -> str:
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are valid Lua for the ASCII used here
    if isinstance(v, list):
        return "{" + ", ".join(lua_literal(x) for x in v) + "}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"[{json.dumps(k)}] = {lua_literal(x)}" for k, x in v.items() if x is not None) + "}"
    raise TypeError(type(v))


def health(obj: dict, tmp_path: Path) -> tuple[str, str]:
    harness = tmp_path / "harness.lua"
    harness.write_text(
        f"obj = {lua_literal(obj)}\n"
        f"local hs = dofile({json.dumps(str(HEALTH))})\n"
        'io.write(tostring(hs.status), "\\n", tostring(hs.message), "\\n")\n'
    )
    out = subprocess.run([LUA, str(harness)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    status, message = out.stdout.split("\n", 1)
    return status, message.rstrip("\n")


def obj(kind: str, generation: int = 2, status: dict | None = None) -> dict:
    o = {
        "apiVersion": "rdscred.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x", "generation": generation},
        "spec": {},
    }
    if kind == "RdsCredential":
        o["metadata"]["namespace"] = "shop"
    if status is not None:
        o["status"] = status
    return o


def cond(type_: str, status: str, reason: str = "", message: str = "") -> dict:
    return {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": "2026-01-01T00:00:00Z"}


KINDS = ["RdsCredential", "RdsDatabase"]
needs_lua = pytest.mark.skipif(LUA is None, reason="lua5.1 not installed (tests/chart/run.sh installs it)")


@needs_lua
@pytest.mark.parametrize("kind", KINDS)
def test_no_status_is_progressing(kind, tmp_path):
    assert health(obj(kind), tmp_path)[0] == "Progressing"


@needs_lua
@pytest.mark.parametrize("kind", KINDS)
def test_generation_not_observed_is_progressing(kind, tmp_path):
    st = {"observedGeneration": 1, "conditions": [cond("Ready", "True", "Ready", "ok")]}
    status, message = health(obj(kind, generation=2, status=st), tmp_path)
    assert status == "Progressing"
    assert "generation 2" in message
    st.pop("observedGeneration")
    assert health(obj(kind, generation=2, status=st), tmp_path)[0] == "Progressing"


@needs_lua
@pytest.mark.parametrize("kind", KINDS)
def test_ready_true_is_healthy(kind, tmp_path):
    st = {"observedGeneration": 2, "conditions": [cond("Ready", "True", "Synced", "AWSCURRENT synced")]}
    assert health(obj(kind, status=st), tmp_path) == ("Healthy", "Synced: AWSCURRENT synced")


@needs_lua
@pytest.mark.parametrize("kind", KINDS)
def test_ready_false_is_degraded_with_message(kind, tmp_path):
    st = {
        "observedGeneration": 2,
        "conditions": [cond("SecretReady", "True"), cond("Ready", "False", "AccessDenied", "secretsmanager:CreateSecret denied")],
    }
    assert health(obj(kind, status=st), tmp_path) == ("Degraded", "AccessDenied: secretsmanager:CreateSecret denied")


@needs_lua
def test_rotating_is_progressing(tmp_path):
    st = {"observedGeneration": 2, "conditions": [cond("Ready", "True", "Ready", "ok"), cond("Rotating", "True", "SetSecret", "rotation in progress")]}
    assert health(obj("RdsCredential", status=st), tmp_path) == ("Progressing", "SetSecret: rotation in progress")
    st["conditions"][1]["status"] = "False"
    assert health(obj("RdsCredential", status=st), tmp_path)[0] == "Healthy"


@needs_lua
def test_degraded_wins_over_rotating(tmp_path):
    st = {"observedGeneration": 2, "conditions": [cond("Ready", "False", "RotationFailed", "testSecret failed"), cond("Rotating", "True")]}
    assert health(obj("RdsCredential", status=st), tmp_path)[0] == "Degraded"


def kstatus(ready: str, reason: str, message: str, reconciling: str, stalled: str) -> list[dict]:
    return [
        cond("Ready", ready, reason, message),
        cond("Reconciling", reconciling, reason, message),
        cond("Stalled", stalled, reason, message),
    ]


@needs_lua
@pytest.mark.parametrize("kind", KINDS)
def test_stalled_is_degraded(kind, tmp_path):
    st = {"observedGeneration": 2, "conditions": kstatus("False", "NamespaceNotAdmitted", "namespace shop is not admitted", "False", "True")}
    assert health(obj(kind, status=st), tmp_path) == ("Degraded", "NamespaceNotAdmitted: namespace shop is not admitted")


@needs_lua
@pytest.mark.parametrize("kind", KINDS)
def test_reconciling_is_progressing_although_ready_is_false(kind, tmp_path):
    st = {"observedGeneration": 2, "conditions": kstatus("False", "DatabaseNotReady", "RdsDatabase orders is not Ready", "True", "False")}
    assert health(obj(kind, status=st), tmp_path) == ("Progressing", "DatabaseNotReady: RdsDatabase orders is not Ready")


@needs_lua
@pytest.mark.parametrize("kind", KINDS)
def test_ready_with_false_kstatus_conditions_is_healthy(kind, tmp_path):
    st = {"observedGeneration": 2, "conditions": kstatus("True", "Ready", "ok", "False", "False")}
    assert health(obj(kind, status=st), tmp_path) == ("Healthy", "Ready: ok")


@needs_lua
def test_ready_while_a_rotation_waits_for_rollouts_is_progressing(tmp_path):
    # What the controller writes: the credential works (Ready) while a due rotation waits.
    st = {"observedGeneration": 2, "conditions": [
        cond("Ready", "True", "Ready", "ok"),
        cond("Reconciling", "True", "Waiting", "waiting for Deployment api to finish rolling out"),
        cond("Stalled", "False", "Ready", "ok"),
        cond("Rotating", "False", "Waiting", "waiting for Deployment api to finish rolling out"),
    ]}
    assert health(obj("RdsCredential", status=st), tmp_path) == (
        "Progressing", "Waiting: waiting for Deployment api to finish rolling out")


@needs_lua
def test_stalled_wins_over_a_stale_reconciling(tmp_path):
    # Never both True from rdscred; if a hand-edited status says so, a person is asked for.
    st = {"observedGeneration": 2, "conditions": kstatus("False", "InvalidSpec", "bad", "True", "True")}
    assert health(obj("RdsCredential", status=st), tmp_path)[0] == "Degraded"


@needs_lua
def test_drift_is_reported_in_the_message(tmp_path):
    st = {"observedGeneration": 2, "conditions": [cond("Ready", "True", "Ready", "ok"), cond("Drifted", "True", "Drifted", "AWSCURRENT does not log in")]}
    status, message = health(obj("RdsCredential", status=st), tmp_path)
    assert status == "Healthy" and "drift detected" in message


@needs_lua
@pytest.mark.parametrize("kind", KINDS)
def test_missing_or_unknown_ready_is_progressing(kind, tmp_path):
    assert health(obj(kind, status={"observedGeneration": 2}), tmp_path)[0] == "Progressing"
    assert health(obj(kind, status={"observedGeneration": 2, "conditions": []}), tmp_path)[0] == "Progressing"
    st = {"observedGeneration": 2, "conditions": [cond("Ready", "Unknown", "Reconciling", "")]}
    assert health(obj(kind, status=st), tmp_path) == ("Progressing", "Reconciling: Ready condition is Unknown")


@needs_lua
def test_no_generation_in_metadata(tmp_path):
    o = obj("RdsDatabase", status={"conditions": [cond("Ready", "True", "Ready", "admin login works")]})
    del o["metadata"]["generation"]
    assert health(o, tmp_path)[0] == "Healthy"


def test_argocd_cm_snippet_carries_the_script_for_both_kinds():
    cm = yaml.safe_load(SNIPPET.read_text())
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "argocd-cm"
    script = HEALTH.read_text()
    health = {k: v for k, v in cm["data"].items() if k.startswith("resource.customizations.health.")}
    assert health == {
        "resource.customizations.health.rdscred.io_RdsCredential": script,
        "resource.customizations.health.rdscred.io_RdsDatabase": script,
    }
