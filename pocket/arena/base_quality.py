"""How well a pocket base model draws what its prompts ask: the numbers a base must reach before feedback
learning can be seen to improve it (``python -m unifl.pocket.arena.base_quality --model FOLDER``).

Feedback learning fixes what a good model gets wrong; a model that cannot draw its world leaves every
stage-1 effect inside the spread of a few seeds. This script samples a pocket pipeline folder the way the
arena samples its base rows (DDIM, 20 steps with leading spacing and 4 with trailing, CFG 3) on an arena
split's prompts and noise, and scores it with the arena's frozen judges: the prompt judge's accuracy per
check (colour, shape, size, tone, light direction, count, relations), the held-out detail evaluator
against real renders of the same scenes, and realism (FD/KID in the prompt judge's truth-trained features)
against the split's real renders beside the real-vs-real floor, and the spectrum distance (which neither a blur
nor a sharpen games). Prompt accuracy is given by both judge versions: issue 19's bars were set with version 1;
version 2 (precision/recall, count first-class) says whether a gain is clutter. Candidates for a new base are compared on
the validation split; the committed base is reported on the test split (``docs/pocket-world.md``, its
``BUILD.md``). ``--vae-only VAE_FOLDER`` measures what a VAE lets any denoiser reach; ``--light-response``
whether the caption's light direction moves the drawn light at all. Nothing here trains or tunes a judge.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ...core.machine import cpu_name
from ..models.addons import frozen_pocket_pipeline, seeded
from .plan import BASE_CFG, SPLITS
from ..judges.evaluate import AspectJudges
from ..plugin import register
from ..judges.judges import embed, load_prompt_judge, prompt_accuracy_from_readings, read_scenes, realism
from ..judges.spectrum import spectrum_distance
from ..world.world import LIGHT_DIRECTIONS, PocketDataset, WorldConfig, caption, render

RESOLUTION = 64
#: (label, steps, DDIM timestep spacing): the arena's base rows at CFG :data:`BASE_CFG`.
SAMPLERS = (("20 steps", 20, "leading"), ("4 steps", 4, "trailing"))
#: What issue 19 asks of a base at 20 steps (the arena's prompt judge); count and relations may stay weak.
TARGETS_AT_20 = {"colour": 0.9, "shape": 0.8, "size": 0.8, "tone": 0.95, "light": 0.6, "prompt_accuracy": 0.70}
DETAIL_MARGIN = 1.0
"""The detail evaluator's mean on the model's samples must be within this of the real renders' mean."""
LIGHT_AXES = (("left", "right"), ("top", "bottom"))


def split_prompts(split_name: str, num_prompts: int, replicate: int):
    """Replicate ``r`` of a split: prompts ``r·n … (r+1)·n − 1`` and their noise seeds, as the arena draws them."""
    split = SPLITS[split_name]
    first = replicate * num_prompts
    world = PocketDataset(first + num_prompts, split.prompt_seed, WorldConfig(resolution=RESOLUTION))
    scenes = [world.scene(i) for i in range(first, first + num_prompts)]
    return scenes, [caption(scene, world.config) for scene in scenes], split.noise_seeds(replicate, num_prompts)


@torch.no_grad()
def sample(pipe, prompts: list[str], seeds: list[int], steps: int, spacing: str, batch: int = 64) -> torch.Tensor:
    from diffusers import DDIMScheduler

    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing=spacing)
    chunks = [
        pipe(prompt=prompts[i : i + batch], num_inference_steps=steps, guidance_scale=BASE_CFG, generator=seeded(seeds[i : i + batch]), output_type="pt").images.float().clamp(0, 1)
        for i in range(0, len(prompts), batch)
    ]
    return torch.cat(chunks)


@torch.no_grad()
def vae_round_trip(vae, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Real renders encoded to the latent mode and decoded: the best any denoiser on this VAE can draw, so a
    check this row fails is the VAE's (e.g. too few latents for the world's stripes), not the UNet's."""
    chunks = [vae.decode(vae.encode(images[i : i + batch] * 2 - 1).latent_dist.mode()).sample for i in range(0, len(images), batch)]
    return ((torch.cat(chunks) + 1) / 2).float().clamp(0, 1)


