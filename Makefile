# `make venv`, `make demo` (README.md) and `make test`, `make unit` (CONTRIBUTING.md). Each sets up a fresh machine.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# A CPU machine takes PyTorch's CPU build (a plain `torch` would pull a multi-GB CUDA build).
# A GPU machine: make TORCH=torch ONNXRUNTIME=onnxruntime-gpu
TORCH ?= torch==2.13.0
ONNXRUNTIME ?= onnxruntime

.PHONY: venv system lint unit demo test clean

venv: $(VENV)/.installed

# The venv, and NVIDIA's perf_analyzer in it (scripts/install-perf-analyzer.sh: no root needed).
$(VENV)/.installed: pyproject.toml scripts/install-perf-analyzer.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)" "$(ONNXRUNTIME)"
	$(PY) -m pip install -q -e ".[server,torch,test]"
	bash scripts/install-perf-analyzer.sh $(VENV)
	touch $@

# What the tests need beyond Python: Chromium, PostgreSQL, a Docker engine and the local test image.
system: venv
	bash scripts/setup-system.sh

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The tests that need no server, Docker, database or browser (under a minute).
unit: venv
	$(PY) -m pytest -q tests/unit

demo: venv
	$(VENV)/bin/sweeper run search_spaces/demo.yaml

test: venv system lint
	$(PY) -m pytest

clean:
	rm -rf $(VENV) results
