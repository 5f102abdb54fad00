"""The public-model recipe: the published reward and perception models a run uses when their files are
in the UniFL folder, and the weight-free image statistics that stand in for the rewards that are not.

UniFL's own reward models are trained per aspect on annotated preference pairs that were never released
(``unifl train-reward`` trains them from yours). The published scorers are overall judges of quality or
preference; the recipe gives each one aspect slot so that all four contribute (the aesthetic loss is an
sum over aspects, Eq. 5). The slot matters in one place: stage 2's discriminator starts from the ``detail``
reward, which the paper's is BLIP-based, so that slot holds ImageReward (BLIP). Thresholds α_d sit just
above what Stable Diffusion 1.5 images score, so the hinge has work to do, and the weights bring the
scales together. The same models, thresholds and weights as recipes/*.toml (docs/recipes.md; a test
keeps them equal).

Looked for under ``<unifl folder>/rewards`` and ``/perception``, by the names the models are published
under; the first name found is used::

    rewards/HPS_v2.1_compressed.pt        (or HPS_v2_compressed.pt)             color      hpsv2
    rewards/PickScore_v1/                 Hugging Face CLIP folder              layout     pickscore
    rewards/ImageReward/                  ImageReward.pt + bert tokenizer files detail     imagereward
    rewards/laion-aesthetic/              clip/ + the head file (see .rewards.laion)  lighting  laion-aesthetic
    perception/vgg16-397923af.pth         torchvision's VGG16 (or vgg16.safetensors)  style  vgg16
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config.presets import STATISTIC_REWARDS


@dataclass(frozen=True)
class PublicModel:
    """One published model in the recipe: the aspect it fills, its loader kind and the names it has on disk."""

    aspect: str
    kind: str
    names: tuple[str, ...]
    threshold: float | None = None
    weight: float = 1.0


PUBLIC_REWARDS = (
    # HPSv2.1 scores SD1.5 images about 0.27 and SDXL about 0.29 (HPSv2 paper); its cosine spans ~0.05: weight 20.
    PublicModel("color", "hpsv2", ("HPS_v2.1_compressed.pt", "HPS_v2_compressed.pt"), 0.28, 20.0),
    # PickScore: SD1.5 about 20.6-21, SDXL about 22.2 on Pick-a-Pic prompts (PickScore paper).
    PublicModel("layout", "pickscore", ("PickScore_v1",), 21.5),
    # ImageReward is standardised (mean 0, std 1 over its human-rated set); SD1.5 averages about 0.2.
    PublicModel("detail", "imagereward", ("ImageReward",), 0.5),
    # LAION aesthetic: the LAION-Aesthetics "6+" subset is the high bar; SD1.5 outputs score 5.5-6.
    PublicModel("lighting", "laion-aesthetic", ("laion-aesthetic",), 6.0),
)
PUBLIC_PERCEPTION = (PublicModel("style", "vgg16", ("vgg16-397923af.pth", "vgg16.safetensors", "vgg16.pth")),)
RECIPE_PERCEPTION = (
    *PUBLIC_PERCEPTION,
    PublicModel("structure", "maskrcnn-resnet50-fpn-v2", ("maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth",)),
    PublicModel("structure", "maskrcnn-resnet50-fpn", ("maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth",)),
    PublicModel("layout", "deeplabv3-resnet50", ("deeplabv3_resnet50_coco-cd0a2569.pth",)),
    PublicModel("layout", "deeplabv3-resnet101", ("deeplabv3_resnet101_coco-586e9e4e.pth",)),
)
"""Every published perception model docs/recipes.md names. Only the style model is a default
(:data:`PUBLIC_PERCEPTION`): structure and layout need instance and semantic masks in the data."""
FOLDERS = {"rewards": "rewards", "perception": "perception"}
#: The weight-free rewards: image statistics, not learned judgements (say so wherever they are offered).
STATISTIC_KINDS = tuple(table["kind"] for table in STATISTIC_REWARDS)


def recognise(section: str, name: str) -> PublicModel | None:
    """The published model a file or folder in ``section`` (``"rewards"`` or ``"perception"``) is, by the name
    it is published under (what docs/recipes.md tells to download): its kind, aspect, threshold and weight."""
    models = PUBLIC_REWARDS if section == "rewards" else RECIPE_PERCEPTION
    return next((model for model in models if name in model.names), None)


def _found(model: PublicModel, folder: Path) -> dict | None:
    for name in model.names:
        if (folder / name).exists():
            table = {"aspect": model.aspect, "kind": model.kind, "path": str(folder / name), "weight": model.weight}
            return table | ({"threshold": model.threshold} if model.threshold is not None else {})
    return None


def public_models(unifl_dir: str | Path, perception: tuple[PublicModel, ...] = PUBLIC_PERCEPTION) -> dict[str, list[dict]]:
    """``{"rewards": [...], "perception": [...]}``: the recipe's ``[[rewards]]``/``[[perception]]`` tables
    whose files are present in ``unifl_dir`` (existence only; loading checks the contents). ``perception``:
    which published perception models to look for (default: those a run uses unless told otherwise)."""
    found = {}
    for section, models in (("rewards", PUBLIC_REWARDS), ("perception", perception)):
        folder = Path(unifl_dir) / FOLDERS[section]
        found[section] = [table for table in (_found(model, folder) for model in models) if table is not None]
    return found


def default_feedback(unifl_dir: str | Path) -> dict[str, list[dict]]:
    """The feedback a run gets unless told otherwise: the public models present, and for each reward
    aspect without one, the image statistic for that aspect (colorfulness, sharpness, exposure) if any."""
    found = public_models(unifl_dir)
    covered = {table["aspect"] for table in found["rewards"]}
    statistics = [dict(table) for table in STATISTIC_REWARDS if table["aspect"] not in covered]
    return {"rewards": found["rewards"] + statistics, "perception": found["perception"]}
