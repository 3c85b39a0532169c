"""Downloads of url sources: resumable, atomic, verified; bad transfers fail clearly and leave nothing trusted."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest
from http_fixture import FileServer

from structure_align.data import registry
from structure_align.data.acquire import DOWNLOADS_DIR, AcquireError, acquire, pinned_spec
from structure_align.data.download import DownloadError, fetch, file_url
from structure_align.data.registry import Download, SourceSpec


def _payload(n: int = 300_000) -> bytes:
    return bytes((i * 7 + i // 251) % 256 for i in range(n))


@pytest.fixture
def served(tmp_path: Path):
    root = tmp_path / "www"
    (root / "src").mkdir(parents=True)
    data = _payload()
    (root / "src" / "blob.bin").write_bytes(data)
    with FileServer(root) as server:
        yield server, data


def _download(data: bytes, *, md5: bool = False, size: bool = True) -> Download:
    digest = {"md5": hashlib.md5(data).hexdigest()} if md5 else {"sha256": hashlib.sha256(data).hexdigest()}
    return Download("blob.bin", "https://example.invalid/blob.bin", size=len(data) if size else None,
                    unpack="none", **digest)


def test_mirror_url_replaces_published_location() -> None:
    d = _download(b"x")
    assert file_url(d, "src") == "https://example.invalid/blob.bin"
    assert file_url(d, "src", "http://127.0.0.1:9/m/") == "http://127.0.0.1:9/m/src/blob.bin"


@pytest.mark.parametrize("md5", [False, True])
def test_fetch_verifies_and_is_atomic(served, tmp_path: Path, md5: bool) -> None:
    server, data = served
    out = fetch(_download(data, md5=md5), tmp_path / "cache", "src", mirror=server.url, progress=False)
    assert out.read_bytes() == data
    assert not (tmp_path / "cache" / "blob.bin.part").exists()
    n = len(server.requests)
    fetch(_download(data, md5=md5), tmp_path / "cache", "src", mirror=server.url, progress=False)
    assert len(server.requests) == n  # verified file reused, nothing fetched


def test_checksum_mismatch_names_file_and_url_and_leaves_nothing(served, tmp_path: Path) -> None:
    server, data = served
    server.mode = "corrupt"
    with pytest.raises(DownloadError, match=r"checksum mismatch: blob\.bin from http://127\.0\.0\.1:\d+/src/blob\.bin"):
        fetch(_download(data), tmp_path / "cache", "src", mirror=server.url, progress=False)
    assert list((tmp_path / "cache").iterdir()) == []
    server.mode = "ok"  # a rerun restarts cleanly
    assert fetch(_download(data), tmp_path / "cache", "src", mirror=server.url, progress=False).read_bytes() == data


def test_truncated_file_is_named_and_removed(served, tmp_path: Path) -> None:
    server, data = served
    server.mode = "truncated"
    with pytest.raises(DownloadError, match=r"truncated file: blob\.bin from http://.*/src/blob\.bin has 150000 bytes"):
        fetch(_download(data), tmp_path / "cache", "src", mirror=server.url, progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_truncated_without_size_pin_is_a_checksum_mismatch(served, tmp_path: Path) -> None:
    server, data = served
    server.mode = "truncated"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        fetch(_download(data, size=False), tmp_path / "cache", "src", mirror=server.url, progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_interrupted_transfer_resumes_with_range(served, tmp_path: Path) -> None:
    server, data = served
    server.mode = "interrupted"
    with pytest.raises(DownloadError, match=r"interrupted transfer: blob\.bin from http://.*/src/blob\.bin stopped "
                                            r"after \d+ of 300000 bytes"):
        fetch(_download(data), tmp_path / "cache", "src", mirror=server.url, progress=False)
    part = tmp_path / "cache" / "blob.bin.part"
    assert part.is_file() and 0 < part.stat().st_size < len(data)
    assert not (tmp_path / "cache" / "blob.bin").exists()  # nothing under the trusted name
    kept = part.stat().st_size
    server.mode = "ok"
    out = fetch(_download(data), tmp_path / "cache", "src", mirror=server.url, progress=False)
    assert out.read_bytes() == data
    assert server.requests[-1][1] == f"bytes={kept}-"


def test_server_ignoring_range_restarts_from_zero(served, tmp_path: Path) -> None:
    server, data = served
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "blob.bin.part").write_bytes(b"\0" * 1000)  # a stale part with wrong bytes
    server.mode = "no-range"
    assert fetch(_download(data), cache, "src", mirror=server.url, progress=False).read_bytes() == data


def test_tampered_final_file_is_reverified_and_replaced(served, tmp_path: Path) -> None:
    server, data = served
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "blob.bin").write_bytes(data[:-1] + b"?")
    assert fetch(_download(data), cache, "src", mirror=server.url, progress=False).read_bytes() == data


def test_http_error_names_file_and_url(served, tmp_path: Path) -> None:
    server, _ = served
    d = Download("missing.bin", "https://example.invalid/missing.bin", sha256="0" * 64)
    with pytest.raises(DownloadError, match=r"missing\.bin: HTTP 404 .* from http://.*/src/missing\.bin"):
        fetch(d, tmp_path / "cache", "src", mirror=server.url, progress=False)


# ---------------------------------------------------------------------------------------------------------------
# url sources through acquire()
# ---------------------------------------------------------------------------------------------------------------

def _zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return buf.getvalue()


def _tgz_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


@pytest.fixture
def url_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    inner = _tgz_bytes({"tree/a.txt": b"alpha"})
    outer = _zip_bytes({"pkg/inner.tar.gz": inner, "pkg/readme.txt": b"hi"})
    www = tmp_path / "www" / "toy-url"
    www.mkdir(parents=True)
    (www / "outer.zip").write_bytes(outer)
    (www / "notes.json").write_bytes(b"{}")
    spec = SourceSpec(name="toy-url", client="url", package="toy", version="1", sha256="",
                      files=("pkg/tree/a.txt", "pkg/readme.txt", "meta/notes.json"),
                      downloads=(Download("outer.zip", "https://example.invalid/outer.zip",
                                          sha256=hashlib.sha256(outer).hexdigest(), inner=("pkg/inner.tar.gz",)),
                                 Download("notes.json", "https://example.invalid/notes.json",
                                          md5=hashlib.md5(b"{}").hexdigest(), unpack="none", into="meta")))
    monkeypatch.setitem(registry.SOURCES, spec.name, spec)
    with FileServer(tmp_path / "www") as server:
        yield server, spec


def test_acquire_url_source_unpacks_nested_archives_and_cleans_up(url_source, tmp_path: Path) -> None:
    server, spec = url_source
    res = tmp_path / "resources"
    dest = acquire("toy-url", res, mirror=server.url, progress=False)
    assert (dest / "pkg/tree/a.txt").read_bytes() == b"alpha"
    assert not (dest / "pkg/inner.tar.gz").exists()
    assert (dest / "meta/notes.json").read_bytes() == b"{}"
    record = json.loads((dest / "SOURCE.json").read_text())
    assert record["pin"] == spec.pin and record["client"] == "url"
    assert not (res / DOWNLOADS_DIR / "toy-url").exists()
    n = len(server.requests)
    acquire("toy-url", res, mirror=server.url, progress=False)
    assert len(server.requests) == n  # current: a no-op


def test_acquire_url_failure_leaves_no_source_json(url_source, tmp_path: Path) -> None:
    server, _ = url_source
    server.mode = "corrupt"
    res = tmp_path / "resources"
    with pytest.raises(AcquireError, match=r"source 'toy-url': checksum mismatch: outer\.zip from http://"):
        acquire("toy-url", res, mirror=server.url, progress=False)
    assert not (res / "toy-url").exists()
    server.mode = "ok"
    assert (acquire("toy-url", res, mirror=server.url, progress=False) / "SOURCE.json").is_file()


def test_overrides_repin_a_file(url_source) -> None:
    _, spec = url_source
    new = pinned_spec("toy-url", {"overrides": {"toy-url": {"outer.zip": {"md5": "a" * 32, "size": 3}}}})
    assert new.downloads[0].checksum == ("md5", "a" * 32) and new.downloads[0].size == 3
    assert new.pin != spec.pin
    with pytest.raises(ValueError, match=r"downloads\.overrides\.toy-url\.nope"):
        pinned_spec("toy-url", {"overrides": {"toy-url": {"nope": {"md5": "a" * 32}}}})


def test_download_spec_validation() -> None:
    with pytest.raises(ValueError, match="needs a sha256"):
        Download("x.zip", "https://h/x.zip")
    with pytest.raises(ValueError, match="must be http"):
        Download("x.zip", "ftp://h/x.zip", md5="a" * 32)
    with pytest.raises(ValueError, match="client 'url' needs downloads"):
        SourceSpec(name="bad", client="url", package="p", version="1", sha256="")


def test_paper_sources_are_pinned() -> None:
    """Every public paper dataset has a url source with a checksum on each published file."""
    for name in ("coco", "cifar10", "cifar100", "stl10", "caltech101", "food101", "pets"):
        spec = registry.SOURCES[name]
        assert spec.client == "url" and spec.downloads, name
        assert all(d.checksum[1] for d in spec.downloads), name
    assert registry.SOURCES["imagenet"].client == "local"
    assert "image-net.org" in registry.SOURCES["imagenet"].package


def test_per_source_url_override_fetches_there_and_keeps_checksums(url_source, tmp_path: Path) -> None:
    """params downloads.urls moves one source (base URL or per file); the pins still decide what is accepted."""
    server, spec = url_source
    moved = f"{server.url}/toy-url"  # the files at a new base, not under <mirror>/<source>/
    res = tmp_path / "resources"
    dest = acquire("toy-url", res, downloads={"urls": {"toy-url": moved}}, progress=False)
    assert (dest / "pkg/tree/a.txt").read_bytes() == b"alpha"
    assert [p for p, _ in server.requests] == ["/toy-url/outer.zip", "/toy-url/notes.json"]
    assert json.loads((dest / "SOURCE.json").read_text())["pin"] == spec.pin  # where from is not the pin
    # a per-file URL beats the global mirror; a file served with other bytes is refused by its pin
    (tmp_path / "www" / "elsewhere").mkdir()
    (tmp_path / "www" / "elsewhere" / "outer.zip").write_bytes(b"not the published zip")
    with pytest.raises(AcquireError, match=r"checksum mismatch: outer\.zip from http://.*/elsewhere/outer\.zip"):
        acquire("toy-url", tmp_path / "other", mirror="http://127.0.0.1:9/none", force=True, progress=False,
                downloads={"urls": {"toy-url": {"outer.zip": f"{server.url}/elsewhere/outer.zip"}}})
    with pytest.raises(ValueError, match=r"downloads\.urls\.toy-url.*\['nope\.zip'\]"):
        acquire("toy-url", res, downloads={"urls": {"toy-url": {"nope.zip": moved}}}, progress=False)
