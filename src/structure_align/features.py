"""Feature extraction and the feature-file format (docs/encoders.md "Feature file"; docs/method.md §2).

One pass over a dataset with one encoder writes every layer into one safetensors file:

* tensors ``layer_000`` ... ``layer_{L-1}`` (``[N, d_l]``, float32 by default, float16 on request) and, for text
  files, ``groups`` (int64 ``[N]``, exactly :func:`structure_align.data.dataset_texts`'s groups);
* string metadata ``format_version``, ``encoder``, ``modality``, ``layer_names`` (JSON), ``pooling``, ``dataset``,
  ``manifest_sha256``, ``dtype``, ``n_rows``, ``n_layers`` plus ``embed_dims`` (JSON), ``encoder_description`` and
  ``limit``. No timestamps: the same inputs give byte-identical files.

Memory: pooled features of each batch are copied to CPU at once into preallocated per-layer numpy arrays, so the
resident size is the output itself plus a couple of batches, whatever N is; outputs above :data:`MEMMAP_BYTES`
(a ViT-g/14 over COCO: 40 layers x 1536 x 83k rows) live in memory-mapped scratch files beside ``out_path``
instead, so the whole set is never held in RAM. The file is then streamed from those arrays by a small safetensors
writer (no serialised copy of the whole payload is built in memory) into a temporary file that is renamed onto
``out_path`` only when complete. GPU options: DataLoader decoding workers with pinned memory (``num_workers``),
mixed-precision forwards (``autocast`` bf16/fp16), float16 storage (``dtype``); the throughput (rows/s) is logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .io import FileFormatError, read_safetensors_header, verify_safetensors, write_safetensors
from .utils import resolve_device

log = logging.getLogger(__name__)

FORMAT_VERSION = "1"
REQUIRED_META = ("format_version", "encoder", "modality", "layer_names", "pooling", "dataset", "manifest_sha256",
                 "dtype", "n_rows", "n_layers")
_NP_DTYPES = {"float32": np.float32, "float16": np.float16}
AUTOCAST = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# outputs larger than this are kept in memory-mapped scratch files instead of RAM
MEMMAP_BYTES = 1 << 30


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
    try:
        n_rows, n_layers = int(meta["n_rows"]), int(meta["n_layers"])
        layer_names = json.loads(meta["layer_names"])
    except (ValueError, json.JSONDecodeError) as exc:
        raise FeatureFileError(f"{path}: metadata keys 'n_rows'/'n_layers'/'layer_names' are malformed ({exc})") \
            from exc
    if not isinstance(layer_names, list) or len(layer_names) != n_layers:
        raise FeatureFileError(f"{path}: metadata key 'layer_names' has {len(layer_names)} entries, "
                               f"n_layers = {n_layers}")
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


# ---------------------------------------------------------------------------------------------------------------
# extraction
# ---------------------------------------------------------------------------------------------------------------

def _open_rgb(path: str) -> Image.Image:
    # transparency composited on white, as every source does (data/images.py: the one opener); imported here so
    # that reading feature files does not import every dataset module
    from .data.images import open_rgb

    return open_rgb(path)


class _ImageBatches(torch.utils.data.Dataset):
    """Batch ``k`` = decoded + preprocessed images of ``batches[k]`` (a Dataset so DataLoader workers can run it)."""

    def __init__(self, paths: Sequence[str], batches: Sequence[np.ndarray], preprocess: Callable) -> None:
        self.paths, self.batches, self.preprocess = list(paths), list(batches), preprocess

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> torch.Tensor:
        return self.preprocess([_open_rgb(self.paths[i]) for i in self.batches[k]])


def _prefetched(load: Callable[[int], Any], n: int) -> Iterator[Any]:
    """Yield ``load(0..n-1)`` while a background thread already prepares the next one (decode/compute overlap)."""
    if n == 0:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        future = pool.submit(load, 0)
        for k in range(n):
            current = future.result()
            if k + 1 < n:
                future = pool.submit(load, k + 1)
            yield current


def _batch_stream(dataset: _ImageBatches | Callable[[int], Any], n: int, num_workers: int,
                  pin: bool) -> Iterator[Any]:
    """Preprocessed batches in order: DataLoader workers when ``num_workers > 0``, else one prefetch thread."""
    if num_workers > 0 and isinstance(dataset, torch.utils.data.Dataset):
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers,
                                             pin_memory=pin, prefetch_factor=2, persistent_workers=False)
        yield from loader
    else:
        load = dataset.__getitem__ if isinstance(dataset, torch.utils.data.Dataset) else dataset
        yield from _prefetched(load, n)


def _resolve_image_paths(df: Any, manifest_path: Path) -> list[str]:
    """Manifest ``image_path`` values (relative to the working directory, or absolute); all must exist."""
    paths = [str(p) for p in df["image_path"]]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{manifest_path}: {len(missing)} of {len(paths)} image_path entries do not exist "
                                f"(relative paths resolve against {os.getcwd()}), first: {missing[:3]}")
    return paths


def _split_batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def extract_features(manifest_path: str | os.PathLike, encoder: Any, out_path: str | os.PathLike, *,
                     batch_size: int = 64, device: str | torch.device = "auto", dtype: str = "float32",
                     num_workers: int = 0, limit: int | None = None, progress: bool = True,
                     autocast: str = "none") -> Path:
    """Embed one dataset with one encoder, all layers, into ``out_path`` (docs/method.md §2; docs/encoders.md "Feature file").

    Args:
        manifest_path: the manifest parquet (or its stem); read with :func:`structure_align.data.read_manifest`.
        encoder: an :class:`~structure_align.encoders.Encoder` or a registry name.
        out_path: the ``.safetensors`` file to write (atomically).
        batch_size: images / texts per forward pass.
        device: ``auto|cpu|cuda|cuda:N``.
        dtype: storage dtype of the layers, ``float32`` or ``float16`` (computation is float32).
        num_workers: DataLoader workers decoding images; 0 = one background thread prefetching the next batch.
        limit: use only the first ``limit`` manifest rows (vision rows; for pairs/retrieval text files the captions
            of those rows; zero-shot prompt sets are not limited since they do not depend on rows).
        progress: show a tqdm bar.
        autocast: ``none``, ``bf16`` or ``fp16``: the forward passes run under ``torch.autocast`` (features are
            converted to float32, then to the storage ``dtype``).

    Vision rows = manifest rows; text rows = ``dataset_texts(df, info)`` rows (processed longest-first so that
    batches carry little padding, written back in their original order).
    """
    from .data import dataset_texts, read_manifest
    from .encoders import Encoder, load_encoder

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if dtype not in _NP_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_NP_DTYPES)}, got {dtype!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be None or >= 1, got {limit}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if autocast not in AUTOCAST:
        raise ValueError(f"autocast must be one of {sorted(AUTOCAST)}, got {autocast!r}")
    manifest_path = Path(manifest_path)
    df, info = read_manifest(manifest_path)
    if limit is not None:
        df = df.iloc[:limit].reset_index(drop=True)
    dev = resolve_device(device)
    if isinstance(encoder, str):
        encoder = load_encoder(encoder, device=dev)
    elif isinstance(encoder, Encoder):
        encoder.to(dev)
    else:
        raise TypeError(f"encoder must be an Encoder or a registry name, got {type(encoder).__name__}")

    groups: np.ndarray | None = None
    if encoder.modality == "vision":
        paths = _resolve_image_paths(df, manifest_path)
        n = len(paths)
        order = np.arange(n)
        batches = _split_batches(order, batch_size)
        source: Any = _ImageBatches(paths, batches, encoder.preprocess)
        unit = "img"
    else:
        texts, groups = dataset_texts(df, info)
        n = len(texts)
        # longest first: similar lengths share a batch, so little compute is spent on padding
        order = np.array(sorted(range(n), key=lambda i: (-len(texts[i]), i)), dtype=np.int64)
        batches = _split_batches(order, batch_size)

        def source(k: int) -> dict[str, torch.Tensor]:
            return encoder.tokenize([texts[i] for i in batches[k]])
        unit = "text"
    if n == 0:
        raise ValueError(f"{manifest_path}: no {encoder.modality} rows to embed for dataset {info.name!r}")

    with contextlib.ExitStack() as stack:
        outputs = _output_arrays(n, encoder.embed_dims, _NP_DTYPES[dtype], Path(out_path), stack)
        log.info("extracting %s features of %s (%d rows, %d layers, %.1f MB output%s) on %s, autocast %s",
                 encoder.name, info.name, n, len(outputs), sum(a.nbytes for a in outputs) / 2**20,
                 ", memory-mapped" if isinstance(outputs[0], np.memmap) else "", dev, autocast)
        _run_batches(encoder, batches, _batch_stream(source, len(batches), num_workers if unit == "img" else 0,
                                                     dev.type == "cuda"),
                     outputs, dev, autocast, progress, unit, f"{info.name}/{encoder.name}")
        out = _write_feature_file(out_path, outputs, groups, encoder, info, dtype, n, limit)
    return out


def _output_arrays(n: int, dims: Sequence[int], np_dtype: Any, out_path: Path,
                   stack: contextlib.ExitStack) -> list[np.ndarray]:
    """Per-layer ``[n, d]`` arrays: in RAM, or memory-mapped scratch files beside ``out_path`` when large."""
    total = n * sum(dims) * np.dtype(np_dtype).itemsize
    if total <= MEMMAP_BYTES:
        return [np.empty((n, d), dtype=np_dtype) for d in dims]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=".extract.", dir=out_path.parent)))
    return [np.memmap(scratch / f"layer_{i:03d}.bin", dtype=np_dtype, mode="w+", shape=(n, d))
            for i, d in enumerate(dims)]


def _run_batches(encoder: Any, batches: Sequence[np.ndarray], stream: Iterator[Any], outputs: list[np.ndarray],
                 dev: torch.device, autocast: str, progress: bool, unit: str, desc: str) -> None:
    """Forward every batch (under autocast when asked) and copy each layer into ``outputs``; log rows/s."""
    n = sum(len(b) for b in batches)
    bar = tqdm(total=n, unit=unit, disable=not progress, desc=desc)
    amp = AUTOCAST[autocast]
    start = time.perf_counter()
    encoder.model.eval()
    with torch.inference_mode(), (torch.autocast(device_type=dev.type, dtype=amp) if amp is not None
                                  else contextlib.nullcontext()):
        for idx, batch in zip(batches, stream, strict=True):
            feats = encoder.forward_layers(batch)
            if len(feats) != len(outputs):
                raise RuntimeError(f"encoder {encoder.name} returned {len(feats)} layers, declared {len(outputs)}")
            for out, f in zip(outputs, feats, strict=True):
                if f.shape != (len(idx), out.shape[1]):
                    raise RuntimeError(f"encoder {encoder.name} returned a layer of shape {tuple(f.shape)}, expected "
                                       f"{(len(idx), out.shape[1])}")
                out[idx] = f.detach().to("cpu", torch.float32).numpy()
            bar.update(len(idx))
    bar.close()
    seconds = time.perf_counter() - start
    log.info("throughput: %d %ss in %.1f s = %.1f %ss/s (%s, autocast %s)", n, unit, seconds,
             n / max(seconds, 1e-9), unit, dev, autocast)


def _write_feature_file(out_path: str | os.PathLike, outputs: list[np.ndarray], groups: np.ndarray | None,
                        encoder: Any, info: Any, dtype: str, n: int, limit: int | None) -> Path:
    """The safetensors feature file with its metadata (module docstring)."""
    tensors = {layer_key(i): a for i, a in enumerate(outputs)}
    if groups is not None:
        tensors["groups"] = groups.astype(np.int64)
    meta = {
        "format_version": FORMAT_VERSION, "encoder": encoder.name, "modality": encoder.modality,
        "layer_names": json.dumps(list(encoder.layer_names)), "pooling": encoder.pooling, "dataset": info.name,
        "manifest_sha256": info.manifest_sha256, "dtype": dtype, "n_rows": str(n), "n_layers": str(len(outputs)),
        "embed_dims": json.dumps([int(d) for d in encoder.embed_dims]),
        "encoder_description": encoder.description, "limit": "" if limit is None else str(limit),
    }
    out = write_safetensors(out_path, tensors, meta)
    log.info("wrote %s", out)
    return out
