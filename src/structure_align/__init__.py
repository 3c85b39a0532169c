"""STRUCTURE: multimodal alignment of frozen unimodal encoders with limited paired data.

Reference reproduction of Gröger, Wen, Le, Brbić (NeurIPS 2025). The public API is re-exported here lazily, so that
``import structure_align`` stays cheap and importing one part never drags in the heavy dependencies of another
(transformers, timm, open_clip are only imported by the encoder families that need them).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> defining submodule; these names are stable
_EXPORTS: dict[str, str] = {
    # STRUCTURE regulariser (docs/method.md §5.2)
    "structure_regularizer": "regularizer",
    # losses (§5.1, §5.3)
    "clip_loss": "losses",
    "alignment_loss": "losses",
    "LambdaWarmup": "losses",
    # layer similarity and selection (§3)
    "mutual_knn": "similarity",
    "cka": "similarity",
    "layer_scores": "similarity",
    "choose_layers": "similarity",
    "last_layers": "similarity",
    "similar_layers": "similarity",
    "knn_k": "similarity",
    "knn_indices": "similarity",
    "score_subsample": "similarity",
    "level_divergence": "regularizer",
    # heads and CSA (§4)
    "LinearHead": "heads",
    "MLPHead": "heads",
    "ReleasedResLowRankHead": "heads",
    "HeadAligner": "heads",
    "build_head": "heads",
    "load_aligner": "heads",
    "CSA": "csa",
    "fit_cca": "csa",
    "HEADS": "heads",
    # training (§6): configuration, pool, loop, run identity
    "TrainConfig": "trainconfig",
    "TrainResult": "train",
    "train_heads": "train",
    "lr_find": "train",
    "subsample_pairs": "pool",
    "load_pair_pool": "pool",
    "open_pair_pool": "pool",
    "validation_split": "pool",
    "RunSpec": "runs",
    "Variant": "runs",
    "train_config": "runs",
    # evaluation (§7)
    "zero_shot": "evaluate",
    "retrieval": "evaluate",
    "load_eval_set": "evaluate",
    "evaluate_set": "evaluate",
    # data, encoders, features
    "read_manifest": "data",
    "write_manifest": "data",
    "dataset_texts": "data",
    "DATASETS": "data",
    "SOURCES": "data",
    "build_manifest": "data",
    "acquire": "data",
    "dataset_spec": "data",
    "check_declaration": "data",
    "load_encoder": "encoders",
    "register_encoder": "encoders",
    "list_encoders": "encoders",
    "encoder_modality": "encoders",
    "extract_features": "extract",
    "load_features": "features",
    "FeatureFileError": "features",
    "FeatureSet": "features",
    "feature_file_info": "features",
    "open_features": "reader",
    "FeatureReader": "reader",
    # workflow parameters
    "check_params": "config",
    "load_params": "config",
}

__all__ = sorted(_EXPORTS)  # noqa: PLE0605 -- a list, built from the export table


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'structure_align' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
