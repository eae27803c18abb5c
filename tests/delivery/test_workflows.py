"""The GitHub workflows cannot run here (no Docker, no kind): keep them correct with actionlint
(expressions, action inputs, and the `run:` scripts through shellcheck) and with checks that
what they name exists: values the Helm step sets, tests the filter names, files the paths
trigger on, the image the steps build."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
VENV_BIN = Path(os.environ.get("RDSCRED_TEST_VENV", ROOT / ".venv")) / "bin"


def actionlint(*paths: Path) -> subprocess.CompletedProcess:
    exe = VENV_BIN / "actionlint"
    assert exe.exists(), "actionlint comes from the venv (scripts/test-env.sh up)"
    assert (VENV_BIN / "shellcheck").exists(), "shellcheck comes from the venv (scripts/test-env.sh up)"
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([str(exe), "-no-color", *map(str, paths)], capture_output=True, text=True, env=env, cwd=ROOT)


def test_actionlint_accepts_every_workflow():
    assert WORKFLOWS
    result = actionlint(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_broken_workflows(tmp_path):
    """The lint is not a formality: a bad expression and an unquoted variable (shellcheck)
    are reported."""
    source = (ROOT / ".github" / "workflows" / "e2e-kind.yml").read_text()
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    broken = workflows / "broken.yml"
    broken.write_text(source.replace("${{ env.CLUSTER }}", "${{ env.CLUSTER ").replace('kind load docker-image "$IMAGE"', "kind load docker-image $IMAGE"))
    result = actionlint(broken)
    assert result.returncode != 0
    assert "expression" in result.stdout or "unexpected end of input" in result.stdout, result.stdout
    assert "SC2086" in result.stdout, result.stdout


@pytest.fixture(scope="module")
def e2e():
    return yaml.safe_load((ROOT / ".github" / "workflows" / "e2e-kind.yml").read_text())


def steps(e2e) -> list[dict]:
    return e2e["jobs"]["kind"]["steps"]


def script(e2e) -> str:
    return "\n".join(s.get("run", "") for s in steps(e2e))


def test_every_workflow_is_bounded_and_read_only():
    for path in WORKFLOWS:
        wf = yaml.safe_load(path.read_text())
        assert wf.get("permissions") == {"contents": "read"}, path.name
        for name, job in wf["jobs"].items():
            assert 0 < job.get("timeout-minutes", 0) <= 90, f"{path.name}: {name}"


def test_e2e_builds_loads_and_installs_the_image(e2e):
    run = script(e2e)
    # Built from the Dockerfile with the commit stamped, and checked.
    assert re.search(r"docker build -t \"\$IMAGE\".*--build-arg GIT_COMMIT=\"\$GITHUB_SHA\" \.", run, re.S)
    assert 'grep -q "commit $GITHUB_SHA"' in run
    assert 'kind load docker-image "$IMAGE" --name "$CLUSTER"' in run
    assert "helm install rdscred charts/rdscred" in run and "--wait" in run
    assert "image.pullPolicy=Never" in run
    # The documented CRD upgrade (docs/install.md) is what the workflow applies.
    upgrade = "kubectl apply --server-side --force-conflicts -f crds/"
    assert upgrade in run
    assert upgrade in (ROOT / "docs" / "install.md").read_text()
    uses = [s["uses"].split("@")[0] for s in steps(e2e) if "uses" in s]
    assert uses.index("helm/kind-action") < uses.index("azure/setup-helm")
    order = [i for i, s in enumerate(steps(e2e)) if "run" in s]
    names = [steps(e2e)[i].get("name", "") for i in order]
    assert names.index(next(n for n in names if n.startswith("Install with Helm"))) < names.index(
        next(n for n in names if n.startswith("Integration tests"))
    )


def test_e2e_helm_values_exist(e2e):
    values = yaml.safe_load((ROOT / "charts" / "rdscred" / "values.yaml").read_text())
    for key in re.findall(r"--set ([a-zA-Z.]+)=", script(e2e)):
        node = values
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"--set {key}: not a chart value"
            node = node[part]


def test_e2e_test_filter_names_existing_tests(e2e):
    run = script(e2e)
    assert "RDSCRED_TEST_KUBECONFIG=" in run and "cargo nextest run --test it" in run
    sources = {p.stem: p.read_text() for p in (ROOT / "tests" / "it").glob("*.rs")}
    for module in re.findall(r"test\(/\^(\w+)::/\)", run):
        assert module in sources, module
    for exact in re.findall(r"test\(=(\w+)::(\w+)\)", run):
        assert f"fn {exact[1]}(" in sources[exact[0]], exact
    for pattern in re.findall(r"test\(/(\w+)/\)", run):
        assert any(pattern in s for s in sources.values()), pattern


def test_e2e_triggers_on_paths_that_exist(e2e):
    # PyYAML reads the `on` key as True.
    paths = (e2e.get("on") or e2e.get(True))["pull_request"]["paths"]
    for p in paths:
        prefix = p.split("*")[0].rstrip("/")
        assert prefix == "" or any(ROOT.glob(prefix + "*")), p
    assert "Dockerfile" in paths and ".dockerignore" in paths


# What only the in-process emulator can do: its own handle taken for granted (`g.emulator`
# unwrapped: served to a binary, tokens, request logs, RBAC records, CRDs it serves), its
# simulated workload controllers. A real cluster has none of these: such a test must be left
# out of the kind run by the workflow's filter, or it fails there.
EMULATOR_ONLY = re.compile(
    r"\.emulator\s*\.(?:as_ref|clone)\(\)\s*\.(?:expect|unwrap)\("
    r"|\.stepped_rollouts\("
    r"|\.controller_token\(\)\s*\.await\s*\.(?:expect|unwrap)\("
)
TOP_FN = re.compile(r"^(?:pub(?:\(crate\))? )?(?:async )?fn (\w+)", re.M)


def top_level_functions(source: str) -> list[tuple[str, str, bool]]:
    """(name, body, is_test) of every top-level fn of a test module."""
    found = list(TOP_FN.finditer(source))
    out = []
    for i, m in enumerate(found):
        end = found[i + 1].start() if i + 1 < len(found) else len(source)
        # The attributes and doc comments right above the fn (not the previous fn's).
        attributes = []
        for line in reversed(source[: m.start()].rstrip("\n").splitlines()):
            if not line.startswith(("#[", "//")):
                break
            attributes.append(line)
        is_test = any(line.startswith(("#[tokio::test", "#[test]")) for line in attributes)
        out.append((m.group(1), source[m.start():end], is_test))
    return out


def emulator_only_tests() -> set[str]:
    """`module::test` for every integration test that needs the emulator, directly or through a
    helper in the test modules (resolved to a fixpoint; names shared by two modules count for
    both, which can only ask for more exclusions, never fewer)."""
    modules = {
        p.stem: top_level_functions(p.read_text())
        for p in (ROOT / "tests" / "it").glob("*.rs")
        if p.stem not in ("main", "support")
    }
    needs = {name for fns in modules.values() for name, body, _ in fns if EMULATOR_ONLY.search(body)}
    while True:
        more = {
            name
            for fns in modules.values()
            for name, body, _ in fns
            if name not in needs and any(re.search(rf"\b{re.escape(n)}\(", body) for n in needs)
        }
        if not more:
            break
        needs |= more
    return {f"{m}::{name}" for m, fns in modules.items() for name, _, test in fns if test and name in needs}


def kind_filter_excludes(run: str, test: str) -> bool:
    module, _ = test.split("::")
    return (
        module in re.findall(r"test\(/\^(\w+)::/\)", run)
        or test in (f"{m}::{f}" for m, f in re.findall(r"test\(=(\w+)::(\w+)\)", run))
        or any(p in test for p in re.findall(r"test\(/(\w+)/\)", run))
    )


def test_e2e_leaves_out_every_test_that_needs_the_emulator(e2e):
    run = script(e2e)
    needs = emulator_only_tests()
    # The scan sees the known cases (it is not vacuous).
    assert "cli::status_and_explain_for_each_state_without_reading_a_secret" in needs
    assert "concurrency::postgres_thirty_random_requests_with_a_handover" in needs, "through ground()"
    missing = sorted(t for t in needs if not kind_filter_excludes(run, t))
    assert not missing, f"need the emulator but run against kind: {missing}"
