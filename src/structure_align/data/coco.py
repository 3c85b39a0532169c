"""MS-COCO 2014 captions from the official annotation JSON (docs/method.md §6 training data; docs/datasets.md).

``resources/coco/`` holds ``annotations/captions_{train,val}2014.json`` and the ``train2014/``, ``val2014/`` image
folders, downloaded from images.cocodataset.org (a ``url`` source; COCO publishes no checksums, the md5 values are
the ones the community has verified for years, e.g. torchvision-based loaders and LAVIS); images are used in place.
One manifest row per image with all its captions: train2014 -> ``train``, val2014 -> ``test``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ._local import LOCAL_VERSION, check_images_exist, check_split, clean, dataset_root, manifest_row, require
from .helpers import subset_rows
from .registry import DatasetInfo, Download, SourceSpec, register_dataset, register_source

SOURCE = "coco"
_COCO = "http://images.cocodataset.org"
register_source(SourceSpec(
    name=SOURCE, client="url", package="COCO 2014 captions + train2014/val2014 images", version="2014", sha256="",
    files=("annotations/captions_train2014.json", "annotations/captions_val2014.json", "train2014", "val2014"),
    licence="COCO terms of use; images under their Flickr licences",
    description="MS-COCO 2014 captions (paper training data; ~19 GB of zips)",
    downloads=(
        Download("annotations_trainval2014.zip", f"{_COCO}/annotations/annotations_trainval2014.zip",
                 md5="0a379cfc70b0e71301e0f377548639bd", size=252872794),
        Download("train2014.zip", f"{_COCO}/zips/train2014.zip", md5="0da8c0bd3d6becc4dcb32757491aca88"),
        Download("val2014.zip", f"{_COCO}/zips/val2014.zip", md5="a3d79f5ed8d289b7a7554ce06a5782b3"),
    )))

COCO_SPLITS = {"train": "train", "val": "test"}


def load_coco_captions(json_path: Path) -> list[tuple[int, str, list[str]]]:
    """``(image_id, file_name, captions)`` per image of a ``captions_*2014.json``, images in id order and captions in
    annotation-id order; images without a caption are dropped."""
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{json_path}: not valid JSON ({exc})") from exc
    for key in ("images", "annotations"):
        if key not in data:
            raise ValueError(f"{json_path}: key {key!r} is missing (not a COCO captions file)")
    caps: dict[int, list[tuple[int, str]]] = {}
    for ann in data["annotations"]:
        text = clean(ann["caption"])
        if text:
            caps.setdefault(int(ann["image_id"]), []).append((int(ann.get("id", 0)), text))
    out = []
    for img in sorted(data["images"], key=lambda im: int(im["id"])):
        entries = sorted(caps.get(int(img["id"]), []))
        if entries:
            out.append((int(img["id"]), str(img["file_name"]), [t for _, t in entries]))
    return out


def build_coco(root: Path, *, splits: Sequence[str] = ("train", "val"), limit: int | None = None, seed: int = 0,
               check_images: bool = True) -> tuple[pd.DataFrame, DatasetInfo]:
    """COCO 2014 captions: one row per image with all its captions; train2014 -> ``train``, val2014 -> ``test``."""
    plan = []
    for split in splits:
        check_split(split, list(COCO_SPLITS), SOURCE)
        ann = require(root / "annotations" / f"captions_{split}2014.json", SOURCE, f"COCO {split} captions")
        img_dir = require(root / f"{split}2014", SOURCE, f"COCO {split} image folder")
        plan.append((split, ann, img_dir))
    rows, strata = [], []
    counts: dict[str, Any] = {}
    for k, (split, ann, img_dir) in enumerate(plan):
        images = load_coco_captions(ann)
        paths = [img_dir / name for _, name, _ in images]
        if check_images:
            check_images_exist(paths, SOURCE)
        counts[f"{split}_images"] = len(images)
        counts[f"{split}_captions"] = sum(len(c) for _, _, c in images)
        for (image_id, _, captions), path in zip(images, paths):
            rows.append(manifest_row(f"{split}2014/{image_id}", path, captions, -1, COCO_SPLITS[split], SOURCE))
            strata.append(k)
    df = subset_rows(pd.DataFrame(rows), strata, limit, seed)
    counts["rows"] = len(df)
    info = DatasetInfo(name="coco", task="pairs", source=SOURCE, version=LOCAL_VERSION, counts=counts,
                       description="MS-COCO 2014 captions (train2014 = train, val2014 = test), all captions per image")
    return df, info


@register_dataset("coco", sources=SOURCE, task="pairs", description="COCO 2014 captions (train/val)",
                  options={"root": None, "splits": ["train", "val"], "check_images": True})
def _build_coco_ds(resources_dir: Path, images_dir: Path, *, root: str | None = None,
                   splits: Sequence[str] = ("train", "val"), check_images: bool = True, limit: int | None = None,
                   seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    return build_coco(dataset_root(resources_dir, SOURCE, root), splits=splits, limit=limit, seed=seed,
                      check_images=check_images)
