"""File I/O shared by every module: atomic writes, JSON, sha256, write-if-changed and the safetensors format.

Every artifact of the package is written through this module, so that a reader (or a killed job) never sees a
half-written file and the same content always gives the same bytes. safetensors files are written by a small
writer (:class:`SafetensorsFileWriter`: tensors in a fixed order, metadata in insertion order, header length reserved
so that rows can be written in place) because the official writer orders the metadata by hash, which changes the
bytes from run to run. Every file the writer produces carries the sha256 of each tensor's raw bytes in the metadata
key ``tensor_sha256`` and a sha256 of its header and payload in ``content_sha256``; :func:`verify_safetensors` checks it (and
:func:`read_safetensors_header` the file size) before a loader hands out any tensor, so a truncated or bit-flipped
file is refused with its name instead of feeding wrong numbers into a result (docs/reliability.md "Corruption").
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import struct
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

# numpy dtype <-> safetensors dtype code (the subset the package writes)
ST_DTYPES: dict[np.dtype, str] = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
                                  np.dtype(np.float64): "F64", np.dtype(np.int64): "I64"}
ST_TO_NP: dict[str, np.dtype] = {v: k for k, v in ST_DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024
# metadata key of the content checksum written by write_safetensors (sha256 of the canonical header + payload)
CHECKSUM_KEY = "content_sha256"
# metadata key of the per-tensor checksums: JSON {tensor name: sha256 of its raw bytes}, keys sorted
TENSOR_CHECKSUM_KEY = "tensor_sha256"


class FileFormatError(ValueError):
    """A file is missing, truncated or corrupted; the message names the file (and the key, where there is one)."""


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    The temp file lives in the destination directory so the final ``os.replace`` is atomic on POSIX: a reader (or a
    killed job) never sees a half-written artifact, and a failure leaves any previous version untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a UTF-8 text file atomically (see :func:`atomic_write`)."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, data: Any, *, sort_keys: bool = True) -> None:
    """Write ``data`` as indented JSON with a trailing newline, atomically; NaN/inf are refused (not JSON)."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=sort_keys, allow_nan=False, ensure_ascii=False)
                      + "\n")


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Parse a JSON file; a missing or malformed file raises :class:`FileFormatError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileFormatError(f"{what} {path} is not valid JSON ({exc}); delete it and rerun the step that "
                              f"writes it") from exc


def write_bytes_if_changed(path: str | os.PathLike, data: bytes) -> bool:
    """Write ``data`` atomically unless ``path`` already holds exactly these bytes; True when it wrote.

    Keeps the mtime of unchanged materialised images, so rebuilding a manifest does not look like new input.
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return True


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed in ``chunk``-byte blocks."""
    return file_digest(path, "sha256", chunk)


def file_digest(path: str | os.PathLike, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file with a :mod:`hashlib` algorithm (``sha256``, or ``md5`` where a publisher gives only
    that), streamed in ``chunk``-byte blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------------------------------------------

def _header_dict(tensors: Mapping[str, tuple[np.dtype, tuple[int, ...]]],
                 metadata: Mapping[str, str]) -> tuple[dict[str, Any], list[str], int]:
    """The header as a dict, tensor names in file order (8-byte dtypes first: aligned) and the payload size."""
    header: dict[str, Any] = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}}
    order = sorted(tensors, key=lambda n: (-np.dtype(tensors[n][0]).itemsize, n))
    offset = 0
    for name in order:
        dtype, shape = np.dtype(tensors[name][0]), tuple(int(s) for s in tensors[name][1])
        if dtype not in ST_DTYPES:
            raise TypeError(f"tensor {name!r}: dtype {dtype} is not supported by the safetensors writer")
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        header[name] = {"dtype": ST_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    return header, order, offset


def safetensors_header(tensors: Mapping[str, tuple[np.dtype, tuple[int, ...]]],
                       metadata: Mapping[str, str]) -> tuple[bytes, list[str], int]:
    """The serialised header for tensors given as ``name -> (dtype, shape)``.

    Returns ``(header bytes incl. the 8-byte length prefix, tensor names in file order, payload size)``. 8-byte
    dtypes come first, so every tensor is naturally aligned in the file.
    """
    header, order, size = _header_dict(tensors, metadata)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, order, size


def _content_digest(header: Mapping[str, Any], chunks: Iterable[bytes | memoryview]) -> str:
    """sha256 of the header (canonical JSON, without the checksum itself) followed by the payload bytes."""
    meta = {k: v for k, v in (header.get("__metadata__") or {}).items() if k != CHECKSUM_KEY}
    canonical = json.dumps({**header, "__metadata__": meta}, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("utf-8"))
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> Path:
    """Write numpy arrays as a safetensors file through :class:`SafetensorsFileWriter` (atomic).

    Layout (the safetensors spec): 8-byte little-endian header length, JSON header padded with spaces to a multiple
    of 8, then the raw little-endian bytes of the tensors back to back. Same arrays + metadata = same bytes, and the
    same bytes as a file filled incrementally by the writer (one code path).
    """
    arrays = {name: np.ascontiguousarray(a) for name, a in tensors.items()}
    for name, arr in arrays.items():
        if arr.dtype not in ST_DTYPES:
            raise TypeError(f"tensor {name!r}: dtype {arr.dtype} is not supported by the safetensors writer")
        arrays[name] = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    path = Path(path)
    with atomic_write(path) as tmp:
        writer = SafetensorsFileWriter(tmp, {n: (a.dtype, a.shape) for n, a in arrays.items()}, metadata)
        for name, arr in arrays.items():
            writer.write_tensor(name, arr)
        writer.finalize()
    return path


# ---------------------------------------------------------------------------------------------------------------
# incremental safetensors writer (docs/encoders.md "Feature file": reserved header, rows written in place)
# ---------------------------------------------------------------------------------------------------------------

_HEX_PLACEHOLDER = "0" * 64


def _checksummed_header(specs: Mapping[str, tuple[np.dtype, tuple[int, ...]]], metadata: Mapping[str, str],
                        tensor_sha: Mapping[str, str], content_sha: str) -> bytes:
    """The serialised header with both checksum keys (their hex strings have a fixed length, so the header length
    does not depend on the values: it can be reserved before any tensor byte is known)."""
    meta = {**metadata, TENSOR_CHECKSUM_KEY: tensor_checksums_json(tensor_sha), CHECKSUM_KEY: content_sha}
    head, _, _ = safetensors_header(specs, meta)
    return head


class SafetensorsFileWriter:
    """A safetensors file preallocated at its final size and filled in place, then checksummed.

    The header length is computed in advance with placeholder checksums (fixed-length hex), so the payload offsets
    are known before any data exists: tensors (or row blocks of them, through :meth:`rows`) are written straight to
    their offsets, and :meth:`finalize` re-reads the payload in bounded chunks for the per-tensor
    (``tensor_sha256``) and content (``content_sha256``) checksums, writes the header and fsyncs. There is no
    scratch copy: peak disk is the file itself. ``resume=True`` reopens an existing file of the expected size (the
    caller vouches, e.g. via a progress file, that its filled part belongs to the same inputs).
    """

    def __init__(self, path: str | os.PathLike, specs: Mapping[str, tuple[Any, tuple[int, ...]]],
                 metadata: Mapping[str, str], *, resume: bool = False) -> None:
        for key in (CHECKSUM_KEY, TENSOR_CHECKSUM_KEY):
            if key in metadata:
                raise ValueError(f"metadata key {key!r} is reserved for the writer's checksums")
        self.path = Path(path)
        self.specs = {n: (np.dtype(d).newbyteorder("<"), tuple(int(s) for s in shape)) for n, (d, shape) in
                      specs.items()}
        self.metadata = {str(k): str(v) for k, v in metadata.items()}
        bare, self.order, self.payload_size = _header_dict(self.specs, self.metadata)
        self.offsets = {n: tuple(bare[n]["data_offsets"]) for n in self.order}
        self.data_start = len(_checksummed_header(self.specs, self.metadata, dict.fromkeys(self.order,
                                                  _HEX_PLACEHOLDER), _HEX_PLACEHOLDER))
        size = self.data_start + self.payload_size
        self._maps: list[np.memmap] = []
        if resume:
            if not self.path.is_file() or self.path.stat().st_size != size:
                raise FileFormatError(f"{self.path}: cannot resume, expected a partial file of {size} bytes")
        else:
            with open(self.path, "wb") as f:
                f.truncate(size)  # sparse where the filesystem allows: no bytes are written twice

    def rows(self, name: str) -> np.ndarray:
        """A writable memory map of tensor ``name`` inside the file (fill it row block by row block)."""
        dtype, shape = self.specs[name]
        start, stop = self.offsets[name]
        if stop == start:
            return np.empty(shape, dtype=dtype)
        rows = np.memmap(self.path, dtype=dtype, mode="r+", offset=self.data_start + start, shape=shape)
        self._maps.append(rows)
        return rows

    def flush(self) -> None:
        """Write the rows filled so far to disk, then drop their pages from this process (``MADV_DONTNEED`` on the
        flushed shared mapping: the data stays in the file), so resident memory does not grow with the file."""
        for rows in self._maps:
            rows.flush()
            mapping = getattr(rows, "_mmap", None)
            if mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
                mapping.madvise(mmap.MADV_DONTNEED)

    def write_tensor(self, name: str, array: np.ndarray) -> None:
        """Write a whole tensor at its offset."""
        dtype, shape = self.specs[name]
        arr = np.ascontiguousarray(array, dtype=dtype)
        if arr.shape != shape:
            raise ValueError(f"tensor {name!r}: shape {arr.shape}, the header declares {shape}")
        with open(self.path, "r+b") as f:
            f.seek(self.data_start + self.offsets[name][0])
            f.write(memoryview(arr.reshape(-1)).cast("B") if arr.nbytes else b"")

    def _chunks(self, f: Any, start: int, stop: int, chunk: int) -> Iterator[bytes]:
        f.seek(self.data_start + start)
        left = stop - start
        while left > 0:
            block = f.read(min(chunk, left))
            if not block:
                raise FileFormatError(f"{self.path}: file ended early while checksumming")
            left -= len(block)
            yield block

    def finalize(self, chunk: int = 1 << 24) -> None:
        """Checksum the payload (bounded reads), write the header, fsync."""
        with open(self.path, "r+b") as f:
            tensor_sha = {}
            for name in self.order:
                digest = hashlib.sha256()
                for block in self._chunks(f, *self.offsets[name], chunk):
                    digest.update(block)
                tensor_sha[name] = digest.hexdigest()
            meta = {**self.metadata, TENSOR_CHECKSUM_KEY: tensor_checksums_json(tensor_sha)}
            bare, _, _ = _header_dict(self.specs, meta)
            content = _content_digest(bare, self._chunks(f, 0, self.payload_size, chunk))
            head = _checksummed_header(self.specs, self.metadata, tensor_sha, content)
            if len(head) != self.data_start:
                raise AssertionError(f"{self.path}: header length changed ({len(head)} != {self.data_start})")
            f.seek(0)
            f.write(head)
            f.flush()
            os.fsync(f.fileno())


def read_safetensors_header(path: str | os.PathLike) -> tuple[dict[str, Any], int]:
    """Parse and validate a safetensors header: ``(header, data_start)``.

    The file size must equal header + payload exactly, so a truncated (or padded) file is refused before any tensor
    is read; every failure is a :class:`FileFormatError` naming the file and, where it applies, the key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{path} does not exist")
    size = path.stat().st_size
    with open(path, "rb") as f:
        first = f.read(8)
        if len(first) < 8:
            raise FileFormatError(f"{path}: truncated file ({size} bytes, no safetensors header)")
        (n,) = struct.unpack("<Q", first)
        if n > min(_MAX_HEADER, size - 8):
            raise FileFormatError(f"{path}: corrupted or truncated header (header length {n}, file size {size})")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileFormatError(f"{path}: corrupted safetensors header ({exc})") from exc
    if not isinstance(header, dict):
        raise FileFormatError(f"{path}: corrupted safetensors header (not a JSON object)")
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            start, stop = (int(v) for v in entry["data_offsets"])
            count = int(np.prod(entry["shape"], dtype=np.int64))
            itemsize = ST_TO_NP[entry["dtype"]].itemsize
        except (KeyError, TypeError, ValueError) as exc:
            raise FileFormatError(f"{path}: key {key!r} has a malformed header entry ({exc})") from exc
        if stop - start != count * itemsize:
            raise FileFormatError(f"{path}: key {key!r} has offsets {start}..{stop} that do not fit shape "
                                  f"{entry['shape']} ({entry['dtype']})")
        end = max(end, stop)
    if size != 8 + n + end:
        raise FileFormatError(f"{path}: truncated or padded file: {size} bytes on disk, header describes "
                              f"{8 + n + end}")
    return header, 8 + n


def verify_safetensors(path: str | os.PathLike, chunk: int = 1 << 20) -> tuple[dict[str, Any], int]:
    """:func:`read_safetensors_header`, then the content checksum (metadata ``content_sha256``) over the whole file.

    A file without the checksum (written by another writer or an older version of the package) or whose header or
    payload no longer matches it raises :class:`FileFormatError` naming the file. Returns ``(header, data_start)``.
    """
    header, start = read_safetensors_header(path)
    meta = header.get("__metadata__")
    expected = meta.get(CHECKSUM_KEY) if isinstance(meta, dict) else None
    if not isinstance(expected, str):
        raise FileFormatError(f"{path}: metadata key {CHECKSUM_KEY!r} is missing (not written by this package's "
                              f"writer, or corrupted); delete the file and rerun the step that writes it")
    with open(path, "rb") as fh:
        fh.seek(start)
        actual = _content_digest(header, iter(lambda: fh.read(chunk), b""))
    if actual != expected:
        raise FileFormatError(f"{path}: corrupted file: its content does not match the checksum in metadata key "
                              f"{CHECKSUM_KEY!r}; delete the file and rerun the step that writes it")
    return header, start


def tensor_checksums_json(digests: Mapping[str, str]) -> str:
    """The value of metadata key ``tensor_sha256``: ``{tensor name: sha256 hex of its raw bytes}`` as sorted JSON.

    Every writer of the package (this one and the streaming extraction writer) emits exactly this string, so that a
    reader can check one tensor (:func:`verify_tensor`) without reading the rest of the file.
    """
    return json.dumps({str(k): str(v) for k, v in digests.items()}, sort_keys=True)


def verify_tensor(path: str | os.PathLike, name: str, chunk: int = 1 << 20) -> None:
    """Check one tensor's bytes against its entry in metadata ``tensor_sha256``, streaming only its byte range.

    Memory is one ``chunk``; the other tensors of the file are not read. A file without ``tensor_sha256`` (written
    before the key existed) falls back to the whole-file check :func:`verify_safetensors`. A mismatch, a missing
    entry or a malformed key raises :class:`FileFormatError` naming the file and the tensor.
    """
    header, start = read_safetensors_header(path)
    meta = header.get("__metadata__")
    raw = meta.get(TENSOR_CHECKSUM_KEY) if isinstance(meta, dict) else None
    if raw is None:
        verify_safetensors(path, chunk)
        return
    try:
        expected = json.loads(raw)[name]
        lo, hi = (int(v) for v in header[name]["data_offsets"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise FileFormatError(f"{path}: metadata key {TENSOR_CHECKSUM_KEY!r} has no valid entry for tensor "
                              f"{name!r} ({exc!r}); delete the file and rerun the step that writes it") from None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        fh.seek(start + lo)
        left = hi - lo
        while left > 0:
            block = fh.read(min(chunk, left))
            if not block:
                break
            digest.update(block)
            left -= len(block)
    if digest.hexdigest() != expected:
        raise FileFormatError(f"{path}: corrupted tensor {name!r}: its bytes do not match metadata key "
                              f"{TENSOR_CHECKSUM_KEY!r}; delete the file and rerun the step that writes it")
