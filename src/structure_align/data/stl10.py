"""STL10 zero-shot set from the official binaries (docs/method.md §7; docs/datasets.md).

``resources/stl10/stl10_binary/`` as unpacked from ``stl10_binary.tar.gz`` (a ``url`` source, md5 as published with
torchvision's loader): ``{split}_X.bin`` (uint8, per image the
3 colour planes, each 96x96 column-major), ``{split}_y.bin`` (1-based labels) and ``class_names.txt``. Images are
written as 96x96 PNG; class names and templates are the released lists by label index (data/prompts.py; the
released names: "airplane", "bird", "car" ...).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ._local import LOCAL_VERSION, array_image_rows, check_split, dataset_root, require
from .helpers import stratified_subset
from .prompts import names_by_index, zeroshot_prompts
from .registry import DatasetInfo, Download, SourceSpec, register_dataset, register_source

SOURCE = "stl10"
register_source(SourceSpec(name=SOURCE, client="url", package="STL-10 binary version", version="binary",
                           sha256="", files=("stl10_binary/test_X.bin", "stl10_binary/test_y.bin",
                                             "stl10_binary/class_names.txt"),
                           description="STL10 binaries (2.6 GB archive)",
                           downloads=(Download("stl10_binary.tar.gz",
                                               "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
                                               md5="91f7769df0f17e558f3565bffb0c7dfb"),)))

STL_SIDE = 96


def load_stl10(x_path: Path, y_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """STL10 ``*_X.bin`` (uint8, per image 3 column-major 96x96 planes) -> [N, 96, 96, 3]; ``*_y.bin`` 1-based
    labels -> 0-based int64."""
    raw = np.fromfile(x_path, dtype=np.uint8)
    per = 3 * STL_SIDE * STL_SIDE
    if raw.size % per:
        raise ValueError(f"{x_path}: {raw.size} bytes is not a multiple of 3*96*96")
    images = raw.reshape(-1, 3, STL_SIDE, STL_SIDE).transpose(0, 3, 2, 1)  # column-major planes -> HWC
    labels = np.fromfile(y_path, dtype=np.uint8).astype(np.int64) - 1
    if len(labels) != len(images):
        raise ValueError(f"{y_path}: {len(labels)} labels for {len(images)} images in {x_path}")
    return images, labels


def build_stl10(root: Path, images_dir: Path, *, split: str = "test", limit: int | None = None,
                seed: int = 0, prompts: str = "released") -> tuple[pd.DataFrame, DatasetInfo]:
    """STL10 from the official binaries (``stl10_binary/``); images written as 96x96 PNG."""
    check_split(split, ["test", "train"], SOURCE)
    base = require(root / "stl10_binary", SOURCE, "folder of the official binary version")
    x_path = require(base / f"{split}_X.bin", SOURCE, f"{split} images")
    y_path = require(base / f"{split}_y.bin", SOURCE, f"{split} labels")
    names_path = require(base / "class_names.txt", SOURCE, "class names, one per line")
    file_names = [c.strip() for c in names_path.read_text(encoding="utf-8").splitlines() if c.strip()]
    classnames, templates, text_counts = zeroshot_prompts(
        "stl10", prompts, lambda: names_by_index("stl10", len(file_names), str(names_path)), file_names)
    images, labels = load_stl10(x_path, y_path)
    if labels.min() < 0 or labels.max() >= len(classnames):
        raise ValueError(f"{y_path}: labels must be 1..{len(classnames)}, got {labels.min() + 1}..{labels.max() + 1}")
    keep = stratified_subset(labels, limit, seed)
    rows = array_image_rows(images, labels, keep, images_dir, split, SOURCE)
    info = DatasetInfo(name="stl10", task="zeroshot", classnames=classnames, templates=templates, source=SOURCE,
                       version=LOCAL_VERSION,
                       counts={f"{split}_images": len(images), "rows": len(rows), **text_counts},
                       description=f"STL10 {split} set from the official binaries")
    return pd.DataFrame(rows), info


@register_dataset("stl10", sources=SOURCE, task="zeroshot", description="STL10 (official binaries)",
                  options={"root": None, "split": "test", "prompts": "released"})
def _build_stl10_ds(resources_dir: Path, images_dir: Path, *, root: str | None = None, split: str = "test",
                    prompts: str = "released", limit: int | None = None,
                    seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    return build_stl10(dataset_root(resources_dir, SOURCE, root), Path(images_dir), split=split, limit=limit,
                       seed=seed, prompts=prompts)
