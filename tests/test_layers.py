"""The layers are a checked contract (pyproject's [tool.importlinter], docs/design.md): the
engine imports no web framework and no API, domains know neither the engine's workings nor
the web, and no endpoints module imports another. `make lint` runs it; so does this test,
so that a patch breaking it fails the suite too (and its mutant is killed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_import_contracts_are_kept() -> None:
    linter = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(linter), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout
