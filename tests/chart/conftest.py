"""Shared helpers for the chart tests: render charts/rdscred with the real Helm library
(helm-python-sdk bundles Helm v4's Go SDK) and parse the output into objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "rdscred"
RELEASE = "rdscred"
NAMESPACE = "rdscred-system"

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed (scripts/test-env.sh up)")

# The kinds a cluster with the Prometheus Operator serves beyond the built-in ones.
MONITORING_APIS = ["monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PrometheusRule"]


def render_raw(
    values: dict[str, Any] | None = None,
    *,
    namespace: str = NAMESPACE,
    name: str = RELEASE,
    api_versions: list[str] | None = None,
) -> dict[str, str]:
    """Rendered templates by path. `api_versions`: what `.Capabilities.APIVersions` holds
    beyond the built-in kinds (helm's --api-versions)."""
    with helm.Chart.load(str(CHART)) as chart:
        if not api_versions:
            return chart.render(values or {}, name=name, namespace=namespace, is_install=True)
        # helm-python-sdk's render() does not pass api_versions on; its Helm library takes them.
        import json

        from helm_python import _native

        opts = {"name": name, "namespace": namespace, "is_install": True, "api_versions": api_versions}
        return json.loads(_native.call_string("helm_render", chart._raw(), json.dumps(values or {}), json.dumps(opts)))


def render(
    values: dict[str, Any] | None = None,
    *,
    namespace: str = NAMESPACE,
    name: str = RELEASE,
    api_versions: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Rendered Kubernetes objects (NOTES.txt excluded), in template order."""
    objects: list[dict[str, Any]] = []
    for path, text in sorted(render_raw(values, namespace=namespace, name=name, api_versions=api_versions).items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("_template", path)
                objects.append(doc)
    return objects


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None, namespace: str | None = None) -> list[dict[str, Any]]:
    return [
        o
        for o in objects
        if o["kind"] == kind
        and (name is None or o["metadata"]["name"] == name)
        and (namespace is None or o["metadata"].get("namespace") == namespace)
    ]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None, namespace: str | None = None) -> dict[str, Any]:
    found = find(objects, kind, name, namespace)
    assert len(found) == 1, f"expected exactly one {kind} {name or ''} in {namespace or 'any namespace'}, got {len(found)}"
    return found[0]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    dep = one(objects, "Deployment")
    containers = dep["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    """Container env as name -> value (or the valueFrom dict)."""
    out: dict[str, Any] = {}
    for e in c.get("env", []):
        assert e["name"] not in out, f"duplicate env {e['name']}"
        out[e["name"]] = e["value"] if "value" in e else e["valueFrom"]
    return out


def rules_by_resource(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> union of verbs over all rules."""
    out: dict[tuple[str, str], set[str]] = {}
    for r in rules:
        for g in r["apiGroups"]:
            for res in r["resources"]:
                out.setdefault((g, res), set()).update(r["verbs"])
    return out
