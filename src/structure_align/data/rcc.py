"""Reader for Qt binary resource bundles (``.rcc``), used to get at the GCompris photos and activity data.

The layout follows Qt's ``rcc`` tool (``RCCResourceLibrary`` in ``rcc.cpp``) and its reader (``qresource.cpp``);
all integers are big-endian:

* header: ``b"qres"``, u32 format version (1..3), u32 tree offset, u32 data offset, u32 names offset, and for
  version >= 3 a u32 of overall flags (the union of the entries' compression flags);
* tree: a flat array of entries, entry 0 is the root directory. An entry is 14 bytes (version 1) or 22 bytes
  (version >= 2, an extra u64 last-modified time in ms since the epoch). Directory entry: u32 name offset, u16 flags,
  u32 child count, u32 index of the first child. File entry: u32 name offset, u16 flags, u16 territory,
  u16 language, u32 data offset. The children of a directory are contiguous and sorted by name hash;
* names: u16 length in UTF-16 code units, u32 ``qt_hash`` of the name, then the UTF-16BE characters;
* data: u32 length followed by the payload. A zlib-compressed payload (flag 0x01) is what ``qCompress`` writes:
  a u32 uncompressed size and then a zlib stream. A zstd payload (flag 0x04) is a bare zstd frame.

Only the Python standard library is needed for uncompressed and zlib entries; zstd entries need ``compression.zstd``
(Python >= 3.14) or the ``zstandard`` package, and a clear :class:`RccError` says so when neither is present.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..io import atomic_write

log = logging.getLogger(__name__)

MAGIC = b"qres"
FLAG_COMPRESSED = 0x01
FLAG_DIRECTORY = 0x02
FLAG_COMPRESSED_ZSTD = 0x04
# QLocale::AnyLanguage = 0 and QLocale::C = 1 both mean "no locale": the default variant of a resource.
_DEFAULT_LANGUAGES = (0, 1)
_SUPPORTED_VERSIONS = (1, 2, 3)


class RccError(ValueError):
    """A ``.rcc`` bundle is malformed, uses an unsupported feature, or lacks a requested entry."""


@dataclass(frozen=True)
class RccEntry:
    """One file of a bundle (directories are not kept: they only give the path)."""

    path: str
    flags: int
    territory: int
    language: int
    data_offset: int
    last_modified_ms: int | None


def qt_hash(name: str) -> int:
    """Qt's resource name hash (``qt_hash`` over UTF-16 code units), stored beside every name in the bundle."""
    h = 0
    units = name.encode("utf-16-be")
    for i in range(0, len(units), 2):
        h = ((h << 4) + ((units[i] << 8) | units[i + 1])) & 0xFFFFFFFF
        h ^= (h & 0xF0000000) >> 23
        h &= 0x0FFFFFFF
    return h


def _zstd_decompressor() -> Callable[[bytes], bytes] | None:
    """Return a zstd decompression function from whatever is installed, or None."""
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python >= 3.14

        return zstd.decompress
    except ImportError:
        pass
    try:
        import zstandard  # type: ignore[import-not-found]

        def _decompress(data: bytes) -> bytes:
            # Frames written by rcc carry their content size, but stream decoding also copes when they do not.
            return zstandard.ZstdDecompressor().decompressobj().decompress(data)

        return _decompress
    except ImportError:
        return None


