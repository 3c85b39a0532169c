"""Lazy, row-sliced reads of feature files (docs/encoders.md "Feature file"; docs/design.md "Memory").

:func:`open_features` validates a feature file's header and metadata up front (and reads the small ``groups``
tensor of a text file) but no layer; :meth:`FeatureReader.read` then returns float32 rows of one layer only. The
bytes are read with plain positioned reads in bounded blocks (:data:`BLOCK_BYTES`), never through a memory map, so
the resident size of a job is what it asked for (``len(rows) x d x 4`` bytes) plus one block, whatever the number of
layers in the file and the number of rows it does not use. Before the first rows of a tensor are handed out, that
tensor alone is checked against its checksum (``io.verify_tensor``, once per tensor per process).

The values are exactly those of :func:`structure_align.features.load_features` followed by indexing: float16 ->
float32 is exact, and rows come back in the order asked for.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .features import FeatureFileError, _expect, _read_header, feature_file_info, layer_key, layer_layout
from .io import ST_TO_NP, FileFormatError, verify_tensor

# the most bytes of a file one read holds at a time (rows in between the asked ones are skipped block by block)
BLOCK_BYTES = 32 << 20
# (path, size, mtime_ns, tensor) already checked by this process
_VERIFIED: set[tuple[str, int, int, str]] = set()


def _verify_once(path: Path, name: str) -> None:
    """:func:`io.verify_tensor` for ``name`` unless this process already checked the same file version."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, name)
    if key in _VERIFIED:
        return
    try:
        verify_tensor(path, name)
    except FileFormatError as exc:
        raise FeatureFileError(f"feature file {exc}") from None
    _VERIFIED.add(key)


class FeatureReader:
    """One feature file, opened lazily: metadata, layer names and widths, ``groups``; layers on demand."""

    def __init__(self, path: Path, meta: dict[str, str], layer_names: list[str], entries: list[dict[str, Any]],
                 data_start: int, groups: torch.Tensor | None) -> None:
        self.path, self.meta, self.layer_names = path, meta, layer_names
        self._entries, self._start, self.groups = entries, data_start, groups

    @property
    def n_rows(self) -> int:
        """Number of rows (manifest rows for vision, text rows for text)."""
        return int(self.meta["n_rows"])

    @property
    def n_layers(self) -> int:
        """Number of layers in the file."""
        return len(self._entries)

    @property
    def embed_dims(self) -> list[int]:
        """Width of every layer."""
        return [int(e["shape"][1]) for e in self._entries]

    def read(self, index: int, rows: Sequence[int] | np.ndarray | None = None) -> torch.Tensor:
        """Float32 ``[len(rows), d]`` rows of layer ``index`` (all rows when ``rows`` is None), in the given order.

        Only the blocks of the file that hold asked rows are read, at most :data:`BLOCK_BYTES` at a time.
        """
        if not -self.n_layers <= index < self.n_layers:
            raise FeatureFileError(f"{self.path}: layer {index} is outside the file's {self.n_layers} layers")
        index %= self.n_layers
        _verify_once(self.path, layer_key(index))
        entry = self._entries[index]
        n, d = (int(s) for s in entry["shape"])
        idx = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
            raise FeatureFileError(f"{self.path}: rows {int(idx.min())}..{int(idx.max())} outside the {n} rows")
        dtype = ST_TO_NP[entry["dtype"]].newbyteorder("<")
        base = self._start + int(entry["data_offsets"][0])
        return torch.from_numpy(_read_rows(self.path, base, n, d, dtype, idx))


def _read_rows(path: Path, base: int, n: int, d: int, dtype: np.dtype, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of the ``[n, d]`` array stored at byte ``base`` of ``path``, as float32, block by block."""
    out = np.empty((len(rows), d), dtype=np.float32)
    if len(rows) == 0 or d == 0:
        return out
    row_bytes = d * dtype.itemsize
    per_block = max(1, BLOCK_BYTES // row_bytes)
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    with open(path, "rb", buffering=0) as fh:
        i = 0
        while i < len(ordered):
            lo = int(ordered[i])
            j = int(np.searchsorted(ordered, lo + per_block, side="left"))
            hi = int(ordered[j - 1]) + 1
            buf = bytearray((hi - lo) * row_bytes)
            fh.seek(base + lo * row_bytes)
            if fh.readinto(buf) != len(buf):
                raise FeatureFileError(f"{path}: short read at byte {base + lo * row_bytes} (file truncated?)")
            block = np.frombuffer(buf, dtype=dtype).reshape(hi - lo, d)
            out[order[i:j]] = block[ordered[i:j] - lo]
            i = j
    return out


def open_features(path: str | os.PathLike, *, encoder: str | None = None, modality: str | None = None,
                  manifest_sha256: str | None = None, dataset: str | None = None) -> FeatureReader:
    """Open a feature file lazily; every given expectation must match its metadata (else :class:`FeatureFileError`).

    The header, the metadata and every layer's shape are checked here, before any layer is read; ``groups`` (text
    files, int64 ``[N]``) is read and checked against its own checksum.
    """
    path = Path(path)
    meta = feature_file_info(path)
    for key, value in (("encoder", encoder), ("modality", modality), ("manifest_sha256", manifest_sha256),
                       ("dataset", dataset)):
        _expect(path, meta, key, value)
    header, start = _read_header(path)
    n_rows, n_layers, layer_names = layer_layout(path, meta)
    entries = []
    for i in range(n_layers):
        entry = header.get(layer_key(i))
        if entry is None:
            raise FeatureFileError(f"{path}: tensor key {layer_key(i)!r} is missing (n_layers = {n_layers})")
        if entry["dtype"] not in ("F32", "F16") or len(entry["shape"]) != 2 or entry["shape"][0] != n_rows:
            raise FeatureFileError(f"{path}: tensor {layer_key(i)!r} is {entry['dtype']} {entry['shape']}, "
                                   f"expected F32/F16 [{n_rows}, d]")
        entries.append(entry)
    groups = _read_groups(path, header, start, n_rows) if meta["modality"] == "text" else None
    return FeatureReader(path, meta, [str(n) for n in layer_names], entries, start, groups)


def _read_groups(path: Path, header: dict[str, Any], start: int, n_rows: int) -> torch.Tensor:
    """The int64 ``groups`` tensor of a text feature file (checked against its checksum first)."""
    entry = header.get("groups")
    if entry is None:
        raise FeatureFileError(f"{path}: tensor key 'groups' is missing from a text feature file")
    if entry["dtype"] != "I64" or entry["shape"] != [n_rows]:
        raise FeatureFileError(f"{path}: tensor 'groups' is {entry['dtype']} {entry['shape']}, expected int64 "
                               f"[{n_rows}]")
    _verify_once(path, "groups")
    with open(path, "rb") as fh:
        fh.seek(start + int(entry["data_offsets"][0]))
        raw = fh.read(n_rows * 8)
    return torch.from_numpy(np.frombuffer(raw, dtype="<i8").astype(np.int64))
