# The two commands of README.md: `make demo` and `make test`. Both set up a fresh machine.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# A CPU machine takes PyTorch's CPU build (a plain `torch` would pull a multi-GB CUDA build).
# A GPU machine: make TORCH=torch ONNXRUNTIME=onnxruntime-gpu
TORCH ?= torch==2.13.0
ONNXRUNTIME ?= onnxruntime

.PHONY: venv system demo test clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)" "$(ONNXRUNTIME)"
	$(PY) -m pip install -q -e ".[server,torch,test]"
	touch $@

# What the tests need beyond Python: Chromium, a Docker engine and the local test image.
system:
	bash scripts/setup-system.sh

demo: venv
	$(VENV)/bin/sweeper run search_spaces/demo.yaml

test: venv system
	$(PY) -m pytest

clean:
	rm -rf $(VENV) results
