"""Every image mode Pillow opens is read for what it shows, or refused with a message naming the file.

The one reader (``core/images.py``) serves training data, ``unifl score`` and preference pairs; the
last tests go through each of them with a 16-bit PNG, which all three used to read as white.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from unifl.core.images import TRANSPARENT_BACKGROUND, ImageReadError, check_rgb_readable, read_label_map, read_rgb

GREY_16 = np.array([[0, 257 * 64], [257 * 128, 65535]], dtype=np.uint16)  # → 0, 64, 128, 255
WHITE = TRANSPARENT_BACKGROUND


def _saved(image: Image.Image, path, fmt: str):
    image.save(path, fmt)
    return path


def _pixels(path) -> np.ndarray:
    image = read_rgb(path)
    assert image.mode == "RGB"
    return np.asarray(image)


def test_a_16_bit_png_is_scaled_not_clipped_to_white(tmp_path):
    path = _saved(Image.fromarray(GREY_16), tmp_path / "grey16.png", "PNG")
    assert Image.open(path).mode == "I;16"
    assert _pixels(path)[..., 0].tolist() == [[0, 64], [128, 255]]


@pytest.mark.parametrize("mode", ["I;16B", "I"])
def test_other_16_bit_layouts_are_scaled_too(tmp_path, mode):
    values = GREY_16.astype(np.int32) if mode == "I" else GREY_16.astype(">u2")
    image = Image.fromarray(values.astype(np.int32), "I") if mode == "I" else Image.frombytes("I;16B", (2, 2), values.tobytes())
    path = _saved(image, tmp_path / "grey.tiff", "TIFF")
    assert Image.open(path).mode == mode
    assert _pixels(path)[..., 1].tolist() == [[0, 64], [128, 255]]


def test_32_bit_integers_outside_the_16_bit_range_are_refused(tmp_path):
    path = _saved(Image.fromarray(np.array([[0, 70000]], dtype=np.int32), "I"), tmp_path / "wide.tiff", "TIFF")
    with pytest.raises(ImageReadError, match=r"wide.tiff: 32-bit integer pixels \(0 … 70000\) outside the 16-bit range"):
        read_rgb(path)


def test_rgba_is_composited_onto_white_not_on_the_colour_under_transparency(tmp_path):
    rgba = np.zeros((1, 3, 4), dtype=np.uint8)
    rgba[0, 0] = (0, 0, 0, 0)          # transparent black: the colour under it must not show
    rgba[0, 1] = (255, 0, 0, 255)      # opaque red
    rgba[0, 2] = (0, 0, 255, 128)      # half-transparent blue over white
    path = _saved(Image.fromarray(rgba, "RGBA"), tmp_path / "cutout.png", "PNG")
    pixels = _pixels(path)[0]
    assert pixels[0].tolist() == list(WHITE)
    assert pixels[1].tolist() == [255, 0, 0]
    assert pixels[2].tolist() == [127, 127, 255]


@pytest.mark.parametrize(("mode", "fmt"), [("LA", "PNG"), ("PA", "TIFF"), ("RGBA", "WEBP")])
def test_every_mode_with_alpha_is_composited(tmp_path, mode, fmt):
    image = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    image.putpixel((1, 0), (0, 0, 0, 255))
    if mode == "PA":
        image = image.convert("PA")
    elif mode == "LA":
        image = image.convert("LA")
    path = _saved(image, tmp_path / f"alpha.{fmt.lower()}", fmt)
    assert Image.open(path).mode == mode
    assert _pixels(path)[0].tolist() == [list(WHITE), [0, 0, 0]]


def test_premultiplied_modes_in_memory_are_composited_too():
    from unifl.core.images import to_rgb

    for mode in ("RGBa", "La"):
        image = Image.new(mode, (1, 1))  # all zero: fully transparent
        assert np.asarray(to_rgb(image)).tolist() == [[list(WHITE)]]


def test_a_palette_with_a_transparent_entry_is_composited(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 255, 0, 0])
    image.putpixel((1, 0), 1)
    image.info["transparency"] = 0
    path = _saved(image, tmp_path / "palette.png", "PNG")
    assert Image.open(path).mode == "P"
    assert _pixels(path)[0].tolist() == [list(WHITE), [255, 0, 0]]


@pytest.mark.parametrize(("mode", "fmt", "colour", "expected"), [
    ("1", "PNG", 1, [255, 255, 255]),
    ("L", "PNG", 100, [100, 100, 100]),
    ("P", "PNG", None, [0, 255, 0]),
    ("RGB", "PNG", (10, 20, 30), [10, 20, 30]),
    ("CMYK", "JPEG", (0, 255, 255, 0), [255, 0, 0]),
    ("CMYK", "TIFF", (255, 0, 255, 0), [0, 255, 0]),
    ("LAB", "TIFF", (255, 128, 128), [254, 255, 254]),
    ("YCbCr", "WEBP", (76, 85, 255), [254, 0, 0]),
])
def test_modes_without_alpha_keep_their_colours(tmp_path, mode, fmt, colour, expected):
    if mode == "P":
        image = Image.new("P", (8, 8))
        image.putpalette([0, 255, 0])
    else:
        image = Image.new(mode, (8, 8), colour)
    path = _saved(image, tmp_path / f"plain.{fmt.lower()}", fmt)
    assert Image.open(path).mode == (mode if fmt != "WEBP" else "RGB")
    assert np.abs(_pixels(path)[4, 4].astype(int) - expected).max() <= 3


def test_float_images_are_refused_with_the_reason(tmp_path):
    path = _saved(Image.fromarray(np.full((2, 2), 0.5, dtype=np.float32), "F"), tmp_path / "depth.tiff", "TIFF")
    with pytest.raises(ImageReadError, match=r"depth.tiff: 32-bit floating-point pixels have no standard range"):
        read_rgb(path)
    with pytest.raises(ImageReadError, match="depth.tiff"):
        check_rgb_readable(path)


def test_an_unknown_mode_is_refused_by_name():
    from unifl.core.images import to_rgb

    with pytest.raises(ImageReadError, match=r"x.png: Pillow reads it as mode 'HSV;odd'"):
        to_rgb(type("Odd", (), {"mode": "HSV;odd", "info": {}})(), "x.png")


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (4, 2), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = tmp_path / "rotated.jpg"
    image.save(path, "JPEG", exif=exif.tobytes())
    assert read_rgb(path).size == (2, 4)


@pytest.mark.parametrize(("content", "reason"), [(b"", "UnidentifiedImageError"), (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "")])
def test_damaged_files_name_the_file(tmp_path, content, reason):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=f"broken.png: not a readable image \\({reason}"):
        read_rgb(path)


def test_a_truncated_png_names_the_file(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageReadError, match="cut.png: not a readable image"):
        read_rgb(path)


def test_masks_must_be_one_channel(tmp_path):
    ok = _saved(Image.fromarray(GREY_16[:1] // 257 // 64), tmp_path / "a.semantic.png", "PNG")
    assert read_label_map(ok).mode == "I;16"
    rgb = _saved(Image.new("RGB", (2, 2)), tmp_path / "b.semantic.png", "PNG")
    with pytest.raises(ImageReadError, match="mask .*b.semantic.png is a RGB image, but a mask holds one id a pixel"):
        read_label_map(rgb)


# -- the three readers ---------------------------------------------------------------------------


def _grey16_folder(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    Image.fromarray(np.full((8, 8), 257 * 100, dtype=np.uint16)).save(folder / "a.png")
    (folder / "a.txt").write_text("\ufeffa grey square", encoding="utf-8")  # a BOM, as Notepad writes
    return folder


def test_training_data_reads_16_bit_images(tmp_path):
    from unifl.core.data import ImageFolderDataset

    item = ImageFolderDataset(_grey16_folder(tmp_path), 8)[0]
    assert item["caption"] == "a grey square"
    assert torch.allclose(item["image"], torch.full((3, 8, 8), 100 / 255))


def test_scoring_reads_16_bit_images(tmp_path):
    from unifl.core.feedback.scoring import load_image

    assert torch.allclose(load_image(_grey16_folder(tmp_path) / "a.png"), torch.full((3, 8, 8), 100 / 255))


def test_preference_pairs_read_16_bit_images(tmp_path):
    from unifl.core.training.preference_data import read_pairs

    folder = _grey16_folder(tmp_path)
    Image.new("RGB", (8, 8), "white").save(folder / "b.png")
    (folder / "pairs.jsonl").write_text('{"prompt": "p", "image_a": "a.png", "image_b": "b.png", "preferred": "b", "aspect": "color"}\n')
    pairs = read_pairs(folder / "pairs.jsonl", 8)["color"]
    assert torch.allclose(pairs.worse.float(), torch.full((1, 3, 8, 8), 100 / 255), atol=1e-3)
