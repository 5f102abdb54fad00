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

.PHONY: setup test test-fast test-host-stacks test-torchvision demo arena-tune arena arena-ablations arena-choices arena-curves peers peer-venvs bench bench-real-size clean browser comfy-validate

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

# The Comfy Registry's checks of [tool.comfy] and the code (`comfy node validate`, the same as before
# `comfy node publish`; offline). It only warns about exec/eval and one-line `a; b` statements, which the
# registry says it will refuse: here a warning fails. DO_NOT_TRACK: comfy-cli neither asks nor records consent.
comfy-validate: setup
	@out=$$(DO_NOT_TRACK=1 $(VENV)/bin/comfy --skip-prompt node validate </dev/null 2>&1); status=$$?; echo "$$out"; \
		test $$status -eq 0 && ! echo "$$out" | grep -q "Security warnings"

# lint-imports: the house's arrows (pyproject.toml [tool.importlinter], ARCHITECTURE.md).
test: setup browser $(STAMP341) comfy-validate
	$(VENV)/bin/lint-imports --no-cache
	UNIFL_WEBUI_PYTHONS=$(CURDIR)/$(VENV341)/bin/python $(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup comfy-validate
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

# The tuning run (once per change of the code or the base model): every learning-rate and discriminator-rate sweep
# of UniFL's stages and of each peer with both LoRA variants, on the validation split, first training seed;
# out/arena-tune/report.md shows every candidate. Resumable job by job; prints its predicted wall time first.
# `$(PY) -m unifl.pocket.arena.tuned out/arena-tune` then exports its choices to pocket/arena/tuned/ for the commit;
# TUNING_FROM=pocket/arena/tuned sweeps only what is not committed yet (a tuning run over several sittings).
TUNING_FROM ?=
arena-tune: setup
	$(PY) -m unifl arena --tune $(if $(TUNING_FROM),--tuning-from $(TUNING_FROM))

# The standard run: UniFL, the peers (`make peers peer-venvs` first) with the committed tuning choices
# (pocket/arena/tuned/: each peer's better LoRA variant) and every row's post-filter control on the test split,
# five training seeds; resumable job by job (rerun to continue); prints its predicted wall time first;
# out/arena/report.md and metrics.json. Then `$(PY) -m unifl.pocket.arena.docs out/arena/metrics.json` writes the docs.
arena: setup
	$(PY) -m unifl arena --split test

# UniFL's ablations (stage 1 without PeFL, with one global reward; stage 2 without the adversarial term) beside its
# stages, five seeds on the test split, with the tuning run's choices; out/arena-ablations.
arena-ablations: setup
	$(PY) -m unifl arena --split test --ablations --peers '' --out out/arena-ablations

# The candidate defaults beside today's UniFL (docs/paper-choices.md): stage 1's aesthetic thresholds and rollout
# guidance, issue 20's stage-2 step-count schedules and cheaper steps, then the LoRA targets and ranks; validation
# split, five seeds, the committed tuning rates; each decided by its own Holm-corrected family;
# out/arena-choices-<set>/report.md.
arena-choices: setup
	$(PY) -m unifl arena --choices stage1
	$(PY) -m unifl arena --choices stage2
	$(PY) -m unifl arena --choices lora

# The budget curve: ×1 (the standard run in out/arena), ×4 and ×16 (seed 0 only) of the training budget, the
# standard run's chosen hyperparameters; resumable, its cost printed before it starts; out/arena-curves/curves.png.
# Then `$(PY) -m unifl.pocket.arena.docs out/arena/metrics.json --curves out/arena-curves` writes the docs with it.
arena-curves: setup
	$(PY) -m unifl.pocket.arena.curves --standard out/arena --out out/arena-curves

# The peers' public repositories at the commits bench/peers/ patches, into .peers/src/ (ignored by git). Offline:
# clone them elsewhere at those commits and set UNIFL_PEER_DIFFUSERS / UNIFL_PEER_PCM (docs/pocket-world.md).
peers: setup
	$(PY) -m unifl.pocket.arena.peers fetch

# The peers' Pythons: venvs in .peers/venvs/ that add webdataset (LCM-LoRA, PCM) or trl 0.23.1 (AlignProp) to this
# project's packages (UNIFL_PEERS_PYTHON / UNIFL_PEER_TRL_PYTHON point at others).
PEER_VENVS ?= .peers/venvs
peer-venvs: setup
	for v in peers trl; do test -x $(PEER_VENVS)/$$v/bin/python || $(PY) -m venv $(PEER_VENVS)/$$v; \
		$(PY) -c "import site; print(site.getsitepackages()[0])" > $$($(PEER_VENVS)/$$v/bin/python -c "import site; print(site.getsitepackages()[0])")/zz_unifl_project.pth; done
	$(PEER_VENVS)/peers/bin/pip install --quiet webdataset
	$(PEER_VENVS)/trl/bin/pip install --quiet "trl==0.23.1"

bench: setup
	$(PY) bench/train_step.py

# SD1.5 and SDXL at their real widths, random weights (docs/benchmarks.md); ~25 min on 2 CPU cores, 24 GB.
# It runs in the torchvision venv (the recipe's Mask R-CNN); AlignProp in ALIGNPROP_PYTHON (trl==0.23.1).
ALIGNPROP_PYTHON ?=
bench-real-size: $(STAMPTV)
	$(VENVTV)/bin/python bench/real_size.py --threads 1 $(if $(ALIGNPROP_PYTHON),--alignprop-python $(ALIGNPROP_PYTHON))

clean:
	rm -rf out runs .pytest_cache
