"""Train the pocket perception models and the held-out evaluators, reproducibly, on a CPU.

``python -m unifl.pocket.models.build_perception --out pocket/weights [--quick]`` writes

* ``perception/{features,instance,semantic}.safetensors`` – the PeFL experts (:mod:`.perception`),
  trained on pocket dataset seed 1 and validated on seed 2;
* ``evaluators/{structure,embedding}.safetensors`` – the held-out judges (:mod:`.evaluators`), trained
  on seed 101 and validated on seed 102;
* ``perception/BUILD.md`` – command, seeds, steps, wall time, machine, sizes and held-out quality.

Each seed's images are rendered once and shared by the models trained on them. Training is
single-threaded (the machine is shared), seeded per model, and the quality numbers are measured on the
saved fp16 files reloaded, i.e. on exactly what ships. ``--quick`` runs the same code on a few images
and steps, for tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ...core.feedback.losses.pefl import instance_segmentation_loss
from ...core.progress import progress_bar
from ..world.degrade import degradation
from .evaluators import (
    EmbeddingEvaluator,
    StructureEvaluator,
    embed_images,
    frechet_distance,
    load_embedding_evaluator,
    load_structure_evaluator,
    structure_iou,
)
from .perception import (
    BACKGROUND_WEIGHT,
    PocketFeatureNet,
    PocketInstanceSegmenter,
    PocketSemanticSegmenter,
    background_weighted_cross_entropy,
    instance_quality,
    instance_targets,
    load_feature_net,
    load_instance_segmenter,
    load_semantic_segmenter,
    mean_iou,
    model_input,
    reading_accuracy,
    reading_loss,
    reading_targets,
    save_weights,
)
from ..world.world import PocketDataset, Scene, WorldConfig

PERCEPTION_SEEDS = (1, 2)  # (train, validation) of the models UniFL trains against
EVALUATOR_SEEDS = (101, 102)  # (train, validation) of the held-out judges


@dataclass(frozen=True)
class BuildPlan:
    """Data and steps of a build. Batch 8: at equal images seen, small batches learn the shapes far
    sooner (segmenter mIoU 0.45 at batch 8 vs 0.35 at 16 after 4000 images), and the segmenters' shape
    recognition only sets in after ~8000 images; fewer steps ship models that barely know shapes."""

    train_images: int
    val_images: int
    batch_size: int
    steps: dict[str, int]


FULL = BuildPlan(
    train_images=6000,
    val_images=512,
    batch_size=8,
    steps={"features": 1200, "segmenters": 2000, "structure": 2000, "embedding": 2000},
)
QUICK = BuildPlan(train_images=24, val_images=16, batch_size=4, steps={"features": 2, "segmenters": 2, "structure": 2, "embedding": 2})
LEARNING_RATE = 3e-3


# ------------------------------------------------------------------------------------------------- data


@dataclass
class RenderedSet:
    """Rendered samples kept compactly: fp16 images, uint8 label and instance-id maps."""

    images: torch.Tensor  # float16 [N, 3, H, W]
    semantic: torch.Tensor  # uint8 [N, H, W]
    instance_ids: torch.Tensor  # uint8 [N, H, W]: 0 none, j + 1 = instance j (instances are disjoint)
    instance_labels: list[torch.Tensor]  # world ids 1..7 per image
    scenes: list[Scene]

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices: torch.Tensor) -> dict:
        ids = self.instance_ids[indices]
        targets = []
        for k, index in enumerate(indices.tolist()):
            labels = self.instance_labels[index]
            masks = ids[k][None] == torch.arange(1, len(labels) + 1, dtype=torch.uint8)[:, None, None]
            targets.append(instance_targets(masks, labels))
        return {
            "images": self.images[indices].float(),
            "semantic": self.semantic[indices].long(),
            "targets": targets,
            "scenes": [self.scenes[i] for i in indices.tolist()],
        }


def render_set(length: int, seed: int, resolution: int = 64) -> RenderedSet:
    dataset = PocketDataset(length, seed, WorldConfig(resolution=resolution))
    images = torch.empty(length, 3, resolution, resolution, dtype=torch.float16)
    semantic = torch.empty(length, resolution, resolution, dtype=torch.uint8)
    instance_ids = torch.zeros(length, resolution, resolution, dtype=torch.uint8)
    labels, scenes = [], []
    for i in progress_bar(range(length), desc=f"render seed {seed}", leave=False, mininterval=2):
        sample = dataset[i]
        images[i] = sample.image
        semantic[i] = sample.semantic_mask
        for j, mask in enumerate(sample.instance_masks):
            instance_ids[i][mask] = j + 1
        labels.append(sample.instance_labels)
        scenes.append(sample.scene)
    return RenderedSet(images, semantic, instance_ids, labels, scenes)


# --------------------------------------------------------------------------------------------- training


class JointSegmenters(nn.Module):
    """Training-time pair: the semantic and instance segmenters share one trunk and learn together.

    One trunk pass feeds both heads, so the two PeFL segmenters cost one training run and the trunk
    learns shapes from dense and instance supervision at once. Saved as two self-contained files.
    """

    def __init__(self):
        super().__init__()
        self.semantic = PocketSemanticSegmenter()
        self.instance = PocketInstanceSegmenter()
        self.instance.trunk = self.semantic.trunk

    def loss(self, batch: dict) -> torch.Tensor:
        x = model_input(batch["images"])
        trunk = self.semantic.trunk(x)
        prediction = self.instance.decode(x, *trunk)
        structure = instance_segmentation_loss(
            *prediction, batch["targets"], assignments=self.instance.assign(batch["targets"])
        )
        return background_weighted_cross_entropy(self.semantic.decode(x, *trunk), batch["semantic"]) + structure


def stacked_reading_targets(model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [reading_targets(model.reading.task, s, t["masks"]) for s, t in zip(batch["scenes"], batch["targets"])]
    return torch.stack([scene for scene, _ in pairs]), torch.stack([maps for _, maps in pairs])


def reading_task_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    return reading_loss(model.read(batch["images"]), *stacked_reading_targets(model, batch))


LOSSES: dict[str, Callable[[nn.Module, dict], torch.Tensor]] = {
    "features": reading_task_loss,
    "embedding": reading_task_loss,
    "segmenters": lambda model, batch: model.loss(batch),
    "structure": lambda model, batch: background_weighted_cross_entropy(model(batch["images"]), batch["semantic"]),
}


def train(name: str, model: nn.Module, data: RenderedSet, steps: int, batch_size: int, seed: int) -> float:
    """AdamW with a one-cycle schedule over shuffled epochs; returns the mean loss of the last tenth of steps."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=LEARNING_RATE, total_steps=steps, pct_start=0.15)
    model.train()
    order, cursor, recent = torch.randperm(len(data), generator=generator), 0, []
    progress = progress_bar(range(steps), desc=f"train {name}", mininterval=5)
    for step in progress:
        if cursor + batch_size > len(data):
            order, cursor = torch.randperm(len(data), generator=generator), 0
        batch = data.batch(order[cursor : cursor + batch_size])
        cursor += batch_size
        loss = LOSSES[name](model, batch)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        value = loss.item()
        if step >= steps - max(1, steps // 10):
            recent.append(value)
        progress.set_postfix(loss=f"{value:.3f}", refresh=False)
    return float(np.mean(recent))


# ---------------------------------------------------------------------------------------------- quality


@torch.no_grad()
def validate(name: str, model: nn.Module, data: RenderedSet) -> dict[str, float]:
    everything = data.batch(torch.arange(len(data)))
    images = everything["images"]
    chunks = range(0, len(images), 128)
    if name in ("features", "embedding"):
        predictions = [model.read(images[i : i + 128]) for i in chunks]
        prediction = tuple([torch.cat(parts) for parts in zip(*(p[k] for p in predictions))] for k in (0, 1))
        accuracy = reading_accuracy(prediction, *stacked_reading_targets(model, everything), model.reading.task)
        return {"mean_accuracy": float(np.mean(list(accuracy.values()))), **{f"acc_{k}": v for k, v in accuracy.items()}}
    if name in ("semantic", "structure"):
        quality = {"mIoU": mean_iou(torch.cat([model(images[i : i + 128]) for i in chunks]), everything["semantic"])}
        if name == "structure":
            quality["structure_iou_real"] = structure_iou(images, data.scenes, model)
        return quality
    parts = [instance_quality(model, images[i : i + 128], everything["targets"][i : i + 128]) for i in chunks]
    return {key: float(np.mean([part[key] for part in parts])) for key in parts[0]}


@torch.no_grad()
def blur_sensitivity(model: EmbeddingEvaluator, data: RenderedSet) -> dict[str, float]:
    """FD between the two halves of the validation set, and between one half and a blurred other half."""
    half = len(data) // 2
    images = data.images.float()
    rng = np.random.default_rng(0)
    blurred = torch.stack([
        degradation(scene, "detail", rng, strength=0.7, variant="blur").image for scene in data.scenes[half : 2 * half]
    ])
    first, second, blur = (embed_images(x, model) for x in (images[:half], images[half : 2 * half], blurred))
    return {"fd_real_vs_real": frechet_distance(first, second), "fd_real_vs_blurred": frechet_distance(first, blur)}


# ---------------------------------------------------------------------------------------------- the build


@dataclass(frozen=True)
class Job:
    """One training run: a model (or the joint segmenters) and the files it ships."""

    name: str
    seeds: tuple[int, int]
    model_seed: int
    make: Callable[[], nn.Module]
    outputs: tuple[tuple[str, str, Callable[[str], nn.Module], Callable[[nn.Module], nn.Module]], ...]
    """(name, folder, loader, part of the trained module to save) per shipped file."""


def _whole(model: nn.Module) -> nn.Module:
    return model


JOBS = (
    Job("features", PERCEPTION_SEEDS, 11, PocketFeatureNet, (("features", "perception", load_feature_net, _whole),)),
    Job("segmenters", PERCEPTION_SEEDS, 12, JointSegmenters, (
        ("semantic", "perception", load_semantic_segmenter, lambda joint: joint.semantic),
        ("instance", "perception", load_instance_segmenter, lambda joint: joint.instance),
    )),
    Job("structure", EVALUATOR_SEEDS, 111, StructureEvaluator, (("structure", "evaluators", load_structure_evaluator, _whole),)),
    Job("embedding", EVALUATOR_SEEDS, 112, EmbeddingEvaluator, (("embedding", "evaluators", load_embedding_evaluator, _whole),)),
)


def build(out: Path, plan: BuildPlan, log: Callable[[str], None] = print) -> dict:
    """Train, save, reload and validate every model; write BUILD.md. Returns the report as a dict."""
    torch.set_num_threads(1)
    started = time.perf_counter()
    report = {"jobs": {}, "files": {}, "render_seconds": 0.0}
    datasets: dict[tuple[int, int], tuple[RenderedSet, RenderedSet]] = {}
    for job in JOBS:
        if job.seeds not in datasets:
            datasets.clear()  # one seed pair in memory at a time
            tick = time.perf_counter()
            datasets[job.seeds] = (render_set(plan.train_images, job.seeds[0]), render_set(plan.val_images, job.seeds[1]))
            report["render_seconds"] += time.perf_counter() - tick
        train_set, val_set = datasets[job.seeds]
        torch.manual_seed(job.model_seed)
        model = job.make()
        tick = time.perf_counter()
        final_loss = train(job.name, model, train_set, plan.steps[job.name], plan.batch_size, job.model_seed)
        report["jobs"][job.name] = {
            "seeds": job.seeds, "model_seed": job.model_seed, "steps": plan.steps[job.name],
            "train_seconds": time.perf_counter() - tick, "final_loss": final_loss,
        }
        for name, folder, loader, part in job.outputs:
            path = out / folder / f"{name}.safetensors"
            save_weights(part(model), path)
            shipped = loader(str(path))
            quality = validate(name, shipped, val_set)
            if name == "embedding":
                quality.update(blur_sensitivity(shipped, val_set))
            report["files"][name] = {
                "file": f"{folder}/{name}.safetensors", "class": type(shipped).__name__, "job": job.name,
                "parameters": sum(p.numel() for p in shipped.parameters()), "bytes": path.stat().st_size, "quality": quality,
            }
            log(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in quality.items()))
        log(f"{job.name}: {report['jobs'][job.name]['train_seconds']:.0f} s, final loss {final_loss:.3f}")
    report["wall_seconds"] = time.perf_counter() - started
    write_build_notes(out / "perception" / "BUILD.md", plan, report)
    return report


