# Two commands on a fresh clone: `make serve` and `make test`. Everything else is optional.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 3000
DEFAULT_MODEL := default_model/shapes-resnet10
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: serve test lint format train-default export-default bench clean

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

serve: $(VENV)/.serve
	$(BIN)/python -m export.store $(DEFAULT_MODEL) $(DEFAULT_MODEL)-int8
	$(BIN)/bentoml serve service.service:Classifier --port $(PORT)

test: $(VENV)/.dev
	$(BIN)/python -m pytest -n 2 --dist loadgroup

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Retrain the embedded default model (~10 min on 2 cores), then re-export its ONNX files.
train-default: $(VENV)/.dev
	$(BIN)/python -m models.train_shapes

export-default: $(VENV)/.dev
	$(BIN)/python -m export resnet10_shapes --weights default_model/weights.safetensors \
	  --num-classes 6 --labels default_model/labels.txt --name shapes-resnet10 \
	  --policy full --short-side 128 --max-long-side 384 --crop-resize 146 --crop-size 128 \
	  --precision fp32 int8 --training-record default_model/training.json \
	  --output default_model --no-store

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
