"""Sampling every row through one diffusers pipeline, and measuring the images with the frozen judges.

:func:`sample_row` runs in a worker: the pocket model as a plain ``StableDiffusionPipeline``, the row's
scheduler (DDIM leading/trailing, ``LCMScheduler``, ``TCDScheduler``) and LoRA (a UniFL kohya file, or
a peer's LoRA that our glue saved in diffusers' layout with its scale), one noise generator per image so
an image depends only on its seed. :class:`Judges` measures in the main process: prompt accuracy against
each prompt's scene spec, FD/KID against real renders, and the aspect shortfall against real renders of
the same scenes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from ...core.files import atomic_write_bytes
from ..judges.evaluate import AspectJudges
from ..judges.judges import CHECKS, aspect_shortfall, embed, load_prompt_judge, prompt_checks, read_scenes, realism
from ..world.world import PocketDataset, Scene, WorldConfig, caption, render
from .plan import ArenaSettings, Sampler, Split

RESOLUTION = 64


def prompt_judge_version() -> int:
    """The prompt judge version the arena scores prompts with: 2 (precision and recall, count first-class) where
    this checkout's judges have it, else 1; version 1's columns are kept beside version 2's for comparison."""
    from ..judges import judges

    return 2 if hasattr(judges, "prompt_scores_v2") else 1


def spectrum_available() -> bool:
    """Whether this checkout's judges have the spectrum realism measure (``unifl.pocket.judges.spectrum``)."""
    import importlib.util

    return importlib.util.find_spec("..judges.spectrum", __package__) is not None


@dataclass
class PromptSet:
    """The prompts of one split and replicate: ``num_prompts`` scenes, each ``images_per_prompt`` times."""

    prompts: list[str]
    scenes: list[Scene]
    seeds: list[int]

    def __len__(self) -> int:
        return len(self.prompts)


def prompt_set(split: Split, settings: ArenaSettings, replicate: int) -> PromptSet:
    """Replicate ``r`` takes the split's prompts ``r·n … (r+1)·n − 1`` (n = ``num_prompts``): every row of a
    replicate sees the same prompts and noise, and the three replicates together cover 3n prompts."""
    first = replicate * settings.num_prompts
    world = PocketDataset(first + settings.num_prompts, split.prompt_seed, WorldConfig(resolution=RESOLUTION))
    indices = [i for i in range(first, first + settings.num_prompts) for _ in range(settings.images_per_prompt)]
    scenes = [world.scene(i) for i in indices]
    prompts = [caption(scene, world.config) for scene in scenes]
    return PromptSet(prompts, scenes, split.noise_seeds(replicate, len(prompts)))


def real_images(seed: int, start: int, count: int) -> torch.Tensor:
    world = PocketDataset(start + count, seed, WorldConfig(resolution=RESOLUTION))
    return torch.stack([world[i].image for i in range(start, start + count)])


# ----------------------------------------------------------------------------------------------- sampling


def arena_pipeline(sampler: Sampler, lora: dict | None):
    """The pocket model in a plain diffusers pipeline with ``sampler``'s scheduler and ``lora`` loaded."""
    from diffusers import DDIMScheduler, LCMScheduler, TCDScheduler

    from ..models.addons import frozen_pocket_pipeline

    pipe = frozen_pocket_pipeline()
    pipe.set_progress_bar_config(disable=True)
    config = pipe.scheduler.config
    if sampler.scheduler == "ddim":
        pipe.scheduler = DDIMScheduler.from_config(config, timestep_spacing=sampler.spacing)
    elif sampler.scheduler == "lcm":
        pipe.scheduler = LCMScheduler.from_config(config)
    elif sampler.scheduler == "tcd":
        pipe.scheduler = TCDScheduler.from_config(config)
    else:
        raise ValueError(f"unknown arena scheduler {sampler.scheduler!r}")
    if lora is not None:
        load_row_lora(pipe, lora)
    return pipe


