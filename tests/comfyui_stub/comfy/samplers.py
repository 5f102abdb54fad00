"""Stand-in for ``comfy.samplers``: sampler objects by name."""

KSAMPLER_NAMES = ["euler", "ddim", "lcm"]


class KSAMPLER:
    def __init__(self, name: str, extra_options=None, inpaint_options=None):
        self.name, self.extra_options, self.inpaint_options = name, extra_options or {}, inpaint_options or {}


def sampler_object(name: str) -> KSAMPLER:
    if name == "ddim":  # ComfyUI: ddim is euler with random inpaint noise
        return KSAMPLER("euler", inpaint_options={"random": True})
    if name not in KSAMPLER_NAMES:
        raise KeyError(name)
    return KSAMPLER(name)
