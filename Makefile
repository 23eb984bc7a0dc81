# tfserve-bench — every target installs what it needs into .venv first.
# `make help` lists the targets; variables can be set on the command line (make export MODELS=residual_regressor).

PYTHON_SYS ?= $(shell command -v python3.11 || command -v python3)
VENV       := .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed
ARTIFACTS  ?= artifacts
MODELS_DIR ?= $(ARTIFACTS)/models
RESULTS_DIR?= $(ARTIFACTS)/results

MODELS     ?= residual_regressor reconstructing_regressor softplus_regressor
DATASET    ?= diabetes
MODE       ?= graph
BACKEND    ?= auto
GRPC_PORT  ?= 8500
REST_PORT  ?= 8501
QUICK      ?= 0
USERS      ?= 8
SPAWN_RATE ?= 4
RUN_TIME   ?= 20s
WORKERS    ?= 0
BASE       ?=
NEW        ?=
IGNORE     ?=
TARGET     ?=
REST_TARGET?=
MODEL      ?=
MODEL_FILE ?=
NAME       ?=
IMPORT     ?=
SAMPLE_DATA?=
SERVER_LABEL ?= external
SOAK_SECONDS ?= 600
P99_MS     ?=
SEARCH     ?= quick
TRIALS     ?= 8
TARGET_RPS ?=
API        ?= grpc
REPEATS    ?= 3
TEST_WORKERS ?= auto
PYTEST_ARGS ?=

# TensorFlow's start-up banners are hidden by the CLIs themselves (export/tf_startup.py); set
# TF_CPP_MIN_LOG_LEVEL yourself, or pass --verbose, to see them.
export PYTHONUNBUFFERED := 1

.DEFAULT_GOAL := help
.PHONY: help venv export verify serve check-deploy bench crosscheck loadtest capacity compare demo tune reliability test zoo clean

help: ## List every target and what it does
	@echo "tfserve-bench targets (variables in CAPS can be set: make export MODELS=residual_regressor)"
	@grep -E '^[a-z][a-zA-Z_-]*:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | awk -F'\t' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -n "$(PYTHON_SYS)" || { echo "error: Python 3.11 not found (set PYTHON_SYS=/path/to/python3.11)"; exit 1; }
	@echo ">> creating $(VENV) with $(PYTHON_SYS) and installing pinned dependencies (a few minutes the first time)"
	$(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --progress-bar off -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP) ## Create .venv and install the pinned dependencies

export: $(STAMP) ## Train, export and verify SavedModels into artifacts/models/<model>/<version>/ (MODELS=, DATASET=; your own: MODEL_FILE=x.keras NAME= [IMPORT=module SAMPLE_DATA=])
ifeq ($(MODEL_FILE),)
	$(PY) -m export --models $(MODELS) --dataset $(DATASET) --models-dir $(MODELS_DIR)
else
	$(PY) -m export keras $(MODEL_FILE) --name $(NAME) --models-dir $(MODELS_DIR) $(foreach m,$(IMPORT),--import $(m)) \
	  $(if $(SAMPLE_DATA),--sample-data $(SAMPLE_DATA),)
endif

verify: $(STAMP) ## Re-verify every exported version in a fresh process
	$(PY) -m export verify --models-dir $(MODELS_DIR)

serve: $(STAMP) ## Serve artifacts/models: real TF Serving if Docker answers, else the embedded server (BACKEND=auto|tfserving|embedded, MODE=graph|xla|eager, IMPORT=, GRPC_PORT=, REST_PORT=)
	$(PY) -m serving launch --backend $(BACKEND) --mode $(MODE) --grpc-port $(GRPC_PORT) --rest-port $(REST_PORT) --models-dir $(MODELS_DIR) \
	  $(foreach m,$(IMPORT),--import $(m))

check-deploy: $(STAMP) ## Check the deployment files (TF Serving in docker/, docker/k8s/, models.config; Locust in docker/locust/) by machine: Compose Specification schema, Kubernetes 1.33 strict; no Docker needed
	$(PY) -m serving.cli.config_files docker/batching/batching_cpu.config docker/batching/batching_gpu.config docker/monitoring.config $(if $(wildcard $(MODELS_DIR)/models.config),$(MODELS_DIR)/models.config --models-dir $(MODELS_DIR),docker/models.config.example)
	$(PY) -m pytest -q tests/serving/test_deploy_configs.py tests/serving/test_launch.py

