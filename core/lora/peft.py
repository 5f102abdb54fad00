"""LoRA on the denoiser's ``lora_target`` module, injected with peft.

UniFL trains only a LoRA; the base model stays frozen and is recovered at any time by switching the
adapter off (:meth:`~unifl.core.diffusion.denoiser.Denoiser.adapters_disabled`). We inject with
``peft.inject_adapter_in_model`` rather than diffusers' ``ModelMixin.add_adapter`` because the LoRA
target is not always a diffusers model: ComfyUI and A1111 hand us their own LDM ``UNetModel``. peft
works on any ``nn.Module``, so every host gets the same layers, the same forward and the same
parameters.

Targets are matched by a *suffix* regex on module paths, so the same preset hits
``down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q`` (diffusers) and
``input_blocks.4.1.transformer_blocks.0.attn1.to_q`` (LDM). The ``"all"`` preset also names the LDM
spellings of the resnet layers (``in_layers.2`` = ``conv1``, ``out_layers.3`` = ``conv2``,
``skip_connection`` = ``conv_shortcut``, ``emb_layers.1`` = ``time_emb_proj``), so "all" means the same
layers on every host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

#: Leaf module paths each preset adds, diffusers spelling first, then the LDM (ComfyUI/A1111) spelling
#: of the same layer where it differs.
ATTENTION_LEAVES = ("to_q", "to_k", "to_v", "to_out.0")
FEED_FORWARD_LEAVES = ("ff.net.0.proj", "ff.net.2")
EXTRA_LEAVES_FOR_ALL = (
    "proj_in", "proj_out",
    "conv1", "conv2", "conv_shortcut", "time_emb_proj",
    "in_layers.2", "out_layers.3", "skip_connection", "emb_layers.1",
)
TARGET_PRESETS: dict[str, tuple[str, ...]] = {
    "attention": ATTENTION_LEAVES,
    "attention+ff": ATTENTION_LEAVES + FEED_FORWARD_LEAVES,
    "all": ATTENTION_LEAVES + FEED_FORWARD_LEAVES + EXTRA_LEAVES_FOR_ALL,
}

#: ``LoRASettings.init`` → peft ``init_lora_weights``. Only initialisations that leave the base weights
#: untouched and start as a no-op are offered: PiSSA/OLoRA/LoftQ rewrite the base layer, so an exported
#: file would no longer reproduce the model on an unmodified checkpoint in ComfyUI or A1111.
INITIALISATIONS = {"default": True, "gaussian": "gaussian"}

#: Layer types peft can wrap and the kohya format can express (LDM's ``skip_connection`` is an
#: ``nn.Identity`` when channels match; such matches are skipped, not errors).
LORA_LAYER_TYPES = (nn.Linear, nn.Conv2d)


@dataclass
class LoRASettings:
    """Shape and placement of the LoRA. Saved into the exported file's metadata.

    Args:
        rank: LoRA rank ``r`` (``ss_network_dim`` in kohya files).
        alpha: LoRA alpha; the update is scaled by ``alpha / rank`` (``ss_network_alpha``). Exported as
            the true value so ComfyUI, A1111 and diffusers apply the same scale as training did.
        targets: which layers get a LoRA: ``"attention"`` (``to_q, to_k, to_v, to_out.0``),
            ``"attention+ff"`` (adds ``ff.net.0.proj, ff.net.2``) or ``"all"`` (adds ``proj_in,
            proj_out`` and the resnet ``conv1, conv2, conv_shortcut, time_emb_proj``).
        dropout: dropout on the LoRA input during training (peft ``lora_dropout``).
        init: ``"default"`` (A Kaiming-uniform, B zero) or ``"gaussian"`` (A normal with std ``1/r``,
            B zero). Both make a fresh LoRA a no-op.
    """

    rank: int = 16
    alpha: float = 16.0
    targets: str = "attention"
    dropout: float = 0.0
    init: str = "default"

    def __post_init__(self) -> None:
        if not (isinstance(self.rank, int) and self.rank >= 1):
            raise ValueError(f"LoRA rank must be a positive integer, got {self.rank!r}")
        if not self.alpha > 0:
            raise ValueError(f"LoRA alpha must be positive, got {self.alpha!r}")
        if self.targets not in TARGET_PRESETS:
            raise ValueError(f"LoRA targets must be one of {sorted(TARGET_PRESETS)}, got {self.targets!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        if self.init not in INITIALISATIONS:
            raise ValueError(f"LoRA init must be one of {sorted(INITIALISATIONS)}, got {self.init!r}")
        self.alpha = float(self.alpha)

    @property
    def target_pattern(self) -> str:
        """The peft ``target_modules`` regex: a module path equal to, or ending in ``.`` + , a leaf."""
        return target_pattern(self.targets)


def settings_from_config(lora) -> LoRASettings:
    """The :class:`LoRASettings` of a config's ``[lora]`` table (:class:`~unifl.core.config.LoRAConfig`)."""
    return LoRASettings(rank=lora.rank, alpha=lora.alpha, targets=lora.targets, dropout=lora.dropout, init=lora.init)


