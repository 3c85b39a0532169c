"""The training pool, its fixed validation split and the per-run subsample (docs/method.md §6.1-§6.3).

The pool is the ``train`` split of the training datasets, one (image, first caption) pair per image (the released
duplicate dropping), datasets concatenated in params order. A fixed seeded part of it is the validation set for
early stopping (independent of the run seed and the training size, so every run of a grid stops early on the same
rows); each run trains on a seeded subsample of the rest. For one seed the subsamples of growing sizes are nested
(prefixes of one permutation), as in the released ``torch.randperm`` draw.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


class PoolError(ValueError):
    """The training pool cannot be built as asked (missing file, mismatched features, too few rows); names the file."""


@dataclass
class PairPool:
    """Paired training features of several datasets: ``vision_layers[i]`` and ``text_layers[j]`` are [n, d] tensors
    with row r of every layer belonging to pair r."""

    vision_layers: list[torch.Tensor]
    text_layers: list[torch.Tensor]
    vision_layer_names: list[str]
    text_layer_names: list[str]
    datasets: list[str]
    counts: dict[str, int]

    @property
    def n(self) -> int:
        """Number of pairs."""
        return int(self.vision_layers[0].shape[0])

    def vision(self, layer: int, rows: np.ndarray | None = None) -> torch.Tensor:
        """Vision features of pool rows ``rows`` (all when None) at ``layer`` (the :class:`LazyPairPool` API)."""
        t = self.vision_layers[layer]
        return t if rows is None else t[torch.as_tensor(np.asarray(rows), dtype=torch.long)]

    def text(self, layer: int, rows: np.ndarray | None = None) -> torch.Tensor:
        """Text features of pool rows ``rows`` (all when None) at ``layer`` (the :class:`LazyPairPool` API)."""
        t = self.text_layers[layer]
        return t if rows is None else t[torch.as_tensor(np.asarray(rows), dtype=torch.long)]


def _require_files(paths: Sequence[str | Path], what: str) -> None:
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise PoolError(f"{what}: missing input file(s) {missing}")


def check_dataset_features(fv: Any, ft: Any, n_rows: int, where: str) -> None:
    """Vision features have one row per manifest row; text features carry a ``groups`` tensor per text row.

    ``fv`` / ``ft`` are :class:`~structure_align.features.FeatureSet` or :class:`~structure_align.reader.FeatureReader`.
    """
    if fv.n_rows != n_rows:
        raise PoolError(f"{where}: vision features have {fv.n_rows} rows, manifest has {n_rows}")
    if ft.groups is None or ft.groups.shape[0] != ft.n_rows:
        raise PoolError(f"{where}: text features lack a 'groups' tensor matching their rows")


def first_caption_rows(groups: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(image rows, text rows)``: each of ``rows`` that has a caption, paired with its first caption's text row."""
    first_text: dict[int, int] = {}
    for k, row in enumerate(np.asarray(groups).tolist()):
        first_text.setdefault(int(row), k)
    kept = [int(r) for r in rows if int(r) in first_text]
    return np.asarray(kept, dtype=np.int64), np.asarray([first_text[r] for r in kept], dtype=np.int64)


