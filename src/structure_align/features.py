"""The feature-file format and its readers (docs/encoders.md "Feature file"; docs/method.md §2).

One pass over a dataset with one encoder (:mod:`structure_align.extract`) writes every layer into one safetensors
file:

* tensors ``layer_000`` ... ``layer_{L-1}`` (``[N, d_l]``, float32 by default, float16 on request) and, for text
  files, ``groups`` (int64 ``[N]``: the manifest row of each text row, :func:`structure_align.extract.
  extraction_texts`);
* string metadata ``format_version``, ``encoder``, ``modality``, ``layer_names`` (JSON), ``pooling``, ``dataset``,
  ``manifest_sha256``, ``dtype``, ``n_rows``, ``n_layers`` plus ``embed_dims`` (JSON), ``encoder_description``,
  ``limit``, ``precision``, ``autocast`` (and ``train_captions`` for training sets' text files), and the writer's
  checksums ``tensor_sha256`` / ``content_sha256``. No timestamps: the same inputs give byte-identical files.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .io import FileFormatError, read_safetensors_header, verify_safetensors

FORMAT_VERSION = "1"
REQUIRED_META = ("format_version", "encoder", "modality", "layer_names", "pooling", "dataset", "manifest_sha256",
                 "dtype", "n_rows", "n_layers")


class FeatureFileError(FileFormatError):
    """A feature file is missing, truncated, corrupted or does not match what the caller expects (names the file and
    the key)."""


@dataclass
class FeatureSet:
    """A loaded feature file: ``layers[l]`` is a float32 ``[N, d_l]`` tensor."""

    layers: list[torch.Tensor]
    layer_names: list[str]
    groups: torch.Tensor | None
    meta: dict[str, str] = field(default_factory=dict)
    path: Path | None = None

    @property
    def n_rows(self) -> int:
        """Number of rows (manifest rows for vision, text rows for text)."""
        return int(self.layers[0].shape[0]) if self.layers else 0

    @property
    def embed_dims(self) -> list[int]:
        """Width of every layer."""
        return [int(t.shape[1]) for t in self.layers]

    def layer(self, index: int) -> torch.Tensor:
        """One layer by index (negative indices count from the last layer, docs/method.md §2)."""
        return self.layers[index]


def layer_key(index: int) -> str:
    """Tensor name of layer ``index`` in a feature file."""
    return f"layer_{index:03d}"


# ---------------------------------------------------------------------------------------------------------------
# safetensors I/O
# ---------------------------------------------------------------------------------------------------------------

def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    """:func:`io.read_safetensors_header` with the feature file's own error type."""
    try:
        return read_safetensors_header(path)
    except FileFormatError as exc:
        raise FeatureFileError(f"feature file {exc}") from None


def _verify(path: Path) -> None:
    """:func:`io.verify_safetensors` (content checksum) with the feature file's own error type."""
    try:
        verify_safetensors(path)
    except FileFormatError as exc:
        raise FeatureFileError(f"feature file {exc}") from None


def feature_file_info(path: str | os.PathLike) -> dict[str, str]:
    """Metadata of a feature file, reading only its header (validates that the file is complete)."""
    path = Path(path)
    header, _ = _read_header(path)
    meta = header.get("__metadata__")
    if not isinstance(meta, dict):
        raise FeatureFileError(f"{path}: key '__metadata__' is missing from the safetensors header")
    for key in REQUIRED_META:
        if key not in meta:
            raise FeatureFileError(f"{path}: metadata key {key!r} is missing")
    if meta["format_version"] != FORMAT_VERSION:
        raise FeatureFileError(f"{path}: metadata key 'format_version' = {meta['format_version']!r}, this code reads "
                               f"{FORMAT_VERSION!r}; re-extract the features")
    return dict(meta)


def _expect(path: Path, meta: dict[str, str], key: str, expected: str | None) -> None:
    if expected is not None and meta.get(key) != str(expected):
        raise FeatureFileError(f"{path}: metadata key {key!r} = {meta.get(key)!r}, expected {expected!r}")


def layer_layout(path: Path, meta: dict[str, str]) -> tuple[int, int, list[str]]:
    """``(n_rows, n_layers, layer_names)`` from a feature file's metadata, checked for consistency."""
    try:
        n_rows, n_layers = int(meta["n_rows"]), int(meta["n_layers"])
        layer_names = json.loads(meta["layer_names"])
    except (ValueError, json.JSONDecodeError) as exc:
        raise FeatureFileError(f"{path}: metadata keys 'n_rows'/'n_layers'/'layer_names' are malformed ({exc})") \
            from exc
    if not isinstance(layer_names, list) or len(layer_names) != n_layers:
        raise FeatureFileError(f"{path}: metadata key 'layer_names' does not have n_layers = {n_layers} entries")
    return n_rows, n_layers, layer_names


def load_features(path: str | os.PathLike, *, encoder: str | None = None, modality: str | None = None,
                  manifest_sha256: str | None = None, dataset: str | None = None) -> FeatureSet:
    """Load a feature file; every given expectation must match its metadata (else :class:`FeatureFileError`).

    The whole file is checked against its content checksum first, so a truncated or bit-flipped file is refused
    before any tensor is handed out.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    meta = feature_file_info(path)
    _verify(path)
    _expect(path, meta, "encoder", encoder)
    _expect(path, meta, "modality", modality)
    _expect(path, meta, "manifest_sha256", manifest_sha256)
    _expect(path, meta, "dataset", dataset)
    n_rows, n_layers, layer_names = layer_layout(path, meta)
    layers: list[torch.Tensor] = []
    groups: torch.Tensor | None = None
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            for i in range(n_layers):
                key = layer_key(i)
                if key not in keys:
                    raise FeatureFileError(f"{path}: tensor key {key!r} is missing (n_layers = {n_layers})")
                t = f.get_tensor(key)
                if t.dim() != 2 or t.shape[0] != n_rows:
                    raise FeatureFileError(f"{path}: tensor {key!r} has shape {tuple(t.shape)}, expected "
                                           f"[{n_rows}, d]")
                layers.append(t.float())
            if meta["modality"] == "text":
                if "groups" not in keys:
                    raise FeatureFileError(f"{path}: tensor key 'groups' is missing from a text feature file")
                groups = f.get_tensor("groups")
                if groups.dtype != torch.int64 or tuple(groups.shape) != (n_rows,):
                    raise FeatureFileError(f"{path}: tensor 'groups' is {groups.dtype} {tuple(groups.shape)}, "
                                           f"expected int64 [{n_rows}]")
    except SafetensorError as exc:
        raise FeatureFileError(f"{path}: unreadable safetensors file ({exc})") from exc
    return FeatureSet(layers=layers, layer_names=[str(n) for n in layer_names], groups=groups, meta=meta, path=path)