def target_pattern(targets: str) -> str:
    """Suffix regex (for ``re.fullmatch``) of a target preset's leaf module paths."""
    leaves = "|".join(re.escape(leaf) for leaf in TARGET_PRESETS[targets])
    return rf"(?:.*\.)?(?:{leaves})"


def lora_layers(module: nn.Module, adapter_name: str = "unifl") -> dict[str, nn.Module]:
    """Every peft LoRA layer in ``module`` that carries ``adapter_name``, by module path."""
    from peft.tuners.lora import LoraLayer

    return {
        name: layer
        for name, layer in module.named_modules()
        if isinstance(layer, LoraLayer) and adapter_name in layer.lora_A
    }


def add_lora(module: nn.Module, settings: LoRASettings, adapter_name: str = "unifl") -> list[nn.Parameter]:
    """Inject a LoRA into ``module`` and return its trainable parameters.

    Everything in ``module`` except this adapter is frozen. The LoRA parameters are float32 even when
    the module is fp16/bf16: peft first gives them the base layer's dtype, and in half precision
    ``lr · grad`` updates of ~1e-4 relative size round to zero. peft casts the layer input to the
    LoRA dtype and the sum back to the base dtype, so mixed dtypes need no autocast.
    """
    from peft import LoraConfig, inject_adapter_in_model

    if lora_layers(module, adapter_name):
        raise ValueError(
            f"{type(module).__name__} already has a LoRA adapter named {adapter_name!r}; "
            "load weights into it with load_lora_state_dict instead of adding a second one"
        )
    pattern = settings.target_pattern
    matched = {name: m for name, m in module.named_modules() if re.fullmatch(pattern, name)}
    unsupported = [name for name, m in matched.items() if not isinstance(m, LORA_LAYER_TYPES)]
    if len(unsupported) == len(matched):
        raise ValueError(
            f"LoRA targets {settings.targets!r} match no Linear/Conv2d layer of {type(module).__name__} "
            f"(looked for module paths ending in {TARGET_PRESETS[settings.targets]}); is this the UNet?"
        )
    if unsupported:
        # Excluded in the regex itself (peft full-matches a str target_modules against each module path):
        # LoraConfig(exclude_modules=...) needs peft >= 0.14, and Forge pins peft 0.13.2.
        pattern = rf"(?!(?:{'|'.join(re.escape(name) for name in unsupported)})$){pattern}"
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        init_lora_weights=INITIALISATIONS[settings.init],
        target_modules=pattern,
    )
    inject_adapter_in_model(config, module, adapter_name=adapter_name)

    module.requires_grad_(False)
    params: list[nn.Parameter] = []
    for layer in lora_layers(module, adapter_name).values():
        for part in (layer.lora_A[adapter_name], layer.lora_B[adapter_name]):
            part.float()
            part.requires_grad_(True)
            params.extend(part.parameters())
    return params


def lora_state_dict(module: nn.Module, adapter_name: str = "unifl") -> dict[str, torch.Tensor]:
    """The LoRA weights with peft-style names (``<module path>.lora_A.weight``), detached copies.

    Copies, so a snapshot kept in memory (best checkpoint, EMA) does not change as training goes on.
    """
    state: dict[str, torch.Tensor] = {}
    for name, layer in lora_layers(module, adapter_name).items():
        state[f"{name}.lora_A.weight"] = layer.lora_A[adapter_name].weight.detach().clone()
        state[f"{name}.lora_B.weight"] = layer.lora_B[adapter_name].weight.detach().clone()
    return state


def load_lora_state_dict(module: nn.Module, state: dict[str, torch.Tensor], adapter_name: str = "unifl") -> None:
    """Copy a :func:`lora_state_dict` into ``module``'s LoRA, strictly.

    Missing or unexpected keys or a shape mismatch raise one ``ValueError`` that says which and how
    many, before anything is copied, so a half-loaded LoRA never results.
    """
    targets: dict[str, torch.Tensor] = {}
    for name, layer in lora_layers(module, adapter_name).items():
        targets[f"{name}.lora_A.weight"] = layer.lora_A[adapter_name].weight
        targets[f"{name}.lora_B.weight"] = layer.lora_B[adapter_name].weight
    missing = sorted(targets.keys() - state.keys())
    unexpected = sorted(state.keys() - targets.keys())
    if missing or unexpected:
        raise ValueError(
            f"LoRA state dict does not match adapter {adapter_name!r} of {type(module).__name__}: "
            f"{len(missing)} missing keys {_preview(missing)}, {len(unexpected)} unexpected keys {_preview(unexpected)}. "
            "Add the LoRA with the same LoRASettings.targets the checkpoint was trained with."
        )
    wrong_shape = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(p.shape)}" for k, p in targets.items() if state[k].shape != p.shape]
    if wrong_shape:
        raise ValueError(
            f"LoRA state dict has {len(wrong_shape)} tensors of the wrong shape {_preview(wrong_shape)}; "
            "add the LoRA with the rank the checkpoint was trained with."
        )
    with torch.no_grad():
        for key, param in targets.items():
            param.copy_(state[key])


def _preview(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return f"[{shown}{', …' if len(items) > limit else ''}]"
