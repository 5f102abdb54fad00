"""Gradient checkpointing of the diffusers seam, tested by what it does: blocks run again in backward.

A flag proves nothing here: diffusers < 0.33 (A1111's and Forge's 0.31) sets ``gradient_checkpointing``
on the VAE decoder and then checkpoints only in train mode, while models come from ``from_pretrained``
in eval mode. So the tests count how often a block's forward runs *during* ``backward()``: once when its
activations are recomputed, never when they were kept. They run on every stack of
``tests/host_stacks/run.sh`` too.
"""

from __future__ import annotations

import pytest
import torch

from unifl.core.diffusion.loading import load_denoiser


class CallCounter:
    """Counts forward calls of a module, split into those before and during ``backward()``.

    A pre-hook, because torch's non-reentrant checkpoint stops a recomputation as soon as it has the
    tensors backward needs, so the module's post-forward hooks need not run again.
    """

    def __init__(self, module: torch.nn.Module):
        self.phase, self.calls = "forward", {"forward": 0, "backward": 0}
        module.register_forward_pre_hook(self._hook)

    def _hook(self, module, args) -> None:
        self.calls[self.phase] += 1

    def backward(self, loss: torch.Tensor) -> None:
        self.phase = "backward"
        loss.backward()
        self.phase = "forward"


def decode_with_grad(denoiser, counter: CallCounter) -> torch.Tensor:
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    counter.backward(denoiser.decode_latents(latents).square().mean())
    return latents.grad


def predict_with_grad(denoiser, counter: CallCounter) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x_t = torch.randn(1, 4, 8, 8, generator=gen).requires_grad_(True)
    cond = denoiser.encode_prompts(["a photo of a cat"])
    counter.backward(denoiser.predict_x0(x_t, torch.tensor([500]), cond).square().mean())
    return x_t.grad


@pytest.mark.parametrize("architecture", ["sd15", "sdxl"])
def test_vae_decoder_recomputes_its_blocks_in_backward(architecture, tiny_sd15_dir, tiny_sdxl_dir):
    folder = {"sd15": tiny_sd15_dir, "sdxl": tiny_sdxl_dir}[architecture]
    denoiser = load_denoiser(folder)  # the loader path: every module in eval mode, as from_pretrained leaves it
    counter = CallCounter(denoiser.vae.decoder.up_blocks[0])

    kept = decode_with_grad(denoiser, counter)
    assert counter.calls == {"forward": 1, "backward": 0}, "without checkpointing the decoder keeps its activations"

    denoiser.enable_gradient_checkpointing()
    counter.calls = {"forward": 0, "backward": 0}
    recomputed = decode_with_grad(denoiser, counter)
    assert counter.calls == {"forward": 1, "backward": 1}, "with checkpointing the decoder block must run again in backward"
    torch.testing.assert_close(recomputed, kept)

    with torch.no_grad():  # sampling and validation decode without grad: nothing to recompute, same images
        counter.calls = {"forward": 0, "backward": 0}
        latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
        checkpointed_image = denoiser.decode_latents(latents)
    assert counter.calls == {"forward": 1, "backward": 0}
    with torch.no_grad():
        torch.testing.assert_close(checkpointed_image, load_denoiser(folder).decode_latents(latents))


def test_unet_recomputes_its_blocks_in_backward(tiny_sd15_dir):
    denoiser = load_denoiser(tiny_sd15_dir)
    denoiser.lora_target.train()  # as UniFLTrainer.train() does before its loop
    counter = CallCounter(denoiser.unet.down_blocks[1].resnets[0])

    kept = predict_with_grad(denoiser, counter)
    assert counter.calls == {"forward": 1, "backward": 0}

    denoiser.enable_gradient_checkpointing()
    counter.calls = {"forward": 0, "backward": 0}
    recomputed = predict_with_grad(denoiser, counter)
    assert counter.calls == {"forward": 1, "backward": 1}
    torch.testing.assert_close(recomputed, kept)
