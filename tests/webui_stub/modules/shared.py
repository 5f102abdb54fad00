"""Stand-in for A1111 ``modules/shared.py`` with ``options.Options/OptionInfo`` and ``shared_state.State``."""

import time
from types import SimpleNamespace


class OptionInfo:
    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None, section=None, refresh=None):
        self.default, self.label, self.section = default, label, section


class Options:
    """Settings: registered options with defaults, values in ``data`` (as ``config.json`` holds them)."""

    def __init__(self):
        self.__dict__["data"] = {}
        self.__dict__["data_labels"] = {"sd_model_checkpoint": OptionInfo(None, "Stable Diffusion checkpoint")}

    def add_option(self, key, info):
        self.data_labels[key] = info
        self.data.setdefault(key, info.default)

    def __getattr__(self, name):
        if name in self.data:
            return self.data[name]
        if name in self.data_labels:
            return self.data_labels[name].default
        raise AttributeError(name)

    def __setattr__(self, name, value):
        self.data[name] = value


class State:
    """The webui's one job state: what ``/internal/progress`` reports and what Interrupt sets."""

    interrupted = False
    job = ""
    job_no = 0
    job_count = 0
    sampling_step = 0
    sampling_steps = 0
    current_image = None
    id_live_preview = 0
    textinfo = None
    time_start = None

    def begin(self, job="(unknown)"):
        self.sampling_step, self.job_count, self.job_no = 0, -1, 0
        self.current_image, self.id_live_preview = None, 0
        self.interrupted, self.textinfo, self.job = False, None, job
        self.time_start = time.time()

    def end(self):
        self.job, self.job_count = "", 0

    def interrupt(self):
        self.interrupted = True

    def assign_current_image(self, image):
        self.current_image = image
        self.id_live_preview += 1


opts = Options()
cmd_opts = SimpleNamespace(lora_dir="models/Lora")
state = State()
