# The two commands a newcomer runs: `make run` and `make test`. Everything else hangs off them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# checkov pins a large dependency tree of its own: it lives in a venv apart.
TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed
IMAGE_TAG ?= dev
# make images: docker where an engine answers, else podman (scripts/images.py decides when
# ENGINE is empty); BASE_IMAGE is auto, official, local or an image (docs/images.md).
ENGINE ?=
BASE_IMAGE ?= auto
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CODE := pipeline_core dispatcher consumer cli harness chaos bench tests scripts

.PHONY: setup redis-server prometheus podman kubectl chromium run test lint fmt chaos soak bench screenshot images lock clean

setup: $(STAMP) $(TOOLS_STAMP) redis-server prometheus podman kubectl chromium

# A venv with the project (editable) and its pinned dependencies; quick when nothing changed.
$(STAMP): pyproject.toml requirements-dev.lock
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3 -m venv failed: installing Debian's python3-venv"; \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q -r requirements-dev.lock
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

$(TOOLS_STAMP): tools/checkov.lock
	@$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install -q -r tools/checkov.lock
	@touch $(TOOLS_STAMP)

# Tests and `make run` start their own redis-server; install Debian's when it is missing.
redis-server:
	@command -v redis-server >/dev/null || { \
	  echo "redis-server not found: installing Debian's redis-server"; \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends redis-server; }

# Prometheus (and promtool) for the observability tests and `make run`; Debian's package.
prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  echo "prometheus not found: installing Debian's prometheus"; \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends prometheus; }

# The images are built and run daemonless by Debian's podman (with runc; catatonit for a
# pod's infra container), on a base that debootstrap makes where no registry answers.
podman:
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v catatonit >/dev/null \
	  && command -v debootstrap >/dev/null || { \
	  echo "podman, runc, catatonit or debootstrap not found: installing Debian's"; \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends \
	    podman runc catatonit debootstrap; }

# kubectl renders k8s/ (kustomize) for the manifest tests and podman kube play.
kubectl:
	@command -v kubectl >/dev/null || { \
	  echo "kubectl not found: installing Debian's kubernetes-client"; \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends kubernetes-client; }

# The console's browser tests (and `make screenshot`) drive Debian's Chromium through
# Playwright: `playwright install` cannot download its own browser builds here.
chromium:
	@command -v chromium >/dev/null || { \
	  echo "chromium not found: installing Debian's chromium"; \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends chromium; }

run: setup
	$(PY) -m harness

test: lint
	$(PY) -m pytest -q

# The full fault-injection suite (a quick tier of it runs in `make test`); prints a table.
chaos: setup
	$(PY) -m chaos --results docs/chaos-results.md

# A long mixed run with periodic faults (SOAK_MINUTES, default 20): loss, duplicates
# and the memory of every process over time. Not part of `make test`.
SOAK_MINUTES ?= 20
soak: setup
	$(PY) -m chaos.soak --minutes $(SOAK_MINUTES)

# Throughput, fairness, latency, scaling and memory against the raw redis-py limit, and
# the images' sizes and start times: one table, printed and written to bench/RESULTS.md.
bench: images
	$(PY) -m bench --results bench/RESULTS.md --images-tag $(IMAGE_TAG) $(if $(ENGINE),--engine $(ENGINE))

# README's picture of the console (docs/console.png): a private stack under load, then
# Chromium photographs /ui/ (about two minutes: the chart needs history).
screenshot: setup
	$(PY) -m harness.screenshot

# Both images (Docker, else podman), then their sizes and times from run to ready.
images: setup
	$(PY) -m scripts.images --tag $(IMAGE_TAG) --base $(BASE_IMAGE) $(if $(ENGINE),--engine $(ENGINE))

lint: setup
	$(PY) -m ruff format --check $(CODE)
	$(PY) -m ruff check $(CODE)
	$(PY) -m mypy
	$(PY) -m bandit -q -c pyproject.toml -r pipeline_core dispatcher consumer cli harness scripts chaos bench
	$(PY) scripts/audit_dependencies.py

fmt: setup
	$(PY) -m ruff format $(CODE)
	$(PY) -m ruff check --fix $(CODE)

# Regenerate the pinned dependency files from pyproject.toml (needs the package index).
lock: setup
	$(PY) -m pip install -q pip-tools
	$(PY) -m piptools compile -q --strip-extras --no-header --no-emit-index-url --no-emit-find-links --generate-hashes --allow-unsafe -o requirements.lock pyproject.toml
	$(PY) -m piptools compile -q --strip-extras --no-header --no-emit-index-url --no-emit-find-links --generate-hashes --allow-unsafe --extra dev -o requirements-dev.lock pyproject.toml
	$(PY) -m piptools compile -q --strip-extras --no-header --no-emit-index-url --no-emit-find-links --generate-hashes --allow-unsafe -o tools/checkov.lock tools/checkov.in

clean:
	rm -rf $(VENV) $(TOOLS) .run .mypy_cache .ruff_cache
