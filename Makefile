# The two commands of the README: `make demo` and `make test`. Each builds .venv from the lock files
# (requirements.lock: every package, hash-checked, for development and CI; requirements-bootstrap.lock:
# uv and the build backend) whenever .venv is missing or older than a lock file, so a fresh clone with
# Python 3.11 needs nothing else. pyproject.toml keeps the compatible ranges for library users;
# `make lock` turns them into new lock files, and `make test-latest` tries the newest releases they allow.
PYTHON ?= python3.11
SHELL := bash
.SHELLFLAGS := -o pipefail -c
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The lock files are universal (every platform's markers) but made for this Python: labs on macOS or
# Windows install the same versions.
LOCK_FLAGS := --generate-hashes --universal --python-version 3.11 --custom-compile-command "make lock" --quiet

.PHONY: test-cluster screenshots demo test lint lock-check typecheck pytest venv interop-deps clean lock test-latest campaign

# A new .venv each time, so that it holds exactly what the lock says (nothing left from an older lock).
# pip installs only the bootstrap lock (hash-checked); uv installs the rest (hash-checked), several times
# faster than pip. Build isolation is off so the editable install uses the locked setuptools.
$(STAMP): requirements.lock requirements-bootstrap.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=python3.X"; exit 2; }
	@echo "make: installing .venv from requirements.lock" >&2
	@rm -rf $(VENV) && $(PYTHON) -m venv $(VENV)
	@# pip's notes about unused local index folders are noise on these machines.
	@$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements-bootstrap.lock 2>&1 \
	  | { grep -v '^WARNING: Location' || true; } >&2
	@$(BIN)/uv pip install --quiet --python $(BIN)/python --require-hashes -r requirements.lock >&2
	@$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e . >&2
	@touch $(STAMP)

venv: $(STAMP)

# Quiet, so that `make demo ARGS="--headless --json" | jq` sees only the demo's own output.
demo: $(STAMP)
	@$(BIN)/ridesync demo $(ARGS)

# New lock files from pyproject.toml's ranges (and requirements-bootstrap.in): newest versions allowed.
lock: $(STAMP)
	$(BIN)/uv pip compile requirements-bootstrap.in $(LOCK_FLAGS) --upgrade -o requirements-bootstrap.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev $(LOCK_FLAGS) --upgrade -o requirements.lock

# The whole check on the newest releases pyproject.toml allows, in a throwaway venv, to catch the next
# release of a dependency before users do. CI keeps running the locked set (`make test`).
test-latest: $(STAMP)
	@d=$$(mktemp -d) && trap 'rm -rf "$$d"' EXIT && \
	  $(BIN)/uv venv --quiet --python $(PYTHON) "$$d/venv" && \
	  $(BIN)/uv pip install --quiet --python "$$d/venv/bin/python" --refresh -e '.[dev]' && \
	  echo "test-latest: versions that differ from requirements.lock:" && \
	  { $(BIN)/uv pip freeze --python "$$d/venv/bin/python" --exclude-editable | sort > "$$d/latest.txt"; \
	    grep -E '^[A-Za-z0-9]' requirements.lock | sed -E 's/ .*//' | sort > "$$d/locked.txt"; \
	    comm -13 "$$d/locked.txt" "$$d/latest.txt" | sed 's/^/  /'; } && \
	  touch "$$d/venv/.installed" && \
	  $(MAKE) --no-print-directory lint typecheck pytest VENV="$$d/venv"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The lock must still satisfy pyproject.toml: re-resolve with the locked versions preferred and compare.
lock-check: $(STAMP)
	@d=$$(mktemp -d) && trap 'rm -rf "$$d"' EXIT && cp requirements.lock "$$d/check.lock" && \
	  $(BIN)/uv pip compile pyproject.toml --extra dev $(LOCK_FLAGS) -o "$$d/check.lock" && \
	  { diff -u requirements.lock "$$d/check.lock" >&2 || \
	    { echo "requirements.lock no longer matches pyproject.toml: run make lock" >&2; exit 1; }; }

typecheck: $(STAMP)
	$(BIN)/mypy

# The interop tests drive a stock automerge-repo client under Node. Without npm they skip and say so.
INTEROP := tests/interop/node_modules/.installed
$(INTEROP): tests/interop/package.json tests/interop/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm install --prefix tests/interop --omit=optional --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "npm not found: interop tests will be skipped (install Node.js 20 and npm)"; fi

interop-deps: $(INTEROP)

# pytest exits 5 when it collected nothing; that is not a failure of the code under test.
# Four workers (pytest-xdist) even on two cores: most of the suite's wall time is tests waiting on
# simulated rides, real processes and loopback peers, not CPU (with two workers the cores were ~26 % busy),
# so 4 workers take the suite from ~8.3 to ~4.5 minutes on a 2-core machine. PYTEST_WORKERS=0 runs serially.
PYTEST_WORKERS ?= 4
pytest: $(STAMP) $(INTEROP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; exit 0; fi; exit $$rc

test: lock-check lint typecheck pytest

# The full multi-node fault test (tests/cluster/: 20 bikes, three nodes over PostgreSQL killed twice each in
# turn; about 4 minutes on a loaded 2-core machine). `make test` runs its short variant; `-m` deselects it.
test-cluster: $(STAMP)
	$(BIN)/python -m pytest -p no:xdist -m cluster tests/cluster $(PYTEST_ARGS)

# The README's screenshots (docs/*.png), taken in Chromium by the test that checks those pages.
screenshots: $(STAMP)
	RIDESYNC_SCREENSHOTS=docs $(BIN)/python -m pytest -q -p no:cacheprovider tests/demo/test_class_page.py

# The long version of every `ridesync campaign` (two to three hours in all); the short ones run in `make test`.
CAMPAIGNS := security crash network fuzz soak
campaign: $(STAMP)
	@rc=0; for c in $(CAMPAIGNS); do $(BIN)/ridesync campaign $$c --long --json $(CAMPAIGN_ARGS) || rc=1; done; exit $$rc

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