def measure_base(model: str | Path | None, split_name: str = "validation", num_prompts: int = 128, replicates: int = 3, num_real: int = 1024) -> dict:
    """Per sampler and replicate: every prompt check, the detail gap to real renders, FD/KID; and the references."""
    pipe = frozen_pocket_pipeline(model)
    judge, aspects = load_prompt_judge(), AspectJudges()
    split = SPLITS[split_name]
    real = torch.stack([PocketDataset(num_real, split.real_seed, WorldConfig(resolution=RESOLUTION))[i].image for i in range(num_real)])
    real_features = embed(real, judge)
    half = num_real // 2
    result: dict = {"split": split_name, "num_prompts": num_prompts, "replicates": replicates, "cfg": BASE_CFG,
                    "real_vs_real": realism(real_features[:half], real_features[half:]), "rows": {}}
    for replicate in range(replicates):
        scenes, prompts, seeds = split_prompts(split_name, num_prompts, replicate)
        same = torch.stack([render(scene, WorldConfig(resolution=RESOLUTION)).image for scene in scenes])
        real_detail = aspects(same, prompts)["detail"]
        rows = {"real renders": same, "VAE round trip": vae_round_trip(pipe.vae, same)}
        rows |= {label: sample(pipe, prompts, seeds, steps, spacing) for label, steps, spacing in SAMPLERS}
        for label, images in rows.items():
            readings = read_scenes(judge, images)
            scores = prompt_accuracy_from_readings(readings, scenes)  # the bars are set in version 1's terms
            version_2 = prompt_accuracy_from_readings(readings, scenes, version=2)
            scores |= {f"v2_{key}": version_2[key] for key in ("prompt_accuracy", "count", "precision", "recall")}
            scores["detail_gap"] = real_detail - aspects(images, prompts)["detail"]
            scores |= realism(embed(images, judge), real_features)
            scores["spectrum"] = spectrum_distance(images, real)
            result["rows"].setdefault(label, []).append(scores)
    return result


def measure_vae_ceiling(vae_folder: str | Path, split_name: str = "validation", num_prompts: int = 256, num_real: int = 1024) -> dict[str, dict[str, float]]:
    """The prompt judge's checks, the detail evaluator's gap and realism (FD/KID in the judge's features and the
    spectrum distance, against the split's other real renders) on real renders and on their round trip through
    the VAE in ``vae_folder`` (an ``AutoencoderKL`` folder, e.g. a build's ``parts/vae``): whether a VAE can carry
    the bars, and how close to real its decodes can come, before any denoiser hours are spent on it."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(vae_folder)).eval()
    judge, aspects = load_prompt_judge(), AspectJudges()
    scenes, prompts, _ = split_prompts(split_name, num_prompts, replicate=0)
    real = torch.stack([render(scene, WorldConfig(resolution=RESOLUTION)).image for scene in scenes])
    others = torch.stack([PocketDataset(num_real, SPLITS[split_name].real_seed, WorldConfig(resolution=RESOLUTION))[i].image for i in range(num_real)])
    others_features = embed(others, judge)
    real_detail = aspects(real, prompts)["detail"]
    ceiling = {}
    for label, images in {"real renders": real, "VAE round trip": vae_round_trip(vae, real)}.items():
        scores = {key: float(value) for key, value in prompt_accuracy_from_readings(read_scenes(judge, images), scenes).items()}
        scores |= {"detail_gap": float(real_detail - aspects(images, prompts)["detail"])}
        ceiling[label] = scores | realism(embed(images, judge), others_features) | {"spectrum": spectrum_distance(images, others)}
    return ceiling


def lit_side_lead(images: torch.Tensor, direction: str) -> torch.Tensor:
    """Per image, the mean brightness of the half the light comes from minus the other half's (real renders: ~0.09)."""
    brightness = images.mean(dim=1)
    half = brightness.shape[-1] // 2
    axis = -1 if direction in ("left", "right") else -2
    first, second = brightness.narrow(axis, 0, half), brightness.narrow(axis, half, half)
    lead = first.mean(dim=(-2, -1)) - second.mean(dim=(-2, -1))
    return lead if direction in ("left", "top") else -lead


def measure_light_response(model: str | Path | None, split_name: str = "validation", num_prompts: int = 64) -> dict:
    """Does the caption's light direction move the drawn light? Each scene is prompted four times, once per
    direction, with the same noise (20 steps, the arena's CFG); real renders of the same four scenes are the
    reference. ``lead`` is the lit half's brightness lead per prompted direction, ``response`` its mean over two
    opposite directions (0 = the word is ignored; real renders: their lead); ``same_noise_correlation``
    correlates, per axis, the brightness difference of the two opposite prompts' samples from the same noise:
    near 1, the initial noise decides where the light is, not the prompt."""
    pipe = frozen_pocket_pipeline(model)
    scenes, _, seeds = split_prompts(split_name, num_prompts, replicate=0)
    drawn, real = {}, {}
    for direction in LIGHT_DIRECTIONS:
        relit = [replace(scene, lighting=replace(scene.lighting, direction=direction)) for scene in scenes]
        drawn[direction] = sample(pipe, [caption(scene) for scene in relit], seeds, 20, "leading")
        real[direction] = torch.stack([render(scene, WorldConfig(resolution=RESOLUTION)).image for scene in relit])
    correlation = {
        f"{a}/{b}": float(np.corrcoef(lit_side_lead(drawn[a], a).numpy(), lit_side_lead(drawn[b], a).numpy())[0, 1])
        for a, b in LIGHT_AXES
    }
    lead = {d: float(lit_side_lead(drawn[d], d).mean()) for d in LIGHT_DIRECTIONS}
    return {
        "lead": lead,
        "real_lead": {d: float(lit_side_lead(real[d], d).mean()) for d in LIGHT_DIRECTIONS},
        # a bias the noise or the model has towards one side cancels between opposite prompts; what is left is the word's
        "response": {f"{a}/{b}": (lead[a] + lead[b]) / 2 for a, b in LIGHT_AXES},
        "same_noise_correlation": correlation,
    }


