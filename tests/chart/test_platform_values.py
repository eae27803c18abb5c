"""What platform teams set on a controller chart (issue 17): common labels, rollout and
scheduling knobs, ServiceAccount token mounting, aggregation into the built-in edit/admin/view
roles, monitoring objects only where the cluster serves their kinds, and install notes whose
commands work."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import MONITORING_APIS, NAMESPACE, RELEASE, ROOT, container, env_of, find, helm, one, render, render_raw, rules_by_resource

PLATFORM = {
    "commonLabels": {"team": "platform", "cost-centre": "c42"},
    "revisionHistoryLimit": 2,
    "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
    "podAnnotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "true"},
    "priorityClassName": "system-cluster-critical",
    "topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "rdscred"}}}
    ],
    "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
    "extraArgs": ["--rollouts-per-minute=10"],
    "serviceAccount": {"automount": False},
    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
}


def test_platform_values_lint_and_render():
    report = helm.lint(str(ROOT / "charts" / "rdscred"), PLATFORM, strict=True, namespace=NAMESPACE, kube_version="v1.30.0")
    assert report["errors"] == [], report
    objects = render(PLATFORM)
    for o in objects:
        labels = o["metadata"].get("labels", {})
        assert labels.get("team") == "platform" and labels.get("cost-centre") == "c42", (o["kind"], o["metadata"]["name"])
    dep = one(objects, "Deployment")
    spec = dep["spec"]
    assert spec["revisionHistoryLimit"] == 2
    assert spec["strategy"] == PLATFORM["updateStrategy"]
    # Selectors stay the immutable pair; the pods carry the common labels too.
    assert spec["selector"]["matchLabels"] == {"app.kubernetes.io/name": "rdscred", "app.kubernetes.io/instance": RELEASE}
    pod = spec["template"]
    assert pod["metadata"]["labels"]["team"] == "platform"
    assert pod["metadata"]["annotations"] == PLATFORM["podAnnotations"]
    assert pod["spec"]["priorityClassName"] == "system-cluster-critical"
    assert pod["spec"]["topologySpreadConstraints"] == PLATFORM["topologySpreadConstraints"]
    c = container(objects)
    assert env_of(c)["HTTPS_PROXY"] == "http://proxy:3128"
    assert c["args"][-1] == "--rollouts-per-minute=10"
    assert c["resources"]["limits"]["cpu"] == "500m"
    # A ServiceAccount without automount, a pod that mounts its token anyway.
    assert one(objects, "ServiceAccount")["automountServiceAccountToken"] is False
    assert pod["spec"]["automountServiceAccountToken"] is True


def test_defaults_keep_rolling_with_a_standby_and_no_cpu_limit():
    objects = render()
    dep = one(objects, "Deployment")
    assert dep["spec"]["revisionHistoryLimit"] == 5
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert one(objects, "ServiceAccount")["automountServiceAccountToken"] is True
    assert "cpu" not in container(objects)["resources"]["limits"]


def test_image_digest_pins_the_image():
    digest = "sha256:" + "b" * 64
    c = container(render({"image": {"digest": digest, "tag": "9.9.9"}}))
    assert c["image"] == f"ghcr.io/rdscred/rdscred@{digest}"


def test_aggregated_roles_for_namespace_users():
    objects = render()
    edit = one(objects, "ClusterRole", "rdscred-edit")
    view = one(objects, "ClusterRole", "rdscred-view")
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert "rbac.authorization.k8s.io/aggregate-to-view" not in edit["metadata"]["labels"]
    for label in ("view", "edit", "admin"):
        assert view["metadata"]["labels"][f"rbac.authorization.k8s.io/aggregate-to-{label}"] == "true"
    assert rules_by_resource(edit["rules"]) == {("rdscred.io", "rdscredentials"): {"create", "update", "patch", "delete"}}
    read = {"get", "list", "watch"}
    assert rules_by_resource(view["rules"]) == {
        ("rdscred.io", "rdscredentials"): read,
        ("rdscred.io", "rdscredentials/status"): read,
        ("rdscred.io", "rdsdatabases"): read,
        ("rdscred.io", "rdsdatabases/status"): read,
    }
    # Nothing binds them: the built-in roles aggregate them.
    bound = {o["roleRef"]["name"] for o in objects if o["kind"] in ("ClusterRoleBinding", "RoleBinding")}
    assert not bound & {"rdscred-edit", "rdscred-view"}
    assert find(render({"rbac": {"aggregateToDefaultRoles": False}}), "ClusterRole", "rdscred-edit") == []


def test_monitoring_objects_only_where_the_cluster_serves_them():
    values = {"metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}}
    without = render_raw(values)
    kinds = {o["kind"] for o in render(values)}
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}
    notes = without["rdscred/templates/NOTES.txt"]
    assert "does not serve\nmonitoring.coreos.com/v1 ServiceMonitor" in notes
    assert "does not serve\nmonitoring.coreos.com/v1 PrometheusRule" in notes
    assert "--api-versions monitoring.coreos.com/v1/ServiceMonitor" in notes
    # Lint (no such kinds known) stays clean with monitoring enabled.
    report = helm.lint(str(ROOT / "charts" / "rdscred"), values, strict=True, namespace=NAMESPACE, kube_version="v1.30.0")
    assert report["errors"] == [], report

    served = render(values, api_versions=MONITORING_APIS)
    assert {"ServiceMonitor", "PrometheusRule"} <= {o["kind"] for o in served}
    notes = render_raw(values, api_versions=MONITORING_APIS)["rdscred/templates/NOTES.txt"]
    assert "does not serve" not in notes
    # One kind served, the other not.
    partial = render(values, api_versions=MONITORING_APIS[:1])
    assert [o["kind"] for o in partial if o["kind"] in ("ServiceMonitor", "PrometheusRule")] == ["ServiceMonitor"]


def test_notes_crd_commands_name_files_that_exist():
    notes = render_raw()["rdscred/templates/NOTES.txt"]
    urls = re.findall(r"https://raw\.githubusercontent\.com/rdscred/rdscred/v[^/]+/(\S+)", notes)
    assert urls, notes
    assert sorted(urls) == sorted(f"crds/{p.name}" for p in (ROOT / "crds").glob("*.yaml"))
    # One file per -f: kubectl cannot apply a directory URL.
    assert not re.search(r"raw\.githubusercontent\.com\S*/crds/\s", notes)
    assert "kubectl apply --server-side --force-conflicts" in notes
    assert "helm show crds" in notes


def test_notes_iam_policy_command_runs(tmp_path):
    """The iam-policy line of the notes, placeholders filled in, with --region twice."""
    binary = Path(os.environ.get("RDSCRED_BIN", ROOT / "target" / "debug" / "rdscred"))
    if not binary.is_file():
        pytest.skip(f"{binary} not built (cargo build --bin rdscred)")
    notes = render_raw()["rdscred/templates/NOTES.txt"]
    line = next(l for l in notes.splitlines() if " iam-policy " in l)
    args = line.split(" iam-policy ", 1)[1].split()
    fill = {"<region>": "eu-west-1", "<id>": "123456789012", "<prefix>": "rdscred/orders/"}
    args = [fill.get(a, a) for a in args] + ["--region", "eu-central-1"]
    out = subprocess.run([str(binary), "iam-policy", *args], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rdscred/orders/*" in out.stdout
    assert "arn:aws:secretsmanager:eu-central-1:123456789012:secret:rdscred/orders/*" in out.stdout
