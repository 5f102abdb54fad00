"""Run under `torchrun --nproc_per_node 2`: train briefly, then write this rank's LoRA checksum.

Used by tests/test_multiprocess.py to check that gradients are averaged across processes: each rank
sees different data and noise, so without the all-reduce their LoRAs would drift apart.
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from conftest import FAST  # noqa: E402
from unifl.core.config import load_config  # noqa: E402
from unifl.core.lora.peft import lora_state_dict  # noqa: E402
from unifl.core.training.trainer import UniFLTrainer  # noqa: E402
from unifl.pocket.plugin import register  # noqa: E402

register()  # the tiny preset and pocket images

model_dir, run_dir, stage = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
config = load_config(None, [f"model.path={model_dir}", f"logging.output_dir={run_dir}", *FAST, f"stage={stage}"], preset="tiny")
trainer = UniFLTrainer(config)
rank = trainer.accelerator.process_index

# Record the LoRA gradient of the first step on this process before and after the cross-process average.
average = trainer._average_gradients


def recording_average(params):
    if params is trainer.lora_params and trainer.step == 0:
        local = torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None]).clone()
        average(params)
        averaged = torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None])
        save_file({"local": local, "averaged": averaged}, str(run_dir / f"grads{rank}.safetensors"))
    else:
        average(params)


trainer._average_gradients = recording_average
trainer.train()
state = lora_state_dict(trainer.denoiser.lora_target)
checksum = sum(float(v.double().abs().sum()) for v in state.values())
moved = sum(float(v.double().abs().sum()) for k, v in state.items() if "lora_B" in k)
(run_dir / f"rank{rank}.txt").write_text(f"{checksum!r} {moved!r} {trainer.accelerator.num_processes}")
