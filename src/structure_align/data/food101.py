"""Food-101 zero-shot set (docs/method.md §7; docs/paper-profile.md), from the ETH archive.

``food-101.tar.gz`` (md5 as published with torchvision's loader) unpacks to ``resources/food101/food-101/`` with
``images/<class>/<id>.jpg`` and ``meta/{classes,train,test}.txt`` (``<class>/<id>`` per line). Classes are the lines
of ``classes.txt`` with ``_`` as spaces, each checked against the released list (data/prompts.py); the test split
has 250 images per class. Images
are used in place.
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
from .helpers import stratified_subset
from .prompts import names_by_key, zeroshot_prompts
from .registry import DatasetInfo, Download, SourceSpec, register_dataset, register_source

SOURCE = "food101"
register_source(SourceSpec(
    name=SOURCE, client="url", package="Food-101 (ETH Zurich food-101.tar.gz)", version="1", sha256="",
    files=("food-101/meta/classes.txt", "food-101/meta/test.txt", "food-101/images"),
    licence="research use; images from foodspotting.com under their terms",
    description="Food-101, 101 classes x (750 train + 250 test) images (5 GB archive)",
    downloads=(Download("food-101.tar.gz", "http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",
                        md5="85eeb15f3717b99a5da872d97d918f87"),)))


def read_lines(path: Path) -> list[str]:
    """Non-empty stripped lines of a text file."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build_food101(root: Path, *, split: str = "test", limit: int | None = None, seed: int = 0,
                  prompts: str = "released") -> tuple[pd.DataFrame, DatasetInfo]:
    """Food-101 rows of the official ``split`` list."""
    check_split(split, ["test", "train"], SOURCE)
    base = require(root / "food-101", SOURCE, "the unpacked food-101 folder")
    classes = read_lines(require(base / "meta" / "classes.txt", SOURCE, "class folder names, one per line"))
    index = {c: i for i, c in enumerate(classes)}
    entries = read_lines(require(base / "meta" / f"{split}.txt", SOURCE, f"the {split} list <class>/<id>"))
    labels, paths = [], []
    for lineno, entry in enumerate(entries, start=1):
        cls = entry.split("/", 1)[0]
        if cls not in index:
            raise ValueError(f"{base / 'meta' / f'{split}.txt'}:{lineno}: class {cls!r} is not in classes.txt")
        labels.append(index[cls])
        paths.append(base / "images" / f"{entry}.jpg")
    label_arr = np.asarray(labels, dtype=np.int64)
    keep = stratified_subset(label_arr, limit, seed)
    check_images_exist([paths[i] for i in keep], SOURCE)
    rows = [manifest_row(entries[i], paths[i], [], label_arr[i], split, SOURCE) for i in keep]
    classnames, templates, text_counts = zeroshot_prompts(
        "food101", prompts, lambda: names_by_key("food101", classes, str(base / "meta" / "classes.txt")),
        [c.replace("_", " ") for c in classes])
    info = DatasetInfo(name="food101", task="zeroshot", classnames=classnames,
                       templates=templates, source=SOURCE, version=LOCAL_VERSION,
                       counts={f"{split}_images": len(entries), "rows": len(rows), **text_counts},
                       description=f"Food-101 {split} split (official meta/{split}.txt)")
    return pd.DataFrame(rows), info


@register_dataset("food101", sources=SOURCE, task="zeroshot", description="Food-101 (official archive)",
                  options={"root": None, "split": "test", "prompts": "released"})
def _build_food101_ds(resources_dir: Path, images_dir: Path, *, root: str | None = None, split: str = "test",
                      prompts: str = "released", limit: int | None = None,
                      seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    return build_food101(dataset_root(resources_dir, SOURCE, root), split=split, limit=limit, seed=seed,
                         prompts=prompts)
