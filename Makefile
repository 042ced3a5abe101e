# The commands the README names. Each target sets up what it needs (virtualenvs, models) first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
SAM_VENV := .venv-sam
LINT_VENV := .venv-lint
PY := $(VENV)/bin/python
EVENT ?= events/summarize.json
MODEL ?= phi-3-mini-4k-instruct-q4
MODELS_DIR ?= models
TEST_MODEL := $(MODELS_DIR)/test/tiny-phi3.gguf
PYTEST_ARGS ?=

.PHONY: help setup run test lint format bench bench-quick bench-sweep clean

help:
	@echo "make run   [EVENT=events/translate.json] [MODEL_PATH=/path/model.gguf]  invoke an event through the Lambda runtime emulator"
	@echo "make test                                                              lint and the whole test suite"
	@echo "make bench | make bench-quick                                          speed benchmark (table, JSON, plot in bench-results/)"
	@echo "make bench-sweep                                                       engine settings against the defaults (bench-results/sweep.json)"

$(VENV)/.installed: requirements-dev.txt layers/runtime/requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# llama-cpp-python compiles from source the first time (minutes); pip caches the wheel.
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

$(SAM_VENV)/.installed: requirements-sam.txt
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/python -m pip install --quiet -r requirements-sam.txt
	touch $@

$(LINT_VENV)/.installed: requirements-lint.txt
	test -x $(LINT_VENV)/bin/python || $(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LINT_VENV)/bin/python -m pip install --quiet -r requirements-lint.txt
	touch $@

setup: $(VENV)/.installed $(SAM_VENV)/.installed $(LINT_VENV)/.installed

$(TEST_MODEL): scripts/make_test_model.py $(VENV)/.installed
	$(PY) scripts/make_test_model.py --out $@

# The model to serve: MODEL_PATH if given, else the manifest's model fetched into models/.
ifdef MODEL_PATH
SERVE_MODEL := $(MODEL_PATH)
model: ;
else
SERVE_MODEL = $(shell $(PY) scripts/download_model.py --model $(MODEL) --out-dir $(MODELS_DIR) --print-path)
model: setup
	$(PY) scripts/download_model.py --model $(MODEL) --out-dir $(MODELS_DIR)
endif
.PHONY: model

run: setup model
	$(PY) scripts/local_invoke.py $(EVENT) --model "$(SERVE_MODEL)"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam validate --lint --template template.yaml --region us-east-1
	$(SAM_VENV)/bin/cfn-lint template.yaml
	$(LINT_VENV)/bin/hadolint Dockerfile
	# Skipped checks are justified where they are skipped (template Metadata, Dockerfile comments).
	$(LINT_VENV)/bin/checkov --quiet --compact --skip-download --framework cloudformation -f template.yaml
	$(LINT_VENV)/bin/checkov --quiet --compact --skip-download --framework dockerfile -f Dockerfile

format: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: setup $(TEST_MODEL) lint
	TEST_MODEL_PATH=$(TEST_MODEL) $(PY) -m pytest $(PYTEST_ARGS)

# The speed benchmark (a model with Phi-3-mini's shapes is generated once into models/bench/).
# make bench-quick runs under 5 minutes (GNU make cannot take `make bench --quick`: it reads --quick as
# an option of its own).
BENCH_ARGS ?=
bench: $(VENV)/.installed
	$(PY) scripts/bench.py $(BENCH_ARGS)

bench-quick: $(VENV)/.installed
	$(PY) scripts/bench.py --quick $(BENCH_ARGS)

# Each engine setting (threads, batch size, K cache, flash attention, mmap) against the defaults.
bench-sweep: $(VENV)/.installed
	$(PY) scripts/bench.py --sweep $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(SAM_VENV) $(LINT_VENV) $(MODELS_DIR)/test .pytest_cache .mypy_cache .ruff_cache
