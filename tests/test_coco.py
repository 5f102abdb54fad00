"""`unifl coco-folder`: COCO annotations → the training folder, read back by the trainer's dataset."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from unifl.cli import main
from unifl.core.coco import IGNORE, VOC_CATEGORIES, annotation_mask
from unifl.core.data import ImageFolderDataset, collate

H, W = 40, 60


def _coco(tmp_path):
    """One 60×40 image: a cat (VOC class 8), a teddy bear (not in VOC) overlapping it, a crowd of people; one image without objects."""
    (tmp_path / "train2017").mkdir()
    for name in ("000000000001.jpg", "000000000002.jpg"):
        Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(tmp_path / "train2017" / name)
    crowd = np.zeros((H, W), bool)
    crowd[30:40, 0:10] = True
    runs, value, count = [], False, 0
    for pixel in crowd.T.flatten():  # COCO's uncompressed RLE: column-major runs, starting with zeros
        if pixel != value:
            runs.append(count)
            value, count = pixel, 0
        count += 1
    runs.append(count)
    instances = {
        "images": [{"id": 1, "file_name": "000000000001.jpg", "height": H, "width": W}, {"id": 2, "file_name": "000000000002.jpg", "height": H, "width": W}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 17, "iscrowd": 0, "segmentation": [[10, 5, 30, 5, 30, 25, 10, 25]]},
            {"id": 11, "image_id": 1, "category_id": 88, "iscrowd": 0, "segmentation": [[25, 20, 50, 20, 50, 35, 25, 35]]},
            {"id": 12, "image_id": 1, "category_id": 1, "iscrowd": 1, "segmentation": {"counts": runs, "size": [H, W]}},
        ],
    }
    captions = {"annotations": [{"image_id": 1, "caption": "A cat next to a teddy bear. "}, {"image_id": 1, "caption": "second"}, {"image_id": 2, "caption": "empty"}]}
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    (tmp_path / "captions.json").write_text(json.dumps(captions))
    return crowd


def test_crowd_rle_decodes_column_major(tmp_path):
    crowd = _coco(tmp_path)
    annotation = json.loads((tmp_path / "instances.json").read_text())["annotations"][2]
    assert np.array_equal(annotation_mask(annotation, H, W), crowd)


def test_coco_becomes_a_training_folder_with_both_label_spaces(tmp_path):
    _coco(tmp_path)
    out = tmp_path / "data"
    code = main(["coco-folder", "--images", str(tmp_path / "train2017"), "--instances", str(tmp_path / "instances.json"),
                 "--captions", str(tmp_path / "captions.json"), "--out", str(out)])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["000000000001.instances.json", "000000000001.instances.png", "000000000001.jpg", "000000000001.semantic.png", "000000000001.txt"]
    assert json.loads((out / "000000000001.instances.json").read_text()) == {"labels": [17, 88]}  # COCO category ids, the crowd left out

    semantic = np.asarray(Image.open(out / "000000000001.semantic.png"))
    cat = VOC_CATEGORIES.index(17)
    assert semantic[10, 15] == cat == 8  # the cat, alone
    assert semantic[30, 40] == 0  # the teddy bear is no VOC class: background, as torchvision trained DeepLabV3
    assert semantic[22, 28] == cat  # under the bear only the cat is a VOC class: not an overlap
    assert semantic[35, 5] == IGNORE  # the crowd

    item = ImageFolderDataset(str(out), 32)[0]
    batch = collate([item])
    assert batch["caption"] == ["A cat next to a teddy bear."]
    assert batch["targets"][0]["labels"].tolist() == [17, 88] and batch["targets"][0]["masks"].shape == (2, 32, 32)
    assert set(np.unique(batch["semantic_mask"].numpy())) <= {0, cat, IGNORE}


def test_a_second_conversion_into_the_same_folder_replaces_nothing_unless_asked(tmp_path, capsys):
    _coco(tmp_path)
    out = tmp_path / "data"
    args = ["coco-folder", "--images", str(tmp_path / "train2017"), "--instances", str(tmp_path / "instances.json"), "--captions", str(tmp_path / "captions.json"), "--out", str(out)]
    assert main(args) == 0
    (out / "000000000001.txt").write_text("my own caption\n")
    before = {p: p.read_bytes() for p in out.iterdir()}
    assert main(args) == 1
    assert "000000000001.jpg already exists; pass --overwrite to replace it, or choose another --out" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.iterdir()} == before
    assert main([*args, "--overwrite"]) == 0 and (out / "000000000001.txt").read_text() == "A cat next to a teddy bear.\n"
