"""Fetch pinned raw sources with their ordinary clients (docs/datasets.md; the workflow's ``acquire`` step).

apt: ``apt-get download NAME=VERSION`` in a temp dir, then ``dpkg-deb -x`` (no root, nothing installed);
npm: ``npm pack NAME@VERSION`` then untar; url: every published file of the source through
:func:`.download.fetch` (resumable, verified by its sha256/md5) into ``resources/.downloads/<source>/``, then
unpacked (zip/tar, nested archives too) and the downloads removed. The fetched archive's sha256 must equal the
pinned value. Unpacking
happens in a temp dir next to ``resources/<source>/`` that is renamed into place only when complete, and
``SOURCE.json`` (client, package, version, file, sha256; no dates, so it is reproducible) is what makes a later call
a no-op.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..io import sha256_file, write_text_atomic
from .download import DownloadError, fetch
from .registry import Download, SourceSpec, get_source

log = logging.getLogger(__name__)

SOURCE_JSON = "SOURCE.json"
DOWNLOADS_DIR = ".downloads"


class AcquireError(RuntimeError):
    """A source could not be fetched or verified; the message says what to install or run."""


def source_record(spec: SourceSpec, file_name: str) -> dict[str, Any]:
    """The content of ``SOURCE.json`` for ``spec`` (date-free so that re-acquiring yields the same bytes)."""
    record = {"source": spec.name, "client": spec.client, "package": spec.package, "version": spec.version,
              "file": file_name, "sha256": spec.sha256, "licence": spec.licence}
    if spec.client == "url":
        record["pin"] = spec.pin
        record["downloads"] = [{"file": d.file, "url": d.url, d.checksum[0]: d.checksum[1]} for d in spec.downloads]
    return record


def _is_current(dest: Path, spec: SourceSpec) -> bool:
    """True when ``dest`` holds a complete acquisition of exactly this pin."""
    meta = dest / SOURCE_JSON
    if not meta.is_file():
        return False
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    same = all(data.get(k) == getattr(spec, k) for k in ("client", "package", "version", "sha256"))
    if spec.client == "url":
        same = same and data.get("pin") == spec.pin
    return same and all((dest / f).exists() for f in spec.files)


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise AcquireError(f"`{tool}` was not found on PATH; {hint}")
    return path


def _run(cmd: list[str], cwd: Path, what: str, hint: str) -> subprocess.CompletedProcess:
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, check=False, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
        raise AcquireError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail)}; {hint}")
    return proc


def _fetch_apt(spec: SourceSpec, tmp: Path) -> Path:
    """``apt-get download NAME=VERSION`` into ``tmp``; returns the .deb."""
    _require("apt-get", "install apt (Debian/Ubuntu) or fetch the .deb by hand into resources/")
    _require("dpkg-deb", "install dpkg (`apt-get install dpkg`)")
    _run(["apt-get", "download", f"{spec.package}={spec.version}"], tmp, f"apt-get download {spec.package}",
         f"if apt says the package or version is unknown, refresh the package lists as root (`apt-get update`); "
         f"the pin is {spec.package}={spec.version} from Debian bookworm")
    debs = sorted(tmp.glob(f"{spec.package}_*.deb"))
    if len(debs) != 1:
        raise AcquireError(f"apt-get download {spec.package}={spec.version} left {[d.name for d in debs]} in {tmp}, "
                           f"expected exactly one .deb")
    return debs[0]


def _fetch_npm(spec: SourceSpec, tmp: Path) -> Path:
    """``npm pack NAME@VERSION`` into ``tmp``; returns the .tgz."""
    _require("npm", "install Node.js/npm (`apt-get install npm`)")
    _run(["npm", "pack", "--silent", f"{spec.package}@{spec.version}"], tmp, f"npm pack {spec.package}",
         "check that the npm registry is reachable (`npm ping`)")
    tgzs = sorted(tmp.glob("*.tgz"))
    if len(tgzs) != 1:
        raise AcquireError(f"npm pack {spec.package}@{spec.version} left {[t.name for t in tgzs]} in {tmp}, "
                           f"expected exactly one .tgz")
    return tgzs[0]


def _inside(dest: Path, name: str) -> bool:
    root = dest.resolve()
    target = (dest / name).resolve()
    return target == root or root in target.parents


def _safe_extract_tgz(archive: Path, dest: Path) -> None:
    """Untar (any compression), refusing members that would land outside ``dest`` (absolute paths, ``..``,
    links, devices)."""
    root = dest.resolve()
    with tarfile.open(archive, "r:*") as tar:
        members = []
        for m in tar.getmembers():
            target = (dest / m.name).resolve()
            if not (target == root or root in target.parents) or m.issym() or m.islnk() or m.isdev():
                raise AcquireError(f"{archive.name}: refusing unsafe tar member {m.name!r}")
            members.append(m)
        tar.extractall(dest, members=members)


def _safe_extract_zip(archive: Path, dest: Path) -> None:
    """Unzip, refusing members that would land outside ``dest``."""
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            if not _inside(dest, name):
                raise AcquireError(f"{archive.name}: refusing unsafe zip member {name!r}")
        zf.extractall(dest)


def _archive_kind(path: Path, unpack: str) -> str:
    """``zip``, ``tar`` or ``none`` for a download (``auto`` = by suffix)."""
    if unpack != "auto":
        return unpack
    name = path.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        return "tar"
    return "none"


def _place(path: Path, kind: str, dest: Path, move: bool) -> None:
    """Unpack ``path`` into ``dest`` (or move/copy it there when ``kind`` is ``none``)."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "zip":
            _safe_extract_zip(path, dest)
        elif kind == "tar":
            _safe_extract_tgz(path, dest)
        elif move:
            path.rename(dest / path.name)
        else:
            shutil.copy2(path, dest / path.name)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise AcquireError(f"{path.name}: cannot unpack as {kind} ({exc}); the verified file is corrupt or not the "
                           f"expected format") from exc


