"""Describable Textures Dataset (DTD) zero-shot set (docs/paper-profile.md "Downloads"; a released zero-shot set).

``dtd-r1.0.1.tar.gz`` from the VGG page, pinned by the md5 of torchvision's ``torchvision/datasets/dtd.py``
(``DTD._MD5``), unpacks to ``resources/dtd/dtd/images/<class>/<image>.jpg`` and ``dtd/labels/{train,val,test}<k>.txt``
(``<class>/<image>`` per line, ten partitions k = 1..10). As in torchvision, a split is the list file of one
partition (default ``test1``: 1,880 images, 40 per class); classes are the sorted image folders (47), named by
the released list (data/prompts.py: the folder names themselves). Images are used in place.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ._local import (
    LOCAL_VERSION,
    check_images_exist,
    check_split,
    dataset_root,
    manifest_row,
    require,
)
from .food101 import read_lines
from .helpers import stratified_subset
from .imagefolder import require_class_folders
from .prompts import names_by_key, zeroshot_prompts
from .registry import DatasetInfo, Download, SourceSpec, register_dataset, register_source

SOURCE = "dtd"
register_source(SourceSpec(
    name=SOURCE, client="url", package="DTD r1.0.1 (VGG dtd-r1.0.1.tar.gz)", version="r1.0.1", sha256="",
    files=("dtd/images", "dtd/labels/test1.txt"), licence="research use (VGG, University of Oxford)",
    description="Describable Textures Dataset, 47 classes x 120 images, 10 train/val/test partitions",
    downloads=(Download("dtd-r1.0.1.tar.gz", "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
                        md5="fff73e5086ae6bdbea199a49dfb8a4c1"),)))


def build_dtd(root: Path, *, split: str = "test", partition: int = 1, limit: int | None = None,
              seed: int = 0, prompts: str = "released") -> tuple[pd.DataFrame, DatasetInfo]:
    """DTD rows of ``labels/<split><partition>.txt``."""
    check_split(split, ["test", "train", "val"], SOURCE)
    if isinstance(partition, bool) or not isinstance(partition, int) or not 1 <= partition <= 10:
        raise ValueError(f"{SOURCE}: option partition={partition!r} must be an int in 1..10")
    base = require(root / "dtd", SOURCE, "the unpacked dtd folder")
    folders = require_class_folders(require(base / "images", SOURCE, "the image class folders"), SOURCE)
    index = {c: i for i, c in enumerate(folders)}
    list_path = require(base / "labels" / f"{split}{partition}.txt", SOURCE, "a split list <class>/<image>")
    entries = read_lines(list_path)
    labels = []
    for lineno, entry in enumerate(entries, start=1):
        cls = entry.split("/", 1)[0]
        if cls not in index:
            raise ValueError(f"{list_path}:{lineno}: class {cls!r} has no folder under {base / 'images'}")
        labels.append(index[cls])
    label_arr = np.asarray(labels, dtype=np.int64)
    keep = stratified_subset(label_arr, limit, seed)
    paths = [base / "images" / entries[i] for i in keep]
    check_images_exist(paths, SOURCE)
    manifest_split = "test" if split == "test" else "train"
    rows = [manifest_row(entries[i], path, [], label_arr[i], manifest_split, SOURCE) for i, path in zip(keep, paths)]
    names, templates, text_counts = zeroshot_prompts(
        "dtd", prompts, lambda: names_by_key("dtd", folders, str(base / "images")),
        [f.replace("_", " ") for f in folders])
    info = DatasetInfo(name=SOURCE, task="zeroshot", classnames=names, templates=templates, source=SOURCE,
                       version=LOCAL_VERSION,
                       counts={f"{split}{partition}_images": len(entries), "rows": len(rows), **text_counts},
                       description=f"DTD {split} split of partition {partition}")
    return pd.DataFrame(rows), info


@register_dataset(SOURCE, sources=SOURCE, task="zeroshot", description="DTD (VGG archive, partition 1)",
                  options={"root": None, "split": "test", "partition": 1, "prompts": "released"})
def _build_dtd_ds(resources_dir: Path, images_dir: Path, *, root: str | None = None, split: str = "test",
                  partition: int = 1, prompts: str = "released", limit: int | None = None,
                  seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    return build_dtd(dataset_root(resources_dir, SOURCE, root), split=split, partition=partition, limit=limit,
                     seed=seed, prompts=prompts)
