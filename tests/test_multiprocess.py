"""Two processes with torchrun (gloo on the CPU): the path `accelerate launch -m unifl train` takes on GPUs."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("stage", ["1", "2"])
def test_two_processes_keep_identical_loras(tiny_sd15_dir, tmp_path, stage):
    script = Path(__file__).with_name("multiprocess_train.py")
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script), str(tiny_sd15_dir), str(tmp_path), stage], check=True, capture_output=True, timeout=600)
    ranks = [(tmp_path / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert ranks[0][2] == ranks[1][2] == "2"
    assert float(ranks[0][1]) > 0, "the LoRA must have trained"
    assert ranks[0][:2] == ranks[1][:2], "gradients must be averaged so every process holds the same LoRA"
    # The one collective over a flat buffer gives each process exactly the mean of the two local gradients,
    # the gradient one process would get from both micro-batches.
    grads = [load_file(str(tmp_path / f"grads{r}.safetensors")) for r in (0, 1)]
    assert not torch.equal(grads[0]["local"], grads[1]["local"]), "each process sees its own data"
    expected = (grads[0]["local"] + grads[1]["local"]) / 2
    for g in grads:
        torch.testing.assert_close(g["averaged"], expected, rtol=1e-6, atol=1e-8)
