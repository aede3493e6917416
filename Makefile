# Clarion's two commands are `make demo` and `make test`; everything else is a step of them.
# Each target installs what it needs, idempotently. Downloads and builds are cached outside
# the checkout (CLARION_CACHE_DIR, default ~/.cache/clarion) so a fresh clone reuses them.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed-stamp
# Extra pytest arguments, e.g. make test PYTEST_ARGS='-k kafka'
PYTEST_ARGS ?=

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# The product's distributions, each a folder with its own pyproject.toml (see the root
# pyproject.toml), installed editable, and the workspace's dev group (pip >= 25.1).
DISTS := contract worker operator clients/python devstack
$(STAMP): pyproject.toml constraints.txt $(DISTS:%=%/pyproject.toml)
	@echo "[clarion] > Python virtualenv and dependencies ($(VENV))"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@# The single distribution of before the split ("clarion") owned the same scripts.
	@if $(PY) -m pip show --quiet clarion >/dev/null 2>&1; then $(PY) -m pip uninstall --quiet --yes clarion; fi
	@# clarion-worker owned `clarion` (tail) before clarion-client did: reinstalling the old
	@# worker after the client would remove the client's script.
	@if $(PY) -m pip show --files clarion-worker 2>/dev/null | grep -q 'bin/clarion$$'; then $(PY) -m pip uninstall --quiet --yes clarion-worker; fi
	@$(PY) -m pip install --quiet --progress-bar off -c constraints.txt $(DISTS:%=-e ./%) --group dev
	@touch $@

.PHONY: venv
venv: $(STAMP) ## Create .venv with the pinned Python dependencies

.PHONY: stack-build
stack-build: venv ## Fetch Kafka; build etcd, Kubernetes, KWOK, Helm, crictl, Traefik, promtool into the cache
	@$(PY) -m clarion_devstack build

.PHONY: sysdeps
sysdeps: venv ## apt-get install HAProxy, Chromium, podman and the real node's packages when missing
	@$(PY) -m clarion_devstack.e2e.sysdeps

.PHONY: images
images: sysdeps ## Build the worker and operator images daemonless (podman) into the cache
	@$(PY) -m clarion_devstack.images

.PHONY: setup
setup: venv stack-build sysdeps clients ## Install everything the tests and the demo need

# Client libraries (issue 15): npm's cache (tsclient.py) and Maven's local repository
# (the one tests/clients/test_kotlin.py builds with) under the clarion cache, outside the
# checkout. The Kotlin step only fetches what the pom pins (the test compiles), once per
# pom: its stamp is keyed by the pom's hash.
CLARION_CACHE := $(or $(CLARION_CACHE_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/clarion)
KOTLIN := clients/kotlin
KOTLIN_STAMP := $(CLARION_CACHE)/maven/.clarion-deps-$(shell sha256sum < $(KOTLIN)/pom.xml | cut -c1-16)
$(KOTLIN_STAMP):
	@echo "[clarion] > Kotlin client: Maven dependencies and plugins ($(CLARION_CACHE)/maven)"
	@mvn -B -q -Dstyle.color=never -Dmaven.repo.local=$(CLARION_CACHE)/maven -f $(KOTLIN)/pom.xml dependency:go-offline
	@touch $@

.PHONY: clients
clients: venv $(KOTLIN_STAMP) ## TypeScript client: npm ci and build; Kotlin client: its Maven dependencies
	@$(PY) -m clarion_devstack.tsclient

.PHONY: crds
crds: venv ## Regenerate the CRD files and the operator spec reference from the spec's models
	@$(PY) -m clarion_devstack.crdgen --write
	@$(PY) -m clarion_devstack.docs --write docs/operator.md

.PHONY: docs
docs: venv ## Rerun the cog blocks that write the generated tables of docs/*.md
	@$(PY) -m clarion_devstack.docs --write

.PHONY: manifests
manifests: venv ## Render manifests/install.yaml and the values reference of docs/install.md from the chart
	@$(PY) -m clarion_devstack.charts --write
	@$(PY) -m clarion_devstack.docs --write docs/install.md

.PHONY: charts-check
charts-check: setup ## Generated files in sync, then tests/charts: lint, render, dry-run, install, RBAC
	@$(PY) -m clarion_devstack.charts --check
	@$(PY) -m clarion_devstack.docs --check docs/install.md
	@$(BIN)/pytest tests/charts $(PYTEST_ARGS)

.PHONY: lint
lint: venv ## ruff lint and format check
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .

.PHONY: format
format: venv ## Apply ruff's formatting and safe fixes
	@$(BIN)/ruff format .
	@$(BIN)/ruff check --fix .

.PHONY: typecheck
typecheck: venv ## mypy --strict over every package
	@# Its cache outside the checkout: a fresh clone re-checks only what changed (mypy
	@# validates each entry by the source's hash when the mtime differs, and its version).
	@$(BIN)/mypy --cache-dir "$(CLARION_CACHE)/mypy"

.PHONY: contracts
contracts: venv ## import-linter layer contracts
	@$(BIN)/lint-imports

.PHONY: check
check: lint typecheck contracts ## Static checks only (no services)

.PHONY: unit
unit: venv ## Unit tests only (no services)
	@$(BIN)/pytest -m 'not integration' $(PYTEST_ARGS)

.PHONY: integration
integration: setup ## Integration tests against the real local stack
	@$(BIN)/pytest -m integration $(PYTEST_ARGS)

.PHONY: test
test: setup check ## Everything: install, static checks, then the suite side by side and its exclusive tests alone
	@$(PY) -m clarion_devstack.suite $(PYTEST_ARGS)

.PHONY: demo
demo: setup ## The stack, the operator, 2 workers (real pods if the node is up) behind HAProxy, a live dashboard
	@$(PY) -m clarion_devstack.e2e.demo

.PHONY: env-up
env-up: setup ## Start Kafka, the control plane, KWOK and the real node (if the kernel allows); .clarion/env.json
	@$(PY) -m clarion_devstack up

.PHONY: env-status
env-status: venv ## Show the local stack's endpoints and processes
	@$(PY) -m clarion_devstack status

.PHONY: env-down
env-down: venv ## Stop every process of the local stack; put back what the real node changed
	@$(PY) -m clarion_devstack down

# Extra arguments for bench/run.py, e.g. make bench BENCH_ARGS='--workloads w2 --servers uvicorn'
BENCH_ARGS ?=

.PHONY: bench
bench: setup ## Benchmarks W1-W5 side by side with the peers (~35 min); results + tables
	@$(PY) -m pip install --quiet --progress-bar off -c constraints.txt --group bench
	@$(PY) -m clarion_devstack up
	@$(PY) bench/run.py $(BENCH_ARGS)
	@$(PY) bench/report.py $$(ls -t bench/results/*.json | head -1)
