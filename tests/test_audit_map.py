"""docs/audit.md stays true: every BUG-ID is listed and every test it names exists."""

import ast
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).parent.parent
AUDIT = (ROOT / "docs" / "audit.md").read_text()
FEATURES = (ROOT / "docs" / "features.md").read_text()  # the feature map, mutants alike
FEATURE_ROW = re.compile(r"^\| ([A-Z]+-\d+) \|")
NODE = re.compile(r"`(tests/[\w/]+\.py(?:::[\w\[\]-]+)+)`")


def test_every_bug_id_has_a_row() -> None:
    missing = [f"BUG-{n:03d}" for n in range(1, 24) if f"| BUG-{n:03d} |" not in AUDIT]
    assert missing == []


def test_every_fixed_row_names_code_and_a_test() -> None:
    for row in AUDIT.splitlines():
        if row.startswith("| BUG-") and "| fixed |" in row:
            assert "src/atelier/" in row, row
            assert NODE.search(row), row


def test_every_named_test_exists() -> None:
    nodes = NODE.findall(AUDIT) + NODE.findall(FEATURES)
    assert nodes
    for node in nodes:
        path, *names = node.split("::")
        tree = ast.parse((ROOT / path).read_text())
        scope: list[ast.stmt] = tree.body
        for name in names:
            name = name.split("[")[0]
            found = [
                n
                for n in scope
                if isinstance(n, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                and n.name == name
            ]
            assert found, f"{node}: {name} not found"
            scope = getattr(found[0], "body", [])


PATCH = re.compile(r"`audit/mutants/([\w-]+\.patch)`")


def test_every_row_names_mutants_that_exist_and_every_mutant_is_named() -> None:
    named = set()
    for row in AUDIT.splitlines():
        if row.startswith("| BUG-"):
            bug = row.split("|")[1].strip()
            patches = PATCH.findall(row)
            assert patches, f"{bug} names no mutant"
            assert all(p.startswith(bug) for p in patches), row
            named |= set(patches)
    for row in FEATURES.splitlines():
        if FEATURE_ROW.match(row):
            patches = PATCH.findall(row)
            assert patches, f"{row[:40]} names no mutant"
            assert NODE.search(row), f"{row[:40]} names no test"
            named |= set(patches)
    on_disk = {path.name for path in (ROOT / "audit" / "mutants").glob("*.patch")}
    assert named == on_disk


def test_every_mutant_still_applies_to_the_code() -> None:
    """A patch that no longer applies proves nothing (and fails `make audit-mutants` on CI):
    change a patch with the code it breaks."""
    failing = []
    for patch in sorted((ROOT / "audit" / "mutants").glob("*.patch")):
        applied = subprocess.run(
            ["patch", "-p1", "--batch", "--forward", "--dry-run", "-i", str(patch)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if applied.returncode != 0:
            failing.append(f"{patch.name}: {applied.stdout.strip()}")
    assert failing == []
