#!/usr/bin/env bash
# UniFL at real size on a CUDA GPU, in one command that ends within 8 minutes. Never run by CI.
#
#   bench/gpu_check.sh                          # PYTHON=python, results in bench-gpu/
#   PYTHON=.venv/bin/python ALIGNPROP_PYTHON=/venvs/trl/bin/python OUT=/tmp/gpu bench/gpu_check.sh
#
# 1. bench/real_size.py --device cuda: one stage-1 and one stage-2 step of SD1.5 at 512 px and SDXL at
#    1024 px (random weights, the recipe's feedback models at their real sizes, the lean defaults), and
#    AlignProp's step beside SD1.5 when ALIGNPROP_PYTHON names a Python with trl==0.23.1; memory from
#    torch.cuda.max_memory_allocated. Mask R-CNN (structure) is included where torchvision imports.
# 2. bench/gpu_train.py: 50 stage-1 steps of a random-weight SD1.5 at 512 px through UniFLTrainer.train()
#    (the paper's 20-step rollouts), the LoRA exported; fails on a non-finite loss.
# Each part has its own time limit (300 s + 170 s), so the whole ends within 8 minutes.
#
#   bench/gpu_check.sh --dry-run                # the same two parts on the CPU at toy widths and 64 px (~1 min):
#                                               # what the tests run, so a GPU session's one call fails only on the GPU
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-bench-gpu}
mkdir -p "$OUT"
if [ "${1:-}" = "--dry-run" ]; then
    DEVICE=(--device cpu --quick --threads 2) SD15_PX=64 SDXL_PX=64 STEPS=1
else
    DEVICE=(--device cuda) SD15_PX=512 SDXL_PX=1024 STEPS=50
    "$PY" -c "import torch; assert torch.cuda.is_available(), 'bench/gpu_check.sh needs a CUDA GPU (torch.cuda.is_available() is False)'"
fi
# `import unifl` must find this checkout: the repository root is the package.
if ! "$PY" -c "import unifl" 2>/dev/null; then
    PKG=$(mktemp -d)
    ln -s "$PWD" "$PKG/unifl"
    export PYTHONPATH="$PKG${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
ALIGNPROP=()
[ -n "${ALIGNPROP_PYTHON:-}" ] && ALIGNPROP=(--alignprop-python "$ALIGNPROP_PYTHON")
"$PY" -c "import torch; gpu = f'{torch.cuda.get_device_name()}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB;' if torch.cuda.is_available() else 'none (a dry run on the CPU);'; print('GPU:', gpu, 'torch', torch.__version__)" | tee "$OUT/gpu.txt"
status=0
timeout 300 "$PY" bench/real_size.py "${DEVICE[@]}" --lean-only --sd15-resolutions $SD15_PX --sdxl-resolutions $SDXL_PX "${ALIGNPROP[@]}" \
    --json "$OUT/real_size.json" | tee "$OUT/real_size.md" || status=$?
timeout 170 "$PY" bench/gpu_train.py "${DEVICE[@]}" --steps $STEPS --resolution $SD15_PX | tee "$OUT/train$STEPS.txt" || status=$?
echo "results in $OUT/ (exit $status)"
exit $status
