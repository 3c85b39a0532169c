"""Caltech101 zero-shot set (docs/method.md §7; docs/paper-profile.md), from the CaltechDATA archive.

``caltech-101.zip`` (CaltechDATA record mzrjq-6wc02, md5 as published there and used by torchvision) holds
``caltech-101/101_ObjectCategories.tar.gz``, which is unpacked in turn: ``resources/caltech101/caltech-101/
101_ObjectCategories/<class>/image_NNNN.jpg``. Classes are the sorted folders, ``BACKGROUND_Google`` included (as in
the released evaluation, whose 102 class names (data/prompts.py) name the sorted folders in order).
There is no official split; the released one is reproduced exactly (:func:`caltech_split`): over the ImageFolder
order of ``101_ObjectCategories`` (sorted class folders, sorted file names), ``train_per_class`` (30) images per
class drawn with ``np.random.seed(42)`` set before each class are ``train``, the rest is ``test``. Images are used
in place.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ._local import (
    LOCAL_VERSION,
    check_split,
    dataset_root,
    manifest_row,
    require,
)
from .helpers import stratified_subset
from .imagefolder import image_files, require_class_folders
from .prompts import names_positional, zeroshot_prompts
from .registry import DatasetInfo, Download, SourceSpec, register_dataset, register_source

SOURCE = "caltech101"
BACKGROUND = "BACKGROUND_Google"
register_source(SourceSpec(
    name=SOURCE, client="url", package="Caltech101 (CaltechDATA caltech-101.zip)", version="1.0", sha256="",
    files=("caltech-101/101_ObjectCategories",), licence="CC BY 4.0 (CaltechDATA record)",
    description="Caltech101 images, 101 categories + background",
    downloads=(Download("caltech-101.zip", "https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip",
                        md5="3138e1922a9193bfa496528edbbc45d0",
                        inner=("caltech-101/101_ObjectCategories.tar.gz",)),)))


def caltech_split(labels: np.ndarray, train_per_class: int, seed: int) -> np.ndarray:
    """``train``/``test`` per image, the released draw (``data_utils.py``, Caltech101): for every class in sorted label
    order the legacy generator is reseeded with ``seed`` and ``choice(indices of the class, train_per_class,
    replace=False)`` picks the ``train`` images. ``labels`` must be in ImageFolder order (sorted class folders, sorted
    files) for the indices to be the released ones. A class with at most ``train_per_class`` images is all ``train``
    (the released call would raise there; the real classes all have more than 30)."""
    split = np.full(len(labels), "test", dtype=object)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) <= train_per_class:
            split[idx] = "train"
            continue
        # RandomState(seed) is the state np.random.seed(seed) sets, without touching the global generator
        split[np.random.RandomState(seed).choice(idx, size=train_per_class, replace=False)] = "train"
    return split


def build_caltech101(root: Path, *, split: str = "test", train_per_class: int = 30, split_seed: int = 42,
                     background: bool = True, limit: int | None = None, seed: int = 0,
                     prompts: str = "released") -> tuple[pd.DataFrame, DatasetInfo]:
    """Caltech101 rows of ``split`` (seeded per-class hold-out, module docstring)."""
    check_split(split, ["test", "train"], SOURCE)
    tree = require(root / "caltech-101" / "101_ObjectCategories", SOURCE, "the unpacked 101_ObjectCategories tree")
    folders = [f for f in require_class_folders(tree, SOURCE) if background or f != BACKGROUND]
    # the released list starts with the background class
    names, templates, text_counts = zeroshot_prompts(
        SOURCE, prompts, lambda: names_positional(SOURCE, len(folders), str(tree), skip=int(not background)),
        [f.replace("_", " ") for f in folders])
    paths, labels = [], []
    for label, folder in enumerate(folders):
        files = image_files(tree / folder)
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise FileNotFoundError(f"{SOURCE}: no images under {tree}/<class>/")
    label_arr = np.asarray(labels, dtype=np.int64)
    splits = caltech_split(label_arr, train_per_class, split_seed)
    chosen = np.flatnonzero(splits == split)
    if len(chosen) == 0:
        raise ValueError(f"{SOURCE}: no {split!r} images: every class has at most train_per_class="
                         f"{train_per_class} images under {tree}")
    keep = chosen[stratified_subset(label_arr[chosen], limit, seed)]
    rows = [manifest_row(paths[i].relative_to(tree).as_posix(), paths[i], [], label_arr[i], split, SOURCE)
            for i in keep]
    counts = {"images": len(paths), "classes": len(folders), f"{split}_images": len(chosen), "rows": len(rows),
              **text_counts}
    info = DatasetInfo(name="caltech101", task="zeroshot", classnames=list(names), templates=templates, source=SOURCE,
                       version=LOCAL_VERSION, counts=counts,
                       description=f"Caltech101 {split} images ({train_per_class} per class held out as train)")
    return pd.DataFrame(rows), info


@register_dataset("caltech101", sources=SOURCE, task="zeroshot", description="Caltech101 (CaltechDATA archive)",
                  options={"root": None, "split": "test", "train_per_class": 30, "split_seed": 42,
                           "background": True, "prompts": "released"})
def _build_caltech101_ds(resources_dir: Path, images_dir: Path, *, root: str | None = None, split: str = "test",
                         train_per_class: int = 30, split_seed: int = 42, background: bool = True,
                         prompts: str = "released", limit: int | None = None,
                         seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    return build_caltech101(dataset_root(resources_dir, SOURCE, root), split=split, train_per_class=train_per_class,
                            split_seed=split_seed, background=background, limit=limit, seed=seed, prompts=prompts)
