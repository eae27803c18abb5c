"""Helm chart tests: lint and render charts/rdscred with the real Helm library and check the
rendered objects (RBAC, security context, IRSA, probes, args/env, monitoring, PDB,
NetworkPolicy), the values schema, and that the chart's CRDs equal the top-level crds/."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from conftest import CHART, MONITORING_APIS, NAMESPACE, RELEASE, ROOT, container, env_of, find, helm, one, render, render_raw, rules_by_resource

# Value sets the chart is rendered and linted with.
VALUE_SETS = {
    "defaults": {},
    "namespaced": {"watchNamespaces": ["team-a", "team-b"]},
    "monitoring": {"metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True, "rotationOverdueSeconds": 3888000}}},
    "irsa": {"serviceAccount": {"irsaRoleArn": "arn:aws:iam::123456789012:role/rdscred"}},
    "pdb-off-netpol-on": {"podDisruptionBudget": {"enabled": False}, "networkPolicy": {"enabled": True}},
    "single-replica": {"replicaCount": 1, "leaderElection": {"enabled": False}},
    "sharded": {"replicaCount": 3, "shards": 3},
    "events": {
        "watchNamespaces": ["apps"],
        "events": {
            "queueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/rdscred-events",
            "roleArn": "arn:aws:iam::123456789012:role/rdscred-events",
            "backstopInterval": "1h",
        },
    },
    "everything": {
        "watchNamespaces": ["apps"],
        "clusterName": "prod-eu-1",
        "aws": {"region": "eu-west-1", "endpointUrl": "http://127.0.0.1:5000"},
        "log": {"format": "text", "level": "info,rdscred=debug"},
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}, "prometheusRule": {"enabled": True}},
        "networkPolicy": {
            "enabled": True,
            "apiServer": {"cidrs": ["10.0.0.0/16"], "ports": [443]},
            "databases": {"cidrs": ["10.1.0.0/16"], "ports": [5432]},
            "metrics": {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
        },
        "serviceAccount": {"irsaRoleArn": "arn:aws:iam::123456789012:role/rdscred", "annotations": {"x": "y"}},
        "image": {"digest": "sha256:" + "a" * 64},
        "extraArgs": ["--poll-interval=1m"],
        "extraEnv": [{"name": "FOO", "value": "bar"}],
        "podAnnotations": {"a": "b"},
        "tolerations": [{"key": "dedicated", "operator": "Exists"}],
    },
}

# Exactly what the controller uses; the Rust suite proves it (any 403 fails a test, and
# rbac::chart_grants_nothing_the_suite_did_not_use fails on a verb no test exercised).
SECRETS_VERBS = {"get", "list", "watch", "create", "patch"}
WORKLOAD_VERBS = {"get", "list", "patch"}
EXPECTED_NAMESPACED = {
    ("rdscred.io", "rdscredentials"): {"get", "list", "watch", "patch"},
    ("rdscred.io", "rdscredentials/status"): {"patch"},
    ("", "secrets"): SECRETS_VERBS,
    ("events.k8s.io", "events"): {"create", "patch"},
    ("apps", "deployments"): WORKLOAD_VERBS,
    ("apps", "statefulsets"): WORKLOAD_VERBS,
    ("apps", "daemonsets"): WORKLOAD_VERBS,
    # workloads.cronJobs.enabled (the default): the job template, and the running Jobs.
    ("batch", "cronjobs"): WORKLOAD_VERBS,
    ("batch", "jobs"): {"get"},
}
# workloads.argoRollouts.enabled only.
EXPECTED_ROLLOUTS = {("argoproj.io", "rollouts"): WORKLOAD_VERBS}
EXPECTED_DATABASES = {
    ("rdscred.io", "rdsdatabases"): {"get", "list", "watch"},
    ("rdscred.io", "rdsdatabases/status"): {"patch"},
}
DOCUMENTED_METRICS = {
    "rdscred_rotations_total",
    "rdscred_credentials",
    "rdscred_drift_detected_total",
    "rdscred_seconds_since_last_rotation",
    "rdscred_reconcile_errors_total",
    "rdscred_drifted",
    "rdscred_leader",
    "rdscred_shards_held",
}
# Environment variables the controller's CLI reads (see `rdscred run --help`).
KNOWN_ENV = {
    "RDSCRED_CLUSTER_NAME",
    "RDSCRED_WATCH_NAMESPACES",
    "RDSCRED_CONCURRENCY",
    "RDSCRED_MAX_CONCURRENT_ROTATIONS",
    "RDSCRED_POLL_INTERVAL",
    "RDSCRED_DRIFT_INTERVAL",
    "RDSCRED_MIN_ROTATION_INTERVAL",
    "RDSCRED_ROLLOUTS_PER_MINUTE",
    "RDSCRED_CRONJOBS",
    "RDSCRED_ARGO_ROLLOUTS",
    "RDSCRED_AWS_CREATE_SECRETS_PER_SECOND",
    "RDSCRED_DRIFT_CHECKS_PER_SECOND",
    "RDSCRED_DRIFT_CONCURRENCY",
    "AWS_REGION",
    "RDSCRED_AWS_ENDPOINT_URL",
    "RDSCRED_CONTROLLER_ROLE_ARN",
    "RDSCRED_LOG_FORMAT",
    "RUST_LOG",
    "RDSCRED_HTTP_ADDR",
    "RDSCRED_LEADER_ELECT",
    "POD_NAMESPACE",
    "POD_NAME",
    "RDSCRED_EVENTS_QUEUE_URL",
    "RDSCRED_EVENTS_REGION",
    "RDSCRED_EVENTS_ROLE_ARN",
    "RDSCRED_EVENTS_BACKSTOP_INTERVAL",
}


def merged(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merged(out[k], v)
        else:
            out[k] = v
    return out


def all_rbac_rules(objects):
    for o in objects:
        if o["kind"] in ("Role", "ClusterRole"):
            for r in o.get("rules", []):
                yield o, r


# ----------------------------------------------------------------------------- lint


@pytest.mark.parametrize("set_name", sorted(VALUE_SETS))
def test_lint_is_clean(set_name):
    report = helm.lint(str(CHART), VALUE_SETS[set_name], strict=True, namespace=NAMESPACE, kube_version="v1.30.0")
    assert report["errors"] == [], report
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [], problems


@pytest.mark.parametrize("set_name", sorted(VALUE_SETS))
def test_every_value_set_renders_valid_objects(set_name):
    objects = render(VALUE_SETS[set_name])
    assert objects
    for o in objects:
        assert o.get("apiVersion") and o.get("kind"), o
        name = o["metadata"]["name"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) and len(name) <= 63, name
        labels = o["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "rdscred"
        assert labels.get("app.kubernetes.io/instance") == RELEASE
        if o["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            assert "namespace" not in o["metadata"]
        elif o["kind"] not in ("Role", "RoleBinding"):
            assert o["metadata"].get("namespace") == NAMESPACE, (o["kind"], name)


# ----------------------------------------------------------------------------- deployment


def test_deployment_defaults():
    objects = render()
    dep = one(objects, "Deployment", "rdscred")
    assert dep["spec"]["replicas"] == 2
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "rdscred"
    assert dep["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "rdscred", "app.kubernetes.io/instance": RELEASE}
    for k, v in dep["spec"]["selector"]["matchLabels"].items():
        assert dep["spec"]["template"]["metadata"]["labels"][k] == v
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    c = container(objects)
    assert c["image"] == f"ghcr.io/rdscred/rdscred:{app_version}"
    assert c["args"] == ["run", "--leader-election-lease=rdscred-leader"]
    assert "command" not in c, "the image's ENTRYPOINT is /rdscred"
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    # Soft anti-affinity spreads the two replicas.
    assert "podAntiAffinity" in pod["affinity"]


def test_security_context():
    objects = render()
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == 65532
    assert psc["runAsGroup"] == 65532
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(objects)["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65532
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key)
    # A writable /tmp (memory-backed) since the root filesystem is read-only.
    assert {"name": "tmp", "mountPath": "/tmp"} in container(objects)["volumeMounts"]
    assert any(v["name"] == "tmp" and "emptyDir" in v for v in pod["volumes"])


def test_resources_and_probes():
    c = container(render())
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["periodSeconds"] >= 5


def test_env_defaults():
    env = env_of(container(render()))
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["RDSCRED_CLUSTER_NAME"] == "default"
    assert env["RDSCRED_CONCURRENCY"] == "8"
    assert env["RDSCRED_MAX_CONCURRENT_ROTATIONS"] == "4"
    assert env["RDSCRED_POLL_INTERVAL"] == "5m"
    assert env["RDSCRED_ROLLOUTS_PER_MINUTE"] == "30"
    assert env["RDSCRED_CRONJOBS"] == "true"
    assert env["RDSCRED_ARGO_ROLLOUTS"] == "false"
    assert env["RDSCRED_AWS_CREATE_SECRETS_PER_SECOND"] == "50"
    assert env["RDSCRED_DRIFT_CHECKS_PER_SECOND"] == "20"
    assert env["RDSCRED_DRIFT_CONCURRENCY"] == "2"
    assert env["RDSCRED_DRIFT_INTERVAL"] == "5m"
    assert env["RDSCRED_MIN_ROTATION_INTERVAL"] == "1h"
    assert env["RDSCRED_LOG_FORMAT"] == "json"
    assert env["RUST_LOG"] == "info"
    assert env["RDSCRED_HTTP_ADDR"] == "0.0.0.0:8080"
    assert env["RDSCRED_LEADER_ELECT"] == "true"
    # Unset optional settings are not passed at all (the SDK's provider chain decides).
    for absent in ("RDSCRED_WATCH_NAMESPACES", "AWS_REGION", "RDSCRED_AWS_ENDPOINT_URL", "RDSCRED_CONTROLLER_ROLE_ARN"):
        assert absent not in env
    assert set(env) <= KNOWN_ENV, set(env) - KNOWN_ENV


def test_env_and_args_from_values():
    objects = render(VALUE_SETS["everything"])
    c = container(objects)
    env = env_of(c)
    assert env["RDSCRED_WATCH_NAMESPACES"] == "apps"
    assert env["RDSCRED_CLUSTER_NAME"] == "prod-eu-1"
    assert env["AWS_REGION"] == "eu-west-1"
    assert env["RDSCRED_AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000"
    assert env["RDSCRED_LOG_FORMAT"] == "text"
    assert env["RUST_LOG"] == "info,rdscred=debug"
    assert env["FOO"] == "bar"
    assert c["args"] == ["run", "--leader-election-lease=rdscred-leader", "--poll-interval=1m"]
    assert c["image"] == "ghcr.io/rdscred/rdscred@sha256:" + "a" * 64
    pod = one(objects, "Deployment")["spec"]["template"]
    assert pod["metadata"]["annotations"] == {"a": "b"}
    assert pod["spec"]["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]


def test_create_secret_rate_value():
    env = env_of(container(render({"aws": {"createSecretsPerSecond": 2.5}})))
    assert env["RDSCRED_AWS_CREATE_SECRETS_PER_SECOND"] == "2.5"
    env = env_of(container(render({"aws": {"createSecretsPerSecond": 0}})))
    assert env["RDSCRED_AWS_CREATE_SECRETS_PER_SECOND"] == "0"
    env = env_of(container(render({"driftChecksPerSecond": 0.5, "driftConcurrency": 4})))
    assert env["RDSCRED_DRIFT_CHECKS_PER_SECOND"] == "0.5"
    assert env["RDSCRED_DRIFT_CONCURRENCY"] == "4"


def test_events_queue_values():
    assert not [k for k in env_of(container(render())) if k.startswith("RDSCRED_EVENTS_")], "polling only by default"
    objects = render(VALUE_SETS["events"])
    env = env_of(container(objects))
    assert env["RDSCRED_EVENTS_QUEUE_URL"] == "https://sqs.eu-west-1.amazonaws.com/123456789012/rdscred-events"
    assert env["RDSCRED_EVENTS_ROLE_ARN"] == "arn:aws:iam::123456789012:role/rdscred-events"
    assert env["RDSCRED_EVENTS_BACKSTOP_INTERVAL"] == "1h"
    assert "RDSCRED_EVENTS_REGION" not in env
    # A namespaced install may publish the queue's Events about its own Pod, and nothing more.
    role = one(objects, "Role", "rdscred-queue-events", NAMESPACE)
    assert rules_by_resource(role["rules"]) == {("events.k8s.io", "events"): {"create", "patch"}}
    assert find(render(VALUE_SETS["namespaced"]), "Role", "rdscred-queue-events") == []


def test_watch_namespaces_are_joined():
    env = env_of(container(render(VALUE_SETS["namespaced"])))
    assert env["RDSCRED_WATCH_NAMESPACES"] == "team-a,team-b"


def test_single_replica_without_leader_election():
    objects = render(VALUE_SETS["single-replica"])
    c = container(objects)
    assert c["args"] == ["run"]
    assert env_of(c)["RDSCRED_LEADER_ELECT"] == "false"
    assert not [o for o in objects if o["kind"] == "Role" and "leader" in o["metadata"]["name"]]
    assert find(objects, "PodDisruptionBudget") == [], "a PDB on a single replica would block node drains"


def test_image_tag_override():
    c = container(render({"image": {"tag": "v9.9.9"}}))
    assert c["image"] == "ghcr.io/rdscred/rdscred:v9.9.9"


# ----------------------------------------------------------------------------- RBAC


def test_rbac_cluster_wide_is_least_privilege():
    objects = render()
    cr = one(objects, "ClusterRole", "rdscred")
    got = rules_by_resource(cr["rules"])
    expected = {**EXPECTED_DATABASES, **EXPECTED_NAMESPACED, ("", "namespaces"): {"get"}}
    assert got == expected
    crb = one(objects, "ClusterRoleBinding", "rdscred")
    assert crb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "rdscred"}
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": "rdscred", "namespace": NAMESPACE}]
    # Cluster-wide: no per-namespace Roles beyond leader election.
    assert [r["metadata"]["name"] for r in find(objects, "Role")] == ["rdscred-leader-election"]


@pytest.mark.parametrize("set_name", sorted(VALUE_SETS))
def test_rbac_never_grants_wildcards_pods_or_escalation(set_name):
    for role, rule in all_rbac_rules(render(VALUE_SETS[set_name])):
        where = f"{role['kind']}/{role['metadata']['name']}"
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"{where}: wildcard in {field}"
        assert "nonResourceURLs" not in rule, where
        for res in rule["resources"]:
            assert not res.startswith("pods"), f"{where} grants {res}"
            assert res not in ("clusterroles", "roles", "clusterrolebindings", "rolebindings", "serviceaccounts", "serviceaccounts/token"), where
        for verb in rule["verbs"]:
            assert verb in {"get", "list", "watch", "create", "update", "patch", "delete"}, f"{where}: {verb}"
        if "secrets" in rule["resources"]:
            assert set(rule["verbs"]) == SECRETS_VERBS


@pytest.mark.parametrize("set_name", sorted(VALUE_SETS))
def test_leases_only_in_release_namespace(set_name):
    objects = render(VALUE_SETS[set_name])
    lease_roles = []
    for role, rule in all_rbac_rules(objects):
        if "leases" in rule["resources"]:
            assert role["kind"] == "Role", "leases must never be granted cluster-wide"
            assert role["metadata"]["namespace"] == NAMESPACE
            assert rule["apiGroups"] == ["coordination.k8s.io"]
            lease_roles.append((role, rule))
    if VALUE_SETS[set_name].get("leaderElection", {}).get("enabled", True):
        verbs = set().union(*(set(r["verbs"]) for _, r in lease_roles))
        assert verbs == {"get", "create", "update"}
        shards = VALUE_SETS[set_name].get("shards", 1)
        # The leader Lease, plus exactly one per shard (sharded replicas read the leader Lease:
        # no shard runs while an unsharded leader holds it).
        names = ["rdscred-leader"] + [f"rdscred-leader-shard-{k}" for k in range(shards) if shards > 1]
        for _, rule in lease_roles:
            if set(rule["verbs"]) & {"get", "update"}:
                assert rule["resourceNames"] == names
        rb = one(objects, "RoleBinding", "rdscred-leader-election", NAMESPACE)
        assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "rdscred", "namespace": NAMESPACE}]
    else:
        assert lease_roles == []


def test_rbac_namespaced_install():
    objects = render(VALUE_SETS["namespaced"])
    assert find(objects, "ClusterRole", "rdscred") == []
    # The cluster-scoped kind keeps a small ClusterRole; namespaces are readable by name only.
    cr = one(objects, "ClusterRole", "rdscred-databases")
    assert rules_by_resource(cr["rules"]) == {**EXPECTED_DATABASES, ("", "namespaces"): {"get"}}
    ns_rule = next(r for r in cr["rules"] if "namespaces" in r["resources"])
    assert ns_rule["resourceNames"] == ["team-a", "team-b"]
    for r in cr["rules"]:
        assert "secrets" not in r["resources"] and "rdscredentials" not in r["resources"]
    crb = one(objects, "ClusterRoleBinding", "rdscred-databases")
    assert crb["roleRef"]["name"] == "rdscred-databases"
    for ns in ("team-a", "team-b"):
        role = one(objects, "Role", "rdscred", ns)
        assert rules_by_resource(role["rules"]) == EXPECTED_NAMESPACED
        rb = one(objects, "RoleBinding", "rdscred", ns)
        assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "rdscred"}
        assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "rdscred", "namespace": NAMESPACE}]
    # Secrets are reachable only in the watched namespaces.
    secret_namespaces = {role["metadata"].get("namespace") for role, rule in all_rbac_rules(objects) if "secrets" in rule["resources"]}
    assert secret_namespaces == {"team-a", "team-b"}
    # Events about cluster-scoped RdsDatabases go to `default`.
    ev = one(objects, "Role", "rdscred-database-events", "default")
    assert rules_by_resource(ev["rules"]) == {("events.k8s.io", "events"): {"create", "patch"}}


@pytest.mark.parametrize("cron_jobs, argo_rollouts", [(True, False), (False, True), (False, False), (True, True)])
@pytest.mark.parametrize("set_name", ["defaults", "namespaced"])
def test_optional_workload_kinds_are_granted_only_when_enabled(set_name, cron_jobs, argo_rollouts):
    values = merged(
        VALUE_SETS.get(set_name, {}),
        {"workloads": {"cronJobs": {"enabled": cron_jobs}, "argoRollouts": {"enabled": argo_rollouts}}},
    )
    objects = render(values)
    env = env_of(container(objects))
    assert env["RDSCRED_CRONJOBS"] == str(cron_jobs).lower()
    assert env["RDSCRED_ARGO_ROLLOUTS"] == str(argo_rollouts).lower()
    want = dict(EXPECTED_NAMESPACED)
    if not cron_jobs:
        del want[("batch", "cronjobs")], want[("batch", "jobs")]
    if argo_rollouts:
        want.update(EXPECTED_ROLLOUTS)
    if set_name == "namespaced":
        roles = [one(objects, "Role", "rdscred", ns) for ns in ("team-a", "team-b")]
    else:
        roles = [one(objects, "ClusterRole", "rdscred")]
    for role in roles:
        got = rules_by_resource(role["rules"])
        got.pop(("", "namespaces"), None)
        for k in EXPECTED_DATABASES:
            got.pop(k, None)
        assert got == want


@pytest.mark.parametrize("bad", [{"cronJobs": {"enabled": "yes"}}, {"argoRollouts": {"enabled": "false"}}, {"rollouts": {"enabled": True}}])
def test_workload_kind_values_are_validated(bad):
    # A quoted "false" would be truthy in the template and grant the kind: refused by the schema.
    values = {"workloads": merged({"cronJobs": {"enabled": True}, "argoRollouts": {"enabled": False}}, bad)}
    with pytest.raises(Exception):
        render(values)


def test_rbac_can_be_disabled():
    objects = render({"rbac": {"create": False}})
    assert not [o for o in objects if o["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")]


# ----------------------------------------------------------------------------- service account / IRSA


def test_irsa_annotation():
    sa = one(render(VALUE_SETS["irsa"]), "ServiceAccount", "rdscred")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == "arn:aws:iam::123456789012:role/rdscred"
    notes = render_raw(VALUE_SETS["irsa"])["rdscred/templates/NOTES.txt"]
    assert "arn:aws:iam::123456789012:role/rdscred" in notes
    assert "system:serviceaccount:rdscred-system:rdscred" in notes


def test_controller_role_for_restricted_access_policies():
    """The controller knows its own role (exempted from restricted access policies): the IRSA
    role by default, aws.controllerRoleArn when set (EKS Pod Identity)."""
    irsa = env_of(container(render(VALUE_SETS["irsa"])))
    assert irsa["RDSCRED_CONTROLLER_ROLE_ARN"] == "arn:aws:iam::123456789012:role/rdscred"
    pod_identity = {"aws": {"controllerRoleArn": "arn:aws:iam::123456789012:role/pod-identity"}}
    env = env_of(container(render(pod_identity)))
    assert env["RDSCRED_CONTROLLER_ROLE_ARN"] == "arn:aws:iam::123456789012:role/pod-identity"


def test_no_irsa_by_default_and_pod_identity_documented():
    sa = one(render(), "ServiceAccount", "rdscred")
    assert "eks.amazonaws.com/role-arn" not in (sa["metadata"].get("annotations") or {})
    notes = render_raw()["rdscred/templates/NOTES.txt"]
    assert "create-pod-identity-association" in notes
    assert "--service-account rdscred" in notes


def test_existing_service_account():
    objects = render({"serviceAccount": {"create": False, "name": "platform-rdscred"}})
    assert find(objects, "ServiceAccount") == []
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "platform-rdscred"
    assert one(objects, "ClusterRoleBinding")["subjects"][0]["name"] == "platform-rdscred"


# ----------------------------------------------------------------------------- service / monitoring


def test_service_exposes_metrics_port():
    svc = one(render(), "Service", "rdscred")
    assert svc["spec"]["ports"] == [{"name": "http-metrics", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    assert svc["spec"]["selector"] == {"app.kubernetes.io/name": "rdscred", "app.kubernetes.io/instance": RELEASE}


def test_monitoring_off_by_default():
    objects = render()
    assert find(objects, "ServiceMonitor") == [] and find(objects, "PrometheusRule") == []


def test_service_monitor():
    sm = one(render(VALUE_SETS["monitoring"], api_versions=MONITORING_APIS), "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    (ep,) = sm["spec"]["endpoints"]
    assert ep["port"] == "http-metrics" and ep["path"] == "/metrics"
    # The series carry the credential's namespace/name; keep them over the target's labels.
    assert ep["honorLabels"] is True
    assert sm["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "rdscred", "app.kubernetes.io/instance": RELEASE}


def test_prometheus_rule_alerts():
    pr = one(render(VALUE_SETS["monitoring"], api_versions=MONITORING_APIS), "PrometheusRule")
    rules = [r for g in pr["spec"]["groups"] for r in g["rules"]]
    by_name = {r["alert"]: r for r in rules}
    assert set(by_name) == {
        "RdscredRotationFailing",
        "RdscredCredentialNotReady",
        "RdscredDriftDetected",
        "RdscredReconcileErrors",
        "RdscredRotationOverdue",
        "RdscredNoLeader",
    }
    assert "rdscred_rotations_total" in by_name["RdscredRotationFailing"]["expr"]
    assert 'result=~"failure|rolled_back"' in by_name["RdscredRotationFailing"]["expr"]
    # The Ready label carries the condition status verbatim: True / False / Unknown.
    assert 'ready!="True"' in by_name["RdscredCredentialNotReady"]["expr"]
    assert "rdscred_credentials" in by_name["RdscredCredentialNotReady"]["expr"]
    assert by_name["RdscredCredentialNotReady"]["for"] == "15m"
    assert "rdscred_drift_detected_total" in by_name["RdscredDriftDetected"]["expr"]
    assert "3888000" in by_name["RdscredRotationOverdue"]["expr"]
    used = set()
    for r in rules:
        used |= set(re.findall(r"\brdscred_[a-z_]+", r["expr"]))
        assert r["labels"]["severity"] in ("info", "warning", "critical")
        assert r["annotations"]["summary"] and r["annotations"]["description"]
    assert used <= DOCUMENTED_METRICS, used - DOCUMENTED_METRICS
    # The metrics reference documents every series the alerts use.
    metrics_doc = (ROOT / "docs" / "metrics.md").read_text()
    for m in DOCUMENTED_METRICS:
        assert m in metrics_doc, m


def test_rotation_overdue_alert_is_optional():
    pr = one(render({"metrics": {"prometheusRule": {"enabled": True}}}, api_versions=MONITORING_APIS), "PrometheusRule")
    assert "RdscredRotationOverdue" not in {r["alert"] for g in pr["spec"]["groups"] for r in g["rules"]}


def test_no_leader_alert_only_with_leader_election():
    values = {"replicaCount": 1, "leaderElection": {"enabled": False}, "metrics": {"prometheusRule": {"enabled": True}}}
    pr = one(render(values, api_versions=MONITORING_APIS), "PrometheusRule")
    assert "RdscredNoLeader" not in {r["alert"] for g in pr["spec"]["groups"] for r in g["rules"]}


# ----------------------------------------------------------------------------- PDB / NetworkPolicy


def test_pdb_on_by_default_and_off():
    pdb = one(render(), "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "rdscred", "app.kubernetes.io/instance": RELEASE}
    assert find(render(VALUE_SETS["pdb-off-netpol-on"]), "PodDisruptionBudget") == []


def test_network_policy_off_by_default():
    assert find(render(), "NetworkPolicy") == []


def _egress_ports(np):
    return [(r.get("to"), sorted((p["port"], p["protocol"]) for p in r["ports"])) for r in np["spec"]["egress"]]


def test_network_policy_defaults():
    np = one(render(VALUE_SETS["pdb-off-netpol-on"]), "NetworkPolicy")
    assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert np["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "rdscred", "app.kubernetes.io/instance": RELEASE}
    (ing,) = np["spec"]["ingress"]
    assert ing["ports"] == [{"port": "http", "protocol": "TCP"}]
    egress = _egress_ports(np)
    dns = [e for e in egress if e[1] == [(53, "TCP"), (53, "UDP")]]
    assert len(dns) == 1 and dns[0][0][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
    assert (None, [(443, "TCP")]) in egress  # API server (any IP by default)
    assert ([{"ipBlock": {"cidr": "0.0.0.0/0"}}], [(443, "TCP")]) in egress  # AWS APIs
    assert (None, [(3306, "TCP"), (5432, "TCP")]) in egress  # databases
    assert ([{"ipBlock": {"cidr": "169.254.170.23/32"}}, {"ipBlock": {"cidr": "fd00:ec2::23/128"}}], [(80, "TCP")]) in egress
    # Nothing else leaves the pod.
    assert len(egress) == 5


def test_network_policy_from_values():
    np = one(render(VALUE_SETS["everything"]), "NetworkPolicy")
    egress = _egress_ports(np)
    assert ([{"ipBlock": {"cidr": "10.0.0.0/16"}}], [(443, "TCP")]) in egress
    assert ([{"ipBlock": {"cidr": "10.1.0.0/16"}}], [(5432, "TCP")]) in egress
    (ing,) = np["spec"]["ingress"]
    assert ing["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]


# ----------------------------------------------------------------------------- values schema


@pytest.mark.parametrize(
    "bad",
    [
        {"replicaCount": "two"},
        {"replicaCount": 0},
        {"log": {"format": "xml"}},
        {"image": {"pullPolicy": "Sometimes"}},
        {"watchNamespaces": "team-a"},
        {"events": {"queueUrl": "rdscred-events"}},
        {"events": {"backstopInterval": "half an hour"}},
        {"events": {"queue": "https://sqs.eu-west-1.amazonaws.com/1/q"}},
        {"watchNamespaces": ["Team_A"]},
        {"serviceAccount": {"irsaRoleArn": "rdscred-role"}},
        {"pollInterval": "five minutes"},
        # A zero period would spin the loop (the binary refuses it too).
        {"pollInterval": "0s"},
        {"driftInterval": "0m0s"},
        {"events": {"backstopInterval": "0.0h"}},
        {"concurrency": 0},
        {"aws": {"region": "Europe"}},
        {"unknownKey": True},
        {"metrics": {"serviceMonitor": {"enabled": "yes"}}},
        {"networkPolicy": {"databases": {"ports": [70000]}}},
        {"networkPolicy": {"aws": {"cidrs": ["everywhere"]}}},
        {"leaderElection": {"enabled": True, "leaseName": "Not_A_Name"}},
        {"metrics": {"prometheusRule": {"severity": "page"}}},
        {"aws": {"controllerRoleArn": "rdscred"}},
        {"aws": {"createSecretsPerSecond": -1}},
        {"aws": {"createSecretsPerSecond": "50/s"}},
        {"driftChecksPerSecond": -1},
        {"driftConcurrency": 0},
        {"aws": {"controllerRoleArn": "arn:aws:iam::123456789012:user/rdscred"}},
    ],
    ids=lambda v: repr(v)[:60],
)
def test_schema_rejects_bad_values(bad):
    with helm.Chart.load(str(CHART)) as chart:
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema(chart.merge_values(bad))
    # `helm install/template` validates too.
    with pytest.raises(helm.HelmValuesError):
        render_raw(bad)


@pytest.mark.parametrize("set_name", sorted(VALUE_SETS))
def test_schema_accepts_value_sets(set_name):
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(chart.merge_values(VALUE_SETS[set_name]))


def test_several_replicas_require_leader_election():
    with pytest.raises(helm.HelmError, match="leaderElection"):
        render_raw({"replicaCount": 2, "leaderElection": {"enabled": False}})


def test_shards():
    """`shards` reaches the controller as RDSCRED_SHARDS (absent at 1, today's single leader),
    needs leader election, refuses the event queue, and alerts on an unheld shard."""
    assert "RDSCRED_SHARDS" not in env_of(container(render()))
    env = env_of(container(render({"shards": 2})))
    assert env["RDSCRED_SHARDS"] == "2"
    assert env["RDSCRED_LEADER_ELECT"] == "true"
    with pytest.raises(helm.HelmError, match="leaderElection"):
        render_raw({"replicaCount": 1, "shards": 2, "leaderElection": {"enabled": False}})
    with pytest.raises(helm.HelmError, match="queueUrl"):
        render_raw({"shards": 2, "events": {"queueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/q"}})
    for bad in ({"shards": 0}, {"shards": "two"}, {"shards": 1.5}):
        with pytest.raises(helm.HelmValuesError):
            render_raw(bad)
    pr = one(render({"shards": 3, "metrics": {"prometheusRule": {"enabled": True}}}, api_versions=MONITORING_APIS), "PrometheusRule")
    rules = {r["alert"]: r for g in pr["spec"]["groups"] for r in g["rules"]}
    assert rules["RdscredShardUnheld"]["expr"] == "(sum(rdscred_shards_held) or vector(0)) < 3"
    pr = one(render({"metrics": {"prometheusRule": {"enabled": True}}}, api_versions=MONITORING_APIS), "PrometheusRule")
    assert "RdscredShardUnheld" not in {r["alert"] for g in pr["spec"]["groups"] for r in g["rules"]}


def test_values_yaml_keys_are_all_in_schema():
    """Every default in values.yaml is described by the schema (strict schema, no drift)."""
    with helm.Chart.load(str(CHART)) as chart:
        schema = chart.schema
        values = chart.values
    assert schema is not None

    def walk(v, s, path):
        if isinstance(v, dict) and s.get("type") == "object" and "properties" in s:
            for k, sub in v.items():
                assert k in s["properties"], f"{path}.{k} missing from values.schema.json"
                walk(sub, s["properties"][k], f"{path}.{k}")

    walk(values, schema, "")


# ----------------------------------------------------------------------------- CRDs


def test_chart_crds_equal_top_level_crds():
    top = {p.name: p.read_bytes() for p in sorted((ROOT / "crds").glob("*.yaml"))}
    chart = {p.name: p.read_bytes() for p in sorted((CHART / "crds").glob("*.yaml"))}
    assert top, "crds/ is empty: run `cargo run -q -- crd --out-dir crds`"
    assert chart == top, "charts/rdscred/crds/ differs from crds/: run `cp crds/*.yaml charts/rdscred/crds/`"


def test_chart_ships_both_crds():
    with helm.Chart.load(str(CHART)) as chart:
        crds = chart.crds
    names = set()
    for c in crds:
        doc = yaml.safe_load(c["data"])
        assert doc["kind"] == "CustomResourceDefinition"
        names.add(doc["metadata"]["name"])
    assert names == {"rdsdatabases.rdscred.io", "rdscredentials.rdscred.io"}
    # CRDs are never templated (Helm installs crds/ verbatim, before the templates).
    assert not [o for o in render() if o["kind"] == "CustomResourceDefinition"]


# ----------------------------------------------------------------------------- plain manifests


def test_kubectl_manifests_are_current():
    """deploy/kubectl/rdscred.yaml is the chart's default render (regenerate with
    `.venv/bin/python tests/chart/gen_kubectl_manifests.py`)."""
    import gen_kubectl_manifests

    current = (ROOT / "deploy" / "kubectl" / "rdscred.yaml").read_text()
    assert current == gen_kubectl_manifests.generate(), "deploy/kubectl/rdscred.yaml is stale: run tests/chart/gen_kubectl_manifests.py"
    docs = [d for d in yaml.safe_load_all(current) if d]
    assert docs[0]["kind"] == "Namespace" and docs[0]["metadata"]["name"] == NAMESPACE
    assert "managed-by: Helm" not in current and "helm.sh/chart" not in current


# ----------------------------------------------------------------------------- the real CLI


@pytest.mark.parametrize("set_name", sorted(VALUE_SETS))
def test_rendered_args_and_env_are_accepted_by_the_binary(set_name, tmp_path):
    """Run the built controller with exactly the args/env the chart renders: it must get past
    argument parsing (clap exits 2 with a usage message on an unknown flag or a bad env value)
    and fail later, on the missing cluster. Skipped when the binary has not been built."""
    import os
    import subprocess

    binary = Path(os.environ.get("RDSCRED_BIN", ROOT / "target" / "debug" / "rdscred"))
    if not binary.is_file():
        pytest.skip(f"{binary} not built (cargo build --bin rdscred)")
    c = container(render(VALUE_SETS[set_name]))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "KUBECONFIG": str(tmp_path / "none"), "HOME": str(tmp_path)}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        else:  # downward API
            env[e["name"]] = NAMESPACE if e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace" else "rdscred-0"
    env["RDSCRED_HTTP_ADDR"] = "127.0.0.1:0"
    try:
        out = subprocess.run([str(binary), *c["args"]], env=env, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return  # still running: it parsed its configuration
    assert out.returncode != 2 and "Usage:" not in out.stderr, out.stderr[-2000:]
