"""Prove the maps bite: each patch in audit/mutants/ brings one audited defect back (the
way the seed describes it, or a variant of it) or breaks one rule of a feature, in a
scratch copy of the project; the tests docs/audit.md or docs/features.md names for that
row must then fail. A patch they let through -- a surviving mutant -- fails this script,
as does a patch that no longer applies or that breaks the tests' collection instead of
their assertions. Two mutants are tested at a time.

    python scripts/audit_mutants.py [BUG-003 SSRF-1 ...]   # default: every patch
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "audit" / "mutants"
COPIED = ("src", "tests", "docs", "pyproject.toml")
NOT_COPIED = shutil.ignore_patterns("node_modules", "__pycache__")
JS_PACKAGES = "tests/js/node_modules"
MAPS = ("audit.md", "features.md")
ROW = re.compile(r"^\| (BUG-\d{3}|[A-Z]+-\d+) \|")
NODE = re.compile(r"`(tests/[\w/]+\.py(?:::[\w\[\]-]+)+)`")
PATCH = re.compile(r"`audit/mutants/([\w-]+\.patch)`")
AT_ONCE = 2
SLOW = ("console", "browser", "use_chat", "js_clients", "processes", "restart")
FAILED_TESTS = 1  # pytest's exit code when tests ran and some failed: the mutant is killed


def rows() -> dict[str, tuple[list[str], list[str]]]:
    """Row id (BUG-003, SSRF-1) -> (its tests, its patches), from both maps."""
    found = {}
    for map_name in MAPS:
        for line in (ROOT / "docs" / map_name).read_text().splitlines():
            if match := ROW.match(line):
                tests = list(dict.fromkeys(NODE.findall(line)))
                found[match.group(1)] = (tests, PATCH.findall(line))
    return found


def run(patch: Path, tests: list[str]) -> tuple[str, float, str]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="atelier-mutant-") as scratch:
        for name in COPIED:
            source = ROOT / name
            if source.is_dir():  # the JavaScript clients are linked, not copied (100 MB)
                shutil.copytree(source, Path(scratch, name), ignore=NOT_COPIED)
            else:
                shutil.copy2(source, Path(scratch, name))
        if (ROOT / JS_PACKAGES).is_dir():
            Path(scratch, JS_PACKAGES).symlink_to(ROOT / JS_PACKAGES)
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
    problems += [f"{name}: named in a map but missing" for name in named - on_disk]
    problems += [f"{row}: names no mutant" for row, (_, patches) in table.items() if not patches]
    chosen = [
        (name, tests)
        for row, (tests, patches) in sorted(table.items())
        if not only or row in only
        for name in patches
        if name in on_disk
    ]
    results = []

    def tried(name: str, tests: list[str]) -> tuple[str, str, float, str]:
        return name, *run(MUTANTS / name, tests)

    # The slowest first (a browser, node, processes), so neither worker is left with one
    # long mutant at the end while the other waits.
    chosen.sort(key=lambda job: not any(slow in test for test in job[1] for slow in SLOW))
    with ThreadPoolExecutor(AT_ONCE) as pool:
        for name, verdict, seconds, output in pool.map(lambda job: tried(*job), chosen):
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