bench: $(STAMP) ## Standard benchmark suite into artifacts/results/<run-id>/ (QUICK=1 MODEL= MODE= IMPORT=; TARGET=host:port [REST_TARGET=host:port MODEL=name SERVER_LABEL=] for an external TF Serving)
	$(PY) -m benchmarks suite --models-dir $(MODELS_DIR) --results-dir $(RESULTS_DIR) $(if $(filter 1,$(QUICK)),--quick,) \
	  $(if $(TARGET),--server none --skip-inprocess --target $(TARGET) --rest-target '$(REST_TARGET)' --server-label $(SERVER_LABEL),--mode $(MODE) $(foreach m,$(IMPORT),--server-arg=--import=$(m))) \
	  $(if $(MODEL),--models $(MODEL),)

crosscheck: $(STAMP) ## Our clients vs perf_analyzer (gRPC) and wrk (REST): batch 1,32,256 + a 224x224x3 request, 1 and 8 streams, REPEATS= interleaved pairs, one table (installs the tools; TARGET=, REST_TARGET=, MODEL=; default: embedded server)
	$(PY) -m benchmarks perf-analyzer --install --models-dir $(MODELS_DIR) --results-dir $(RESULTS_DIR) --concurrency 1,8 \
	  --batch-sizes 1,32,256 --image-request --repeats $(REPEATS) \
	  $(if $(TARGET),--target $(TARGET) --server-label $(SERVER_LABEL) $(if $(REST_TARGET),--rest-target $(REST_TARGET),),--server embedded --mode $(MODE)) \
	  --models $(if $(MODEL),$(MODEL),residual_regressor)

loadtest: $(STAMP) ## Locust headless run against the embedded server (MODEL=, USERS=, SPAWN_RATE=, RUN_TIME=, WORKERS=; any served model: requests from its signature)
	$(PY) -m benchmarks locust --models-dir $(MODELS_DIR) --results-dir $(RESULTS_DIR) --users $(USERS) --spawn-rate $(SPAWN_RATE) --run-time $(RUN_TIME) --workers $(WORKERS) $(if $(MODEL),--model $(MODEL),)

capacity: $(STAMP) ## Load-generator capacity vs a no-op server, per client (native nghttpd+nginx if installed; INSTALL=1 apt-gets them)
	$(PY) -m benchmarks capacity --results-dir $(RESULTS_DIR) $(if $(filter 1,$(INSTALL)),--install,)

compare: $(STAMP) ## Compare two result runs: make compare BASE=<run-id|dir> NEW=<run-id|dir> [IGNORE="server mode"]
	@test -n "$(BASE)" -a -n "$(NEW)" || { echo "usage: make compare BASE=<run-id> NEW=<run-id> [IGNORE=\"server mode\"]"; exit 2; }
	$(PY) -m benchmarks compare $(BASE) $(NEW) --results-dir $(RESULTS_DIR) $(if $(IGNORE),--ignore $(IGNORE),)

demo: $(STAMP) ## The main job end to end on the embedded server: export, serve graph & eager, benchmark, report with findings, plots; prints the `python -m benchmarks readme RUN_ID` that writes them into README
	$(PY) -m benchmarks demo --models-dir $(MODELS_DIR) --results-dir $(RESULTS_DIR)

tune: $(STAMP) ## Server configuration with the highest rate within a p99 budget: make tune MODEL=name P99_MS=20 [SEARCH=quick|recipe|grid TRIALS= TARGET_RPS= API=grpc|rest]
	@test -n "$(MODEL)" -a -n "$(P99_MS)" || { echo "usage: make tune MODEL=<model> P99_MS=<ms> [SEARCH= TRIALS= TARGET_RPS= API=]"; exit 2; }
	$(PY) -m benchmarks tune --model $(MODEL) --p99-ms $(P99_MS) --models-dir $(MODELS_DIR) --results-dir $(RESULTS_DIR) \
	  --search $(SEARCH) --trials $(TRIALS) --api $(API) $(if $(TARGET_RPS),--target-rps $(TARGET_RPS),)

reliability: $(STAMP) ## Rollout, faults, hostile input, kill/restart, overload and a soak (SOAK_SECONDS=600, QUICK=1); prints the table
	$(PY) -m benchmarks reliability --models-dir $(MODELS_DIR) --results-dir $(RESULTS_DIR) --soak-seconds $(SOAK_SECONDS) $(if $(filter 1,$(QUICK)),--quick,)

test: $(STAMP) ## Run the test suite in shuffled order, files spread over TEST_WORKERS processes (default: one per core, at most 4; TEST_WORKERS=0 for one process; PYTEST_ARGS="-p no:randomly" for file order)
	$(PY) -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --maxprocesses 4 --dist loadfile) $(PYTEST_ARGS)

zoo: $(STAMP) ## The whole model zoo (20 SavedModels) against TensorFlow's v1 Session loader, gRPC + REST (make test runs a fast subset)
	ZOO=all $(PY) -m pytest -q tests/serving/test_zoo.py

clean: ## Remove artifacts/ (models and results); keeps .venv
	rm -rf $(ARTIFACTS)