def summary(result: dict) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean and standard deviation over replicates of every number, per row."""
    return {label: {key: (float(np.mean([r[key] for r in runs])), float(np.std([r[key] for r in runs]))) for key in runs[0]} for label, runs in result["rows"].items()}


def targets_met(result: dict) -> dict[str, bool]:
    """Issue 19's bars at 20 steps (means over replicates) and the 4-step row clearly worse than the 20-step one."""
    means = {label: {key: value[0] for key, value in row.items()} for label, row in summary(result).items()}
    at_20, at_4 = means["20 steps"], means["4 steps"]
    met = {f"{key} ≥ {bar:g}": at_20[key] >= bar for key, bar in TARGETS_AT_20.items()}
    met[f"detail within {DETAIL_MARGIN:g} of real"] = abs(at_20["detail_gap"]) <= DETAIL_MARGIN
    met["4 steps clearly worse (FD)"] = at_4["fd"] > 1.2 * at_20["fd"]
    met["headroom left (prompt accuracy < 0.95)"] = at_20["prompt_accuracy"] < 0.95
    return met


def markdown(result: dict, model_label: str) -> str:
    """The table ``BUILD.md`` and the trials section quote."""
    columns = ("prompt_accuracy", "colour", "shape", "size", "tone", "light", "count", "relation", "all_correct", "v2_prompt_accuracy", "v2_precision", "v2_recall",
               "detail_gap", "fd", "kid", "spectrum")
    lines = [f"{model_label}, {result['split']} split, {result['num_prompts']} prompts × {result['replicates']} sampling seeds, DDIM at CFG {result['cfg']:g} "
             f"(real-vs-real FD {result['real_vs_real']['fd']:.1f}); mean ± sd over the seeds:", "",
             "| row | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, row in summary(result).items():
        lines.append(f"| {label} | " + " | ".join(f"{row[c][0]:.3f} ± {row[c][1]:.3f}" if c not in ("fd", "kid") else f"{row[c][0]:.1f} ± {row[c][1]:.1f}" for c in columns) + " |")
    lines += ["", "Targets: " + ", ".join(f"{name} {'✔' if ok else '✘'}" for name, ok in targets_met(result).items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m unifl.pocket.arena.base_quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a pocket pipeline folder (default: the shipped pocket model)")
    parser.add_argument("--split", choices=sorted(SPLITS), default="validation", help="compare candidates on validation; report the chosen base on test")
    parser.add_argument("--prompts", type=int, default=128, help="prompts per sampling seed (default 128)")
    parser.add_argument("--replicates", type=int, default=3, help="sampling seeds (default 3)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    parser.add_argument("--vae-only", type=Path, metavar="VAE_FOLDER",
                        help="measure only what a VAE folder (e.g. a build's parts/vae) lets a denoiser reach: the judge on real renders round-tripped through it")
    parser.add_argument("--light-response", action="store_true",
                        help="measure only whether the caption's light direction moves the drawn light (same noise, four prompted directions)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    register()  # the pocket world's kinds: the held-out evaluators are loaded as registered reward models
    if args.vae_only:
        ceiling = measure_vae_ceiling(args.vae_only, args.split, 2 * args.prompts)
        for label, scores in ceiling.items():
            print(f"{label}: " + ", ".join(f"{key} {value:.3f}" for key, value in scores.items()))
        if args.json:
            args.json.write_text(json.dumps(ceiling, indent=1))
        return ceiling
    if args.light_response:
        response = measure_light_response(args.model, args.split, args.prompts)
        print(json.dumps(response, indent=1))
        if args.json:
            args.json.write_text(json.dumps(response, indent=1))
        return response
    result = measure_base(args.model, args.split, args.prompts, args.replicates)
    result["machine"] = f"{torch.get_num_threads()} thread(s) on {cpu_name()}"
    print(markdown(result, args.model or "the shipped pocket model"))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
