"""Round trip of the Qt ``.rcc`` reader against bundles written in the real binary layout (tests/rcc_writer.py)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from rcc_writer import FLAG_COMPRESSED, FLAG_COMPRESSED_ZSTD, write_rcc

from structure_align.data import rcc as rcc_mod
from structure_align.data.rcc import RccArchive, RccError, qt_hash

FILES = {
    "gcompris/src/activities/demo/Data.qml": (b'QtObject { title: qsTr("Hello") }\n' * 20, FLAG_COMPRESSED),
    "gcompris/src/activities/demo/resource/a.webp": b"RIFF\x00\x00\x00\x00WEBPVP8 raw-bytes",
    "gcompris/src/activities/demo/resource/sub/b.jpg": (bytes(range(256)) * 8, FLAG_COMPRESSED),
    "gcompris/src/activities/other/README": "Licence: CC0 – é ü ✓".encode(),
    "top.txt": b"",
}


def _expected(name: str) -> bytes:
    value = FILES[name]
    return value if isinstance(value, bytes) else value[0]


def test_qt_hash_matches_value_stored_in_a_real_bundle() -> None:
    # 0x0a6474a3 is the hash stored next to the name "gcompris" in Debian's categorization.rcc (gcompris-qt-data 3.1)
    assert qt_hash("gcompris") == 0x0A6474A3
    assert qt_hash("") == 0


@pytest.mark.parametrize("version", [1, 2, 3])
def test_round_trip_all_versions(tmp_path: Path, version: int) -> None:
    bundle = write_rcc(tmp_path / "demo.rcc", FILES, version=version)
    archive = RccArchive(bundle)
    assert archive.version == version
    assert archive.list() == sorted(FILES)
    for name in FILES:
        assert archive.read(name) == _expected(name)
    # Qt-style ":/" prefixes are accepted
    assert archive.read(":/top.txt") == b""
    entry = archive.entry("gcompris/src/activities/demo/Data.qml")
    assert entry.flags & FLAG_COMPRESSED
    assert entry.last_modified_ms == (None if version == 1 else 1_676_732_615_000)
    if version >= 3:
        assert archive.overall_flags == FLAG_COMPRESSED


def test_compressed_entries_are_really_stored_compressed(tmp_path: Path) -> None:
    bundle = write_rcc(tmp_path / "demo.rcc", FILES)
    raw = bundle.read_bytes()
    payload = _expected("gcompris/src/activities/demo/Data.qml")
    assert payload not in raw  # stored deflated, so the reader must inflate it
    assert RccArchive(bundle).read("gcompris/src/activities/demo/Data.qml") == payload


def test_extract_with_pattern_and_nested_dirs(tmp_path: Path) -> None:
    archive = RccArchive(write_rcc(tmp_path / "demo.rcc", FILES))
    out = archive.extract(tmp_path / "out", pattern="*/resource/*")
    rel = sorted(p.relative_to(tmp_path / "out").as_posix() for p in out)
    assert rel == ["gcompris/src/activities/demo/resource/a.webp", "gcompris/src/activities/demo/resource/sub/b.jpg"]
    assert (tmp_path / "out/gcompris/src/activities/demo/resource/sub/b.jpg").read_bytes() == bytes(range(256)) * 8
    everything = archive.extract(tmp_path / "all")
    assert len(everything) == len(FILES)
    assert not list((tmp_path / "all").rglob(".*tmp*"))  # no temp files left behind by atomic writes


def test_bad_magic_is_a_clear_error(tmp_path: Path) -> None:
    bundle = write_rcc(tmp_path / "bad.rcc", FILES, magic=b"QRES")
    with pytest.raises(RccError, match=r"bad\.rcc.*magic"):
        RccArchive(bundle)


def test_unsupported_version_and_missing_file(tmp_path: Path) -> None:
    bundle = write_rcc(tmp_path / "v9.rcc", FILES, version=3)
    raw = bytearray(bundle.read_bytes())
    raw[4:8] = struct.pack(">I", 9)
    bundle.write_bytes(bytes(raw))
    with pytest.raises(RccError, match="version 9"):
        RccArchive(bundle)
    with pytest.raises(RccError, match="not found"):
        RccArchive(tmp_path / "nope.rcc")


def test_unknown_entry_and_corrupt_name_hash(tmp_path: Path) -> None:
    bundle = write_rcc(tmp_path / "demo.rcc", FILES)
    archive = RccArchive(bundle)
    with pytest.raises(RccError, match="no file 'missing.qml'"):
        archive.read("missing.qml")
    raw = bytearray(bundle.read_bytes())
    names_off = struct.unpack_from(">I", raw, 16)[0]
    raw[names_off + 2] ^= 0xFF  # flip a byte of the first stored hash
    bundle.write_bytes(bytes(raw))
    with pytest.raises(RccError, match="hash"):
        RccArchive(bundle)


def test_truncated_bundle_is_reported(tmp_path: Path) -> None:
    bundle = write_rcc(tmp_path / "demo.rcc", FILES)
    raw = bundle.read_bytes()
    tree_off = struct.unpack_from(">I", raw, 8)[0]
    (tmp_path / "cut.rcc").write_bytes(raw[: tree_off + 10])
    with pytest.raises(RccError, match="beyond the end"):
        RccArchive(tmp_path / "cut.rcc")


def test_zstd_entry_without_decoder_names_the_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {"x/frame.bin": (b"\x28\xb5\x2f\xfd-not-decoded", FLAG_COMPRESSED_ZSTD)}
    archive = RccArchive(write_rcc(tmp_path / "z.rcc", files))
    monkeypatch.setattr(rcc_mod, "_zstd_decompressor", lambda: None)
    with pytest.raises(RccError, match=r"'x/frame\.bin' is zstd-compressed.*zstandard"):
        archive.read("x/frame.bin")


def test_zstd_entry_with_decoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {"x/frame.bin": (b"ENCODED", FLAG_COMPRESSED_ZSTD)}
    archive = RccArchive(write_rcc(tmp_path / "z.rcc", files))
    monkeypatch.setattr(rcc_mod, "_zstd_decompressor", lambda: (lambda data: data.lower()))
    assert archive.read("x/frame.bin") == b"encoded"
