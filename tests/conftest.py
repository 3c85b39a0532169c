"""Shared fixtures: toy manifests and feature files written through the package's own writers (no models).

``toy_data`` lays out what the workflow's steps read, under a temporary results folder: a pairs dataset
(``toypairs``: 60 images, 2 captions each, 25 % test split) and a zero-shot set (``toyzs``: 30 images, 3 classes,
2 templates), each with a vision and a text feature file whose layers share a latent structure, so that training
and evaluation give meaningful (non-random) numbers within seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from structure_align.data import DatasetInfo, write_manifest
from structure_align.features import FORMAT_VERSION, layer_key
from structure_align.io import write_safetensors

N_PAIRS, N_ZS, N_CLASSES = 60, 30, 3
V_DIMS, T_DIMS = (6, 8, 8), (5, 7)


def write_features(path: Path, layers: list[np.ndarray], modality: str, dataset: str, manifest_sha256: str,
                   groups: np.ndarray | None = None, encoder: str | None = None) -> Path:
    """A feature file in the documented format (docs/encoders.md "Feature file")."""
    tensors = {layer_key(i): np.asarray(x, dtype=np.float32) for i, x in enumerate(layers)}
    if groups is not None:
        tensors["groups"] = np.asarray(groups, dtype=np.int64)
    meta = {"format_version": FORMAT_VERSION, "encoder": encoder or f"toy-{modality}", "modality": modality,
            "layer_names": json.dumps([f"{modality}{i}" for i in range(len(layers))]), "pooling": "mean",
            "dataset": dataset, "manifest_sha256": manifest_sha256, "dtype": "float32",
            "n_rows": str(layers[0].shape[0]), "n_layers": str(len(layers))}
    return write_safetensors(path, tensors, meta)


@dataclass
class ToyData:
    """Paths of the toy datasets under ``root`` (the results folder of a toy run)."""

    root: Path

    def manifest(self, dataset: str) -> Path:
        return self.root / "manifests" / f"{dataset}.parquet"

    def features(self, dataset: str, modality: str) -> Path:
        return self.root / "features" / dataset / f"{modality[0]}.safetensors"

    def pool_args(self) -> tuple[list[str], list[str], list[str]]:
        """(vision files, text files, manifests) of the training pool (toypairs)."""
        return ([str(self.features("toypairs", "vision"))], [str(self.features("toypairs", "text"))],
                [str(self.manifest("toypairs"))])

    def eval_records(self) -> list[dict]:
        """Evaluation records as the workflow passes them (toypairs on its test split, toyzs on every row)."""
        return [{"name": d, "vision": str(self.features(d, "vision")), "text": str(self.features(d, "text")),
                 "manifest": str(self.manifest(d)), "test_split": d == "toypairs"} for d in ("toypairs", "toyzs")]


def _pairs(root: Path, rng: np.random.Generator, mix: list[np.ndarray]) -> None:
    latent = rng.normal(size=(N_PAIRS, 4))
    df = pd.DataFrame({"sample_id": [f"p{i}" for i in range(N_PAIRS)],
                       "image_path": [f"img/p{i}.png" for i in range(N_PAIRS)],
                       "captions": [[f"thing {i}", f"object {i}"] for i in range(N_PAIRS)], "label": -1,
                       "split": ["test" if i % 4 == 0 else "train" for i in range(N_PAIRS)], "source": "toy",
                       "version": "1"})
    info = write_manifest(df, DatasetInfo(name="toypairs", task="pairs", source="toy", version="1"),
                          root / "manifests/toypairs.parquet")
    vision = [latent @ mix[i] + 0.1 * rng.normal(size=(N_PAIRS, d)) for i, d in enumerate(V_DIMS)]
    text_rows = np.repeat(latent, 2, axis=0)
    text = [text_rows @ mix[len(V_DIMS) + j] + 0.1 * rng.normal(size=(2 * N_PAIRS, d)) for j, d in enumerate(T_DIMS)]
    write_features(root / "features/toypairs/v.safetensors", vision, "vision", "toypairs", info.manifest_sha256)
    write_features(root / "features/toypairs/t.safetensors", text, "text", "toypairs", info.manifest_sha256,
                   np.repeat(np.arange(N_PAIRS), 2))


def _zeroshot(root: Path, rng: np.random.Generator, mix: list[np.ndarray]) -> None:
    labels = np.arange(N_ZS) % N_CLASSES
    df = pd.DataFrame({"sample_id": [f"z{i}" for i in range(N_ZS)],
                       "image_path": [f"img/z{i}.png" for i in range(N_ZS)], "captions": [[] for _ in range(N_ZS)],
                       "label": labels.astype(np.int64), "split": "test", "source": "toy", "version": "1"})
    info = write_manifest(df, DatasetInfo(name="toyzs", task="zeroshot", classnames=["a", "b", "c"],
                                          templates=["a {}", "the {}"], source="toy", version="1"),
                          root / "manifests/toyzs.parquet")
    centers = rng.normal(size=(N_CLASSES, 4))
    images = centers[labels] + 0.05 * rng.normal(size=(N_ZS, 4))
    prompts = np.repeat(centers, 2, axis=0)
    write_features(root / "features/toyzs/v.safetensors", [images @ mix[i] for i in range(len(V_DIMS))], "vision",
                   "toyzs", info.manifest_sha256)
    write_features(root / "features/toyzs/t.safetensors",
                   [prompts @ mix[len(V_DIMS) + j] for j in range(len(T_DIMS))], "text", "toyzs",
                   info.manifest_sha256, np.repeat(np.arange(N_CLASSES), 2))


@pytest.fixture()
def toy_data(tmp_path: Path) -> ToyData:
    """Toy manifests + features under ``tmp_path/results`` (see the module docstring)."""
    root = tmp_path / "results"
    rng = np.random.default_rng(0)
    mix = [rng.normal(size=(4, d)) for d in V_DIMS + T_DIMS]
    _pairs(root, rng, mix)
    _zeroshot(root, rng, mix)
    return ToyData(root)


def toy_params(**overrides) -> dict:
    """A small params dict (the training/structure/csa blocks the train step reads), overridable by block."""
    params = {
        "training": {"fractions": [0.5], "seeds": [3], "val_fraction": 0.2, "val_seed": 0, "batch_size": 16,
                     "epochs": 3, "patience": 2, "lr": 0.01, "lr_finder": False, "weight_decay": 1e-4,
                     "temperature": 0.05, "dim": 4},
        "structure": {"lambda": 10, "levels": 1, "tau": 0.05, "warmup_steps": 2, "weighting": "none",
                      "distance": "cosine"},
        "csa": {},
    }
    for block, values in overrides.items():
        params[block] = {**params.get(block, {}), **values}
    return params


@pytest.fixture(scope="session")
def smoke_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted smoke workflow run in a temporary copy of the repository, shared by the workflow tests
    (tests/test_workflow.py checks its outputs, tests/test_reliability.py compares killed-and-rerun copies with it)."""
    from test_workflow import RUN_TIMEOUT, SMOKE, _copy_repo, _snakemake

    repo = _copy_repo(tmp_path_factory.mktemp("repo"))
    _snakemake(repo, "--configfile", SMOKE, timeout=RUN_TIMEOUT)
    return repo
