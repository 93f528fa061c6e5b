# stellarexp: every target creates .venv and installs the project when needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
# pytest: no plugin autoload (saves ~2 s a run); the plugins we use are named explicitly.
PYTEST := PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 $(PY) -m pytest -p xdist.plugin -p pytest_timeout
JOBS ?= 2
# Idle OpenMP threads spin by default; on a shared 2-core machine that slows torch ~10x.
export OMP_WAIT_POLICY ?= PASSIVE
# The quick experiment (steps, sizes, backbone budget): stellarexp/conf/experiment/quick.yaml.
QUICK := data=synthetic data.size=quick

.PHONY: install run test test-slow test-services test-browser test-all ui lint clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned, so nothing later pulls a different build
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[dev]' $(TORCH_PINS)
	touch $(STAMP)

install: $(STAMP)

## The main job: the quick experiment under one MLflow run (data when absent, baselines, image
## model, package, perturbations, report); finished steps are reused (docs/reproduce.md).
run: $(STAMP)
	$(PY) -m stellarexp.reproduce experiment=quick

## Fast suite (< 15 minutes including install).
test: $(STAMP)
	$(PYTEST) -n $(JOBS) --timeout 900 -m "not slow and not services and not browser" tests

## Slow suite: longer end-to-end checks.
test-slow: $(STAMP)
	$(PYTEST) -n $(JOBS) --timeout 1800 -m "slow" tests

## Real services: PostgreSQL (Debian package, installed when missing), an MLflow server, a study
## shared by 4 workers (tests/services; a few minutes). -s prints the suite's figures.
test-services: $(STAMP)
	$(PYTEST) -s --timeout 1200 -m services tests/services

## The MLflow UI in headless Chromium (Debian chromium + chromium-driver, installed with apt-get
## when missing) on a store the project writes (8 baselines, report, a 3-trial study; ~4 min):
## runs table, trials, reproduce run, baselines' comparison; screenshots in tests/artifacts/browser/.
test-browser: $(STAMP)
	$(PY) -m tests.browser.chromium
	$(PYTEST) --timeout 1500 -m browser tests/test_browser_ui.py

## Everything CI runs.
test-all: test test-slow test-services test-browser

## MLflow UI on 127.0.0.1 against the default store.
ui: $(STAMP)
	$(PY) -m stellarexp.tracking.ui

lint: $(STAMP)
	$(PY) -m ruff check stellarexp tests hydra_plugins
	$(VENV)/bin/lint-imports

clean-venv:
	rm -rf $(VENV)
