# Two commands on a fresh machine: `make demo` and `make test`. Needs python3 (3.11+), node/npm, make.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
AZURITE := node_modules/.bin/azurite-table
CHECKOV := .tools/checkov/bin/checkov

.PHONY: help test demo lint typecheck pytest sandbox clean bench

help:
	@echo "make test   - lint, type-check and run every test (starts and stops Azurite)"
	@echo "make demo   - the whole job end to end against the local sandbox"
	@echo "make bench  - benchmarks (print figures)"
	@echo "make clean  - remove the virtual environment, node_modules and caches"

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $@

$(AZURITE): package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

# checkov lives in its own virtual environment: its dependencies clash with the app's.
$(CHECKOV): scripts/install-checkov.sh
	scripts/install-checkov.sh
	touch $@

lint: $(VENV)/.installed
	$(PY) -m ruff check .

typecheck: $(VENV)/.installed
	$(PY) -m mypy shared sandbox

pytest: $(VENV)/.installed $(AZURITE) $(CHECKOV)
	scripts/with-azurite.sh scripts/pytest.sh $(PY) $(PYTEST_ARGS)

test: lint typecheck pytest

demo: $(VENV)/.installed $(AZURITE)
	scripts/with-azurite.sh $(PY) -m scripts.demo

bench: $(VENV)/.installed $(AZURITE)
	scripts/with-azurite.sh $(PY) -m benchmarks.scale

clean:
	rm -rf $(VENV) .tools node_modules .mypy_cache .ruff_cache .pytest_cache .hypothesis .sandbox .demo