def _unpack_download(download: Download, archive: Path, tree: Path) -> None:
    """Unpack one verified download into ``tree/<into>``, then its nested archives (removed afterwards)."""
    dest = tree / download.into if download.into else tree
    _place(archive, _archive_kind(archive, download.unpack), dest, move=False)
    for inner in download.inner:
        path = dest / inner
        if not path.is_file():
            raise AcquireError(f"{download.file} lacks the nested archive {inner!r}")
        _place(path, _archive_kind(path, "auto"), path.parent, move=True)
        path.unlink(missing_ok=True)


def _unpack(spec: SourceSpec, archive: Path, dest: Path) -> None:
    if spec.client == "apt":
        _run(["dpkg-deb", "-x", str(archive.resolve()), str(dest.resolve())], dest, f"dpkg-deb -x {archive.name}",
             "the .deb may be corrupt; delete it and retry")
    else:
        # npm tarballs keep everything under package/; strip it so that files are relative to the package root
        staging = dest / ".untar"
        staging.mkdir()
        _safe_extract_tgz(archive, staging)
        inner = staging / "package" if (staging / "package").is_dir() else staging
        for child in inner.iterdir():
            child.rename(dest / child.name)
        shutil.rmtree(staging)


def _acquire_local(spec: SourceSpec, dest: Path) -> Path:
    """A user-provided directory: check the expected files and record it."""
    missing = [f for f in spec.files if not (dest / f).exists()]
    if not dest.is_dir() or missing:
        raise AcquireError(f"source {spec.name!r} is provided by hand: place {spec.package or 'its files'} under "
                           f"{dest}/ (missing: {missing or [str(dest)]})")
    write_text_atomic(dest / SOURCE_JSON, json.dumps(source_record(spec, ""), indent=2, sort_keys=True) + "\n")
    return dest


def pinned_spec(source_name: str, downloads: Mapping[str, Any] | None = None) -> SourceSpec:
    """The source's spec with params ``downloads.overrides.<source>.<file>`` applied (sha256 / md5 / size).

    Overrides re-pin a file (a mirror that re-packed it, the tests' generated fixtures); they change the source's
    :attr:`~SourceSpec.pin`, so an acquisition made under another pin is redone. A file or key that does not exist
    raises ``ValueError`` naming it.
    """
    spec = get_source(source_name)
    overrides = ((downloads or {}).get("overrides") or {}).get(source_name)
    if not overrides:
        return spec
    by_file = {d.file: d for d in spec.downloads}
    new = dict(by_file)
    for name, values in overrides.items():
        if name not in by_file:
            raise ValueError(f"params key 'downloads.overrides.{source_name}.{name}': source {source_name!r} has no "
                             f"download {name!r}; its files: {sorted(by_file)}")
        unknown = sorted(set(values) - {"sha256", "md5", "size"})
        if unknown:
            raise ValueError(f"params key 'downloads.overrides.{source_name}.{name}': unknown key(s) {unknown}")
        values = dict(values)
        if "sha256" in values or "md5" in values:
            values.setdefault("sha256", "")
            values.setdefault("md5", "")
        new[name] = dataclasses.replace(by_file[name], **values)
    return dataclasses.replace(spec, downloads=tuple(new[d.file] for d in spec.downloads))


def _with_urls(spec: SourceSpec, urls: Mapping[str, str]) -> SourceSpec:
    """``spec`` with the URLs of :func:`source_urls`, for fetching only: the pin (``SOURCE.json``) keeps the
    published URLs, so moving a source does not redo an acquisition of the same bytes."""
    return dataclasses.replace(spec, downloads=tuple(dataclasses.replace(d, url=urls.get(d.file, d.url))
                                                     for d in spec.downloads))