class RccArchive:
    """Read-only view of a Qt ``.rcc`` resource bundle.

    The whole tree is parsed and validated in the constructor, so a corrupt file fails before any extraction starts.
    Paths are POSIX style and relative to the bundle root (``"gcompris/src/activities/x/Data.qml"``), without the
    leading ``":/"`` that Qt uses. When a resource exists in several locale variants, :meth:`read` returns the
    default-locale one.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise RccError(f"{self.path}: .rcc bundle not found")
        self._buf = self.path.read_bytes()
        self._parse_header()
        self._entries: dict[str, list[RccEntry]] = {}
        self._walk_tree()

    # -- parsing -------------------------------------------------------------------------------------------------

    def _u16(self, off: int) -> int:
        return struct.unpack_from(">H", self._buf, off)[0]

    def _u32(self, off: int) -> int:
        return struct.unpack_from(">I", self._buf, off)[0]

    def _parse_header(self) -> None:
        """Check the magic and the version and read the three section offsets."""
        buf = self._buf
        if len(buf) < 20 or buf[:4] != MAGIC:
            raise RccError(f"{self.path}: not a Qt binary resource bundle (expected magic {MAGIC!r}, "
                           f"found {bytes(buf[:4])!r})")
        self.version = self._u32(4)
        if self.version not in _SUPPORTED_VERSIONS:
            raise RccError(f"{self.path}: unsupported .rcc format version {self.version} "
                           f"(supported: {_SUPPORTED_VERSIONS})")
        self.tree_offset = self._u32(8)
        self.data_offset = self._u32(12)
        self.names_offset = self._u32(16)
        self.overall_flags = self._u32(20) if self.version >= 3 and len(buf) >= 24 else 0
        self.entry_size = 14 if self.version == 1 else 22
        for key, off in (("tree", self.tree_offset), ("data", self.data_offset), ("names", self.names_offset)):
            if off >= len(buf):
                raise RccError(f"{self.path}: {key} offset {off} lies beyond the end of the file ({len(buf)} bytes)")

    def _name(self, name_offset: int) -> str:
        """Decode one entry of the names section and check its stored hash."""
        off = self.names_offset + name_offset
        if off + 6 > len(self._buf):
            raise RccError(f"{self.path}: name offset {name_offset} lies beyond the end of the file")
        length = self._u16(off)
        stored_hash = self._u32(off + 2)
        raw = self._buf[off + 6: off + 6 + 2 * length]
        if len(raw) != 2 * length:
            raise RccError(f"{self.path}: name at offset {name_offset} is truncated")
        name = raw.decode("utf-16-be")
        if qt_hash(name) != stored_hash:
            raise RccError(f"{self.path}: name {name!r} at offset {name_offset} does not match its stored hash "
                           "(corrupt names section)")
        return name

    def _entry_offset(self, index: int) -> int:
        off = self.tree_offset + index * self.entry_size
        if off + self.entry_size > len(self._buf):
            raise RccError(f"{self.path}: tree entry {index} lies beyond the end of the file")
        return off

    def _walk_tree(self) -> None:
        """Visit every directory from the root (entry 0) and record each file entry under its full path."""
        root = self._entry_offset(0)
        if not self._u16(root + 4) & FLAG_DIRECTORY:
            raise RccError(f"{self.path}: tree entry 0 is not the root directory")
        pending: list[tuple[int, str]] = [(0, "")]
        seen_dirs: set[int] = set()
        while pending:
            index, prefix = pending.pop()
            if index in seen_dirs:
                raise RccError(f"{self.path}: directory entry {index} is reachable twice (cyclic tree)")
            seen_dirs.add(index)
            off = self._entry_offset(index)
            count, first = self._u32(off + 6), self._u32(off + 10)
            for child in range(first, first + count):
                self._add_child(child, prefix, pending)

    def _add_child(self, index: int, prefix: str, pending: list[tuple[int, str]]) -> None:
        off = self._entry_offset(index)
        name = self._name(self._u32(off))
        if not name or name in (".", "..") or "/" in name:
            raise RccError(f"{self.path}: tree entry {index} has an unsafe name {name!r}")
        flags = self._u16(off + 4)
        path = f"{prefix}{name}"
        if flags & FLAG_DIRECTORY:
            pending.append((index, path + "/"))
            return
        last_modified = struct.unpack_from(">Q", self._buf, off + 14)[0] if self.version >= 2 else None
        entry = RccEntry(path=path, flags=flags, territory=self._u16(off + 6), language=self._u16(off + 8),
                         data_offset=self._u32(off + 10), last_modified_ms=last_modified)
        self._entries.setdefault(path, []).append(entry)

    # -- public API ----------------------------------------------------------------------------------------------

    def list(self) -> list[str]:
        """All file paths in the bundle, sorted (directories are implied by the paths)."""
        return sorted(self._entries)

    def entry(self, path: str) -> RccEntry:
        """Metadata of the default-locale variant of ``path``."""
        key = path.lstrip(":").lstrip("/")
        variants = self._entries.get(key)
        if not variants:
            raise RccError(f"{self.path}: no file {path!r} in the bundle")
        for variant in variants:
            if variant.language in _DEFAULT_LANGUAGES:
                return variant
        return variants[0]

    def read(self, path: str) -> bytes:
        """The (decompressed) contents of ``path``."""
        entry = self.entry(path)
        off = self.data_offset + entry.data_offset
        if off + 4 > len(self._buf):
            raise RccError(f"{self.path}: data of {entry.path!r} lies beyond the end of the file")
        size = self._u32(off)
        payload = self._buf[off + 4: off + 4 + size]
        if len(payload) != size:
            raise RccError(f"{self.path}: data of {entry.path!r} is truncated ({len(payload)} of {size} bytes)")
        if entry.flags & FLAG_COMPRESSED:
            return self._inflate(entry, payload)
        if entry.flags & FLAG_COMPRESSED_ZSTD:
            return self._unzstd(entry, payload)
        return payload

    def _inflate(self, entry: RccEntry, payload: bytes) -> bytes:
        """Undo ``qCompress``: a big-endian u32 uncompressed size, then a zlib stream."""
        if len(payload) < 4:
            raise RccError(f"{self.path}: compressed entry {entry.path!r} is shorter than its size prefix")
        expected = struct.unpack_from(">I", payload, 0)[0]
        try:
            data = zlib.decompress(payload[4:])
        except zlib.error as exc:
            raise RccError(f"{self.path}: zlib data of {entry.path!r} is corrupt: {exc}") from exc
        if len(data) != expected:
            raise RccError(f"{self.path}: {entry.path!r} inflated to {len(data)} bytes, header says {expected}")
        return data

    def _unzstd(self, entry: RccEntry, payload: bytes) -> bytes:
        decompress = _zstd_decompressor()
        if decompress is None:
            raise RccError(f"{self.path}: entry {entry.path!r} is zstd-compressed, but this Python has no zstd "
                           "decoder (install the 'zstandard' package or use Python >= 3.14)")
        return decompress(payload)

    def extract(self, dest: str | os.PathLike, pattern: str | None = None) -> list[Path]:
        """Write the files whose path matches the glob ``pattern`` (all when None) under ``dest``, atomically.

        Returns the written paths in sorted bundle order. Names were checked for ``..`` and ``/`` when parsing, so
        every output stays inside ``dest``.
        """
        dest = Path(dest)
        written: list[Path] = []
        for path in self.list():
            if pattern is not None and not fnmatch.fnmatchcase(path, pattern):
                continue
            target = dest.joinpath(*PurePosixPath(path).parts)
            with atomic_write(target) as tmp:
                tmp.write_bytes(self.read(path))
            written.append(target)
        log.info("extracted %d files from %s into %s", len(written), self.path, dest)
        return written

    def __repr__(self) -> str:
        return f"RccArchive({str(self.path)!r}, version={self.version}, files={len(self._entries)})"
