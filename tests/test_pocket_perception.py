"""Pocket perception models and held-out evaluators: contracts, shipped quality, gradients, metrics, build."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from unifl.core.feedback.loading import load_perception_model
from unifl.core.feedback.perception import (
    AssigningInstanceSegmenter,
    freeze,
    pefl_layout_loss,
    pefl_structure_loss,
    pefl_style_loss,
)
from unifl.pocket.world.degrade import degradation
from unifl.pocket.models.evaluators import (
    EmbeddingEvaluator,
    StructureEvaluator,
    _template_iou,
    embed_images,
    frechet_distance,
    load_embedding_evaluator,
    load_structure_evaluator,
    object_structure_scores,
    structure_iou,
)
from unifl.pocket.models.perception import (
    GRID,
    PocketFeatureNet,
    PocketInstanceSegmenter,
    instance_quality,
    instance_targets,
    load_weights,
    mean_iou,
    reading_accuracy,
    reading_targets,
    sample_instance_targets,
    save_weights,
)
from unifl.pocket.world.world import NUM_CLASSES, SHAPES, PocketDataset, WorldConfig, render

KINDS = ("pocket-features", "pocket-instance", "pocket-semantic")

# Floors under the numbers the shipped weights reach on these very batches (BUILD.md has the 512-image
# validation numbers): semantic mIoU 0.89, instance mask IoU 0.88 / class accuracy 0.97, feature-net
# object colour 0.97 / pattern 0.74 per pixel, structure evaluator mIoU 0.91, structure IoU of real images 0.84.
SEMANTIC_MIOU_FLOOR = 0.85
INSTANCE_MASK_IOU_FLOOR = 0.82
INSTANCE_CLASS_ACCURACY_FLOOR = 0.92
FEATURE_SCENE_ACCURACY_FLOOR = 0.95
FEATURE_COLOUR_PIXELS_FLOOR = 0.92
FEATURE_PATTERN_PIXELS_FLOOR = 0.65
STRUCTURE_MIOU_FLOOR = 0.87
STRUCTURE_IOU_REAL_FLOOR = 0.78


def samples(seed: int, count: int, resolution: int = 64):
    dataset = PocketDataset(count, seed, WorldConfig(resolution=resolution))
    return [dataset[i] for i in range(count)]


def reading_quality(model, batch) -> dict[str, float]:
    """The scene-reading task's accuracies (top-1 per image, or per object pixel) on world samples."""
    targets = [reading_targets(model.reading.task, s.scene, s.instance_masks) for s in batch]
    with torch.no_grad():
        prediction = model.read(torch.stack([s.image for s in batch]))
    scene, maps = torch.stack([t[0] for t in targets]), torch.stack([t[1] for t in targets])
    return reading_accuracy(prediction, scene, maps, model.reading.task)


@pytest.fixture(scope="module")
def perception_val():
    return samples(2, 64)


@pytest.fixture(scope="module")
def evaluator_val():
    return samples(102, 192)


@pytest.fixture(scope="module")
def models():
    return {kind: load_perception_model(kind) for kind in KINDS}


# ------------------------------------------------------------------------------------------- contracts


@pytest.mark.parametrize("resolution", [64, 32])
def test_shipped_models_load_through_the_registry_and_keep_the_contract(models, resolution):
    images = torch.stack([s.image for s in samples(2, 3, resolution)])
    for kind, model in models.items():
        assert not model.training and not any(p.requires_grad for p in model.parameters()), kind
    features = models["pocket-features"](images)
    assert [tuple(f.shape) for f in features] == [(3, 16, 64, 64), (3, 32, 32, 32), (3, 48, 16, 16)]
    prediction = models["pocket-instance"](images)
    assert prediction.class_logits.shape == (3, GRID * GRID, 7) and prediction.mask_logits.shape == (3, GRID * GRID, 32, 32)
    assert isinstance(models["pocket-instance"], AssigningInstanceSegmenter)
    assert models["pocket-semantic"](images).shape == (3, NUM_CLASSES, 64, 64)