def load_row_lora(pipe, lora: dict) -> None:
    """A UniFL kohya file (``format = "kohya"``) or a peer LoRA in diffusers' layout with its scale."""
    from ..demo.downstream import load_lora_checked

    if lora["format"] == "kohya":
        load_lora_checked(pipe, lora["path"])
        return
    state = load_file(lora["path"])
    pipe.load_lora_weights(state, adapter_name="row")
    pipe.set_adapters(["row"], adapter_weights=[float(lora.get("scale", 1.0))])
    expected = sum(k.endswith("lora_A.weight") or k.endswith("lora.down.weight") for k in state)
    applied = sum(1 for layer in pipe.unet.modules() if getattr(layer, "lora_A", None) and len(layer.lora_A) > 0)
    if applied != expected:
        raise RuntimeError(f"{lora['path']}: the pipeline applied {applied} of the {expected} LoRA layers in the file")


def sample_row(sampler: Sampler, lora: dict | None, prompts: list[str], seeds: list[int], out_path: str, batch: int = 64) -> str:
    """Sample (in a worker) and write ``out_path`` (uint8 images, safetensors): the job's proof of work."""
    from ..models.addons import seeded

    pipe = arena_pipeline(sampler, lora)
    chunks = []
    for i in range(0, len(prompts), batch):
        result = pipe(prompt=prompts[i : i + batch], num_inference_steps=sampler.steps, guidance_scale=sampler.cfg, generator=seeded(seeds[i : i + batch]), output_type="pt")
        chunks.append((result.images.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu())
    save_images(torch.cat(chunks), Path(out_path))
    return out_path


def save_images(images: torch.Tensor, path: Path) -> None:
    save_tensor(images, path, "images")


def load_images(path: Path) -> torch.Tensor:
    return load_file(str(path))["images"].float() / 255


def save_tensor(tensor: torch.Tensor, path: Path, key: str = "features") -> None:
    from safetensors.torch import save

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save({key: tensor.contiguous()}))


def load_tensor(path: Path, key: str = "features") -> torch.Tensor:
    return load_file(str(path))[key]


# ---------------------------------------------------------------------------------------------- measuring


