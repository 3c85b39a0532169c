"""The manifest format shared by every dataset (docs/design.md "Manifest") and :func:`build_manifest`.

A manifest is ``<name>.parquet`` (one row per image) beside ``<name>.json`` (:class:`DatasetInfo`). Every write is
validated and atomic, and the JSON records the sha256 of the parquet bytes so that a stale pair (parquet rewritten,
JSON not, or the other way round) is detected when it is read. The helpers the builders share (subsets, splits,
the PNG writer) are in :mod:`.helpers`.
"""

from __future__ import annotations

import json
import logging
import os
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..io import atomic_write, sha256_file, write_json
from .kinds import dataset_spec
from .preflight import apply_preflight
from .registry import TASKS, DatasetInfo, source_dir

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
    return sha256_file(_paths(path)[0])


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
    """Validate ``df`` against docs/design.md and ``info``; return a normalised copy (column order, dtypes, lists).

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
        digest = sha256_file(tmp)
    out_info = DatasetInfo(**{**info.to_dict(), "manifest_sha256": digest})
    write_json(json_path, out_info.to_dict(), sort_keys=False)
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
    """The text rows a text encoder embeds for this dataset (docs/design.md "Manifest").

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


def build_manifest(dataset: str, resources_dir: str | os.PathLike, out_dir: str | os.PathLike,
                   images_dir: str | os.PathLike, *, declaration: Mapping[str, Any] | None = None,
                   images: Mapping[str, Any] | None = None, **options: Any) -> tuple[Path, DatasetInfo]:
    """Run dataset ``dataset``'s builder and write ``<out_dir>/<dataset>.parquet`` + ``.json``.

    ``dataset`` is a registered dataset, or, with ``declaration`` (its ``user_datasets.<name>`` entry of
    params.yaml), a user dataset of a generic kind (see :func:`structure_align.data.kinds.dataset_spec`).
    ``images_dir`` is the root for materialised images (``results/images``); the builder writes into
    ``<images_dir>/<dataset>/`` (user datasets reference their images in place). Options are checked against the
    spec and every source must be acquired before the builder runs. Every listed image then passes the pre-flight
    check (:mod:`.preflight`; ``images`` = params ``images``) before anything is written. Returns the parquet path
    and the written info.
    """
    spec = dataset_spec(dataset, declaration)
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
    df, info = apply_preflight(dataset, df, info, dict(images or {}))
    parquet = Path(out_dir) / f"{dataset}.parquet"
    return parquet, write_manifest(df, info, parquet)
