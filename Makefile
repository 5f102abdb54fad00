# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# They create .venv, install torch 2.13.0 (CPU) only when the venv has no torch, then the project.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.unifl-installed
PYTEST_ARGS ?=

.PHONY: setup test test-fast demo bench clean

$(STAMP): pyproject.toml requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: setup
	$(PY) -m unifl demo

bench: setup
	$(PY) bench/train_step.py

clean:
	rm -rf out runs .pytest_cache