def test_instance_targets_shift_world_ids_to_class_indices(perception_val):
    targets = sample_instance_targets(perception_val)
    for sample, target in zip(perception_val, targets):
        assert torch.equal(target["labels"], sample.instance_labels - 1)
        assert target["masks"] is sample.instance_masks
    with pytest.raises(ValueError, match="1..7"):
        instance_targets(torch.zeros(1, 4, 4, dtype=torch.bool), torch.tensor([0]))


def test_assign_is_solo_centre_cells_one_instance_per_slot():
    segmenter = PocketInstanceSegmenter()
    masks = torch.zeros(3, 64, 64, dtype=torch.bool)
    masks[0, 10:20, 10:20] = True  # centre (15, 15) px = cell coordinates (1.875, 1.875): cell (1, 1)
    masks[1, 12:18, 10:16] = True  # centre (15, 13) px = (1.875, 1.625): also cell (1, 1), and nearer to its centre
    (cells, gts), = segmenter.assign([{"masks": masks, "labels": torch.tensor([0, 1, 2])}])
    owner = dict(zip(cells.tolist(), gts.tolist()))
    assert len(owner) == len(cells)  # no slot answers for two instances
    assert owner[1 * GRID + 1] == 1  # the contested centre cell goes to the nearer centre
    assert sorted(c for c, g in owner.items() if g == 0) == [1 * GRID + 2, 2 * GRID + 1, 2 * GRID + 2]  # its centre region
    assert 2 not in owner.values()  # the empty mask is left out

    dot, frame = torch.zeros(64, 64, dtype=torch.bool), torch.zeros(64, 64, dtype=torch.bool)
    dot[11:13, 11:13] = True
    frame[7:17, 7:17] = True
    frame[9:15, 9:15] = False  # centre (12, 12) px like the dot: both want only the centre of cell (1, 1)
    (cells, gts), = segmenter.assign([{"masks": torch.stack([dot, frame]), "labels": torch.tensor([0, 0])}])
    owner = dict(zip(cells.tolist(), gts.tolist()))
    assert owner.pop(1 * GRID + 1) == 0 and list(owner.values()) == [1]  # a tie goes to the first instance
    (loser_cell,) = owner
    assert abs(loser_cell // GRID - 1) + abs(loser_cell % GRID - 1) == 1  # the loser takes a nearest free cell


# --------------------------------------------------------------------------------------- shipped quality


def test_perception_models_quality_on_fresh_validation_data(models, perception_val):
    images = torch.stack([s.image for s in perception_val])
    with torch.no_grad():
        semantic = mean_iou(models["pocket-semantic"](images), torch.stack([s.semantic_mask for s in perception_val]))
        instance = instance_quality(models["pocket-instance"], images, sample_instance_targets(perception_val))
        reading = reading_quality(models["pocket-features"], perception_val)
    assert semantic > SEMANTIC_MIOU_FLOOR
    assert instance["mask_iou"] > INSTANCE_MASK_IOU_FLOOR
    assert instance["class_accuracy"] > INSTANCE_CLASS_ACCURACY_FLOOR
    for group in models["pocket-features"].reading.task.scene_groups:
        assert reading[group] > FEATURE_SCENE_ACCURACY_FLOOR, reading
    assert reading["colour_pixels"] > FEATURE_COLOUR_PIXELS_FLOOR and reading["pattern_pixels"] > FEATURE_PATTERN_PIXELS_FLOOR


def test_structure_evaluator_segments_held_out_data(evaluator_val):
    images = torch.stack([s.image for s in evaluator_val])
    with torch.no_grad():
        logits = load_structure_evaluator()(images)
    assert mean_iou(logits, torch.stack([s.semantic_mask for s in evaluator_val])) > STRUCTURE_MIOU_FLOOR


# -------------------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("resolution", [64, 32])
def test_every_pefl_helper_sends_gradient_to_the_images(models, resolution):
    batch = samples(2, 4, resolution)
    real = torch.stack([s.image for s in batch])
    noise = torch.randn(real.shape, generator=torch.Generator().manual_seed(0))
    pred = (real + 0.1 * noise).clamp(0, 1).requires_grad_(True)
    losses = {
        "style": pefl_style_loss(models["pocket-features"], pred, real),
        "structure": pefl_structure_loss(models["pocket-instance"], pred, sample_instance_targets(batch)),
        "layout": pefl_layout_loss(models["pocket-semantic"], pred, torch.stack([s.semantic_mask for s in batch])),
    }
    for aspect, loss in losses.items():
        (grad,) = torch.autograd.grad(loss, pred)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, aspect


def test_losses_grow_when_the_images_are_blurred(models, perception_val):
    batch = perception_val[:16]
    real = torch.stack([s.image for s in batch])

    def blurred(strength: float) -> torch.Tensor:
        rng = np.random.default_rng(0)
        return torch.stack([degradation(s, "detail", rng, strength=strength, variant="blur").image for s in batch])

    mild, strong = blurred(0.2), blurred(1.0)
    targets, semantic = sample_instance_targets(batch), torch.stack([s.semantic_mask for s in batch])
    with torch.no_grad():
        structure = [pefl_structure_loss(models["pocket-instance"], x, targets) for x in (real, strong)]
        layout = [pefl_layout_loss(models["pocket-semantic"], x, semantic) for x in (real, strong)]
        style = [pefl_style_loss(models["pocket-features"], x, real) for x in (mild, strong)]
    assert structure[0] < structure[1] and layout[0] < layout[1]
    assert 0 < style[0] < style[1]


# ---------------------------------------------------------------------------------------------- metrics


def test_frechet_distance_matches_the_closed_form_and_is_careful():
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, (20000, 1))
    b = rng.normal(1.0, 2.0, (20000, 1))
    assert frechet_distance(a, b) == pytest.approx(1 + 1 + 4 - 2 * 2, abs=0.1)  # ‖Δμ‖² + σa² + σb² − 2σaσb
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    singular = rng.normal(size=(10, 32))  # fewer samples than dimensions: singular covariances
    assert np.isfinite(frechet_distance(singular, torch.from_numpy(singular + 0.01)))
    with pytest.raises(ValueError, match="one D"):
        frechet_distance(a, rng.normal(size=(5, 2)))


