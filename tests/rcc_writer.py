"""A tiny writer of Qt binary ``.rcc`` bundles, for tests only.

It lays the file out the way Qt's ``rcc --binary`` does (header, data blobs, names, tree; children sorted by name
hash and stored contiguously; zlib payloads in ``qCompress`` form), so the reader is tested against the real layout
without needing Qt here.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from structure_align.data.rcc import FLAG_COMPRESSED, FLAG_COMPRESSED_ZSTD, FLAG_DIRECTORY, qt_hash


def _tree_from_files(files: dict[str, tuple[bytes, int]]) -> dict:
    root: dict = {}
    for path, payload in files.items():
        node = root
        parts = path.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = payload
    return root


def _blob(payload: bytes, flags: int) -> bytes:
    if flags & FLAG_COMPRESSED:
        return struct.pack(">I", len(payload)) + zlib.compress(payload, 9)
    # zstd frames are passed through as already-encoded bytes by the caller
    return payload


def write_rcc(path: Path, files: dict[str, bytes | tuple[bytes, int]], version: int = 3,
              magic: bytes = b"qres", mtime_ms: int = 1_676_732_615_000) -> Path:
    """Write ``files`` (path -> bytes, or (bytes, flags) with FLAG_COMPRESSED / FLAG_COMPRESSED_ZSTD) as a bundle."""
    norm = {p: (v, 0) if isinstance(v, bytes) else v for p, v in files.items()}
    tree = _tree_from_files(norm)
    header_size = 24 if version >= 3 else 20
    data = bytearray()
    names = bytearray()
    name_offsets: dict[str, int] = {}
    data_offsets: dict[int, int] = {}
    overall = 0

    # flat tree layout: entry 0 = root; each directory's children are contiguous, in hash order
    entries: list[tuple[str, object]] = [("", tree)]
    first_child: dict[int, int] = {}
    i = 0
    while i < len(entries):
        name, node = entries[i]
        if isinstance(node, dict):
            first_child[i] = len(entries)
            for child in sorted(node, key=qt_hash):
                entries.append((child, node[child]))
        i += 1

    for idx, (name, node) in enumerate(entries):
        if idx and name not in name_offsets:
            name_offsets[name] = len(names)
            units = name.encode("utf-16-be")
            names += struct.pack(">HI", len(units) // 2, qt_hash(name)) + units
        if not isinstance(node, dict):
            payload, flags = node
            overall |= flags
            data_offsets[idx] = len(data)
            blob = _blob(payload, flags)
            data += struct.pack(">I", len(blob)) + blob

    tree_bytes = bytearray()
    for idx, (name, node) in enumerate(entries):
        name_off = name_offsets.get(name, 0)
        if isinstance(node, dict):
            tree_bytes += struct.pack(">IHII", name_off, FLAG_DIRECTORY, len(node), first_child[idx])
        else:
            tree_bytes += struct.pack(">IHHHI", name_off, node[1], 0, 1, data_offsets[idx])
        if version >= 2:
            tree_bytes += struct.pack(">Q", mtime_ms)

    data_off = header_size
    names_off = data_off + len(data)
    tree_off = names_off + len(names)
    header = magic + struct.pack(">IIII", version, tree_off, data_off, names_off)
    if version >= 3:
        header += struct.pack(">I", overall)
    path.write_bytes(bytes(header) + bytes(data) + bytes(names) + bytes(tree_bytes))
    return path


__all__ = ["FLAG_COMPRESSED", "FLAG_COMPRESSED_ZSTD", "write_rcc"]
