"""The manifest format shared by every dataset (DESIGN.md "Manifest"), plus helpers the builders share.

A manifest is ``<name>.parquet`` (one row per image) beside ``<name>.json`` (:class:`DatasetInfo`). Every write is
validated and atomic, and the JSON records the sha256 of the parquet bytes so that a stale pair (parquet rewritten,
JSON not, or the other way round) is detected when it is read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import string
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from ..utils import atomic_write, write_text_atomic
from .registry import TASKS, DatasetInfo, get_dataset, source_dir

log = logging.getLogger(__name__)

COLUMNS: tuple[str, ...] = ("sample_id", "image_path", "captions", "label", "split", "source", "version")
SPLITS: tuple[str, ...] = ("train", "test")
SCHEMA = pa.schema([
    ("sample_id", pa.string()),
    ("image_path", pa.string()),
    ("captions", pa.list_(pa.string())),
    ("label", pa.int64()),
    ("split", pa.string()),
    ("source", pa.string()),
    ("version", pa.string()),
])
_STR_COLUMNS = ("sample_id", "image_path", "split", "source", "version")


class ManifestError(ValueError):
    """A manifest table or its DatasetInfo violates the format; the message names the file and the column/key."""


def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(parquet, json)`` for ``x.parquet``, ``x.json`` or the bare stem ``x``."""
    path = Path(path)
    if path.suffix in (".parquet", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".parquet"), path.with_name(path.name + ".json")