def test_frechet_distance_separates_blurred_images(evaluator_val):
    evaluator = load_embedding_evaluator()
    assert isinstance(evaluator, EmbeddingEvaluator) and not any(p.requires_grad for p in evaluator.parameters())
    half = len(evaluator_val) // 2
    images = torch.stack([s.image for s in evaluator_val])
    rng = np.random.default_rng(1)
    blurred = torch.stack([degradation(s, "detail", rng, strength=0.5, variant="blur").image for s in evaluator_val[half:]])
    first, second, blur = (embed_images(x, evaluator) for x in (images[:half], images[half:], blurred))
    assert first.shape == (half, EmbeddingEvaluator.dimension)
    same, different = frechet_distance(first, second), frechet_distance(first, blur)
    assert different > 3 * same


def test_template_fit_recognises_each_world_shape_and_not_the_wrong_one():
    right, wrong = [], []
    for sample in samples(102, 40):
        for obj, mask in zip(sample.scene.objects, sample.instance_masks.numpy()):
            if mask.sum() < 40:
                continue
            right.append(_template_iou(mask, obj.shape))
            wrong.append(_template_iou(mask, "cross" if obj.shape != "cross" else "circle"))
    assert np.mean(right) > 0.85 and np.mean(right) > np.mean(wrong) + 0.15


class FixedLabels(torch.nn.Module):
    """A stand-in structure evaluator that 'predicts' given label maps, to test the metric's bookkeeping."""

    def __init__(self, label_maps: torch.Tensor):
        super().__init__()
        self.label_maps = label_maps

    def forward(self, images):
        return torch.nn.functional.one_hot(self.label_maps, NUM_CLASSES).permute(0, 3, 1, 2).float()


