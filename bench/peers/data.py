"""The arena's training stream as files for the peers' own loaders: png + txt pairs (PCM reads a folder) and
webdataset shards of the same pairs (diffusers' LCM-LoRA example reads shards). Written by our glue."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

SHARD_SIZE = 1024


def write_pocket_files(dataset, folder: Path) -> None:
    """``folder/images/<i>.png`` + ``<i>.txt`` and ``folder/shards/<k>.tar`` for every item of ``dataset``;
    ``folder/DONE`` last, so a half-written folder is redone. (Plain tar members in webdataset's layout:
    ``<key>.png`` and ``<key>.txt`` side by side, which is all a shard is.)"""
    folder = Path(folder)
    images, shards = folder / "images", folder / "shards"
    images.mkdir(parents=True, exist_ok=True)
    shards.mkdir(parents=True, exist_ok=True)
    tar = None
    for i in range(len(dataset)):
        if i % SHARD_SIZE == 0:
            if tar is not None:
                tar.close()
            tar = tarfile.open(shards / f"{i // SHARD_SIZE:05d}.tar", "w")
        sample = dataset[i]
        pixels = (sample.image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        png, txt = buffer.getvalue(), sample.caption.encode("utf-8")
        (images / f"{i:06d}.png").write_bytes(png)
        (images / f"{i:06d}.txt").write_bytes(txt)
        for name, payload in ((f"{i:06d}.png", png), (f"{i:06d}.txt", txt)):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    if tar is not None:
        tar.close()
    (folder / "COUNT").write_text(str(len(dataset)))
    done = folder / "DONE.tmp"
    done.write_text("ok")
    os.replace(done, folder / "DONE")


def shard_pattern(folder: Path) -> str:
    count = len(list((Path(folder) / "shards").glob("*.tar")))
    return str(Path(folder) / "shards" / f"{{00000..{count - 1:05d}}}.tar")
