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


def _require_files(paths: Sequence[str | Path], what: str) -> None:
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise PoolError(f"{what}: missing input file(s) {missing}")


def check_dataset_features(fv: Any, ft: Any, n_rows: int, where: str) -> None:
    """Vision features have one row per manifest row; text features carry a ``groups`` tensor per text row."""
    if fv.layers[0].shape[0] != n_rows:
        raise PoolError(f"{where}: vision features have {fv.layers[0].shape[0]} rows, manifest has {n_rows}")
    if ft.groups is None or ft.groups.shape[0] != ft.layers[0].shape[0]:
        raise PoolError(f"{where}: text features lack a 'groups' tensor matching their rows")


def first_caption_rows(groups: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(image rows, text rows)``: each of ``rows`` that has a caption, paired with its first caption's text row."""
    first_text: dict[int, int] = {}
    for k, row in enumerate(np.asarray(groups).tolist()):
        first_text.setdefault(int(row), k)
    kept = [int(r) for r in rows if int(r) in first_text]
    return np.asarray(kept, dtype=np.int64), np.asarray([first_text[r] for r in kept], dtype=np.int64)


def load_pair_pool(vision_paths: Sequence[str | Path], text_paths: Sequence[str | Path],
                   manifest_paths: Sequence[str | Path], split: str = "train") -> PairPool:
    """Load the training pool: rows of ``split``, each image with its first caption, datasets concatenated.

    Vision rows are manifest rows; text rows follow ``dataset_texts`` and ``groups`` maps each caption to its row,
    so the first caption of row r is the first text row with ``groups == r``. Images without a caption are skipped.
    """
    from .data import read_manifest
    from .features import load_features

    if not len(vision_paths) == len(text_paths) == len(manifest_paths):
        raise PoolError(f"training pool: one vision file, text file and manifest per dataset, got "
                        f"{len(vision_paths)}, {len(text_paths)}, {len(manifest_paths)}")
    _require_files([*vision_paths, *text_paths, *manifest_paths], "training pool")
    v_parts, t_parts, datasets, counts = [], [], [], {}
    v_names: list[str] | None = None
    t_names: list[str] | None = None
    for vp, tp, mp in zip(vision_paths, text_paths, manifest_paths):
        df, info = read_manifest(mp)
        fv = load_features(vp, modality="vision", manifest_sha256=info.manifest_sha256)
        ft = load_features(tp, modality="text", manifest_sha256=info.manifest_sha256)
        check_dataset_features(fv, ft, len(df), f"dataset {info.name}")
        v_idx, t_idx = first_caption_rows(ft.groups.numpy(), np.flatnonzero(df["split"].to_numpy() == split))
        if len(v_idx) == 0:
            raise PoolError(f"dataset {info.name} ({mp}): no {split!r} rows with a caption")
        if v_names is None:
            v_names, t_names = list(fv.layer_names), list(ft.layer_names)
        elif list(fv.layer_names) != v_names or list(ft.layer_names) != t_names:
            raise PoolError(f"dataset {info.name}: layer names differ from the first dataset's ({vp}, {tp})")
        v_parts.append([layer[torch.as_tensor(v_idx)] for layer in fv.layers])
        t_parts.append([layer[torch.as_tensor(t_idx)] for layer in ft.layers])
        datasets.append(info.name)
        counts[info.name] = len(v_idx)
    vision = [torch.cat([p[i] for p in v_parts]) for i in range(len(v_parts[0]))]
    text = [torch.cat([p[j] for p in t_parts]) for j in range(len(t_parts[0]))]
    log.info("training pool: %d pairs from %s", vision[0].shape[0], counts)
    return PairPool(vision, text, v_names or [], t_names or [], datasets, counts)


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