class Judges:
    """The frozen judges, loaded once in the main process, and the real-image references of a split."""

    def __init__(self, judge_path: str = ""):
        self.prompt = load_prompt_judge(judge_path)
        self.aspects = AspectJudges()
        self._real_features: dict[tuple, torch.Tensor] = {}
        self.spectrum = spectrum_available()

    def real_features(self, seed: int, start: int, count: int) -> torch.Tensor:
        key = (seed, start, count)
        if key not in self._real_features:
            self._real_features[key] = embed(real_images(seed, start, count), self.prompt)
        return self._real_features[key]

    def measure(self, images: torch.Tensor, prompts: PromptSet, real_features: torch.Tensor, real_aspects: dict | None, features_path: Path | None = None,
                per_image_path: Path | None = None, real: torch.Tensor | None = None) -> dict:
        """Every judge's numbers; the images' judge features go to ``features_path`` and the per-image values
        (prompt accuracy, all checks, each aspect score, the spectrum's log band shares) to ``per_image_path``:
        the report's bootstrap resamples them (and pools the features over the replicates for realism on all of
        a row's images). ``real``: the real reference images, for the spectrum measure where the judges have it."""
        per_image = self.per_image(images, prompts)
        aspects = {aspect: float(scores.mean()) for aspect, scores in per_image["aspects"].items()}
        features = embed(images, self.prompt)
        result = {"prompt": per_image["summary"], "prompt_v1": per_image["summary_v1"], "prompt_version": per_image["version"],
                  "realism": realism(features, real_features), "aspects": aspects}
        if self.spectrum and real is not None:
            from ..judges.spectrum import log_band_shares, spectrum_distance

            result["realism"]["spectrum"] = spectrum_distance(images, real)
            per_image["log_band_shares"] = log_band_shares(images)
        if real_aspects is not None:
            result["aspect_shortfall"] = aspect_shortfall(aspects, real_aspects)
        if features_path is not None:
            save_tensor(features, features_path)
        if per_image_path is not None:
            save_per_image(per_image, per_image_path)
        return result

    @torch.no_grad()
    def per_image(self, images: torch.Tensor, prompts: PromptSet) -> dict:
        """Per image: its prompt score and whether it passes every check, by the current prompt judge
        (:func:`prompt_judge_version`) and by version 1 (``_v1``: the share of its checks that pass,
        :func:`~unifl.pocket.judges.judges.prompt_checks`), from one reading; and each held-out aspect judge's score.
        ``summary``/``summary_v1``: the judges' own summaries (version 1's as
        :func:`~unifl.pocket.judges.judges.prompt_accuracy` computes it)."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images for {len(prompts)} prompts; give one prompt per image")
        readings = read_scenes(self.prompt, images)
        shares, passed, pooled = [], [], {name: [] for name in CHECKS}
        for scene, reading in zip(prompts.scenes, readings):
            checks = prompt_checks(scene, reading)
            flat = [c for values in checks.values() for c in values]
            shares.append(float(np.mean(flat)))
            passed.append(float(all(flat)))
            for name, values in checks.items():
                pooled[name] += values
        summary_v1 = {"prompt_accuracy": float(np.mean(shares)), "all_correct": float(np.mean(passed)),
                      **{name: float(np.mean(values)) if values else float("nan") for name, values in pooled.items()}}
        aspects = {aspect: torch.cat([model(images[i : i + 256], prompts.prompts[i : i + 256]) for i in range(0, len(images), 256)]).float()
                   for aspect, model in self.aspects.models.items()}
        out = {"summary_v1": summary_v1, "prompt_accuracy_v1": torch.tensor(shares), "all_correct_v1": torch.tensor(passed), "aspects": aspects,
               "version": prompt_judge_version()}
        if out["version"] == 2:
            from ..judges.judges import per_prompt_accuracy, prompt_accuracy_from_readings

            scores = per_prompt_accuracy(readings, prompts.scenes, version=2)
            return out | {"summary": prompt_accuracy_from_readings(readings, prompts.scenes, version=2), "prompt_accuracy": torch.tensor(scores, dtype=torch.float32),
                          "all_correct": torch.tensor(np.isclose(scores, 1.0), dtype=torch.float32)}
        return out | {"summary": summary_v1, "prompt_accuracy": out["prompt_accuracy_v1"], "all_correct": out["all_correct_v1"]}

    def references(self, split: Split, settings: ArenaSettings, replicate: int, prompts: PromptSet, features_dir: Path | None = None) -> dict:
        """Ceiling and floors of one replicate: real renders of the same scenes, of other scenes, uniform noise,
        and the real-vs-real realism floor (as many other real renders as a model has images)."""
        config = WorldConfig(resolution=RESOLUTION)
        reference = self.real_features(split.real_seed, 0, settings.num_real)
        real = real_images(split.real_seed, 0, settings.num_real) if self.spectrum else None
        same = torch.stack([render(scene, config).image for scene in prompts.scenes])
        ceiling = self.measure(same, prompts, reference, None, per_image_path=features_dir and features_dir / f"seed{replicate}.same_scenes.per_image.safetensors", real=real)
        ceiling["aspect_shortfall"] = aspect_shortfall(ceiling["aspects"], ceiling["aspects"])
        other = real_images(split.real_seed, settings.num_real + replicate * len(prompts), len(prompts))  # disjoint from the reference
        noise = torch.rand(same.shape, generator=torch.Generator().manual_seed(split.noise_seed + replicate))
        return {
            "real_same_scenes": ceiling,
            "real_other_scenes": self.measure(other, prompts, reference, ceiling["aspects"], features_dir and features_dir / f"seed{replicate}.other_scenes.safetensors", real=real),
            "uniform_noise": self.measure(noise, prompts, reference, ceiling["aspects"], real=real),
        }


def save_per_image(per_image: dict, path: Path) -> None:
    from safetensors.torch import save

    tensors = {key: per_image[key] for key in ("prompt_accuracy", "all_correct", "prompt_accuracy_v1", "all_correct_v1")} | {
        **{f"aspect.{aspect}": scores for aspect, scores in per_image["aspects"].items()},
        **({"log_band_shares": per_image["log_band_shares"]} if "log_band_shares" in per_image else {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save({k: v.contiguous().clone() for k, v in tensors.items()}))  # a copy each: version 1's values are also the current ones


def load_per_image(path: Path) -> dict[str, np.ndarray]:
    return {key: value.numpy() for key, value in load_file(str(path)).items()}


def write_json(path: Path, value) -> None:
    from ...core.files import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(value, indent=2))
