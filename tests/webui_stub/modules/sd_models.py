"""Stand-in for A1111 ``modules/sd_models.py``: the checkpoint list and the loaded-model hand-off."""

import hashlib
import os
from types import SimpleNamespace


class CheckpointInfo:
    """As A1111's: the title is the file's name until its hash is known, then ``name [shorthash]``."""

    def __init__(self, filename):
        self.filename = filename
        self.name = os.path.basename(filename)
        self.shorthash = None
        self.title = self.name

    def register(self):
        checkpoints_list[self.title] = self
        checkpoint_aliases.update({self.title: self, self.name: self})

    def calculate_shorthash(self):
        """What the webui runs when it first loads the model (``load_model``/``forge_model_reload``):
        the list's key changes from the file name to ``name [hash]``, in place."""
        self.shorthash = hashlib.sha256(self.filename.encode()).hexdigest()[:10]
        old_title, self.title = self.title, f"{self.name} [{self.shorthash}]"
        entries = [(self.title, self) if title == old_title else (title, info) for title, info in checkpoints_list.items()]
        checkpoints_list.clear()
        checkpoints_list.update(entries)
        self.register()
        return self.shorthash


checkpoints_list = {}
#: Every name a file was listed under (its titles before and after the hash, its file name).
checkpoint_aliases = {}
#: The folder ``list_models`` scans (the webui's ``models/Stable-diffusion``).
model_dir = "models/Stable-diffusion"
model_data = SimpleNamespace(sd_model=None)


def list_models():
    checkpoints_list.clear()
    checkpoint_aliases.clear()
    for name in sorted(os.listdir(model_dir)) if os.path.isdir(model_dir) else []:
        CheckpointInfo(os.path.join(model_dir, name)).register()


def unload_model_weights(sd_model=None, info=None):
    """A1111 moves the model to the CPU (``send_model_to_cpu``) and keeps it in ``model_data``."""
    (sd_model or model_data.sd_model).to("cpu")
    return sd_model


def send_model_to_device(m):
    m.to("cuda")
