"""Flickr30k, the paper's retrieval benchmark (docs/method.md §7; docs/datasets.md), from its official files.

``resources/flickr30k/`` holds ``flickr30k_images/`` and the Karpathy split file ``dataset_flickr30k.json`` and/or
the ``results.csv`` of the official release (the Kaggle copy nests the images one level deeper; both layouts work).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from ._karpathy import load_karpathy_images
from ._local import LOCAL_VERSION, check_images_exist, check_split, clean, dataset_root, manifest_row, require
from .helpers import subset_rows
from .registry import DatasetInfo, SourceSpec, register_dataset, register_source

SOURCE = "flickr30k"
register_source(SourceSpec(name=SOURCE, client="local", package="Flickr30k: flickr30k_images/ (the images need "
                           "the request form of the dataset's authors, so they are never downloaded) and "
                           "dataset_flickr30k.json (Karpathy split, from caption_datasets.zip of Karpathy's "
                           "'deepimagesent' page) and/or results.csv", version="", sha256="",
                           files=("flickr30k_images",), licence="Flickr30k terms (non-commercial research)",
                           description="Flickr30k images with 5 captions each (paper retrieval benchmark)"))

KARPATHY_SPLITS = {"train": "train", "restval": "train", "test": "test"}
_CSV_REPAIR = re.compile(r"^\s*(\d+)\s+(.*)$")


def load_karpathy(json_path: Path) -> list[tuple[str, str, list[str]]]:
    """``(filename, karpathy split, captions)`` per image of ``dataset_flickr30k.json`` (``sentences[].raw``; the
    parser is shared with COCO's Karpathy file, :mod:`._karpathy`)."""
    return [(im.filename, im.split, im.captions) for im in load_karpathy_images(json_path)]


def load_flickr_csv(csv_path: Path) -> tuple[dict[str, list[str]], int]:
    """Captions per image file of Flickr30k's ``results.csv`` (``image_name| comment_number| comment``).

    Returns ``(captions by image in file order, number of repaired rows)``: a row whose number and comment lost
    their ``|`` separator (it happens once in the official file) is split on the first space instead.
    """
    lines = csv_path.read_text(encoding="utf-8").splitlines()
    if not lines or [h.strip() for h in lines[0].split("|")] != ["image_name", "comment_number", "comment"]:
        raise ValueError(f"{csv_path}: header must be 'image_name| comment_number| comment', got {lines[:1]!r}")
    by_image: dict[str, list[tuple[int, str]]] = {}
    repaired = 0
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("|", 2)]
        if len(parts) == 2 and (m := _CSV_REPAIR.match(parts[1])):
            parts = [parts[0], m.group(1), m.group(2)]
            repaired += 1
        if len(parts) != 3 or not parts[1].isdigit():
            raise ValueError(f"{csv_path}:{lineno}: cannot parse {line!r}")
        text = clean(parts[2])
        if text:
            by_image.setdefault(parts[0], []).append((int(parts[1]), text))
    return {name: [t for _, t in sorted(caps)] for name, caps in by_image.items()}, repaired


def _flickr_image_dir(root: Path, image_dir: str) -> Path:
    path = require(root / image_dir, SOURCE, "Flickr30k image folder")
    nested = path / Path(image_dir).name  # the Kaggle copy nests flickr30k_images/flickr30k_images/
    return nested if nested.is_dir() and not any(path.glob("*.jpg")) else path


def _records(root: Path, annotations: str, image_dir: str) -> tuple[list[tuple[str, str, list[str]]], dict[str, Any]]:
    """``(filename, karpathy split, captions)`` from the Karpathy JSON or results.csv, and the counts so far."""
    karpathy = root / "dataset_flickr30k.json"
    csvs = [root / "results.csv", root / image_dir / "results.csv"]
    csv_path = next((p for p in csvs if p.is_file()), None)
    if annotations == "karpathy" or (annotations == "auto" and karpathy.is_file()):
        require(karpathy, SOURCE, "Karpathy split file with images[].sentences[].raw")
        return load_karpathy(karpathy), {"annotations": "karpathy"}
    if csv_path is None:
        raise FileNotFoundError(f"{SOURCE}: expected {karpathy} (Karpathy JSON) or one of "
                                f"{[str(p) for p in csvs]} (results.csv)")
    by_image, repaired = load_flickr_csv(csv_path)
    splits = {name: split for name, split, _ in load_karpathy(karpathy)} if karpathy.is_file() else {}
    counts = {"annotations": "results.csv", "repaired_rows": repaired,
              "split_source": "karpathy" if splits else "none: every image is test"}
    return [(name, splits.get(name, "test") if splits else "test", caps) for name, caps in by_image.items()], counts


def build_flickr30k(root: Path, *, annotations: str = "auto", image_dir: str = "flickr30k_images",
                    val_split: str = "drop", splits: tuple[str, ...] | list[str] = ("train", "test"),
                    limit: int | None = None, seed: int = 0,
                    check_images: bool = True) -> tuple[pd.DataFrame, DatasetInfo]:
    """Flickr30k from the Karpathy JSON (split from the file) or ``results.csv`` (split from a Karpathy JSON beside it
    when there is one, otherwise every image is ``test``). Karpathy ``val`` rows are dropped unless
    ``val_split`` is ``train`` or ``test``; ``splits`` keeps only those manifest splits (``["test"]`` = the
    1k-image Karpathy test set, the paper's retrieval benchmark)."""
    for s in splits:
        check_split(s, ["train", "test"], f"{SOURCE} splits")
    check_split(annotations, ["auto", "karpathy", "csv"], f"{SOURCE} annotations")
    check_split(val_split, ["drop", "train", "test"], f"{SOURCE} val_split")
    records, counts = _records(root, annotations, image_dir)
    img_dir = _flickr_image_dir(root, image_dir)
    mapping = {**KARPATHY_SPLITS, **({"val": val_split} if val_split != "drop" else {})}
    kept = [(name, mapping[split], caps) for name, split, caps in records
            if split in mapping and mapping[split] in splits and caps]
    counts["dropped_images"] = len(records) - len(kept)
    paths = [img_dir / name for name, _, _ in kept]
    if check_images:
        check_images_exist(paths, SOURCE)
    rows = [manifest_row(Path(name).stem, path, caps, -1, split, SOURCE)
            for (name, split, caps), path in zip(kept, paths)]
    strata = [0 if split == "train" else 1 for _, split, _ in kept]
    df = subset_rows(pd.DataFrame(rows), strata, limit, seed)
    counts.update({"rows": len(df), "captions": int(sum(len(c) for c in df["captions"]))})
    info = DatasetInfo(name="flickr30k", task="retrieval", source=SOURCE, version=LOCAL_VERSION, counts=counts,
                       description="Flickr30k images with their (5) captions; retrieval on the Karpathy test split")
    return df, info


@register_dataset("flickr30k", sources=SOURCE, task="retrieval", description="Flickr30k (Karpathy test split)",
                  options={"root": None, "annotations": "auto", "image_dir": "flickr30k_images", "val_split": "drop",
                           "splits": ["train", "test"], "check_images": True})
def _build_flickr_ds(resources_dir: Path, images_dir: Path, *, root: str | None = None, annotations: str = "auto",
                     image_dir: str = "flickr30k_images", val_split: str = "drop",
                     splits: tuple[str, ...] | list[str] = ("train", "test"), check_images: bool = True,
                     limit: int | None = None, seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    return build_flickr30k(dataset_root(resources_dir, SOURCE, root), annotations=annotations, image_dir=image_dir,
                           val_split=val_split, splits=splits, limit=limit, seed=seed, check_images=check_images)
