# EXACT-CT: `make demo` and `make test` are all a fresh machine needs (see README.md).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Local, offline defaults for every target (no telemetry, state inside the repository).
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_LOGGING_LEVEL ?= WARNING
# The ephemeral API server needs more than its default 20 s to start on a busy 2-core machine (measured:
# `make demo` failed with "Timed out while attempting to connect to ephemeral Prefect API server" at load 5).
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 180
export DVC_SITE_CACHE_DIR ?= $(CURDIR)/.dvc/site-cache
export DVC_NO_ANALYTICS := 1
export TOTALSEG_HOME_DIR ?= $(CURDIR)/.totalsegmentator
export MPLBACKEND := Agg
export PYTHONHASHSEED := 0

.PHONY: setup system-tools demo test test-fast bench bench-quick lint format server

# The environment is rebuilt only when the dependency declarations change.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# The bundled pip (23.2) resolves numpy 2 beside thinc 8.2 and spaCy then fails at import.
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@# totalsegmentator drags in PyPI `argparse` (shadows the stdlib one and breaks Prefect's
	@# temporary server) and a torchvision that cannot import beside the CPU torch: remove both.
	$(BIN)/python -m pip uninstall -y -q argparse torchvision || true
	$(BIN)/python -c "import torch, monai, spacy, medspacy, prefect, dvc, pydicom, totalsegmentator, exact_ct; print('environment ok: torch', torch.__version__)"
	@touch $(STAMP)

setup: $(STAMP)

# System tools two tests use (Debian packages; needs root or sudo): headless Chromium renders the HTML
# evaluation report, dciodvfy (dicom3tools) validates the DICOM SEG and SR of `exact infer`.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
SYSTEM_PACKAGES := $(if $(shell command -v chromium 2>/dev/null),,chromium) \
	$(if $(shell command -v dciodvfy 2>/dev/null),,dicom3tools)
system-tools:
ifneq ($(strip $(SYSTEM_PACKAGES)),)
	@echo "installing Debian packages for the tests: $(strip $(SYSTEM_PACKAGES))"
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(strip $(SYSTEM_PACKAGES)) >/dev/null
endif

test: $(STAMP) system-tools
	EXACT_MODE=test $(BIN)/python -m pytest -q

test-fast: $(STAMP)
	EXACT_MODE=test $(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	EXACT_MODE=test $(BIN)/python benchmarks/run_all.py

bench-quick: $(STAMP)  # the same scripts at their --quick sizes: minutes, for a sanity check
	EXACT_MODE=test $(BIN)/python benchmarks/run_all.py --quick

lint: $(STAMP)
	$(BIN)/ruff check src stages flows tests benchmarks
	$(BIN)/ruff format --check src stages flows tests benchmarks
	$(BIN)/mypy src stages flows

format: $(STAMP)
	$(BIN)/ruff check --fix src stages flows tests benchmarks
	$(BIN)/ruff format src stages flows tests benchmarks

demo: $(STAMP)
	EXACT_MODE=demo $(BIN)/python -m flows.demo

server: $(STAMP)
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200
