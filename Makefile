# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# They create .venv, install torch 2.13.0 (CPU) only when the venv has no torch, then the project.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.unifl-installed
# A second venv with A1111's gradio 3.41.2, for the browser test of the UniFL tab (make test-webui-341).
VENV341 ?= .venv-gradio341
STAMP341 := $(VENV341)/.unifl-installed
# A third with torch 2.14.1 + torchvision 0.29.1 (a pair that imports together), for the Mask R-CNN
# structure model (make test-torchvision); torchvision is no dependency of the pack.
VENVTV ?= .venv-torchvision
STAMPTV := $(VENVTV)/.unifl-installed
PYTEST_ARGS ?=

.PHONY: setup test test-fast test-host-stacks test-torchvision demo bench bench-real-size clean browser

$(STAMP): pyproject.toml requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

$(STAMP341): pyproject.toml requirements.txt
	test -x $(VENV341)/bin/python || python3 -m venv $(VENV341)
	$(VENV341)/bin/python -c "import torch" 2>/dev/null || $(VENV341)/bin/python -m pip install --quiet torch==2.13.0
	$(VENV341)/bin/python -m pip install --quiet "gradio==3.41.2" "gradio_client==0.5.0" "fastapi==0.94.0" "starlette==0.26.1" \
		"pydantic==1.10.21" "httpx==0.24.1" "uvicorn==0.30.6" "numpy==1.26.4" "pillow<11" "websockets<12"
	$(VENV341)/bin/python -m pip install --quiet -e . "huggingface_hub<1.0"
	touch $(STAMP341)

$(STAMPTV): pyproject.toml requirements.txt
	test -x $(VENVTV)/bin/python || python3 -m venv $(VENVTV)
	$(VENVTV)/bin/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(VENVTV)/bin/python -m pip install --quiet -e ".[dev]"
	touch $(STAMPTV)

setup: $(STAMP)

# The browser tests need Debian's chromium (Playwright drives it; it never downloads a browser).
browser:
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: the browser tests will skip"

# lint-imports: the house's arrows (pyproject.toml [tool.importlinter], ARCHITECTURE.md).
test: setup browser $(STAMP341)
	$(VENV)/bin/lint-imports --no-cache
	UNIFL_WEBUI_PYTHONS=$(CURDIR)/$(VENV341)/bin/python $(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# The core's tests on A1111 1.10.1's and Forge's pinned library stacks, each set up by install.py as the
# webui would (docs/host-compatibility.md). Not in `test`: ~7.5 min on 2 cores the first time (building
# the two venvs in .host-stacks/), ~2.5 min once they exist.
test-host-stacks:
	PYTEST_ARGS="$(PYTEST_ARGS)" tests/host_stacks/run.sh

# The tests that need torchvision (skipped with that reason in `make test`): random-weight Mask R-CNN.
test-torchvision: $(STAMPTV)
	$(VENVTV)/bin/python -m pytest -q tests/test_maskrcnn.py $(PYTEST_ARGS)

demo: setup
	$(PY) -m unifl demo

bench: setup
	$(PY) bench/train_step.py

# SD1.5 and SDXL at their real widths, random weights (docs/benchmarks.md); ~25 min on 2 CPU cores, 24 GB.
# It runs in the torchvision venv (the recipe's Mask R-CNN); AlignProp in ALIGNPROP_PYTHON (trl==0.23.1).
ALIGNPROP_PYTHON ?=
bench-real-size: $(STAMPTV)
	$(VENVTV)/bin/python bench/real_size.py --threads 1 $(if $(ALIGNPROP_PYTHON),--alignprop-python $(ALIGNPROP_PYTHON))

clean:
	rm -rf out runs .pytest_cache
