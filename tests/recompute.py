"""Independent recomputations for the wiring tests (issue 25): what a run's ``metrics.json`` and the "Similar"
layer choice must be, derived straight from the files without the step code under test.

The feature files are read with ``safetensors.numpy`` (not ``features.load_features``), the evaluated rows, caption
groups and labels are derived from the manifest here (not ``evaluate.load_eval_set``), and the mutual k-NN score is
a brute-force numpy reference (not ``similarity``'s neighbour tables). Only the metric functions ``retrieval`` /
``zero_shot`` (verified against hand-computed values in tests/test_evaluate.py) and the saved heads are shared.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file

from structure_align.data import read_manifest
from structure_align.evaluate import retrieval, zero_shot
from structure_align.heads import load_aligner


def _layer(tensors: Mapping[str, np.ndarray], index: int) -> np.ndarray:
    return tensors[f"layer_{index:03d}"]


def _raw_prototypes(text: np.ndarray, groups: np.ndarray, n_classes: int) -> np.ndarray:
    """Released CSA path (docs/method.md §7.1): normalise every prompt, average per class, re-normalise."""
    unit = text / np.linalg.norm(text, axis=1, keepdims=True)
    protos = np.stack([unit[groups == c].mean(axis=0) for c in range(n_classes)])
    return (protos / np.linalg.norm(protos, axis=1, keepdims=True)).astype(np.float32)


@torch.inference_mode()
def expected_dataset_metrics(aligner: Any, record: Mapping[str, Any], vision_layer: int, text_layer: int, *,
                             duplicate_gallery: bool, raw_prototypes: bool) -> dict[str, Any]:
    """The ``datasets[name]`` entry of ``metrics.json`` for one aligner and one evaluation record."""
    df, info = read_manifest(record["manifest"])
    vision, text = load_file(str(record["vision"])), load_file(str(record["text"]))
    rows = [r for r in range(len(df)) if not record["test_split"] or df["split"].iloc[r] == "test"]
    image = aligner.encode_image(torch.from_numpy(_layer(vision, vision_layer)[rows]))
    captions, groups = _layer(text, text_layer), text["groups"]
    out: dict[str, Any] = {"task": info.task, "n_images": len(rows), "test_split_only": bool(record["test_split"])}
    if info.task == "zeroshot":
        n_classes = len(info.classnames)
        labels = [int(df["label"].iloc[r]) for r in rows]
        out.update(n_texts=len(captions), n_classes=n_classes)
        if raw_prototypes:
            prompts, prompt_groups = _raw_prototypes(captions, groups, n_classes), np.arange(n_classes)
        else:
            prompts, prompt_groups = captions, groups
        metrics = zero_shot(image, labels, aligner.encode_text(torch.from_numpy(prompts)), prompt_groups, n_classes)
    else:
        position = {row: k for k, row in enumerate(rows)}  # image row -> its place among the evaluated images
        keep = [c for c, g in enumerate(groups) if int(g) in position]
        out["n_texts"] = len(keep)
        metrics = retrieval(image, aligner.encode_text(torch.from_numpy(captions[keep])),
                            [position[int(groups[c])] for c in keep], duplicate_gallery=duplicate_gallery)
    out["metrics"] = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in metrics.items()}
    return out


def expected_run_metrics(run_dir: str | Path, records: Sequence[Mapping[str, Any]],
                         evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """The ``datasets`` block of a run's ``metrics.json``, from its heads, its train record and the files."""
    run_dir = Path(run_dir)
    info = json.loads((run_dir / "train.json").read_text())
    aligner = load_aligner(run_dir / "heads.safetensors")
    aligner.eval()
    raw = bool(evaluation.get("csa_raw_prototypes", False)) and info["head"] == "csa"
    return {r["name"]: expected_dataset_metrics(aligner, r, int(info["vision_layer"]), int(info["text_layer"]),
                                                duplicate_gallery=bool(evaluation["duplicate_gallery"]),
                                                raw_prototypes=raw) for r in records}


def knn_sets(x: np.ndarray, k: int) -> list[set[int]]:
    """Brute force: each row's k most cosine-similar other rows (float64)."""
    z = np.asarray(x, dtype=np.float64)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)
    return [set(np.argsort(-row, kind="stable")[:k].tolist()) for row in sim]


def mutual_knn_counts(vision: Sequence[np.ndarray], text: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Integer grid: Σ_i |kNN_v(i) ∩ kNN_t(i)| for every (vision layer, text layer) (docs/method.md §3.1)."""
    vs, ts = [knn_sets(v, k) for v in vision], [knn_sets(t, k) for t in text]
    return np.array([[sum(len(a & b) for a, b in zip(va, tb)) for tb in ts] for va in vs], dtype=np.int64)


def similar_pair(counts: np.ndarray) -> tuple[int, int]:
    """The highest-scoring pair, ties to the first in row-major order (docs/method.md §3.2)."""
    best = max((int(counts[i, j]), -i, -j) for i in range(counts.shape[0]) for j in range(counts.shape[1]))
    return -best[1], -best[2]
