"""The Templates browser's thumbnails: ``workflows/<title>.jpg`` beside each ``workflows/<title>.json``.

ComfyUI's frontend shows a pack's workflow as a card whose image is ``<name>.jpg`` next to the workflow file
(``/api/workflow_templates/<pack>/<name>.jpg``). Each card here is rendered by the embedded pocket world
(``pocket/weights``: its procedural images, its small SD1.5-architecture model, ControlNet and motion adapter)
doing what the workflow does: real images scored per aspect by the workflow's own reward models, training
images beside the model's 20-step samples, 20 against 4 steps, 4-step samples, 4-step ControlNet and
AnimateDiff samples. The pocket model stands in for the checkpoint the workflow loads (no SD1.5 weights ship
with the pack), so a card shows the kind of output, not the workflow's own; its corner label says
"pocket world". Seeded: a rerun writes the same pictures (JPEG quality 85, 384 px, a few tens of KB each).

    .venv/bin/python tests/comfyui_stub/thumbnails.py           # rewrites workflows/*.jpg (about a minute on a CPU)
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import workflows as wf  # noqa: E402

SIZE = 384
BAND = 44
QUALITY = 85
SEED = 0
BACKGROUND = (24, 24, 28)
ASPECT_COLOURS = {"colorfulness": (230, 90, 160), "sharpness": (90, 180, 240), "exposure": (250, 200, 70)}


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)  # Pillow's bundled font: the same card on every machine


def _tiles(images: torch.Tensor, columns: int, width: int, height: int, gap: int = 6) -> Image.Image:
    """``images`` (BCHW in [0, 1]) laid out in ``columns`` square tiles filling ``width`` × ``height``."""
    rows = (len(images) + columns - 1) // columns
    side = min((width - gap * (columns + 1)) // columns, (height - gap * (rows + 1)) // rows)
    big = F.interpolate(images.float().clamp(0, 1), size=(side, side), mode="bicubic", align_corners=False).clamp(0, 1)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    left = (width - (columns * side + (columns - 1) * gap)) // 2
    top = (height - (rows * side + (rows - 1) * gap)) // 2
    for i, tile in enumerate(big):
        r, c = divmod(i, columns)
        array = (tile.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        canvas.paste(Image.fromarray(array), (left + c * (side + gap), top + r * (side + gap)))
    return canvas


def _card(picture: Image.Image, label: str) -> Image.Image:
    """The picture over a band naming what it shows, and a corner note on where it comes from."""
    card = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
    card.paste(picture, (0, 0))
    draw = ImageDraw.Draw(card)
    draw.rectangle((0, SIZE - BAND, SIZE, SIZE), fill=(40, 40, 48))
    draw.text((12, SIZE - BAND // 2), label, font=_font(21), fill=(240, 240, 240), anchor="lm")
    draw.text((SIZE - 10, SIZE - BAND // 2), "pocket world", font=_font(12), fill=(150, 150, 160), anchor="rm")
    return card


def _jpeg(card: Image.Image, path: Path) -> Path:
    from unifl.core.files import atomic_write_bytes

    buffer = io.BytesIO()
    card.save(buffer, format="JPEG", quality=QUALITY, optimize=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _real_images(count: int) -> tuple[torch.Tensor, list[str]]:
    from unifl.pocket.world.world import PocketDataset, WorldConfig

    world = PocketDataset(count, seed=SEED + 101, config=WorldConfig(resolution=64))  # not a training stream
    samples = [world[i] for i in range(count)]
    return torch.stack([s.image for s in samples]), [s.caption for s in samples]


def score_card() -> Image.Image:
    """Four pocket images, each with a bar per aspect: the workflow's built-in reward models' scores."""
    from unifl.core.feedback.loading import load_reward_model

    images, captions = _real_images(4)
    scores = {}
    with torch.no_grad():
        for kind in ASPECT_COLOURS:
            raw = load_reward_model(kind)(images, captions).float()
            scores[kind] = (raw - raw.min()) / (raw.max() - raw.min()).clamp(min=1e-8)  # across the four images
    side, bar, gap = 110, 8, 50
    full = Image.new("RGB", (SIZE, SIZE - BAND), BACKGROUND)
    draw = ImageDraw.Draw(full)
    left = (SIZE - 2 * side - gap) // 2
    tiles = F.interpolate(images, size=(side, side), mode="bicubic", align_corners=False).clamp(0, 1)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, 2)
        x, y = left + c * (side + gap), 8 + r * (side + 3 * (bar + 3) + 14)
        full.paste(Image.fromarray((tile.permute(1, 2, 0).numpy() * 255).round().astype("uint8")), (x, y))
        for j, (kind, colour) in enumerate(ASPECT_COLOURS.items()):  # one bar per aspect, longest = best of the four
            top = y + side + 4 + j * (bar + 3)
            draw.rectangle((x, top, x + int(8 + (side - 8) * float(scores[kind][i])), top + bar), fill=colour)
    x = left
    for kind, colour in ASPECT_COLOURS.items():
        draw.rectangle((x, SIZE - BAND - 22, x + 12, SIZE - BAND - 10), fill=colour)
        draw.text((x + 17, SIZE - BAND - 16), kind, font=_font(13), fill=(220, 220, 220), anchor="lm")
        x += 104
    return _card(full, "scores per aspect")


class PocketSampler:
    """The pocket model's diffusers pipelines (plain, ControlNet, AnimateDiff), built once."""

    def __init__(self):
        from unifl.pocket.models.addons import frozen_pocket_pipeline, trailing_ddim
        from unifl.pocket.models.controlnet import controlnet_pipeline, load_pocket_controlnet, plain_pipeline
        from unifl.pocket.models.motion import animatediff_pipeline, load_pocket_motion_adapter

        self.pipe = frozen_pocket_pipeline()
        trailing = trailing_ddim(self.pipe)
        self.plain_20 = plain_pipeline(self.pipe, self.pipe.scheduler)  # 20 DDIM steps, leading spacing: stage 1's contract
        self.plain_4 = plain_pipeline(self.pipe, trailing)  # 4 DDIM steps, trailing spacing: stage 2's contract
        self.controlled = controlnet_pipeline(self.pipe, load_pocket_controlnet(), trailing)
        self.animated = animatediff_pipeline(self.pipe, load_pocket_motion_adapter(), trailing)

    def images(self, prompts: list[str], steps: int) -> torch.Tensor:
        from unifl.pocket.models.controlnet import generate_images

        pipe = self.plain_20 if steps == 20 else self.plain_4
        return generate_images(pipe, prompts, list(range(SEED, SEED + len(prompts))), steps=steps, cfg=3.0)


