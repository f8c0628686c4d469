# Two commands on a fresh clone: `make serve` and `make test`. Everything else is optional.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 3000
DEFAULT_MODEL := default_model/shapes-resnet10
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: serve test test-fast lint format train-default export-default loadtest bench gpu-check gpu-kit container-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Serving needs no torch: only the `serve` extra.
$(VENV)/.serve: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[serve]'
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.serve

# The default model in fp32 and int8, as the container serves it.
serve: export RESNET_MODELS ?= shapes-resnet10:latest,shapes-resnet10-int8:latest
serve: $(VENV)/.serve
	$(BIN)/python -m export.store $(DEFAULT_MODEL) $(DEFAULT_MODEL)-int8
	$(BIN)/python -m service.check
	$(BIN)/bentoml serve service.service:Classifier --port $(PORT)

# The browser test drives Debian's Chromium (Playwright's own browser download is not possible here);
# the load tests' compiled generator is Debian's wrk; the alert rules' checker is Debian's promtool; "another host"
# is a network namespace made with iproute2's ip (tests/netns.py).
CHROMIUM := /usr/bin/chromium
IP := /usr/sbin/ip
WRK := /usr/bin/wrk
PROMETHEUS := /usr/bin/promtool
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(CHROMIUM):
	$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium
$(WRK):
	$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wrk
$(PROMETHEUS):
	$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq prometheus
$(IP):
	$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq iproute2

test: $(VENV)/.dev $(CHROMIUM) $(WRK) $(PROMETHEUS) $(IP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup

# The inner loop: every test that starts no server, container, browser or other process and exports no model (~1 min).
test-fast: $(VENV)/.dev
	$(BIN)/python -m pytest -n 2 -m "not slow"

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Locust against HOST, or against a service it starts; non-zero exit when an SLO is missed.
loadtest: $(VENV)/.dev
	bash loadtest/run.sh

# In-process and HTTP benchmarks side by side → BENCHMARKS.md and docs/*.png (~15 min on 2 cores).
bench: $(VENV)/.dev $(WRK)
	$(BIN)/python -m loadtest.bench

# Build ./Dockerfile and `bentoml containerize` the Bento with podman, run each and classify an image (root; ~10 min).
container-test: $(VENV)/.dev
	PY=$(BIN)/python bash deploy/container-test.sh

# On an NVIDIA host: CUDA parity vs CPU and torch, fp32/fp16 in process, and served in the GPU topology and the old one → reports/gpu/gpu.json
# (~5 min unattended, nothing downloaded after the install; copy it to docs/gpu_check.json for BENCHMARKS.md).
gpu-check: $(VENV)/.dev $(WRK)
	$(BIN)/pip install -q -e '.[gpu,gpu-decode]'
	$(BIN)/python -m loadtest.gpu_check --out reports/gpu

# For a lent GPU host without network (Python 3.12, torch and CUDA wheels, no onnxruntime-gpu, no bentoml, no wrk):
# the wheels it lacks, wrk and the photos in ignored .carry/ parts under 64 MiB each, and the device calls to make
# (deploy/gpu/carry.py prints them; the last runs deploy/gpu/run.sh, i.e. gpu-check there). Needs a python3.12 here.
gpu-kit: $(VENV)/.dev
	$(BIN)/python deploy/gpu/carry.py

# Retrain the embedded default model (~10 min on 2 cores), then re-export its ONNX files.
train-default: $(VENV)/.dev
	$(BIN)/python -m models.train_shapes

export-default: $(VENV)/.dev
	$(BIN)/python -m export resnet10_shapes --weights default_model/weights.safetensors \
	  --num-classes 6 --labels default_model/labels.txt --name shapes-resnet10 \
	  --policy full --short-side 112 --max-long-side 336 --crop-resize 128 --crop-size 112 \
	  --precision fp32 int8 --reference-images 4000 --training-record default_model/training.json $(if $(wildcard ../shared/images),--photos ../shared/images) \
	  --output default_model --no-store

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
