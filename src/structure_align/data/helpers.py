"""Helpers shared by the dataset builders: seeded subsets, grouped train/test splits, and the one image writer.

Every builder draws its ``limit`` subset with :func:`stratified_subset` / :func:`subset_rows`, splits image-caption
sets with :func:`split_pairs` (disjoint by caption and image content, docs/method.md §7) and writes materialised
images with :func:`save_png`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Hashable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..io import write_bytes_if_changed
from .images import flatten_on_white
from .manifest import ManifestError


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


def subset_rows(df: pd.DataFrame, strata: Sequence[int] | np.ndarray | pd.Series, limit: int | None,
                seed: int) -> pd.DataFrame:
    """The rows of ``df`` kept by :func:`stratified_subset` of ``strata`` (one stratum per row), index reset."""
    keep = stratified_subset(np.asarray(strata, dtype=np.int64), limit, seed)
    return df.iloc[keep].reset_index(drop=True)


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
    """RGB copy of ``image`` with any transparency composited onto white (cut-out stamps, emoji): the one
    implementation, :func:`structure_align.data.images.flatten_on_white`."""
    return flatten_on_white(image)


def save_png(image: Image.Image | np.ndarray, path: str | os.PathLike) -> Path:
    """Write ``image`` (a PIL image or an ``[H, W, 3]`` uint8 array) as PNG, the one image writer of the builders.

    PIL's PNG encoder with default options is deterministic (same pixels, same bytes); the bytes are encoded in
    memory and written atomically only when they differ from the file already there, so a rebuild keeps the mtime
    of unchanged images.
    """
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.ascontiguousarray(image), mode="RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    path = Path(path)
    write_bytes_if_changed(path, buf.getvalue())
    return path


def check_test_fraction(test_fraction: float, dataset: str) -> None:
    """Reject a held-out fraction outside (0, 1) before any image is processed."""
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"dataset {dataset!r}: option test_fraction={test_fraction!r} must lie strictly "
                         f"between 0 and 1")


def split_pairs(captions: Sequence[str | Sequence[str]], image_keys: Sequence[Hashable], test_fraction: float,
                seed: int) -> np.ndarray:
    """Seeded split of image-caption rows, disjoint by caption and by image content.

    ``captions[i]`` is the caption of row ``i`` or the list of its captions. Identical captions (several stamps
    called "A flower.") and identical images must share a split, otherwise the held-out retrieval set would contain
    texts or images seen in training.
    """
    keys = [(*(("caption", c) for c in ([caps] if isinstance(caps, str) else caps)), ("image", k))
            for caps, k in zip(captions, image_keys)]
    return grouped_split(keys, test_fraction, seed)
