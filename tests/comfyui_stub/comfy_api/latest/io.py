"""Stand-in for ``comfy_api.latest.io``: the V3 schema classes the UniFL nodes use.

Constructors accept exactly the keyword arguments of ComfyUI 0.3.64's (``comfy_api/latest/_io.py``), so
a misspelt option fails here as it would in ComfyUI. ``Schema.validate`` checks what ComfyUI's does
(unique input/output ids) and ``v1_info`` gives what ``/object_info`` lists (input order, widget types,
output types), which the workflow tests use.
"""

from __future__ import annotations

import inspect
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

_BASE = ("display_name", "optional", "tooltip", "lazy", "extra_dict")
_WIDGET = _BASE + ("default", "socketless", "force_input")
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


class Input:
    allowed: tuple[str, ...] = _BASE
    io_type = "*"

    def __init__(self, id: str, *args, **kwargs):
        if args:
            raise TypeError(f"{type(self).__qualname__}: pass options by keyword (got positional {args!r})")
        unknown = set(kwargs) - set(self.allowed)
        if unknown:
            raise TypeError(f"{type(self).__qualname__}.__init__() got unexpected keyword arguments {sorted(unknown)}")
        self.id = id
        self.options_dict = kwargs
        self.optional = kwargs.get("optional", False)
        self.tooltip = kwargs.get("tooltip")
        self.default = kwargs.get("default")

    @property
    def is_widget(self) -> bool:
        return self.io_type in WIDGET_TYPES


class Output:
    io_type = "*"

    def __init__(self, id: str | None = None, display_name: str | None = None, tooltip: str | None = None, is_output_list: bool = False):
        self.id, self.display_name, self.tooltip, self.is_output_list = id, display_name, tooltip, is_output_list


def _type(io_type: str, input_kwargs: tuple[str, ...] = _BASE, input_init=None):
    class InputT(Input):
        allowed = input_kwargs

    InputT.io_type = io_type
    if input_init is not None:
        InputT.__init__ = input_init

    class OutputT(Output):
        pass

    OutputT.io_type = io_type
    return type(io_type.title().replace("_", ""), (), {"io_type": io_type, "Input": InputT, "Output": OutputT})


Boolean = _type("BOOLEAN", _WIDGET + ("label_on", "label_off"))
Int = _type("INT", _WIDGET + ("min", "max", "step", "control_after_generate", "display_mode"))
Float = _type("FLOAT", _WIDGET + ("min", "max", "step", "round", "display_mode"))
String = _type("STRING", _WIDGET + ("multiline", "placeholder", "dynamic_prompts"))


def _combo_init(self, id, options=None, **kwargs):
    Input.__init__(self, id, **kwargs)
    if not isinstance(options, list) or not all(isinstance(o, (str, int)) for o in options):
        raise TypeError(f"Combo.Input {id!r}: options must be a list of str/int, got {options!r}")
    if "default" in kwargs and kwargs["default"] not in options and options:
        raise ValueError(f"Combo.Input {id!r}: default {kwargs['default']!r} is not among the options")
    self.options = options


Combo = _type("COMBO", ("display_name", "optional", "tooltip", "lazy", "default", "control_after_generate", "upload", "image_folder", "remote", "socketless"), _combo_init)
Image = _type("IMAGE")
Mask = _type("MASK")
Latent = _type("LATENT")
Conditioning = _type("CONDITIONING")
Model = _type("MODEL")
Clip = _type("CLIP")
Vae = _type("VAE")
Sampler = _type("SAMPLER")
Sigmas = _type("SIGMAS")
Noise = _type("NOISE")
Guider = _type("GUIDER")


def Custom(io_type: str):
    return _type(io_type)


class Hidden:
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"


class HiddenHolder:
    """``cls.hidden`` while a node executes: the hidden values its schema asked for; any other is ``None``."""

    def __init__(self, unique_id=None, prompt=None, extra_pnginfo=None):
        self.unique_id, self.prompt, self.extra_pnginfo = unique_id, prompt, extra_pnginfo

    def __getattr__(self, key: str):
        return None