def test_structure_scores_count_each_captioned_object_once():
    sample = next(s for s in samples(102, 60) if "circle" in [o.shape for o in s.scene.objects])
    index = [o.shape for o in sample.scene.objects].index("circle")
    circle = sample.scene.objects[index]
    label_map = sample.instance_masks[index].long() * (SHAPES.index("circle") + 1)
    evaluator, image = FixedLabels(label_map[None]), sample.image[None]
    (alone,) = object_structure_scores(image, [replace(sample.scene, objects=(circle,))], evaluator)
    assert alone > 0.85
    twice = object_structure_scores(image, [replace(sample.scene, objects=(circle, circle))], evaluator)
    assert twice == [alone, 0.0]  # one blob cannot stand for two circles
    square = replace(circle, shape="square")
    assert object_structure_scores(image, [replace(sample.scene, objects=(square,))], evaluator) == [0.0]


def test_structure_iou_is_high_on_real_images_and_low_on_broken_ones(evaluator_val):
    evaluator = load_structure_evaluator()
    assert isinstance(evaluator, StructureEvaluator)
    batch = evaluator_val[:48]
    scenes = [s.scene for s in batch]
    real = structure_iou(torch.stack([s.image for s in batch]), scenes, evaluator)
    without_objects = torch.stack([render(replace(scene, objects=scene.objects[:-1])).image for scene in scenes])
    rng = np.random.default_rng(2)
    blurred = torch.stack([degradation(s, "detail", rng, strength=1.0, variant="blur").image for s in batch])
    assert real > STRUCTURE_IOU_REAL_FLOOR
    assert structure_iou(without_objects, scenes, evaluator) < real - 0.3
    assert structure_iou(blurred, scenes, evaluator) < real - 0.05


def test_mean_iou_counts_occurring_classes_over_the_batch():
    gt = torch.tensor([[[0, 0], [1, 1]]])
    logits = torch.nn.functional.one_hot(gt, NUM_CLASSES).permute(0, 3, 1, 2).float()
    assert mean_iou(logits, gt) == pytest.approx(1.0)
    wrong = torch.nn.functional.one_hot(torch.tensor([[[0, 1], [1, 1]]]), NUM_CLASSES).permute(0, 3, 1, 2).float()
    assert mean_iou(wrong, gt) == pytest.approx((1 / 2 + 2 / 3) / 2)


# ------------------------------------------------------------------------------------------ files, build


def test_weights_files_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="build_perception"):
        load_perception_model("pocket-semantic", str(tmp_path / "missing.safetensors"))
    path = tmp_path / "features.safetensors"
    save_weights(freeze(PocketFeatureNet()), path)
    with pytest.raises(ValueError, match="pocket-features"):
        load_perception_model("pocket-instance", str(path))
    assert isinstance(load_weights(PocketFeatureNet(), path), PocketFeatureNet)


def test_quick_build_trains_saves_and_reports(tmp_path):
    from unifl.pocket.models.build_perception import QUICK, build

    report = build(tmp_path, QUICK, log=lambda line: None)
    assert set(report["files"]) == {"features", "semantic", "instance", "structure", "embedding"}
    for name in ("features", "semantic", "instance"):
        assert (tmp_path / "perception" / f"{name}.safetensors").is_file()
    model = load_perception_model("pocket-semantic", str(tmp_path / "perception" / "semantic.safetensors"))
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, NUM_CLASSES, 64, 64)
    assert load_structure_evaluator(str(tmp_path / "evaluators" / "structure.safetensors")) is not None
    assert load_embedding_evaluator(str(tmp_path / "evaluators" / "embedding.safetensors")).embed(torch.rand(2, 3, 32, 32)).shape == (2, EmbeddingEvaluator.dimension)
    assert "--quick" in (tmp_path / "perception" / "BUILD.md").read_text()
