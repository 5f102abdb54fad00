#!/usr/bin/env bash
# Makes a real Forge for tests/test_forge_real.py, offline: Forge's source from a local copy of its
# public repository, and a venv with Forge's own pins, torch 2.14.1 + torchvision 0.29.1 (the pair that
# imports together) and UniFL's install.py run as Forge runs it.
#
#   FORGE_SOURCE=/path/to/stable-diffusion-webui-forge tests/host_stacks/setup_forge.sh [TARGET, default .host-stacks/forge]
#
# FORGE_SOURCE is a clone (or a bare git directory) of lllyasviel/stable-diffusion-webui-forge; the
# commit used is FORGE_COMMIT (default: its HEAD; tested at dfdcbab6, f2.0.1v1.10.1). Forge's start-up
# git clones (assets, BLIP, huggingface_guess) are not made: huggingface_guess comes from PyPI, the
# assets folder is left empty (the page lacks its fonts and icons), BLIP only warns when missing.
# Rerunning reuses a finished venv. About 8 min from scratch on a 2-core machine (pip's downloads).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${1:-$ROOT/.host-stacks/forge}
SOURCE=${FORGE_SOURCE:?set FORGE_SOURCE to a clone of lllyasviel/stable-diffusion-webui-forge}
COMMIT=${FORGE_COMMIT:-HEAD}
PYTHON=${PYTHON:-python3.11}

if [ ! -f "$TARGET/launch.py" ]; then
    mkdir -p "$TARGET"
    git --git-dir="$(git -C "$SOURCE" rev-parse --absolute-git-dir)" archive "$COMMIT" | tar -x -C "$TARGET"
fi
# Forge serves this clone's fonts and icons as /webui-assets and will not start without the folder.
mkdir -p "$TARGET/repositories/stable-diffusion-webui-assets"
VENV=$TARGET/venv
if [ ! -e "$VENV/.built" ]; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    pip=("$VENV/bin/python" -m pip install --quiet)
    "${pip[@]}" torch==2.14.1 torchvision==0.29.1
    "$VENV/bin/python" -m pip freeze | grep -iE '^(torch|torchvision)==' >"$VENV/torch-pins.txt"
    # Forge's pins minus the bare "torch" line and its setuptools==69.5.1: torch 2.14 needs >=77.0.3, and
    # pytorch_lightning 1.9 imports pkg_resources, which setuptools 81 dropped.
    grep -vE '^(torch|setuptools==.*)$' "$TARGET/requirements_versions.txt" >"$VENV/forge-requirements.txt"
    "${pip[@]}" -r "$VENV/forge-requirements.txt" huggingface-guess "setuptools>=77.0.3,<81" -c "$VENV/torch-pins.txt"
    # What Forge's prepare_environment does for every extension (skipped with --skip-prepare-environment).
    (cd "$TARGET" && PYTHONPATH="$TARGET" "$VENV/bin/python" "$ROOT/install.py")
    touch "$VENV/.built"
fi
"$VENV/bin/python" -m pip list --format=freeze 2>/dev/null | grep -iE '^(torch|torchvision|diffusers|transformers|peft|gradio|accelerate|numpy)=='
echo "Forge ready: FORGE_PATH=$TARGET FORGE_PYTHON=$VENV/bin/python"
