# The two commands of the README: `make demo` and `make test`. Each bootstraps .venv from pyproject.toml
# when it is missing or older than pyproject.toml, so a fresh clone with Python 3.11 needs nothing else.
PYTHON ?= python3.11
SHELL := bash
.SHELLFLAGS := -o pipefail -c
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest venv interop-deps clean campaign

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=python3.X"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	# pip's notes about unused local index folders are noise on these machines.
	$(BIN)/python -m pip install --quiet --upgrade pip 2>&1 | { grep -v '^WARNING: Location' || true; }
	$(BIN)/python -m pip install --quiet -e '.[dev]' 2>&1 | { grep -v -e '^WARNING: Location' || true; }
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/ridesync demo $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

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
pytest: $(STAMP) $(INTEROP)
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; exit 0; fi; exit $$rc

test: lint typecheck pytest

# The long version of every `ridesync campaign` (two to three hours in all); the short ones run in `make test`.
CAMPAIGNS := security crash network fuzz soak
campaign: $(STAMP)
	@rc=0; for c in $(CAMPAIGNS); do $(BIN)/ridesync campaign $$c --long --json $(CAMPAIGN_ARGS) || rc=1; done; exit $$rc

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