def write_build_notes(path: Path, plan: BuildPlan, report: dict) -> None:
    quick = " --quick" if plan is QUICK else ""
    lines = [
        "# Pocket perception models and held-out evaluators",
        "",
        f"Built with `python -m unifl.pocket.models.build_perception --out pocket/weights{quick}` "
        f"in {report['wall_seconds']:.0f} s wall time ({report['render_seconds']:.0f} s of it rendering), "
        f"single-threaded torch {torch.__version__} on {platform.machine()} {platform.processor() or platform.system()} "
        f"({os.cpu_count()} cores, shared), Python {platform.python_version()}.",
        "",
        f"Data: {plan.train_images} training and {plan.val_images} validation images at 64 px per seed pair; "
        f"perception models train on seed {PERCEPTION_SEEDS[0]} (validation {PERCEPTION_SEEDS[1]}), evaluators on "
        f"seed {EVALUATOR_SEEDS[0]} (validation {EVALUATOR_SEEDS[1]}). AdamW, one-cycle lr {LEARNING_RATE}, "
        f"batch {plan.batch_size}; dense cross-entropies weight background pixels {BACKGROUND_WEIGHT}. The semantic and "
        "instance segmenters are trained jointly on one trunk (job `segmenters`). Quality is measured on the "
        "validation seed with the saved fp16 files reloaded.",
        "",
        "| job | seeds (train, val) | model seed | steps | train s | final loss |",
        "|---|---|---|---|---|---|",
    ]
    for name, job in report["jobs"].items():
        lines.append(
            f"| {name} | {job['seeds']} | {job['model_seed']} | {job['steps']} | {job['train_seconds']:.0f} | {job['final_loss']:.4f} |"
        )
    lines += ["", "| file | class | job | parameters | bytes (fp16) |", "|---|---|---|---|---|"]
    for entry in report["files"].values():
        lines.append(f"| {entry['file']} | {entry['class']} | {entry['job']} | {entry['parameters']:,} | {entry['bytes']:,} |")
    lines += ["", "Held-out quality (validation seed):", ""]
    for name, entry in report["files"].items():
        lines.append(f"- **{name}**: " + ", ".join(f"{k} = {v:.4f}" for k, v in entry["quality"].items()))
    lines += [
        "",
        "Metric definitions: mIoU over the 8 semantic classes (dataset-level); instance `mask_iou` and `class_accuracy` "
        "over every SOLO-assigned (slot, instance) pair; scene-reading accuracies are top-1 per image (scene "
        "attributes) or per object pixel (`*_pixels`: shape, colour, pattern of the object there); `structure_iou_real` is `evaluators.structure_iou` on the real validation "
        "images; the Fréchet distances compare 128-d embeddings of two halves of the validation set, and of one half "
        "with a Gaussian-blurred other half (degrade 'detail'/'blur', strength 0.7).",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write("\n".join(lines))
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="weights folder (the shipped one is pocket/weights)")
    parser.add_argument("--quick", action="store_true", help="a few images and steps: checks the pipeline, not the models")
    args = parser.parse_args(argv)
    build(args.out, QUICK if args.quick else FULL, log=lambda line: print(line, file=sys.stderr))


if __name__ == "__main__":
    main()
