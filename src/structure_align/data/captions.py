"""Image-caption pairs from a CSV or JSONL file: the ``captions`` kind of user datasets (docs/method.md §6, §7).

Declared as ``user_datasets: {my_pairs: {kind: captions, file: data/pairs.csv}}``; the set is usable for training
and for retrieval. Keys: ``file`` (required; ``.csv`` with a header line, or ``.jsonl`` with one JSON object per
line), ``image`` and ``caption`` (column names, default ``image``/``caption``), ``split`` (optional column with
``train``/``test`` values), ``image_root`` (folder that relative image paths resolve against; default: the file's
folder), ``test_fraction`` (only without a split column: the held-out share of a seeded split disjoint by caption
and image content, default 0.2), ``limit`` and ``seed``. Rows with the same image become one manifest row with all
its captions (first-appearance order); the images are referenced in place.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..io import sha256_file
from ._local import LOCAL_VERSION, check_images_exist, clean, manifest_row
from .helpers import assert_split_disjoint, check_test_fraction, split_pairs, subset_rows
from .kinds import REQUIRED, declaration_error, register_kind
from .registry import DatasetInfo

SUFFIXES = (".csv", ".jsonl")
DEFAULT_TEST_FRACTION = 0.2


@dataclass
class Pairs:
    """The file's rows grouped by image: ``images[k]`` has ``captions[k]`` and ``splits[k]`` (None = no column)."""

    images: dict[str, Path] = field(default_factory=dict)  # normalised file value -> resolved path
    captions: dict[str, list[str]] = field(default_factory=dict)
    splits: dict[str, str | None] = field(default_factory=dict)
    rows: int = 0
    duplicates: int = 0
    problems: dict[str, str] = field(default_factory=dict)  # declaration key -> first problem
    more: dict[str, int] = field(default_factory=dict)  # declaration key -> number of further problems

    def add(self, key: str, problem: str) -> None:
        """Record ``problem`` under ``key``; only the first one per key is kept, the others are counted."""
        if key in self.problems:
            self.more[key] = self.more.get(key, 0) + 1
        else:
            self.problems[key] = problem

    def messages(self) -> dict[str, str]:
        """The first problem per key, with the count of the others."""
        return {k: v + (f" (and {self.more[k]} more)" if k in self.more else "") for k, v in self.problems.items()}


def read_rows(path: Path) -> tuple[list[tuple[int, Mapping[str, Any]]], list[str] | None]:
    """``(line number, row)`` of a .csv (UTF-8, BOM allowed) or .jsonl file, and the CSV header (None for JSONL)."""
    if path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            rows = [(reader.line_num, row) for row in reader]
        return rows, list(reader.fieldnames or [])
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {lineno} is not valid JSON ({exc})") from exc
        if not isinstance(obj, dict):
            raise ValueError(f"line {lineno} is {type(obj).__name__}, expected a JSON object")  # noqa: TRY004
        rows.append((lineno, obj))
    return rows, None


def _group(pairs: Pairs, rows: list[tuple[int, Mapping[str, Any]]], options: Mapping[str, Any], path: Path,
           root: Path) -> None:
    """Group the rows by (normalised) image value; bad rows are recorded as problems and skipped."""
    cols = {"image": options["image"], "caption": options["caption"], "split": options["split"]}
    for lineno, row in rows:
        values = {key: row.get(col) for key, col in cols.items() if col is not None}
        bad = [k for k, v in values.items() if not isinstance(v, str) or not clean(v)]
        if bad:
            pairs.add(bad[0], f"{path}:{lineno}: column {cols[bad[0]]!r} is missing, empty or not a string")
            continue
        split = values.get("split", "").strip() or None
        if split is not None and split not in ("train", "test"):
            pairs.add("split", f"{path}:{lineno}: value {split!r} is not 'train' or 'test'")
            continue
        image = os.path.normpath(values["image"].strip())
        if image in pairs.images and pairs.splits[image] != split:
            pairs.add("split", f"{path}:{lineno}: image {image!r} has rows in both train and test")
        pairs.rows += 1
        pairs.images.setdefault(image, Path(image) if Path(image).is_absolute() else root / image)
        pairs.splits.setdefault(image, split)
        caps, caption = pairs.captions.setdefault(image, []), clean(values["caption"])
        if caption in caps:
            pairs.duplicates += 1  # the same (image, caption) row twice
        else:
            caps.append(caption)


