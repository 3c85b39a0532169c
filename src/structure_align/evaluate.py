"""Zero-shot classification and cross-modal retrieval on aligned embeddings (docs/method.md §7).

The metric functions take embeddings (any aligner's ``encode_image`` / ``encode_text`` output) and return plain
dicts of percentages; :func:`embed`, :func:`zero_shot_aligner` and :func:`retrieval_aligner` run an aligner over
frozen features first. :func:`load_eval_set` + :func:`evaluate_set` evaluate one run on one dataset from its
feature files (loaded once, then shared by every run of a job). Similarity matrices are computed in chunks so large
galleries fit in memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .utils import resolve_device

ArrayLike = torch.Tensor | np.ndarray | Sequence[int]
# most similarity entries one retrieval block holds (2^26 float32 = 256 MiB): a COCO val2014 I2T block of 2048
# images x 202k captions would be 1.6 GB (and a masked copy of it); galleries below 2^26 / chunk_size keep chunk_size
SIM_BLOCK_ELEMENTS = 1 << 26


def _as_float(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    t = torch.as_tensor(x).detach()
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [rows, dim] array, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains non-finite values")
    return t.float()


def _as_index(x: ArrayLike, name: str, n_rows: int, upper: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x)).long().reshape(-1)
    if t.numel() != n_rows:
        raise ValueError(f"{name} has {t.numel()} entries, expected {n_rows} (one per row)")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= upper):
        raise ValueError(f"{name} values must lie in [0, {upper}), got min {int(t.min())}, max {int(t.max())}")
    return t


def class_prototypes(text_emb: torch.Tensor, groups: ArrayLike, n_classes: int) -> torch.Tensor:
    """Prompt-ensemble class prototypes (docs/method.md §7.1, step 2).

    Each prompt embedding is L2-normalised, the prompts of a class are averaged and the mean is re-normalised.
    Raises ``ValueError`` if a class has no prompt.
    """
    t = F.normalize(_as_float(text_emb, "text_emb"), dim=-1)
    g = _as_index(groups, "groups", t.shape[0], n_classes)
    counts = torch.bincount(g, minlength=n_classes)
    if (counts == 0).any():
        empty = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"class_prototypes: class(es) {empty[:10]} have no prompt row in groups")
    sums = torch.zeros(n_classes, t.shape[1], dtype=t.dtype).index_add_(0, g, t)
    return F.normalize(sums / counts[:, None].to(t.dtype), dim=-1)


def zero_shot(image_emb: torch.Tensor | np.ndarray, labels: ArrayLike, text_emb: torch.Tensor | np.ndarray,
              groups: ArrayLike, n_classes: int, *, chunk_size: int = 8192) -> dict[str, float]:
    """Zero-shot classification with prompt-ensemble prototypes (docs/method.md §7.1).

    ``image_emb`` [N, d] (re-normalised here), ``labels`` [N] in [0, n_classes), ``text_emb`` [T, d] with
    ``groups`` [T] giving the class of each prompt row. Logits are cosines (the released ×100 scale does not change
    a ranking). Returns ``top1`` and ``macro_top1`` (mean per-class accuracy over the classes present in
    ``labels``) and ``top5`` — all in % — plus ``n_images``; ``top5`` is NaN when there are fewer than 5 classes
    (as the released code, which only logs top-5 for >= 5 classes).
    """
    if n_classes < 1:
        raise ValueError(f"zero_shot: n_classes must be >= 1, got {n_classes}")
    img = F.normalize(_as_float(image_emb, "image_emb"), dim=-1)
    y = _as_index(labels, "labels", img.shape[0], n_classes)
    if img.shape[0] == 0:
        raise ValueError("zero_shot: image_emb has no rows")
    protos = class_prototypes(text_emb, groups, n_classes)
    if protos.shape[1] != img.shape[1]:
        raise ValueError(f"zero_shot: image dim {img.shape[1]} != text dim {protos.shape[1]}")
    k5 = min(5, n_classes)
    correct1 = torch.zeros(img.shape[0], dtype=torch.bool)
    correct5 = torch.zeros(img.shape[0], dtype=torch.bool)
    for start in range(0, img.shape[0], chunk_size):
        sl = slice(start, start + chunk_size)
        logits = img[sl] @ protos.T
        top = logits.topk(k5, dim=1).indices
        correct1[sl] = top[:, 0] == y[sl]
        correct5[sl] = (top == y[sl, None]).any(dim=1)
    per_class = torch.zeros(n_classes, dtype=torch.float64).index_add_(0, y, correct1.double())
    present = torch.bincount(y, minlength=n_classes)
    macro = (per_class[present > 0] / present[present > 0]).mean()
    return {"top1": 100.0 * correct1.double().mean().item(),
            "top5": 100.0 * correct5.double().mean().item() if n_classes >= 5 else math.nan,
            "macro_top1": 100.0 * macro.item(),
            "n_images": int(img.shape[0])}


def retrieval(image_emb: torch.Tensor | np.ndarray, text_emb: torch.Tensor | np.ndarray, text_image_index: ArrayLike,
              *, duplicate_gallery: bool = False, ks: Sequence[int] = (1, 5, 10),
              chunk_size: int = 2048) -> dict[str, float]:
    """Image-to-text and text-to-image Recall@k in % (docs/method.md §7.2).

    ``image_emb`` holds one row per image, ``text_emb`` one row per caption and ``text_image_index[c]`` the image
    row of caption ``c``. A query is a hit at k when any relevant gallery item is in the top k; ties between a
    relevant and an irrelevant item are resolved in favour of the relevant one (rank = number of irrelevant items
    scoring strictly higher than the best relevant one).

    Standard protocol (default): I2T has one query per image with a caption (gallery = all captions, relevant = its
    captions); T2I has one query per caption and a gallery holding each image once.
    ``duplicate_gallery=True`` reproduces the released variant: every caption row carries a copy of its image, so
    I2T queries are repeated once per caption row and the T2I gallery holds one image copy per caption row (all
    copies of the right image relevant; each irrelevant image counts as many times as it has captions). The
    duplicate copies of an irrelevant image fill several ranks at once, so the released T2I R@5/R@10 are *lower*
    than the standard ones (with 5 captions per image, its R@5 is close to the standard R@1).
    """
    img = F.normalize(_as_float(image_emb, "image_emb"), dim=-1)
    txt = F.normalize(_as_float(text_emb, "text_emb"), dim=-1)
    if img.shape[1] != txt.shape[1]:
        raise ValueError(f"retrieval: image dim {img.shape[1]} != text dim {txt.shape[1]}")
    idx = _as_index(text_image_index, "text_image_index", txt.shape[0], img.shape[0])
    if txt.shape[0] == 0:
        raise ValueError("retrieval: text_emb has no rows")
    ks = tuple(int(k) for k in ks)
    if any(k < 1 for k in ks):
        raise ValueError(f"retrieval: ks must be positive, got {ks}")
    n_caps = torch.bincount(idx, minlength=img.shape[0]).float()
    n_caps64 = n_caps.double()

    # T2I: number of irrelevant gallery items above the correct image (weighted by copies in the released variant)
    t2i_rank = torch.empty(txt.shape[0])
    chunk = _block_rows(chunk_size, img.shape[0])
    for start in range(0, txt.shape[0], chunk):
        s = txt[start:start + chunk] @ img.T
        gt = idx[start:start + chunk]
        above = (s > s.gather(1, gt[:, None])).float()
        t2i_rank[start:start + chunk] = above @ n_caps if duplicate_gallery else above.sum(dim=1)

    # I2T: queries are the images that have captions; the released variant weights each by its caption count
    queries = torch.nonzero(n_caps > 0).flatten()
    i2t_rank = torch.empty(queries.numel())
    chunk = _block_rows(chunk_size, txt.shape[0])
    for start in range(0, queries.numel(), chunk):
        q = queries[start:start + chunk]
        s = img[q] @ txt.T
        relevant = idx[None, :] == q[:, None]
        best = s.masked_fill(~relevant, -math.inf).max(dim=1).values
        i2t_rank[start:start + chunk] = ((s > best[:, None]) & ~relevant).sum(dim=1).float()
    weights = n_caps64[queries] if duplicate_gallery else torch.ones(queries.numel(), dtype=torch.float64)

    out: dict[str, float] = {}
    for k in ks:
        out[f"i2t_r{k}"] = 100.0 * float(((i2t_rank < k).double() * weights).sum() / weights.sum())
    for k in ks:
        out[f"t2i_r{k}"] = 100.0 * float((t2i_rank < k).double().mean())
    out["n_images"] = int(queries.numel())
    out["n_texts"] = int(txt.shape[0])
    return out


def _block_rows(chunk_size: int, n_cols: int) -> int:
    """Query rows per similarity block: ``chunk_size``, fewer when a block would exceed :data:`SIM_BLOCK_ELEMENTS`
    (the ranks are per query row, so the block size does not change them)."""
    return max(1, min(chunk_size, SIM_BLOCK_ELEMENTS // max(1, n_cols)))


@torch.inference_mode()
def embed(aligner: Any, feats: torch.Tensor | np.ndarray, modality: str, *, batch_size: int = 8192,
          device: str | torch.device = "cpu") -> torch.Tensor:
    """Run ``aligner.encode_image`` (``modality="image"``) or ``encode_text`` over ``feats`` in batches (CPU out)."""
    if modality not in ("image", "text"):
        raise ValueError(f"embed: modality must be 'image' or 'text', got {modality!r}")
    feats = torch.as_tensor(feats)
    if hasattr(aligner, "to"):
        aligner = aligner.to(resolve_device(device))
    if hasattr(aligner, "eval"):
        aligner.eval()
    fn = aligner.encode_image if modality == "image" else aligner.encode_text
    parts = [fn(feats[i:i + batch_size]).float().cpu() for i in range(0, feats.shape[0], batch_size)]
    return torch.cat(parts) if parts else torch.empty(0, 0)


def zero_shot_aligner(aligner: Any, image_feats: torch.Tensor, labels: ArrayLike, text_feats: torch.Tensor,
                      groups: ArrayLike, n_classes: int, *, raw_prototypes: bool = False, batch_size: int = 8192,
                      device: str | torch.device = "cpu") -> dict[str, float]:
    """:func:`zero_shot` on features at the chosen layers, embedded by ``aligner`` (docs/method.md §7.1).

    By default every prompt is embedded and the prototypes are averaged in the joint space. ``raw_prototypes=True``
    reproduces the released CSA path (§4.3): the prompt-ensemble prototypes are built from the *raw* text features
    (normalise, average per class, re-normalise) and only then pushed through ``encode_text`` — for CSA this centres
    unit-norm vectors with the mean of the un-normalised training features, a scale mismatch kept as released.
    """
    if raw_prototypes:
        protos = class_prototypes(torch.as_tensor(text_feats), groups, n_classes)
        text_emb = embed(aligner, protos, "text", batch_size=batch_size, device=device)
        groups = np.arange(n_classes)
    else:
        text_emb = embed(aligner, text_feats, "text", batch_size=batch_size, device=device)
    return zero_shot(embed(aligner, image_feats, "image", batch_size=batch_size, device=device), labels, text_emb,
                     groups, n_classes)


def retrieval_aligner(aligner: Any, image_feats: torch.Tensor, text_feats: torch.Tensor, text_image_index: ArrayLike,
                      *, duplicate_gallery: bool = False, ks: Sequence[int] = (1, 5, 10), batch_size: int = 8192,
                      device: str | torch.device = "cpu") -> dict[str, float]:
    """:func:`retrieval` on features at the chosen layers, embedded by ``aligner`` (docs/method.md §7.2)."""
    return retrieval(embed(aligner, image_feats, "image", batch_size=batch_size, device=device),
                     embed(aligner, text_feats, "text", batch_size=batch_size, device=device), text_image_index,
                     duplicate_gallery=duplicate_gallery, ks=ks)


# ---------------------------------------------------------------------------------------------------------------
# one dataset of one run, from the feature files
# ---------------------------------------------------------------------------------------------------------------

class EvalDataError(ValueError):
    """An evaluation dataset's files do not fit together (rows, layers, captions); names the dataset and file."""


