# Two commands on a fresh machine: `make run` and `make test`. Both bootstrap uv,
# the virtual environment and the locked packages first.
SHELL := /bin/bash
export PATH := $(HOME)/.local/bin:$(PATH)
UV ?= uv
VENV := .venv
STAMP := $(VENV)/.synced

.PHONY: js run test lint audit audit-mutants mutants bench bench-capacity fuzz migrate screenshot sync uv clean

uv:
	@command -v $(UV) >/dev/null 2>&1 || python3 -m pip install --user --quiet uv || pip install --quiet uv

# Bytecode compiled once here: where PYTHONDONTWRITEBYTECODE is set (as on CI), every
# process would otherwise compile its imports again (about 3.5 s per server started).
$(STAMP): uv.lock pyproject.toml | uv
	$(UV) sync --frozen --compile-bytecode
	@touch $(STAMP)

sync: $(STAMP)

run: sync
	$(VENV)/bin/atelier serve

migrate: sync
	$(VENV)/bin/atelier migrate

# Two pytest workers: most tests wait on sockets, servers and subprocesses, so two halve
# the suite's time on a two-core machine. Each worker has its own databases, bucket
# server and Redis key prefixes. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2

# The JavaScript clients the tests drive (tests/js), pinned by their lock file; installed
# when node is on the machine (the tests of them fail on CI without it, skip elsewhere).
JS_STAMP := tests/js/node_modules/.package-lock.json

$(JS_STAMP): tests/js/package-lock.json tests/js/package.json
	@if command -v npm >/dev/null 2>&1; then npm ci --prefix tests/js --no-audit --no-fund; \
	else echo "npm not found: the JavaScript client tests will skip"; fi

js: $(JS_STAMP)

test: sync js
	$(VENV)/bin/pytest -n $(TEST_WORKERS)

lint: sync
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

audit: sync
	$(VENV)/bin/python scripts/audit_tests.py | xargs $(VENV)/bin/pytest

# Every patch in audit/mutants/ brings an audited defect back (docs/audit.md), or breaks a
# feature's rule (docs/features.md), in a scratch copy; the tests its row names must fail
# (BUG=BUG-003 or BUG=SSRF-1 for one row).
audit-mutants mutants: sync
	$(VENV)/bin/python scripts/audit_mutants.py $(BUG)

# New random inputs for the API fuzzer; `make test` replays a fixed set.
fuzz: sync
	ATELIER_FUZZ_EXPLORE=1 ATELIER_FUZZ_EXAMPLES=$${EXAMPLES:-1000} $(VENV)/bin/pytest tests/test_fuzz.py

# The README's picture of the console (docs/console.png), taken in the distribution's Chromium.
screenshot: sync
	$(VENV)/bin/python scripts/console_screenshot.py

bench: sync
	@for script in bench/[!_]*.py; do echo "== $$script"; $(VENV)/bin/python $$script || exit 1; done

# The hot path's figures, side by side with a bare SSE endpoint: runs unpaced and one at a
# time, paced runs ramped and in a burst, the compatibility streams. AGAINST=<git ref>
# measures that version beside this one (the before and after of a change).
bench-capacity: sync
	$(VENV)/bin/python bench/runs.py
	$(VENV)/bin/python bench/paced_runs.py $(if $(AGAINST),--against $(AGAINST))
	$(VENV)/bin/python bench/compat.py $(if $(AGAINST),--against $(AGAINST))

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
