"""``unifl coco-folder``: COCO 2017 images, captions and instance annotations → a training folder with masks."""

from __future__ import annotations


def run(args) -> int:
    from ..core.coco import convert

    count = convert(args.images, args.instances, args.captions, args.out, limit=args.limit, min_instances=args.min_instances, overwrite=args.overwrite)
    print(f"wrote {count} captioned images with instance and semantic masks to {args.out}")
    return 0 if count else 1


def add_command(subparsers) -> None:
    p = subparsers.add_parser(
        "coco-folder", help="turn COCO 2017 (images + captions + instances JSON) into a training folder with PeFL masks",
        description="Writes image, caption, .instances.png/.json (COCO category ids: Mask R-CNN's labels) and .semantic.png "
        "(DeepLabV3's 21 VOC classes) per image, as docs/data-format.md describes. Reads local files only.",
    )
    p.add_argument("--images", required=True, help="the COCO image folder, e.g. train2017/")
    p.add_argument("--instances", required=True, help="annotations/instances_train2017.json")
    p.add_argument("--captions", required=True, help="annotations/captions_train2017.json")
    p.add_argument("--out", required=True, help="the training folder to write (data.images)")
    p.add_argument("--limit", type=int, default=None, help="stop after this many images (default: all)")
    p.add_argument("--min-instances", type=int, default=1, help="skip images with fewer objects (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace files of an earlier conversion in --out")
    p.set_defaults(func=run)