def read_pairs(options: Mapping[str, Any]) -> Pairs:
    """Parse and group the declared file; every problem is recorded under its declaration key (nothing decoded)."""
    pairs = Pairs()
    path = Path(options["file"])
    root = Path(options["image_root"]) if options["image_root"] is not None else path.parent
    if not path.is_file():
        pairs.add("file", f"{path} {'is not a file' if path.exists() else 'does not exist'}")
    elif path.suffix.lower() not in SUFFIXES:
        pairs.add("file", f"{path} must be a {' or '.join(SUFFIXES)} file")
    elif not root.is_dir():
        pairs.add("image_root", f"folder {root} does not exist")
    if pairs.problems:
        return pairs
    try:
        rows, header = read_rows(path)
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        pairs.add("file", f"cannot read {path}: {exc}")
        return pairs
    for key in ("image", "caption", "split"):
        col = options[key]
        if header is not None and col is not None and col not in header:
            pairs.add(key, f"column {col!r} is not in the header of {path} (columns: {', '.join(header)})")
    if not pairs.problems:
        _group(pairs, rows, options, path, root)
    if not pairs.problems and not pairs.images:
        pairs.add("file", f"{path} has no rows")
    return pairs


def check_captions(name: str, options: Mapping[str, Any]) -> list[str]:
    """The problems of a ``captions`` declaration: file, columns, values, missing images, split options."""
    for key in ("file", "image", "caption", "split", "image_root"):
        value, optional = options[key], key in ("split", "image_root")
        if not (isinstance(value, str) and value) and not (optional and value is None):
            return [declaration_error(name, key, f"{value!r} must be a non-empty string")]
    errors = []
    fraction = options["test_fraction"]
    if fraction is not None and options["split"] is not None:
        errors.append(declaration_error(name, "test_fraction", "is only used without a split column; remove it"))
    elif fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
                                   or not 0 < fraction < 1):
        errors.append(declaration_error(name, "test_fraction", f"{fraction!r} must lie strictly between 0 and 1"))
    pairs = read_pairs(options)
    errors += [declaration_error(name, key, problem) for key, problem in pairs.messages().items()]
    missing = [p for p in pairs.images.values() if not p.is_file()]
    if missing:
        errors.append(declaration_error(name, "image", f"{len(missing)} of {len(pairs.images)} image files do not "
                                                       f"exist, e.g. {missing[0]} (relative paths resolve against "
                                                       f"image_root, default the file's folder)"))
    return errors


@register_kind("captions", task="pairs", check=check_captions,
               options={"file": REQUIRED, "image": "image", "caption": "caption", "split": None, "image_root": None,
                        "test_fraction": None},
               description="image-caption pairs from a CSV/JSONL file (training, retrieval)")
def build_captions(resources_dir: Path, images_dir: Path, *, name: str, file: str, image: str = "image",
                   caption: str = "caption", split: str | None = None, image_root: str | None = None,
                   test_fraction: float | None = None, limit: int | None = None,
                   seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    """Build a declared ``captions`` dataset (one row per image, all its captions; images in place)."""
    options = {"file": file, "image": image, "caption": caption, "split": split, "image_root": image_root}
    pairs = read_pairs(options)
    if pairs.problems:
        raise ValueError(f"dataset {name!r}: " + "; ".join(f"{k}: {v}" for k, v in pairs.messages().items()))
    check_images_exist(list(pairs.images.values()), name)
    rows = [manifest_row(Path(key).as_posix(), pairs.images[key], pairs.captions[key], -1, pairs.splits[key] or "train",
                         name) for key in pairs.images]
    df = pd.DataFrame(rows)
    if split is not None:
        df = subset_rows(df, (df["split"] == "test").astype(int), limit, seed)
        source = f"column {split!r}"
    else:
        fraction = DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction
        check_test_fraction(fraction, name)
        df = subset_rows(df, [0] * len(df), limit, seed)
        digests = [sha256_file(p) for p in df["image_path"]]
        df["split"] = split_pairs(list(df["captions"]), digests, fraction, seed)
        assert_split_disjoint(df, image_keys=digests, where=name)
        source = f"seeded, disjoint by caption and image content (test_fraction {fraction})"
    counts = {"file_rows": pairs.rows, "images": len(rows), "duplicate_rows": pairs.duplicates, "rows": len(df),
              "captions": int(sum(len(c) for c in df["captions"])), "train": int((df["split"] == "train").sum()),
              "test": int((df["split"] == "test").sum()), "split_source": source, "file_sha256": sha256_file(file)}
    info = DatasetInfo(name=name, task="pairs", source=name, version=LOCAL_VERSION, counts=counts,
                       description=f"image-caption pairs from {file} (images referenced in place)")
    return df, info