@dataclass
class LazyPairPool:
    """The training pool as row indices into lazily opened feature files (no layer is held in memory).

    Pool row r belongs to dataset k with ``offsets[k] <= r < offsets[k + 1]``; its image is row
    ``vision_rows[k][r - offsets[k]]`` of that dataset's vision file and its caption row ``text_rows[k][...]`` of the
    text file. :meth:`vision` / :meth:`text` read only the asked pool rows of one layer (docs/design.md "Memory").
    """

    vision_readers: list[Any]
    text_readers: list[Any]
    vision_rows: list[np.ndarray]
    text_rows: list[np.ndarray]
    vision_layer_names: list[str]
    text_layer_names: list[str]
    datasets: list[str]
    counts: dict[str, int]

    @property
    def n(self) -> int:
        """Number of pairs."""
        return int(sum(len(r) for r in self.vision_rows))

    def _read(self, readers: list[Any], file_rows: list[np.ndarray], layer: int,
              rows: np.ndarray | None) -> torch.Tensor:
        """Float32 rows ``rows`` (pool indices, any order; all when None) of ``layer``, dataset by dataset."""
        rows = np.arange(self.n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (int(rows.min()) < 0 or int(rows.max()) >= self.n):
            raise PoolError(f"training pool: rows outside the {self.n} pairs")
        out = torch.empty((len(rows), readers[0].embed_dims[layer]), dtype=torch.float32)
        offset = 0
        for reader, frows in zip(readers, file_rows):
            sel = np.flatnonzero((rows >= offset) & (rows < offset + len(frows)))
            if len(sel):
                out[torch.as_tensor(sel)] = reader.read(layer, frows[rows[sel] - offset])
            offset += len(frows)
        return out

    def vision(self, layer: int, rows: np.ndarray | None = None) -> torch.Tensor:
        """Vision features ``[len(rows), d]`` of pool rows ``rows`` at ``layer``."""
        return self._read(self.vision_readers, self.vision_rows, layer, rows)

    def text(self, layer: int, rows: np.ndarray | None = None) -> torch.Tensor:
        """Text features (first captions) ``[len(rows), d]`` of pool rows ``rows`` at ``layer``."""
        return self._read(self.text_readers, self.text_rows, layer, rows)


def open_pair_pool(vision_paths: Sequence[str | Path], text_paths: Sequence[str | Path],
                   manifest_paths: Sequence[str | Path], split: str = "train") -> LazyPairPool:
    """Open the training pool lazily: rows of ``split``, each image with its first caption, datasets concatenated.

    Vision rows are manifest rows; text rows follow ``dataset_texts`` and ``groups`` maps each caption to its row,
    so the first caption of row r is the first text row with ``groups == r``. Images without a caption are skipped.
    Headers, metadata and ``groups`` are checked here; no layer is read.
    """
    from .data import read_manifest
    from .reader import open_features

    if not len(vision_paths) == len(text_paths) == len(manifest_paths):
        raise PoolError(f"training pool: one vision file, text file and manifest per dataset, got "
                        f"{len(vision_paths)}, {len(text_paths)}, {len(manifest_paths)}")
    _require_files([*vision_paths, *text_paths, *manifest_paths], "training pool")
    pool = LazyPairPool([], [], [], [], [], [], [], {})
    for vp, tp, mp in zip(vision_paths, text_paths, manifest_paths):
        df, info = read_manifest(mp)
        fv = open_features(vp, modality="vision", manifest_sha256=info.manifest_sha256)
        ft = open_features(tp, modality="text", manifest_sha256=info.manifest_sha256)
        check_dataset_features(fv, ft, len(df), f"dataset {info.name}")
        v_idx, t_idx = first_caption_rows(ft.groups.numpy(), np.flatnonzero(df["split"].to_numpy() == split))
        if len(v_idx) == 0:
            raise PoolError(f"dataset {info.name} ({mp}): no {split!r} rows with a caption")
        if not pool.datasets:
            pool.vision_layer_names, pool.text_layer_names = list(fv.layer_names), list(ft.layer_names)
        elif (list(fv.layer_names) != pool.vision_layer_names or list(ft.layer_names) != pool.text_layer_names
              or fv.embed_dims != pool.vision_readers[0].embed_dims
              or ft.embed_dims != pool.text_readers[0].embed_dims):
            raise PoolError(f"dataset {info.name}: layer names differ from the first dataset's ({vp}, {tp})")
        pool.vision_readers.append(fv)
        pool.text_readers.append(ft)
        pool.vision_rows.append(v_idx)
        pool.text_rows.append(t_idx)
        pool.datasets.append(info.name)
        pool.counts[info.name] = len(v_idx)
    log.info("training pool: %d pairs from %s", pool.n, pool.counts)
    return pool


def load_pair_pool(vision_paths: Sequence[str | Path], text_paths: Sequence[str | Path],
                   manifest_paths: Sequence[str | Path], split: str = "train") -> PairPool:
    """The training pool of :func:`open_pair_pool` with every layer read into memory (analysis and tests; the
    workflow's steps read only what they use through the lazy pool)."""
    lazy = open_pair_pool(vision_paths, text_paths, manifest_paths, split)
    return PairPool([lazy.vision(i) for i in range(len(lazy.vision_layer_names))],
                    [lazy.text(j) for j in range(len(lazy.text_layer_names))],
                    lazy.vision_layer_names, lazy.text_layer_names, lazy.datasets, lazy.counts)


def validation_split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed seeded split of the pool into (train rows, validation rows), both sorted (docs/method.md §6.6)."""
    if not 0.0 < val_fraction < 1.0:
        raise PoolError(f"val_fraction={val_fraction!r} must be in (0, 1)")
    n_val = round(val_fraction * n)
    if n_val < 2 or n - n_val < 2:
        raise PoolError(f"pool of {n} pairs is too small for val_fraction={val_fraction} (need >= 2 on each side)")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]).astype(np.int64), np.sort(perm[:n_val]).astype(np.int64)


def subsample_rows(n: int, k: int, seed: int) -> np.ndarray:
    """Sorted indices of the first ``k`` rows of a ``torch.randperm(n)`` seeded with ``seed`` (all rows if k >= n).

    A ``torch.Generator`` is used so the draw neither depends on nor disturbs the global RNG state.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"subsample: n must be an integer >= 2, got {n!r}")
    if k >= n:
        return np.arange(n, dtype=np.int64)
    perm = torch.randperm(int(n), generator=torch.Generator().manual_seed(int(seed)))
    return np.sort(perm[:k].numpy()).astype(np.int64)