def source_urls(source_name: str, downloads: Mapping[str, Any] | None) -> dict[str, str]:
    """``{file: url}`` of params ``downloads.urls.<source>`` (docs/paper-profile.md "Downloads"): a string is a base
    URL serving ``<base>/<file>`` for every file of the source, a mapping names the URL of single files. A moved
    publisher needs no code edit; the checksums stay the pinned ones. Unknown files raise ``ValueError``."""
    entry = ((downloads or {}).get("urls") or {}).get(source_name)
    if not entry:
        return {}
    files = [d.file for d in get_source(source_name).downloads]
    if not files:
        raise ValueError(f"params key 'downloads.urls.{source_name}': source {source_name!r} is not a url source")
    if isinstance(entry, str):
        return {f: f"{entry.rstrip('/')}/{f}" for f in files}
    unknown = sorted(set(entry) - set(files))
    if unknown:
        raise ValueError(f"params key 'downloads.urls.{source_name}': source {source_name!r} has no download(s) "
                         f"{unknown}; its files: {sorted(files)}")
    return {str(f): str(u) for f, u in entry.items()}


def _fetch_url(spec: SourceSpec, resources: Path, mirror: str | None, progress: bool) -> list[Path]:
    """Every download of a url source, verified, in ``resources/.downloads/<source>/``."""
    cache = resources / DOWNLOADS_DIR / spec.name
    try:
        return [fetch(d, cache, spec.name, mirror=mirror, progress=progress) for d in spec.downloads]
    except DownloadError as exc:
        raise AcquireError(f"source {spec.name!r}: {exc}") from None


def acquire(source_name: str, resources_dir: str | os.PathLike = "resources", *, force: bool = False,
            mirror: str | None = None, downloads: Mapping[str, Any] | None = None, progress: bool = True) -> Path:
    """Fetch, verify and unpack ``source_name`` into ``<resources_dir>/<source_name>/``; returns that folder.

    Idempotent: skipped when ``SOURCE.json`` matches the pin and the spec's ``files`` exist (unless ``force``).
    A missing client, a failed fetch, a checksum mismatch or a missing expected file raise :class:`AcquireError`
    and leave any previous acquisition untouched. ``mirror`` (url sources only) fetches ``<mirror>/<source>/<file>``
    instead of the published URLs; the checksums are the same. ``downloads`` is params ``downloads`` (its
    ``overrides`` re-pin files, see :func:`pinned_spec`; its ``urls`` move single sources, see :func:`source_urls`,
    and take precedence over ``mirror`` for those sources).
    """
    spec = pinned_spec(source_name, downloads)
    urls = source_urls(source_name, downloads)
    if urls:  # an explicit per-source location wins over the global mirror
        mirror = None
    resources = Path(resources_dir)
    dest = resources / spec.name
    if spec.client == "local":
        return _acquire_local(spec, dest)
    if not force and _is_current(dest, spec):
        log.info("source %s already acquired at %s", spec.name, dest)
        return dest
    resources.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{spec.name}.", dir=resources) as tmp_str:
        tmp = Path(tmp_str)
        download = tmp / "download"
        download.mkdir()
        unpacked = tmp / "unpacked"
        unpacked.mkdir()
        if spec.client == "url":
            archives = _fetch_url(_with_urls(spec, urls), resources, mirror, progress)
            for d, path in zip(spec.downloads, archives):
                _unpack_download(d, path, unpacked)
            archive, digest = archives[0], "+".join(d.checksum[1][:12] for d in spec.downloads)
        else:
            archive = _fetch_apt(spec, download) if spec.client == "apt" else _fetch_npm(spec, download)
            digest = sha256_file(archive)
            if digest != spec.sha256:
                raise AcquireError(f"sha256 mismatch for {archive.name} (source {spec.name!r}): got {digest}, "
                                   f"pinned {spec.sha256}; the mirror serves different bytes than the pin, do not use "
                                   f"them")
            _unpack(spec, archive, unpacked)
        missing = [f for f in spec.files if not (unpacked / f).exists()]
        if missing:
            raise AcquireError(f"{archive.name} (source {spec.name!r}) lacks the expected paths {missing}")
        (unpacked / SOURCE_JSON).write_text(json.dumps(source_record(spec, archive.name), indent=2, sort_keys=True)
                                            + "\n", encoding="utf-8")
        # swap in the complete tree; an older (stale or partial) one is moved aside first and removed afterwards
        old = tmp / "old"
        if dest.exists():
            dest.rename(old)
        unpacked.rename(dest)
    if spec.client == "url":  # unpacked and in place: the archives are no longer needed
        shutil.rmtree(resources / DOWNLOADS_DIR / spec.name, ignore_errors=True)
    log.info("acquired %s %s=%s (%s) into %s", spec.client, spec.package, spec.version, digest[:12], dest)
    return dest
