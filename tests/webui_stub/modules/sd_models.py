"""Stand-in for A1111 ``modules/sd_models.py``: the checkpoint list and the loaded-model hand-off."""

import os
from types import SimpleNamespace


class CheckpointInfo:
    def __init__(self, filename):
        self.filename = filename
        self.name = os.path.basename(filename)
        self.title = f"{self.name} [0000000000]"


checkpoints_list = {}
#: The folder ``list_models`` scans (the webui's ``models/Stable-diffusion``).
model_dir = "models/Stable-diffusion"
model_data = SimpleNamespace(sd_model=None)


def list_models():
    checkpoints_list.clear()
    for name in sorted(os.listdir(model_dir)) if os.path.isdir(model_dir) else []:
        info = CheckpointInfo(os.path.join(model_dir, name))
        checkpoints_list[info.title] = info


def unload_model_weights(sd_model=None, info=None):
    """A1111 moves the model to the CPU (``send_model_to_cpu``) and keeps it in ``model_data``."""
    (sd_model or model_data.sd_model).to("cpu")
    return sd_model


def send_model_to_device(m):
    m.to("cuda")
