"""The image builds (issue 17), checked without a Docker engine.

`docker build` sends the context `.dockerignore` admits and runs the Dockerfile's build stage
in it. These tests rebuild exactly that context in a temporary folder, replay the build stage
(WORKDIR, COPY, ARG) and run the cargo command of its RUN there, as written, with the build
arguments' defaults (GIT_COMMIT set to a known value). The build stage's cache mount for
`target/` becomes a target directory kept between runs (`target/image-context/target`), the
registry cache mount the registry the test suite already fetched (CARGO_NET_OFFLINE). So that
Cargo's mtime-based freshness stays right across runs, the replayed WORKDIR is mirrored into
one kept folder (`target/image-context/src`) where only files whose content changed are
rewritten. A cold release build takes minutes on 2 cores; later runs rebuild what changed.
"""

from __future__ import annotations

import os
import shlex
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from dockerfile import copy_context, parse, parse_args, run_command

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = parse((ROOT / "Dockerfile").read_text())
BUILD = DOCKERFILE.stage("build")
CACHE = ROOT / "target" / "image-context"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
# What .dockerignore held when the image did not build (issue 17): no benches/.
ORIGINAL_DOCKERIGNORE = "*\n!Cargo.toml\n!Cargo.lock\n!src/\n!src/**\n!crates/\n!crates/**\ncrates/**/target\n"


def cargo_step() -> tuple[str, str]:
    """The build stage's cargo command (with its variable assignments) and the artifact the
    same RUN installs into the runtime stage."""
    runs = [i for i in BUILD.instructions if i.keyword == "RUN"]
    assert len(runs) == 1, "the build stage is expected to have one RUN"
    steps = [s.strip() for s in run_command(runs[0]).split("&&")]
    cargo = [s for s in steps if " cargo build " in f" {s} "]
    install = [s for s in steps if s.startswith("install ")]
    assert len(cargo) == 1 and len(install) == 1, steps
    return cargo[0], shlex.split(install[0])[-2]


def replay(context: Path, work: Path) -> dict[str, str]:
    """WORKDIR, ARG and COPY of the build stage, with `work` standing for the WORKDIR;
    returns the build arguments (defaults, GIT_COMMIT overridden)."""
    args = dict(DOCKERFILE.global_args)
    workdir_seen = False
    for ins in BUILD.instructions:
        if ins.keyword == "ARG":
            args.update(parse_args(ins.args))
        elif ins.keyword == "WORKDIR":
            assert not workdir_seen, "one WORKDIR expected"
            workdir_seen = True
            work.mkdir(parents=True)
        elif ins.keyword == "COPY":
            words = [w for w in shlex.split(ins.args) if not w.startswith("--")]
            *sources, dest = words
            target = work / dest
            for src in sources:
                origin = context / src
                if not origin.exists():
                    raise FileNotFoundError(f"COPY {src}: not in the build context")
                if origin.is_dir():
                    shutil.copytree(origin, target, dirs_exist_ok=True)
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, target / origin.name)
        elif ins.keyword != "RUN":
            raise AssertionError(f"unexpected {ins.keyword} in the build stage")
    assert workdir_seen
    args["GIT_COMMIT"] = COMMIT
    return args


def mirror(src: Path, dest: Path) -> None:
    """Makes `dest` hold exactly the files of `src`, rewriting only those whose content differs
    (so their modification time tells Cargo what changed) and keeping `dest/target`."""
    dest.mkdir(parents=True, exist_ok=True)
    wanted = {p.relative_to(src) for p in src.rglob("*") if p.is_file()}
    for rel in sorted(wanted):
        target = dest / rel
        if not target.is_file() or target.read_bytes() != (src / rel).read_bytes():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, target)
    for p in sorted(dest.rglob("*"), reverse=True):
        rel = p.relative_to(dest)
        if rel.parts[0] == "target":
            continue
        if p.is_file() and rel not in wanted:
            p.unlink()
        elif p.is_dir() and not any(p.iterdir()):
            p.rmdir()


def run_cargo(work: Path, args: dict[str, str]) -> subprocess.CompletedProcess:
    command, _ = cargo_step()
    # The stage's cache mount for target/.
    cache = CACHE / "target"
    cache.mkdir(parents=True, exist_ok=True)
    if not (work / "target").is_symlink():
        (work / "target").symlink_to(cache, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARGO_", "RUST")) or k in ("CARGO_HOME", "RUSTUP_HOME")}
    env.update(args)
    env["CARGO_NET_OFFLINE"] = "true"
    return subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True)


def test_the_build_stage_builds_the_context_dockerignore_admits(tmp_path):
    context, work = tmp_path / "context", tmp_path / "src"
    files = copy_context(ROOT, (ROOT / ".dockerignore").read_text(), context)
    assert "Cargo.lock" in files and "benches/hotpaths.rs" in files
    assert not any(f.startswith(("target/", "tests/", "charts/", ".git")) for f in files), files
    args = replay(context, work)
    kept = CACHE / "src"
    mirror(work, kept)
    result = run_cargo(kept, args)
    assert result.returncode == 0, result.stderr[-4000:]
    _, artifact = cargo_step()
    version = subprocess.run([str(kept / artifact), "--version"], capture_output=True, text=True, check=True)
    cargo_version = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["version"]
    assert version.stdout.strip() == f"rdscred {cargo_version} (commit {COMMIT})"


def test_the_context_that_did_not_build_still_fails(tmp_path):
    """The check catches what issue 17 found: without benches/, Cargo cannot load the
    manifest that declares its benches (a failure before any compilation). Cargo names the
    first bench it misses, whichever that is."""
    context, work = tmp_path / "context", tmp_path / "src"
    copy_context(ROOT, ORIGINAL_DOCKERIGNORE, context)
    with pytest.raises(FileNotFoundError, match="benches"):
        replay(context, work)
    shutil.rmtree(work)
    work.mkdir()
    for item in ("Cargo.toml", "Cargo.lock", "crates", "src"):
        src = context / item
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, work / item)
    result = run_cargo(work, {"GIT_COMMIT": COMMIT})
    assert result.returncode == 101, result.stderr[-2000:]
    assert re.search(r"can't find `[a-z_]+` bench", result.stderr), result.stderr[-2000:]


def test_base_images_version_and_commit_are_build_arguments():
    assert DOCKERFILE.global_args.get("RUST_IMAGE", "").startswith("docker.io/library/rust:")
    assert DOCKERFILE.global_args.get("RUNTIME_IMAGE", "").startswith("gcr.io/distroless/")
    assert [s.base for s in DOCKERFILE.stages] == ["${RUST_IMAGE}", "${RUNTIME_IMAGE}"]
    runtime = DOCKERFILE.stages[-1]
    args = {}
    for ins in runtime.instructions:
        if ins.keyword == "ARG":
            args.update(parse_args(ins.args))
    cargo_version = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["version"]
    assert args.get("VERSION") == cargo_version, "the image's default VERSION must follow Cargo.toml"
    labels = " ".join(i.args for i in runtime.instructions if i.keyword == "LABEL")
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    assert 'org.opencontainers.image.revision="${GIT_COMMIT}"' in labels
    user = [i.args for i in runtime.instructions if i.keyword == "USER"]
    assert user == ["65532:65532"]


def test_hadolint_accepts_the_dockerfile():
    hadolint = Path(os.environ.get("RDSCRED_TEST_VENV", ROOT / ".venv")) / "bin" / "hadolint"
    assert hadolint.exists(), "hadolint comes from the venv (scripts/test-env.sh up)"
    result = subprocess.run([str(hadolint), "--failure-threshold", "info", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
