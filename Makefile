# clickmask: the two commands are `make serve` and `make test`; both set everything up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CHECKPOINT ?= export/checkpoints/clickmask-lite0.pt
ONNX := model_repository/clickmask/1/model.onnx
PYTEST_ARGS ?=
# The Label Studio adapter's own environment (label-studio-sdk 2.x needs numpy>=2.2, the serve extra pins
# numpy<2) and Label Studio itself, for tests/integration/test_label_studio_e2e.py.
LS_VENV ?= .venv-ls
LABEL_STUDIO_VENV ?= .venv-labelstudio
LABEL_STUDIO_VERSION ?= 1.23.2

.PHONY: serve test unit integration system-deps venv model wheel clean help venv-ls venv-labelstudio label-studio-envs

help:
	@echo "make serve   set up, build the ONNX model and start the server (gRPC 127.0.0.1:8001)"
	@echo "make test    set up, build the ONNX model and run every test"
	@echo "make unit    unit tests only (no server)"
	@echo "make wheel   build dist/clickmask-*.whl with the default model inside"

## System packages the embedded Triton server, the Prometheus tests and the browser tests need (Debian/Ubuntu).
system-deps: $(VENV)/.system-deps
$(VENV)/.system-deps:
	@if ! ldconfig -p | grep -q 'libpython3.11.so.1.0'; then \
	  echo ">> installing libpython3.11 (Triton's Python-backend stub links it)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libpython3.11; \
	fi
	@if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then \
	  echo ">> installing prometheus + promtool (alert-rule tests, Prometheus-backed integration test)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; \
	fi
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  echo ">> installing chromium + chromium-driver (headless browser tests of clickmask demo)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver; \
	fi
	@mkdir -p $(VENV) && touch $@

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml $(VENV)/.system-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[all]'
	@touch $@

model: $(ONNX)
$(ONNX): $(VENV)/.installed $(wildcard $(CHECKPOINT))
	$(VENV)/bin/clickmask export onnx $(if $(wildcard $(CHECKPOINT)),--checkpoint $(CHECKPOINT),) --output $(ONNX)

serve: venv model
	$(VENV)/bin/clickmask serve

## The adapter's environment: clickmask[label-studio] on numpy 2 (+ onnxruntime, pytest, nuclio-sdk: its tests, the benchmark).
venv-ls: $(LS_VENV)/.installed
$(LS_VENV)/.installed: pyproject.toml
	@test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install -q --upgrade pip
	$(LS_VENV)/bin/python -m pip install -q -e '.[label-studio]' onnxruntime nuclio-sdk pytest pytest-timeout
	@touch $@

## Label Studio itself (PyPI label-studio) in its own environment, for the end-to-end test.
venv-labelstudio: $(LABEL_STUDIO_VENV)/.installed
$(LABEL_STUDIO_VENV)/.installed:
	@test -x $(LABEL_STUDIO_VENV)/bin/python || $(PYTHON) -m venv $(LABEL_STUDIO_VENV)
	$(LABEL_STUDIO_VENV)/bin/python -m pip install -q --upgrade pip
	$(LABEL_STUDIO_VENV)/bin/python -m pip install -q 'label-studio==$(LABEL_STUDIO_VERSION)'
	@touch $@

## Both, without failing the build: where they cannot be installed their tests skip and say why.
label-studio-envs:
	@$(MAKE) --no-print-directory venv-ls venv-labelstudio || echo ">> WARNING: the Label Studio environments could not be installed; their tests skip"

test: venv model label-studio-envs
	$(PY) -m pytest $(PYTEST_ARGS)
	@if [ -f $(LS_VENV)/.installed ]; then set -x; $(LS_VENV)/bin/python -m pytest tests/unit/test_label_studio_backend.py $(PYTEST_ARGS); fi

unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

## A wheel that serves on its own: the ONNX model (built from the checkpoint) is package data.
wheel: venv model
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w dist .
	@ls -l dist/*.whl

clean:
	rm -rf $(VENV) $(ONNX) .pytest_cache dist