@dataclass
class EvalSet:
    """The frozen features of one evaluation dataset, restricted to the rows that are evaluated.

    ``image_rows`` index the vision features; zero-shot sets carry ``labels`` / ``n_classes`` and use every text
    row (prompts, ``text_groups`` = class); retrieval sets keep the caption rows of the evaluated images
    (``text_rows``) and map each to its image's position (``text_image_index``).
    """

    name: str
    task: str
    vision: Any
    text: Any
    image_rows: np.ndarray
    test_split_only: bool
    labels: np.ndarray | None = None
    n_classes: int = 0
    text_rows: np.ndarray | None = None
    text_groups: np.ndarray | None = None
    text_image_index: np.ndarray | None = None
    cache: dict[tuple[str, int], torch.Tensor] = field(default_factory=dict, repr=False)

    def features(self, vision_layer: int, text_layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image rows at vision_layer, evaluated text rows at text_layer)``, read once and kept until
        :meth:`release` (the runs of a job mostly share their layers)."""
        if ("v", vision_layer) not in self.cache:
            self.cache["v", vision_layer] = self.vision.read(vision_layer, self.image_rows)
        if ("t", text_layer) not in self.cache:
            self.cache["t", text_layer] = self.text.read(text_layer, self.text_rows)
        return self.cache["v", vision_layer], self.cache["t", text_layer]

    def release(self) -> None:
        """Drop the layers read so far (the next dataset of a job does not stack on this one)."""
        self.cache.clear()


def load_eval_set(vision_path: str | Path, text_path: str | Path, manifest_path: str | Path, *,
                  test_split: bool) -> EvalSet:
    """Open one dataset's manifest and feature files; ``test_split`` evaluates only its ``test`` rows (a training
    dataset), else every row. Headers, metadata and ``groups`` are checked here; layers are read lazily by
    :meth:`EvalSet.features` (only the evaluated rows of the chosen layers)."""
    from .data import read_manifest
    from .pool import check_dataset_features
    from .reader import open_features

    df, info = read_manifest(manifest_path)
    fv = open_features(vision_path, modality="vision", manifest_sha256=info.manifest_sha256)
    ft = open_features(text_path, modality="text", manifest_sha256=info.manifest_sha256)
    check_dataset_features(fv, ft, len(df), f"dataset {info.name}")
    rows = np.flatnonzero(df["split"].to_numpy() == "test") if test_split else np.arange(len(df))
    if len(rows) == 0:
        raise EvalDataError(f"dataset {info.name} ({manifest_path}): no rows to evaluate (test_split={test_split})")
    groups = ft.groups.numpy()
    es = EvalSet(info.name, info.task, fv, ft, rows, test_split)
    if info.task == "zeroshot":
        es.labels, es.n_classes, es.text_groups = df["label"].to_numpy()[rows], len(info.classnames), groups
        return es
    position = np.full(len(df), -1, dtype=np.int64)
    position[rows] = np.arange(len(rows))
    keep = np.flatnonzero(position[groups] >= 0)
    if len(keep) == 0:
        raise EvalDataError(f"dataset {info.name} ({manifest_path}): no captions for the evaluated rows")
    es.text_rows, es.text_image_index = keep, position[groups[keep]]
    return es


def evaluate_set(aligner: Any, es: EvalSet, vision_layer: int, text_layer: int, *, duplicate_gallery: bool = False,
                 raw_prototypes: bool = False, batch_size: int = 8192,
                 device: str | torch.device = "cpu") -> dict[str, Any]:
    """Zero-shot or retrieval metrics of ``aligner`` on ``es`` at the run's layers (docs/method.md §7).

    Undefined metrics (top-5 with fewer than 5 classes) are ``None`` (JSON has no NaN).
    """
    if not (0 <= vision_layer < es.vision.n_layers and 0 <= text_layer < es.text.n_layers):
        raise EvalDataError(f"dataset {es.name}: layers ({vision_layer}, {text_layer}) outside the features "
                            f"({es.vision.path}, {es.text.path})")
    x, y = es.features(vision_layer, text_layer)
    out: dict[str, Any] = {"task": es.task, "n_images": len(es.image_rows), "test_split_only": es.test_split_only}
    if es.task == "zeroshot":
        out.update(n_texts=int(y.shape[0]), n_classes=es.n_classes)
        metrics = zero_shot_aligner(aligner, x, es.labels, y, es.text_groups, es.n_classes,
                                    raw_prototypes=raw_prototypes, batch_size=batch_size, device=device)
    else:
        out["n_texts"] = len(es.text_rows)
        metrics = retrieval_aligner(aligner, x, y, es.text_image_index, duplicate_gallery=duplicate_gallery,
                                    batch_size=batch_size, device=device)
    out["metrics"] = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in metrics.items()}
    return out
