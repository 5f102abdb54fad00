#!/usr/bin/env bash
# The core's tests on the stock library stacks of the webuis UniFL supports (docs/host-compatibility.md).
#
# For each stack: a venv with the host's pins (tests/host_stacks/<stack>.txt) and torch 2.13.0 (the CPU
# wheel), then UniFL's install.py exactly as the webui runs it (it installs only what is missing, holding
# everything installed), then the tests. A venv is reused while its pins, requirements.txt, install.py
# and requirements_check.py are unchanged.
#
#   tests/host_stacks/run.sh                 # every stack
#   tests/host_stacks/run.sh forge           # one
#   HOST_STACKS_DIR=/tmp/stacks PYTEST_ARGS="-x" tests/host_stacks/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
DIR=${HOST_STACKS_DIR:-$ROOT/.host-stacks}
PYTHON=${PYTHON:-python3.11}  # the local torch wheel is cp311; both webuis accept 3.11
STACKS=("$@")
[ ${#STACKS[@]} -gt 0 ] || STACKS=(a1111-1.10.1 forge)
# The core: everything but the pocket world, the browser, real-ComfyUI and end-to-end demo tests.
TESTS=(
    tests/test_schedule.py tests/test_losses.py tests/test_lora.py tests/test_export.py tests/test_loading.py
    tests/test_rollouts.py tests/test_trainer.py tests/test_tiny.py tests/test_config.py tests/test_cli.py
    tests/test_perception_contract.py tests/test_perception_models.py tests/test_reward_loaders.py
    tests/test_reward_training.py tests/test_score.py tests/test_train_reward.py tests/test_prompt_selection.py
    tests/test_webui_extension.py tests/test_webui_form.py tests/test_webui_install.py
    tests/test_gradient_checkpointing.py tests/test_preflight.py tests/test_maskrcnn.py tests/test_coco.py tests/test_recipes.py
)
# Absolute, under the path the script was called by: pytest resolves relative paths physically, and a
# checkout folder whose name is no Python identifier (a worktree "h-x") cannot be the root package.
TESTS=("${TESTS[@]/#/$ROOT/}")
SHOWN='^(diffusers|transformers|peft|accelerate|huggingface[-_]hub|safetensors|tokenizers|numpy|pillow|scipy|matplotlib|tqdm|torch|gradio)=='

for stack in "${STACKS[@]}"; do
    pins=$ROOT/tests/host_stacks/$stack.txt
    [ -f "$pins" ] || { echo "no such stack: $stack (have: $(cd tests/host_stacks && ls *.txt | sed 's/\.txt$//' | tr '\n' ' '))" >&2; exit 2; }
    venv=$DIR/$stack
    key=$(cat "$pins" requirements.txt install.py webui_extension/requirements_check.py | sha256sum | cut -c1-16)
    if [ ! -e "$venv/.built-$key" ]; then
        echo "== $stack: building $venv"
        rm -rf "$venv"
        "$PYTHON" -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet torch==2.13.0  # never unpinned: that would fetch a CUDA build
        echo "torch==$("$venv/bin/python" -c 'import torch; print(torch.__version__)')" >"$venv/torch-pin.txt"
        "$venv/bin/python" -m pip install --quiet -r "$pins" -c "$venv/torch-pin.txt"
        # What the webui does at start-up: run the extension's install.py in its Python.
        "$venv/bin/python" install.py
        "$venv/bin/python" -m pip install --quiet --no-deps -e .
        touch "$venv/.built-$key"
    fi
    echo "== $stack: $("$venv/bin/python" -m pip list --format=freeze 2>/dev/null | grep -iE "$SHOWN" | tr '\n' ' ')"
    # shellcheck disable=SC2086
    nice -n 10 "$venv/bin/python" -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:-} "${TESTS[@]}"
done
