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
# The quick experiment's backbone budget (fewer epochs than the paper's 50-epoch averaging).
QUICK := data=synthetic data.size=quick
QUICK_BACKBONE := stage.max_epochs=30 stage.patience=8 stage.averaging.k=10

.PHONY: install run test test-slow test-all ui lint clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned, so nothing later pulls a different build
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[dev]' $(TORCH_PINS)
	touch $(STAMP)

install: $(STAMP)

## The main job: the quick experiment (simulate and build data when absent, baselines, report).
run: $(STAMP)
	$(PY) -m stellarexp.data simulate $(QUICK)
	$(PY) -m stellarexp.data build $(QUICK)
	$(PY) -m stellarexp.train -m stage=baseline $(QUICK) \
		model=xgboost,lightgbm,catboost,random_forest features=mag,color target=all
	$(PY) -m stellarexp.train stage=backbone model=convit target=all $(QUICK) $(QUICK_BACKBONE)
	$(PY) -m stellarexp.train stage=head model=convit target=all $(QUICK)
	$(PY) -m stellarexp.train stage=logg_classifier model=convit target=logg $(QUICK)
	$(PY) -m stellarexp.train stage=logg_heads model=convit target=logg $(QUICK)
	$(PY) -m stellarexp.report $(QUICK)

## Fast suite (< 15 minutes including install).
test: $(STAMP)
	$(PYTEST) -n $(JOBS) --timeout 900 -m "not slow and not services and not browser" tests

## Slow suite: longer end-to-end checks.
test-slow: $(STAMP)
	$(PYTEST) -n $(JOBS) --timeout 1800 -m "slow" tests

## Everything CI runs.
test-all: test test-slow

## MLflow UI on 127.0.0.1 against the default store.
ui: $(STAMP)
	$(PY) -m stellarexp.tracking.ui

lint: $(STAMP)
	$(PY) -m ruff check stellarexp tests

clean-venv:
	rm -rf $(VENV)
