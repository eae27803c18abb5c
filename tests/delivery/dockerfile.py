"""The two halves of `docker build` that matter here, without a Docker engine: the context
`.dockerignore` admits (moby's patternmatcher semantics) and the instructions of a Dockerfile
(line continuations, ARG defaults, stages, COPY, RUN)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path


# ------------------------------------------------------------------ .dockerignore


@dataclass
class Pattern:
    text: str
    exclusion: bool  # a `!` line: re-includes what matches
    regex: re.Pattern


def _translate(pattern: str) -> re.Pattern:
    """moby patternmatcher: `**` any number of path segments, `*` and `?` within one, `[...]`
    character classes; everything else literal."""
    out = "^"
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if pattern[i : i + 2] == "**":
                i += 2
                if pattern[i : i + 1] == "/":
                    i += 1
                    out += "(.*/)?"
                else:
                    out += ".*"
                continue
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            j = pattern.find("]", i)
            if j < 0:
                out += re.escape(c)
            else:
                out += pattern[i : j + 1]
                i = j
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + "$")


def parse_dockerignore(text: str) -> list[Pattern]:
    patterns = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
        line = os.path.normpath(line).lstrip("/")
        if line == ".":
            continue
        patterns.append(Pattern(line, exclusion, _translate(line)))
    return patterns


def _matches_or_parent(p: Pattern, path: str) -> bool:
    parts = path.split("/")
    return any(p.regex.match("/".join(parts[:n])) for n in range(len(parts), 0, -1))


def excluded(patterns: list[Pattern], path: str) -> bool:
    """Whether `path` (relative, `/`-separated) stays out of the context: the last pattern that
    matches it or a parent directory decides."""
    out = False
    for p in patterns:
        if _matches_or_parent(p, path):
            out = not p.exclusion
    return out


def _may_reinclude_below(patterns: list[Pattern], directory: str) -> bool:
    for p in patterns:
        if not p.exclusion:
            continue
        literal = re.split(r"[*?\[]", p.text, maxsplit=1)[0]
        if literal.startswith(directory + "/") or directory.startswith(literal.rstrip("/")) or literal == "":
            return True
    return False


def context_files(root: Path, dockerignore: str) -> list[str]:
    """The files of `root` a build context holds under this `.dockerignore`."""
    patterns = parse_dockerignore(dockerignore)
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
        keep = []
        for d in dirnames:
            path = f"{rel_dir}/{d}" if rel_dir else d
            if d == ".git" or (excluded(patterns, path) and not _may_reinclude_below(patterns, path)):
                continue
            keep.append(d)
        dirnames[:] = sorted(keep)
        for f in sorted(filenames):
            path = f"{rel_dir}/{f}" if rel_dir else f
            if not excluded(patterns, path):
                files.append(path)
    return files


def copy_context(root: Path, dockerignore: str, dest: Path) -> list[str]:
    files = context_files(root, dockerignore)
    for f in files:
        target = dest / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / f, target)
    return files


# ------------------------------------------------------------------ Dockerfile


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def instructions(text: str) -> list[Instruction]:
    out, current = [], ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if current and line.lstrip().startswith("#"):
            continue  # comment lines inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.strip().partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
        current = ""
    return out


def parse_args(args: str) -> dict[str, str]:
    """`ARG NAME=default` (or several): name to default ("" when none)."""
    out = {}
    for word in shlex.split(args):
        name, _, default = word.partition("=")
        out[name] = default
    return out


def parse(text: str) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in instructions(text):
        if ins.keyword == "FROM":
            words = ins.args.split()
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            if ins.keyword == "ARG":
                global_args.update(parse_args(ins.args))
        else:
            stages[-1].instructions.append(ins)
    return Dockerfile(global_args, stages)


def substitute(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m.group(1) or m.group(2), m.group(0)), text)


def run_command(ins: Instruction) -> str:
    """The shell command of a RUN, without its `--mount`/`--network` flags."""
    words = ins.args.split(" ")
    while words and (words[0].startswith("--") or words[0] == ""):
        words.pop(0)
    return " ".join(words).strip()
