"""examples/: every file parses, the custom resources are rdscred.io/v1alpha1 of the two
kinds, and their specs validate against the openAPIV3Schema in crds/ (structure, types,
enums, patterns, ranges; unknown fields rejected as `kubectl apply` with strict field
validation does). The CEL rules (x-kubernetes-validations) are checked by the Rust
integration tests against the Kubernetes API emulator."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (ROOT / "examples").rglob("*.yaml"))
CR_KINDS = {"RdsDatabase", "RdsCredential"}
OTHER_KINDS = {("v1", "Namespace"), ("apps/v1", "Deployment")}


def load_all():
    for path in EXAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc


def crd_schemas():
    out = {}
    for p in (ROOT / "crds").glob("*.yaml"):
        crd = yaml.safe_load(p.read_text())
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
        out[crd["spec"]["names"]["kind"]] = (crd["spec"]["scope"], to_json_schema(version["schema"]["openAPIV3Schema"]))
    return out


def to_json_schema(s):
    """OpenAPI v3 (Kubernetes structural schema) -> JSON schema: nullable, and no unknown
    fields unless x-kubernetes-preserve-unknown-fields."""
    s = copy.deepcopy(s)

    def walk(n):
        if not isinstance(n, dict):
            return
        if n.pop("nullable", False) and "type" in n:
            n["type"] = [n["type"], "null"]
        if "properties" in n and "additionalProperties" not in n and not n.get("x-kubernetes-preserve-unknown-fields"):
            n["additionalProperties"] = False
        for k in ("properties",):
            for sub in n.get(k, {}).values():
                walk(sub)
        for k in ("items", "additionalProperties"):
            if isinstance(n.get(k), dict):
                walk(n[k])
        for k in ("anyOf", "oneOf", "allOf"):
            for sub in n.get(k, []):
                walk(sub)

    walk(s)
    # metadata is validated by the API server, not by the CRD schema.
    s.get("properties", {}).pop("metadata", None)
    s.get("properties", {}).setdefault("apiVersion", {"type": "string"})
    s.get("properties", {}).setdefault("kind", {"type": "string"})
    s["properties"]["metadata"] = {"type": "object"}
    return s


def test_examples_exist_for_every_scenario():
    dirs = {p.parent.name for p in EXAMPLES}
    for prefix in ("00-", "01-", "02-", "03-", "04-", "05-"):
        assert any(d.startswith(prefix) for d in dirs), prefix
    kinds = [d["kind"] for _, d in load_all()]
    assert kinds.count("RdsDatabase") >= 5 and kinds.count("RdsCredential") >= 5


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_example_parses_and_has_known_kinds(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs, path
    for d in docs:
        if d["kind"] in CR_KINDS:
            assert d["apiVersion"] == "rdscred.io/v1alpha1"
            if d["kind"] == "RdsCredential":
                assert d["metadata"].get("namespace"), "RdsCredential is namespaced"
            else:
                assert "namespace" not in d["metadata"], "RdsDatabase is cluster-scoped"
        else:
            assert (d["apiVersion"], d["kind"]) in OTHER_KINDS, (d["apiVersion"], d["kind"])


def test_examples_validate_against_crd_schemas():
    jsonschema = pytest.importorskip("jsonschema")
    schemas = crd_schemas()
    assert set(schemas) == CR_KINDS
    for path, d in load_all():
        if d["kind"] not in CR_KINDS:
            continue
        _, schema = schemas[d["kind"]]
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(d), key=str)
        assert not errors, f"{path.relative_to(ROOT)}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_references_between_examples_resolve():
    docs = [d for _, d in load_all()]
    databases = {d["metadata"]["name"]: d for d in docs if d["kind"] == "RdsDatabase"}
    namespaces = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Namespace"}
    deployments = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs if d["kind"] == "Deployment"}
    for d in docs:
        if d["kind"] != "RdsCredential":
            continue
        spec = d["spec"]
        db = databases[spec["databaseRef"]["name"]]["spec"]
        assert d["metadata"]["namespace"] in namespaces
        if spec.get("mode") != "sync-only":
            assert spec["secret"]["name"].startswith(db["secretNamePrefix"]), d["metadata"]["name"]
        for ref in spec.get("workloads", {}).get("refs", []):
            assert (d["metadata"]["namespace"], ref["name"]) in deployments