def train_1_card(sampler: PocketSampler, label: str = "stage 1") -> Image.Image:
    images, captions = _real_images(3)
    samples = sampler.images(captions, 20)
    return _card(_tiles(torch.cat([images, samples]), 3, SIZE, SIZE - BAND), f"{label}: images, samples")


def train_2_card(sampler: PocketSampler, label: str = "stage 2") -> Image.Image:
    _, captions = _real_images(3)
    return _card(_tiles(torch.cat([sampler.images(captions, 20), sampler.images(captions, 4)]), 3, SIZE, SIZE - BAND), f"{label}: 20 steps, 4 steps")


def four_step_card(sampler: PocketSampler) -> Image.Image:
    _, captions = _real_images(4)
    return _card(_tiles(sampler.images(captions, 4), 2, SIZE, SIZE - BAND), "4 steps")


def controlnet_card(sampler: PocketSampler) -> Image.Image:
    from unifl.pocket.models.controlnet import control_images, generate_images, render_scenes

    _, masks, captions = render_scenes(3, SEED + 101, "thumbnail scenes")
    controls = control_images(masks)
    out = generate_images(sampler.controlled, captions, list(range(SEED, SEED + 3)), steps=4, cfg=3.0, controls=controls)
    return _card(_tiles(torch.cat([controls, out]), 3, SIZE, SIZE - BAND), "4 steps + ControlNet")


def animatediff_card(sampler: PocketSampler) -> Image.Image:
    from unifl.pocket.models.motion import generate_clips

    _, captions = _real_images(2)
    clips = generate_clips(sampler.animated, captions, [SEED, SEED + 1], steps=4, cfg=3.0)
    frames = torch.cat([clip[::2] for clip in clips])  # every other frame: 2 clips × 4 frames
    return _card(_tiles(frames, 4, SIZE, SIZE - BAND), "4 steps + AnimateDiff")


def write_all() -> list[Path]:
    from unifl.pocket.plugin import register

    torch.manual_seed(SEED)
    register()
    written = [_jpeg(score_card(), wf.WORKFLOWS / f"{wf.SCORE}.jpg")]
    sampler = PocketSampler()
    cards = {wf.TRAIN_1: train_1_card, wf.TRAIN_2: train_2_card, wf.FOUR_STEP: four_step_card, wf.CONTROLNET: controlnet_card, wf.ANIMATEDIFF: animatediff_card,
             wf.RECIPE_1: lambda s: train_1_card(s, "recipe stage 1"), wf.RECIPE_2: lambda s: train_2_card(s, "recipe stage 2")}
    for title, make in cards.items():
        written.append(_jpeg(make(sampler), wf.WORKFLOWS / f"{title}.jpg"))
    missing = set(wf.definitions()) - {p.stem for p in written}
    if missing:
        raise RuntimeError(f"no thumbnail made for {sorted(missing)}: add a card for it here")
    return written


if __name__ == "__main__":
    for path in write_all():
        print(f"{path.relative_to(wf.ROOT)}  {path.stat().st_size // 1024} KB")