def subsample_pairs(n: int, fraction: float, seed: int) -> np.ndarray:
    """Seeded subsample of ``round(fraction·n)`` (at least 2) of ``n`` training pairs, sorted (docs/method.md §6.3)."""
    if not (isinstance(fraction, (float, int)) and not isinstance(fraction, bool) and 0.0 < fraction <= 1.0):
        raise ValueError(f"subsample_pairs: fraction must be in (0, 1], got {fraction!r}")
    return subsample_rows(n, max(2, round(fraction * n)), seed)


def run_rows(n_pool: int, size: Any, seed: int, val_fraction: float, val_seed: int,
             val_split: str = "pool") -> tuple[np.ndarray, np.ndarray]:
    """``(training rows, validation rows)`` of one run: the fixed validation split, then ``size`` of the rest.

    ``size`` is a :class:`structure_align.runs.Size` (a fraction of the training part, or an absolute count that
    must not exceed it). ``val_split="test"``: the validation set is the training datasets' ``test`` split (loaded
    separately, e.g. COCO val2014 as released), so every pool row is available for training and the validation
    rows returned here are empty.
    """
    if val_split == "test":
        train_rows, val_rows = np.arange(n_pool, dtype=np.int64), np.zeros(0, dtype=np.int64)
    elif val_split == "pool":
        train_rows, val_rows = validation_split(n_pool, val_fraction, val_seed)
    else:
        raise PoolError(f"params key 'training.val_split': {val_split!r} is not 'pool' or 'test'")
    if size.kind == "frac":
        sub = subsample_pairs(len(train_rows), float(size.value), seed)
    else:
        count = int(size.value)
        if count > len(train_rows):
            raise PoolError(f"training size n~{count} exceeds the {len(train_rows)} training pairs of the pool "
                            f"(params key 'training.sizes')")
        sub = subsample_rows(len(train_rows), count, seed)
    return train_rows[sub], val_rows
