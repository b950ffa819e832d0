# Two commands on a fresh machine: `make demo` and `make test`. Needs python3 (3.11+), node/npm, make.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
AZURITE := node_modules/.bin/azurite-table
CHECKOV := .tools/checkov/bin/checkov
# Debian's Chromium, driven by Playwright (tests/dashboard, the demo's screenshot); installed with apt-get.
CHROMIUM := /usr/bin/chromium

.PHONY: help test test-exhaustive checks demo serve lint typecheck pytest sandbox clean bench bench-fanout bench-sweep bench-inventory bench-onboarding chromium

help:
	@echo "make test   - lint, type-check and run every test (starts and stops Azurite)"
	@echo "make test-exhaustive - the long sweeps of real kills and faults (1 minute on a quiet 2-core machine, 30 on a slow one)"
	@echo "make demo   - the whole job end to end against the local sandbox"
	@echo "make serve  - the HTTP API on http://127.0.0.1:7071/api/ against the sandbox (demo seed), sign-in as in Azure; SERVE_PORT=..."
	@echo "make bench  - CPU, memory, cold start and Key Vault writes against issue 13's goals (print figures)"
	@echo "make bench-fanout - 1,000 due customers drained by 1, 2 and 4 queue workers (print figures)"
	@echo "make bench-sweep - rotations per second at several SCAN_CONCURRENCY values (print figures)"
	@echo "make bench-inventory - the credential inventory's first and daily pass (INVENTORY_ARGS=--tenants 5000)"
	@echo "make bench-onboarding - bulk onboarding of 200 GDAP customers, one sign-in, 50 ms per call (print figures)"
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

# Not a file target: it stays a no-op once Chromium is there, and where it cannot be installed the browser tests skip.
chromium:
	@scripts/install-chromium.sh

lint: $(VENV)/.installed
	$(PY) -m ruff check .

typecheck: $(VENV)/.installed
	$(PY) -m mypy shared sandbox devhost

# The exhaustive sweeps of real kills (every state write, 20 random kills, every fault after the work) take 1 minute
# on a quiet 2-core machine and about 30 on a slow one (docs/benchmarks.md): `make test` runs a sample of each,
# `make test-exhaustive` runs all of them.
PYTEST_MARKS ?= not exhaustive

pytest: $(VENV)/.installed $(AZURITE) $(CHECKOV) chromium
	scripts/with-azurite.sh scripts/pytest.sh $(PY) -m "$(PYTEST_MARKS)" $(PYTEST_ARGS)

test-exhaustive: $(VENV)/.installed $(AZURITE)
	scripts/with-azurite.sh scripts/pytest.sh $(PY) -m exhaustive $(PYTEST_ARGS)

# The installs (pip, npm, checkov, apt) are independent, so they run side by side, and lint and type-check start
# as soon as the virtual environment is there; the tests run alone afterwards, on an otherwise idle machine.
checks: lint typecheck $(AZURITE) $(CHECKOV) chromium

test:
	@$(MAKE) --no-print-directory -j5 --output-sync=target checks
	@$(MAKE) --no-print-directory pytest

demo: $(VENV)/.installed $(AZURITE) chromium
	scripts/with-azurite.sh $(PY) -m scripts.demo

serve: $(VENV)/.installed $(AZURITE)
	scripts/with-azurite.sh $(PY) -m scripts.serve

bench: $(VENV)/.installed $(AZURITE)
	scripts/with-azurite.sh $(PY) -m benchmarks.lean $(BENCH_ARGS)
	scripts/with-azurite.sh $(PY) -m benchmarks.fanout $(FANOUT_ARGS)

bench-fanout: $(VENV)/.installed $(AZURITE)
	scripts/with-azurite.sh $(PY) -m benchmarks.fanout $(FANOUT_ARGS)

bench-sweep: $(VENV)/.installed $(AZURITE)
	scripts/with-azurite.sh $(PY) -m benchmarks.scale

# The credential inventory's first and daily pass (issue 25); INVENTORY_ARGS="--tenants 5000" for the goal's size.
bench-inventory: $(VENV)/.installed $(AZURITE)
	scripts/with-azurite.sh $(PY) -m benchmarks.inventory $(INVENTORY_ARGS)

bench-onboarding: $(VENV)/.installed $(AZURITE)
	scripts/with-azurite.sh $(PY) -m benchmarks.onboarding $(ONBOARDING_ARGS)

clean:
	rm -rf $(VENV) .tools node_modules .mypy_cache .ruff_cache .pytest_cache .hypothesis .sandbox .demo