def manifest_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of the parquet bytes of a manifest (``x.parquet``, ``x.json`` or the stem ``x``)."""
    parquet, _ = _paths(path)
    digest = hashlib.sha256()
    with open(parquet, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _template_fields(template: str) -> list[str | None]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]


def validate_info(info: DatasetInfo, where: str) -> None:
    """Check a DatasetInfo on its own (task, templates with exactly one ``{}``, class names)."""
    if info.task not in TASKS:
        raise ManifestError(f"{where}: DatasetInfo.task={info.task!r} is not one of {TASKS}")
    if not info.name:
        raise ManifestError(f"{where}: DatasetInfo.name is empty")
    if not all(isinstance(c, str) and c for c in info.classnames):
        raise ManifestError(f"{where}: DatasetInfo.classnames must be non-empty strings, got {info.classnames!r}")
    if len(set(info.classnames)) != len(info.classnames):
        dup = sorted({c for c in info.classnames if info.classnames.count(c) > 1})
        raise ManifestError(f"{where}: DatasetInfo.classnames has duplicates {dup}")
    for t in info.templates:
        if not isinstance(t, str) or _template_fields(t) != [""]:
            raise ManifestError(f"{where}: DatasetInfo.templates entry {t!r} must contain exactly one '{{}}'")
    if info.task == "zeroshot" and (not info.classnames or not info.templates):
        raise ManifestError(f"{where}: a zeroshot DatasetInfo needs classnames and templates "
                            f"(got {len(info.classnames)} classnames, {len(info.templates)} templates)")
    if not isinstance(info.counts, dict):
        raise ManifestError(f"{where}: DatasetInfo.counts must be a dict, got {type(info.counts).__name__}")


def _as_caption_list(value: Any, row: int, where: str) -> list[str]:
    # parquet hands lists back as numpy object arrays; builders hand in lists or tuples
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise ManifestError(f"{where}: column 'captions' row {row} is {type(value).__name__}, expected a list of str")
    for c in value:
        if not isinstance(c, str) or not c.strip():
            raise ManifestError(f"{where}: column 'captions' row {row} holds {c!r}, expected non-empty strings")
    return list(value)


def validate_manifest(df: pd.DataFrame, info: DatasetInfo, where: str = "manifest") -> pd.DataFrame:
    """Validate ``df`` against DESIGN.md and ``info``; return a normalised copy (column order, dtypes, lists).

    Errors are :class:`ManifestError` naming ``where`` (the file) and the offending column or key.
    """
    validate_info(info, where)
    missing = [c for c in COLUMNS if c not in df.columns]
    extra = [c for c in df.columns if c not in COLUMNS]
    if missing or extra:
        raise ManifestError(f"{where}: manifest columns must be exactly {list(COLUMNS)}; missing {missing}, "
                            f"unexpected {extra}")
    if len(df) == 0:
        raise ManifestError(f"{where}: manifest has no rows")
    out = df.loc[:, list(COLUMNS)].reset_index(drop=True).copy()
    for col in _STR_COLUMNS:
        bad = [i for i, v in enumerate(out[col]) if not isinstance(v, str)]
        if bad:
            raise ManifestError(f"{where}: column {col!r} must hold str; row {bad[0]} is {out[col][bad[0]]!r}")
    for col in ("sample_id", "image_path", "source"):
        empty = np.flatnonzero(out[col].str.len().to_numpy() == 0)
        if len(empty):
            raise ManifestError(f"{where}: column {col!r} is empty in row {int(empty[0])}")
    dup = out["sample_id"][out["sample_id"].duplicated()]
    if len(dup):
        raise ManifestError(f"{where}: column 'sample_id' must be unique; duplicated: {sorted(set(dup))[:5]}")
    bad_split = sorted(set(out["split"]) - set(SPLITS))
    if bad_split:
        raise ManifestError(f"{where}: column 'split' holds {bad_split}; allowed {list(SPLITS)}")
    if not pd.api.types.is_integer_dtype(out["label"]) or pd.api.types.is_bool_dtype(out["label"]):
        raise ManifestError(f"{where}: column 'label' must be int64, got dtype {out['label'].dtype}")
    out["label"] = out["label"].astype(np.int64)
    n_cls = len(info.classnames)
    labels = out["label"].to_numpy()
    in_range = (labels >= 0) & (labels < n_cls)
    # -1 means "no label"; a zero-shot set must label every image
    valid = in_range if info.task == "zeroshot" else in_range | (labels == -1)
    bad = np.flatnonzero(~valid)
    if len(bad):
        i = int(bad[0])
        raise ManifestError(f"{where}: column 'label' row {i} = {int(out['label'][i])} is out of range for "
                            f"{n_cls} classnames (task {info.task!r})")
    out["captions"] = [_as_caption_list(v, i, where) for i, v in enumerate(out["captions"])]
    if info.task in ("pairs", "retrieval"):
        empty = [i for i, caps in enumerate(out["captions"]) if not caps]
        if empty:
            raise ManifestError(f"{where}: column 'captions' row {empty[0]} is empty; every row of a {info.task!r} "
                                f"dataset needs at least one caption")
    return out


def write_manifest(df: pd.DataFrame, info: DatasetInfo, path: str | os.PathLike) -> DatasetInfo:
    """Validate, then atomically write ``<path>.parquet`` and ``<path>.json``; returns the info with its sha256.

    ``path`` may name the parquet, the json or the bare stem. The parquet is written first; the JSON (which records
    the parquet's sha256) is written last, so a reader never accepts a JSON that describes other parquet bytes.
    """
    parquet, json_path = _paths(path)
    clean = validate_manifest(df, info, where=str(parquet))
    table = pa.Table.from_pandas(clean, schema=SCHEMA, preserve_index=False)
    # drop pandas' schema metadata: it embeds library versions, and the bytes (hence the sha256) should only
    # depend on the content
    table = table.replace_schema_metadata(None)
    with atomic_write(parquet) as tmp:
        pq.write_table(table, tmp)
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    out_info = DatasetInfo(**{**info.to_dict(), "manifest_sha256": digest})
    write_text_atomic(json_path, json.dumps(out_info.to_dict(), indent=2, ensure_ascii=False) + "\n")
    log.info("wrote manifest %s (%d rows, sha256 %s)", parquet, len(clean), digest[:12])
    return out_info


def read_info(path: str | os.PathLike) -> DatasetInfo:
    """Read only the DatasetInfo JSON of a manifest (cheap; no parquet check)."""
    _, json_path = _paths(path)
    if not json_path.is_file():
        raise FileNotFoundError(f"manifest info {json_path} does not exist")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{json_path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{json_path}: expected a JSON object, got {type(data).__name__}")
    try:
        return DatasetInfo.from_dict(data, where=str(json_path))
    except (ValueError, TypeError) as exc:
        raise ManifestError(str(exc)) from exc


def read_manifest(path: str | os.PathLike) -> tuple[pd.DataFrame, DatasetInfo]:
    """Read and validate a manifest; the JSON's ``manifest_sha256`` must match the parquet bytes."""
    parquet, json_path = _paths(path)
    if not parquet.is_file():
        raise FileNotFoundError(f"manifest {parquet} does not exist")
    info = read_info(parquet)
    actual = manifest_sha256(parquet)
    if info.manifest_sha256 != actual:
        raise ManifestError(f"{json_path}: key 'manifest_sha256' = {info.manifest_sha256!r} does not match the sha256 "
                            f"of {parquet} ({actual}); the pair is stale, rebuild the manifest")
    try:
        table = pq.read_table(parquet)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(f"{parquet}: unreadable parquet ({exc})") from exc
    df = table.to_pandas()
    return validate_manifest(df, info, where=str(parquet)), info


def dataset_texts(df: pd.DataFrame, info: DatasetInfo) -> tuple[list[str], np.ndarray]:
    """The text rows a text encoder embeds for this dataset (DESIGN.md "Manifest").

    pairs/retrieval: every caption of every row, row order then caption order, ``groups[k]`` = row of caption k.
    zeroshot: ``template.format(classname)`` class-major, template-minor, ``groups[k]`` = class index.
    """
    texts: list[str] = []
    groups: list[int] = []
    if info.task == "zeroshot":
        for ci, name in enumerate(info.classnames):
            for template in info.templates:
                texts.append(template.format(name))
                groups.append(ci)
    elif info.task in ("pairs", "retrieval"):
        for row, caps in enumerate(df["captions"]):
            caps = caps.tolist() if isinstance(caps, np.ndarray) else list(caps)
            texts.extend(caps)
            groups.extend([row] * len(caps))
    else:
        raise ManifestError(f"DatasetInfo {info.name!r}: task {info.task!r} is not one of {TASKS}")
    return texts, np.asarray(groups, dtype=np.int64)


# ---------------------------------------------------------------------------------------------------------------
# helpers shared by the dataset builders
# ---------------------------------------------------------------------------------------------------------------

def stratified_subset(labels: Sequence[int] | np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Sorted row indices of a seeded subset of size ``min(limit, n)``, stratified by label.

    Each class keeps ``floor(limit * n_c / n)`` rows plus one for the classes with the largest remainders (ties
    broken by a seeded draw), so class proportions are preserved as closely as integers allow; rows with label -1
    form one stratum. ``limit=None`` keeps every row.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if limit is None or limit >= n:
        return np.arange(n, dtype=np.int64)
    if limit < 1:
        raise ValueError(f"limit={limit} must be a positive int or None")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = limit * counts / n
    quota = np.floor(exact).astype(np.int64)
    short = limit - int(quota.sum())
    if short:
        # largest remainder first; a seeded random key breaks ties so no class is favoured by its index
        order = np.lexsort((rng.random(len(classes)), -(exact - quota)))
        quota[order[:short]] += 1
    chosen = [rng.choice(np.flatnonzero(labels == c), size=int(q), replace=False)
              for c, q in zip(classes, quota) if q > 0]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def connected_groups(keys_per_row: Sequence[Sequence[Hashable]]) -> np.ndarray:
    """Group id per row: rows sharing any key (a caption, an image hash) end up in the same group (union-find)."""
    parent = list(range(len(keys_per_row)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[Hashable, int] = {}
    for row, keys in enumerate(keys_per_row):
        for key in keys:
            if key in owner:
                a, b = find(owner[key]), find(row)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            else:
                owner[key] = row
    roots = [find(i) for i in range(len(keys_per_row))]
    _, ids = np.unique(np.asarray(roots, dtype=np.int64), return_inverse=True)
    return ids.astype(np.int64)


def grouped_split(keys_per_row: Sequence[Sequence[Hashable]], test_fraction: float, seed: int) -> np.ndarray:
    """Seeded train/test split where rows sharing a key never straddle the split (returns an array of str).

    Groups are visited in a seeded random order and moved to ``test`` while the test set is below
    ``round(test_fraction * n)`` rows, so the test size is the target up to one group.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction} must lie strictly between 0 and 1")
    groups = connected_groups(keys_per_row)
    n = len(groups)
    target = round(test_fraction * n)
    sizes = np.bincount(groups)
    order = np.random.default_rng(seed).permutation(len(sizes))
    is_test = np.zeros(len(sizes), dtype=bool)
    taken = 0
    for g in order:
        if taken >= target:
            break
        if taken + sizes[g] > target + max(1, target // 20):
            continue  # a huge group would overshoot the target by >5 %: try the next one
        is_test[g] = True
        taken += int(sizes[g])
    return np.where(is_test[groups], "test", "train").astype(object)


def assert_split_disjoint(df: pd.DataFrame, image_keys: Sequence[Hashable] | None = None, where: str = "") -> None:
    """Raise ``ManifestError`` if a caption, sample_id, image_path (or an optional image key such as a content hash)
    occurs in both the train and the test split."""
    train = df["split"].to_numpy() == "train"
    checks: dict[str, tuple[set, set]] = {}
    for col in ("sample_id", "image_path"):
        checks[col] = (set(df[col][train]), set(df[col][~train]))
    caps = [c.tolist() if isinstance(c, np.ndarray) else list(c) for c in df["captions"]]
    checks["captions"] = ({c for i, cs in enumerate(caps) if train[i] for c in cs},
                          {c for i, cs in enumerate(caps) if not train[i] for c in cs})
    if image_keys is not None:
        keys = list(image_keys)
        checks["image content"] = ({k for i, k in enumerate(keys) if train[i]},
                                   {k for i, k in enumerate(keys) if not train[i]})
    for name, (a, b) in checks.items():
        both = a & b
        if both:
            raise ManifestError(f"{where or 'manifest'}: {name} shared by train and test: {sorted(map(str, both))[:5]}")


def composite_on_white(image: Image.Image) -> Image.Image:
    """RGB copy of ``image`` with any transparency composited onto white (cut-out stamps, emoji)."""
    if image.mode in ("RGB", "L") and "transparency" not in image.info:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB")


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write ``image`` as PNG atomically (PIL's PNG encoder is deterministic: same pixels, same bytes)."""
    path = Path(path)
    with atomic_write(path, suffix=".png") as tmp:
        image.save(tmp, format="PNG")
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (used as an image-content key for splits)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_test_fraction(test_fraction: float, dataset: str) -> None:
    """Reject a held-out fraction outside (0, 1) before any image is processed."""
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"dataset {dataset!r}: option test_fraction={test_fraction!r} must lie strictly "
                         f"between 0 and 1")


def split_pairs(captions: Sequence[str], image_keys: Sequence[Hashable], test_fraction: float,
                seed: int) -> np.ndarray:
    """Seeded split of one-caption-per-image pairs, disjoint by caption and by image content.

    Identical captions (several stamps called "A flower.") and identical images must share a split, otherwise the
    held-out retrieval set would contain texts or images seen in training.
    """
    keys = [(("caption", c), ("image", k)) for c, k in zip(captions, image_keys)]
    return grouped_split(keys, test_fraction, seed)


def build_manifest(dataset: str, resources_dir: str | os.PathLike, out_dir: str | os.PathLike,
                   images_dir: str | os.PathLike, **options: Any) -> tuple[Path, DatasetInfo]:
    """Run dataset ``dataset``'s builder and write ``<out_dir>/<dataset>.parquet`` + ``.json``.

    ``images_dir`` is the root for materialised images (``results/images``); the builder writes into
    ``<images_dir>/<dataset>/``. Options are checked against the spec and every source must be acquired before the
    builder runs. Returns the parquet path and the written info.
    """
    spec = get_dataset(dataset)
    opts = spec.resolve_options(options)
    for src in spec.sources:
        source_dir(resources_dir, src)
    ds_images = Path(images_dir) / dataset
    ds_images.mkdir(parents=True, exist_ok=True)
    log.info("building manifest %s with options %s", dataset, opts)
    df, info = spec.build(Path(resources_dir), ds_images, **opts)
    if info.name != dataset:
        raise ManifestError(f"dataset {dataset!r}: builder returned DatasetInfo.name={info.name!r}")
    if info.task != spec.task:
        raise ManifestError(f"dataset {dataset!r}: builder returned task {info.task!r}, registered {spec.task!r}")
    parquet = Path(out_dir) / f"{dataset}.parquet"
    return parquet, write_manifest(df, info, parquet)
