"""Scoring a ComfyUI IMAGE batch with reward models (translation only: layout, devices, a table)."""

from __future__ import annotations

import torch


def prompts_for(prompt: str, count: int) -> list[str]:
    """One prompt for all images, or one line per image."""
    lines = [line.strip() for line in prompt.splitlines() if line.strip()]
    if len(lines) <= 1:
        return [lines[0] if lines else ""] * count
    if len(lines) != count:
        raise ValueError(f"prompt has {len(lines)} lines for {count} images: give one prompt, or exactly one line per image")
    return lines


def score_images(images: torch.Tensor, prompt: str, slots: list) -> tuple[list[float], str]:
    """Mean score per slot (0.0 for empty slots) and a Markdown table of every image's scores."""
    import comfy.model_management

    prompts = prompts_for(prompt, images.shape[0])
    batch = images[..., :3].movedim(-1, 1).float()  # IMAGE is [B, H, W, C] in [0, 1]; rewards take BCHW
    columns, means = [], []
    for i, model in enumerate(slots, 1):
        if model is None:
            means.append(0.0)
            continue
        comfy.model_management.load_models_gpu([model.patcher])
        device = model.patcher.load_device
        with torch.no_grad():
            scores = model.module(batch.to(device), prompts).float().cpu()
        if scores.shape != (batch.shape[0],):
            raise ValueError(f"reward {model.name} returned scores of shape {tuple(scores.shape)}; a reward model returns one score per image")
        columns.append((f"reward_{i}: {model.aspect} ({model.kind})", scores, model.threshold))
        means.append(float(scores.mean()))
    header = "| image | " + " | ".join(name for name, _, _ in columns) + " |"
    lines = [header, "|---|" + "---|" * len(columns)]
    for b in range(batch.shape[0]):
        lines.append(f"| {b} | " + " | ".join(f"{float(s[b]):.4g}" for _, s, _ in columns) + " |")
    lines.append("| mean | " + " | ".join(f"{float(s.mean()):.4g}" for _, s, _ in columns) + " |")
    lines.append("| α (threshold) | " + " | ".join("—" if a is None else f"{a:.4g}" for _, _, a in columns) + " |")
    return means, "\n".join(lines)
