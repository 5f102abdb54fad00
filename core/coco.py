"""COCO (captions + instance annotations) → UniFL's image folder with masks for all three PeFL tasks.

COCO 2017 is the data set a user can get that has what PeFL needs: captions, instance masks with the
classes torchvision's Mask R-CNN was trained on, and (derived here) semantic masks in the label space
of torchvision's DeepLabV3 weights. Per image it writes (docs/data-format.md)::

    000000391895.jpg               the image, copied
    000000391895.txt               its first caption
    000000391895.instances.png     instance k = the k-th non-crowd annotation (8- or 16-bit PNG)
    000000391895.instances.json    {"labels": [COCO category_id of instance 1, …]}: Mask R-CNN's label space
    000000391895.semantic.png      DeepLabV3's 21 classes (VOC's 20 + background), 255 where objects overlap

Semantic masks follow torchvision's own DeepLabV3 training data (``references/segmentation/coco_utils.py``):
only the 20 COCO categories that are Pascal VOC classes are drawn, every other pixel is background, and
pixels two annotations claim are 255 (ignored). Polygons are rasterised with PIL; crowd regions
(uncompressed RLE) are left out of the instances and count as ignored in the semantic mask.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
import numpy as np
from PIL import Image, ImageDraw

from .files import check_new_output, check_output_folder

#: torchvision's COCO→VOC mapping: index = DeepLabV3 class, value = COCO category_id (0 = background).
VOC_CATEGORIES = (0, 5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72)
VOC_NAMES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
             "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
IGNORE = 255


def annotation_mask(annotation: dict, height: int, width: int) -> np.ndarray:
    """A COCO annotation's segmentation as a boolean ``[H, W]`` mask (polygons, or uncompressed RLE for crowds)."""
    segmentation = annotation["segmentation"]
    if isinstance(segmentation, list):
        canvas = Image.new("1", (width, height))
        draw = ImageDraw.Draw(canvas)
        for polygon in segmentation:
            if len(polygon) >= 6:
                draw.polygon([(polygon[i], polygon[i + 1]) for i in range(0, len(polygon), 2)], fill=1)
        return np.asarray(canvas, dtype=bool)
    counts = segmentation.get("counts")
    if not isinstance(counts, list):
        raise ValueError(f"annotation {annotation.get('id')}: compressed RLE is not supported (COCO's ground truth uses uncompressed counts)")
    flat = np.zeros(height * width, dtype=bool)
    position, value = 0, False
    for count in counts:
        flat[position:position + count] = value
        position, value = position + count, not value
    return flat.reshape(width, height).T  # COCO's RLE runs down the columns


def convert(images: str | Path, instances: str | Path, captions: str | Path, out: str | Path, limit: int | None = None, min_instances: int = 1,
            overwrite: bool = False) -> int:
    """Write up to ``limit`` COCO images with at least ``min_instances`` objects into ``out``; returns how many.
    A file already in ``out`` that would be written is refused, naming it, before anything is, unless ``overwrite``."""
    images, out = Path(images), Path(out)
    check_output_folder(out)
    coco = json.loads(Path(instances).read_text(encoding="utf-8"))
    first_caption: dict[int, str] = {}
    for entry in json.loads(Path(captions).read_text(encoding="utf-8"))["annotations"]:
        first_caption.setdefault(entry["image_id"], entry["caption"].strip())
    by_image: dict[int, list[dict]] = {}
    for annotation in coco["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    voc_class = {category: index for index, category in enumerate(VOC_CATEGORIES) if category}
    chosen = []
    for info in sorted(coco["images"], key=lambda i: i["id"]):
        objects = [a for a in by_image.get(info["id"], []) if not a.get("iscrowd")]
        if len(objects) >= min_instances and info["id"] in first_caption and (images / info["file_name"]).is_file():
            chosen.append(info)
        if limit is not None and len(chosen) >= limit:
            break
    outputs = [out / info["file_name"] for info in chosen]
    outputs += [out / f"{Path(info['file_name']).stem}{suffix}" for info in chosen for suffix in (".txt", ".instances.png", ".instances.json", ".semantic.png")]
    check_new_output(*outputs, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    for info in chosen:
        annotations = by_image.get(info["id"], [])
        objects = [a for a in annotations if not a.get("iscrowd")]
        source = images / info["file_name"]
        height, width = info["height"], info["width"]
        instance_ids = np.zeros((height, width), dtype=np.uint16)
        semantic = np.zeros((height, width), dtype=np.uint8)
        claimed = np.zeros((height, width), dtype=np.uint8)
        labels = []
        for annotation in objects:
            mask = annotation_mask(annotation, height, width)
            labels.append(int(annotation["category_id"]))
            instance_ids[mask] = len(labels)
            if annotation["category_id"] in voc_class:
                semantic[mask] = voc_class[annotation["category_id"]]
                claimed += mask
        for annotation in annotations:
            if annotation.get("iscrowd"):
                claimed += annotation_mask(annotation, height, width).astype(np.uint8) * 2
        semantic[claimed > 1] = IGNORE
        stem = out / Path(info["file_name"]).stem
        shutil.copyfile(source, out / info["file_name"])
        stem.with_suffix(".txt").write_text(first_caption[info["id"]] + "\n", encoding="utf-8")
        ids = instance_ids if len(labels) > 255 else instance_ids.astype(np.uint8)
        Image.fromarray(ids).save(f"{stem}.instances.png")
        Path(f"{stem}.instances.json").write_text(json.dumps({"labels": labels}), encoding="utf-8")
        Image.fromarray(semantic).save(f"{stem}.semantic.png")
    return len(chosen)