@dataclass
class Schema:
    node_id: str
    display_name: str | None = None
    category: str = "sd"
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    hidden: list | None = None
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False

    def validate(self) -> None:
        ins = [i.id for i in self.inputs or []]
        outs = [o.id for o in self.outputs or [] if o.id is not None]
        issues = []
        if len(set(ins)) != len(ins):
            issues.append(f"Input ids must be unique, but {[i for i, c in Counter(ins).items() if c > 1]} are not.")
        if len(set(outs)) != len(outs):
            issues.append(f"Output ids must be unique, but {[o for o, c in Counter(outs).items() if c > 1]} are not.")
        if set(ins) & set(outs):
            issues.append(f"Ids must be unique between inputs and outputs, but {set(ins) & set(outs)} are not.")
        if issues:
            raise ValueError("\n".join(issues))

    def v1_info(self) -> dict:
        """What ``/object_info`` lists for the node (input order, widget-ness, output types)."""
        return {
            "input": {i.id: {"type": i.io_type, "optional": i.optional, "widget": i.is_widget, "options": getattr(i, "options", None)} for i in self.inputs or []},
            "output": [o.io_type for o in self.outputs or []],
            "output_node": self.is_output_node,
        }


class NodeOutput:
    def __init__(self, *args: Any, ui=None, expand=None, block_execution=None):
        self.args, self.ui, self.expand, self.block_execution = args, ui, expand, block_execution

    @property
    def result(self):
        return self.args if self.args else None

    def __getitem__(self, index):
        return self.args[index]


class ComfyNode:
    """Base of V3 nodes; ComfyUI runs ``execute`` on a locked clone of the class (no instance state)."""

    hidden = None

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs) -> NodeOutput:
        raise NotImplementedError

    @classmethod
    def validate_inputs(cls, **kwargs) -> bool | str:
        """Placeholder, as in ComfyUI: a node that overrides it is validated when a prompt is queued (``execution.py``)."""
        raise NotImplementedError

    @classmethod
    def GET_SCHEMA(cls) -> Schema:
        schema = cls.define_schema()
        schema.validate()
        return schema

    @classmethod
    def run(cls, hidden: dict | None = None, **kwargs) -> NodeOutput:
        """Execute as ComfyUI does: inputs by name, optional ones only when connected, on a clone of the class
        whose ``hidden`` holds the values of ``hidden`` (``{Hidden.prompt: graph, Hidden.unique_id: "6"}``) that
        the schema asks for."""
        schema = cls.GET_SCHEMA()
        asked = set(schema.hidden or []) | ({Hidden.prompt, Hidden.extra_pnginfo} if schema.is_output_node else set())
        values = {key: value for key, value in (hidden or {}).items() if key in asked}
        clone = type(cls.__name__, (cls,), {"hidden": HiddenHolder(values.get(Hidden.unique_id), values.get(Hidden.prompt), values.get(Hidden.extra_pnginfo))})
        for i in schema.inputs:
            if not i.optional and i.id not in kwargs:
                raise TypeError(f"{schema.node_id}: required input {i.id!r} missing")
            value, opts = kwargs.get(i.id), i.options_dict
            if i.io_type in ("INT", "FLOAT") and value is not None:  # as execution.validate_inputs does
                if "min" in opts and value < opts["min"]:
                    raise ValueError(f"{schema.node_id}.{i.id}: Value {value} smaller than min of {opts['min']}")
                if "max" in opts and value > opts["max"]:
                    raise ValueError(f"{schema.node_id}.{i.id}: Value {value} bigger than max of {opts['max']}")
            if i.io_type == "COMBO" and value is not None and i.options and value not in i.options:
                raise ValueError(f"{schema.node_id}.{i.id}: Value not in list: {value!r}")
        out = clone.execute(**kwargs)
        if inspect.iscoroutine(out):
            import asyncio

            out = asyncio.run(out)
        return out
