"""In-domain labelled samples added to the training pairs (docs/analysis.md "in_domain").

The paper reports that a few labelled images per class of a target domain, paired with a templated caption
("a photo of a {class}."), close most of the gap to CLIP on that domain. Here the labelled pool is a zero-shot set's
own *training* split (e.g. ``fashion_mnist_train``), the evaluation runs on the set's test images, and:

- :func:`sample_per_class` draws k rows per class, seeded by the run seed; for one seed the draws are nested
  (the first k of one permutation per class), so a curve over k adds samples rather than redrawing them;
- pool images whose pixels equal a test image are never drawn, and :func:`in_domain_pairs` asserts that the drawn
  images are disjoint from the test images (by sample id and by pixel hash) before any training starts;
- the caption of a drawn image is the pool's own text row ``template.format(classname)`` (zero-shot text features
  hold one row per (class, template)), so no new text has to be embedded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch


class InDomainError(ValueError):
    """The in-domain pool cannot be used as asked (too few rows per class, overlap with the test set, no template)."""


def sample_per_class(labels: Sequence[int] | np.ndarray, k: int, seed: int, n_classes: int,
                     exclude: Sequence[int] | np.ndarray = ()) -> np.ndarray:
    """Sorted row indices: ``k`` rows of every class ``0 .. n_classes - 1``, none of ``exclude``.

    Per class the rows are permuted with ``np.random.default_rng([seed, class])`` and the first ``k`` kept, so the
    draw of a smaller k is contained in that of a larger one.
    """
    y = np.asarray(labels, dtype=np.int64)
    if isinstance(k, bool) or int(k) < 0:
        raise InDomainError(f"in_domain: k must be a non-negative integer, got {k!r}")
    banned = {int(r) for r in np.asarray(exclude, dtype=np.int64).tolist()}
    chosen: list[np.ndarray] = []
    for c in range(int(n_classes)):
        rows = np.array([r for r in np.flatnonzero(y == c) if int(r) not in banned], dtype=np.int64)
        if len(rows) < k:
            raise InDomainError(f"in_domain: class {c} has {len(rows)} usable pool rows, fewer than k={k} "
                                "(raise the pool's manifest size)")
        perm = np.random.default_rng([int(seed), c]).permutation(len(rows))
        chosen.append(rows[perm[:int(k)]])
    return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)


def pixel_hashes(image_paths: Sequence[str]) -> list[str]:
    """sha256 of each image's decoded RGB pixels (size included), independent of PNG encoder settings."""
    from PIL import Image

    out = []
    for path in image_paths:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
            digest = hashlib.sha256(f"{rgb.size}".encode())
            digest.update(rgb.tobytes())
            out.append(digest.hexdigest())
    return out


def assert_disjoint(pool: pd.DataFrame, rows: np.ndarray, pool_hashes: Sequence[str], test: pd.DataFrame,
                    test_hashes: Sequence[str]) -> None:
    """Raise :class:`InDomainError` if a drawn pool row shares a sample id or its pixels with a test image."""
    ids = set(pool["sample_id"].to_numpy()[rows].tolist()) & set(test["sample_id"].tolist())
    pixels = {pool_hashes[int(r)] for r in rows} & set(test_hashes)
    if ids or pixels:
        raise InDomainError(f"in_domain: {len(ids)} drawn sample id(s) and {len(pixels)} drawn image(s) also occur "
                            f"in the evaluation set (e.g. {sorted(ids)[:3]})")


def caption_rows(texts: Sequence[str], classnames: Sequence[str], template: str) -> np.ndarray:
    """The text row of ``template.format(name)`` for every class (the pool's zero-shot prompt rows)."""
    index = {t: i for i, t in enumerate(texts)}
    missing = [template.format(n) for n in classnames if template.format(n) not in index]
    if missing:
        raise InDomainError(f"in_domain: template {template!r} is not one of the pool's prompt templates "
                            f"(no text row {missing[0]!r})")
    return np.array([index[template.format(n)] for n in classnames], dtype=np.int64)


def in_domain_pairs(block: Mapping[str, Any], vision_layer: int, text_layer: int,
                    seed: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """``(x [m, d_v], y [m, d_t], record)``: the k-per-class pool images at ``vision_layer`` with their class
    caption at ``text_layer``; ``block`` = ``{"k", "template", "vision", "text", "manifest", "test_manifest"}``."""
    from .data import dataset_texts, read_manifest
    from .features import load_features

    for key in ("vision", "text", "manifest", "test_manifest"):
        if not Path(block[key]).is_file():
            raise InDomainError(f"in_domain: missing input file {block[key]} ({key})")
    df, info = read_manifest(block["manifest"])
    test, test_info = read_manifest(block["test_manifest"])
    if info.task != "zeroshot" or list(info.classnames) != list(test_info.classnames):
        raise InDomainError(f"in_domain: pool {info.name} must be a zero-shot set with the class names of "
                            f"{test_info.name}")
    if set(df["split"]) != {"train"}:
        raise InDomainError(f"in_domain: pool {block['manifest']} must hold train-split rows only")
    pool_hashes = pixel_hashes(df["image_path"].tolist())
    test_hashes = set(pixel_hashes(test["image_path"].tolist()))
    clashes = np.array([i for i, h in enumerate(pool_hashes) if h in test_hashes], dtype=np.int64)
    rows = sample_per_class(df["label"].to_numpy(), int(block["k"]), seed, len(info.classnames), exclude=clashes)
    assert_disjoint(df, rows, pool_hashes, test, list(test_hashes))
    fv = load_features(block["vision"], modality="vision", manifest_sha256=info.manifest_sha256)
    ft = load_features(block["text"], modality="text", manifest_sha256=info.manifest_sha256)
    texts, _ = dataset_texts(df, info)
    captions = caption_rows(texts, info.classnames, str(block["template"]))
    labels = df["label"].to_numpy()[rows]
    x = fv.layers[vision_layer][torch.as_tensor(rows, dtype=torch.long)]
    y = ft.layers[text_layer][torch.as_tensor(captions[labels], dtype=torch.long)]
    record = {"pool": info.name, "k": int(block["k"]), "template": str(block["template"]), "n_added": len(rows),
              "sample_ids": df["sample_id"].to_numpy()[rows].tolist(), "n_excluded_test_duplicates": len(clashes),
              "evaluation_set": test_info.name}
    return x, y, record
