"""Prove the audit map bites: each patch in audit/mutants/ brings one audited defect back
(the way the seed describes it, or a variant of it) into a scratch copy of the project;
the tests docs/audit.md names for that defect's row must then fail. A patch they let
through -- a surviving mutant -- fails this script, as does a patch that no longer
applies or that breaks the tests' collection instead of their assertions.

    python scripts/audit_mutants.py [BUG-003 ...]   # default: every patch
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "audit" / "mutants"
COPIED = ("src", "tests", "docs", "pyproject.toml")
ROW = re.compile(r"^\| (BUG-\d{3}) \|")
NODE = re.compile(r"`(tests/[\w/]+\.py(?:::[\w\[\]-]+)+)`")
PATCH = re.compile(r"`audit/mutants/((BUG-\d{3})[\w-]*\.patch)`")
FAILED_TESTS = 1  # pytest's exit code when tests ran and some failed: the mutant is killed


def rows() -> dict[str, tuple[list[str], list[str]]]:
    """BUG id -> (its tests, its patches), from docs/audit.md."""
    found = {}
    for line in (ROOT / "docs" / "audit.md").read_text().splitlines():
        if match := ROW.match(line):
            tests = list(dict.fromkeys(NODE.findall(line)))
            patches = [name for name, _ in PATCH.findall(line)]
            found[match.group(1)] = (tests, patches)
    return found


def run(patch: Path, tests: list[str]) -> tuple[str, float, str]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="atelier-mutant-") as scratch:
        for name in COPIED:
            source = ROOT / name
            copy = shutil.copytree if source.is_dir() else shutil.copy2
            copy(source, Path(scratch, name))  # type: ignore[operator]
        applied = subprocess.run(
            ["patch", "-p1", "--batch", "--forward", "-d", scratch, "-i", str(patch)],
            capture_output=True,
            text=True,
        )
        if applied.returncode != 0:
            return "does not apply", time.monotonic() - started, applied.stdout + applied.stderr
        env = {
            **os.environ,
            "PYTHONPATH": str(Path(scratch, "src")),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        tested = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
            cwd=scratch,
            env=env,
            capture_output=True,
            text=True,
        )
    elapsed = time.monotonic() - started
    if tested.returncode == FAILED_TESTS:
        return "killed", elapsed, ""
    if tested.returncode == 0:
        return "SURVIVED", elapsed, tested.stdout[-2000:]
    return f"broken (pytest exit {tested.returncode})", elapsed, tested.stdout[-3000:]


def main(only: list[str]) -> int:
    table = rows()
    named = {patch for _, patches in table.values() for patch in patches}
    on_disk = {path.name for path in MUTANTS.glob("*.patch")}
    problems = [f"{name}: in audit/mutants/ but named by no row" for name in on_disk - named]
    problems += [f"{name}: named in docs/audit.md but missing" for name in named - on_disk]
    problems += [f"{bug}: names no mutant" for bug, (_, patches) in table.items() if not patches]
    results = []
    for bug, (tests, patches) in sorted(table.items()):
        if only and bug not in only:
            continue
        for name in patches:
            if name not in on_disk:
                continue
            verdict, seconds, output = run(MUTANTS / name, tests)
            results.append((name, verdict, seconds))
            print(f"{verdict:>16}  {seconds:5.0f} s  {name}", flush=True)
            if verdict != "killed":
                problems.append(f"{name}: {verdict}\n{output}")
    total = sum(seconds for _, _, seconds in results)
    print(
        f"{len(results)} mutants, {sum(v == 'killed' for _, v, _ in results)} killed, {total:.0f} s"
    )
    for problem in problems:
        print(f"\n{problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
