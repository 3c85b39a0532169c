"""Fetch pinned raw sources with their ordinary clients (docs/datasets.md; the workflow's ``acquire`` step).

apt: ``apt-get download NAME=VERSION`` in a temp dir, then ``dpkg-deb -x`` (no root, nothing installed);
npm: ``npm pack NAME@VERSION`` then untar. The fetched archive's sha256 must equal the pinned value. Unpacking
happens in a temp dir next to ``resources/<source>/`` that is renamed into place only when complete, and
``SOURCE.json`` (client, package, version, file, sha256; no dates, so it is reproducible) is what makes a later call
a no-op.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from ..io import sha256_file, write_text_atomic
from .registry import SourceSpec, get_source

log = logging.getLogger(__name__)

SOURCE_JSON = "SOURCE.json"


class AcquireError(RuntimeError):
    """A source could not be fetched or verified; the message says what to install or run."""


def source_record(spec: SourceSpec, file_name: str) -> dict[str, Any]:
    """The content of ``SOURCE.json`` for ``spec`` (date-free so that re-acquiring yields the same bytes)."""
    return {"source": spec.name, "client": spec.client, "package": spec.package, "version": spec.version,
            "file": file_name, "sha256": spec.sha256, "licence": spec.licence}


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


def _safe_extract_tgz(archive: Path, dest: Path) -> None:
    """Untar, refusing members that would land outside ``dest`` (absolute paths, ``..``, links)."""
    root = dest.resolve()
    with tarfile.open(archive, "r:gz") as tar:
        members = []
        for m in tar.getmembers():
            target = (dest / m.name).resolve()
            if not (target == root or root in target.parents) or m.issym() or m.islnk() or m.isdev():
                raise AcquireError(f"{archive.name}: refusing unsafe tar member {m.name!r}")
            members.append(m)
        tar.extractall(dest, members=members)


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


def acquire(source_name: str, resources_dir: str | os.PathLike = "resources", *, force: bool = False) -> Path:
    """Fetch, verify and unpack ``source_name`` into ``<resources_dir>/<source_name>/``; returns that folder.

    Idempotent: skipped when ``SOURCE.json`` matches the pin and the spec's ``files`` exist (unless ``force``).
    A missing client, a failed fetch, a sha256 mismatch or a missing expected file raise :class:`AcquireError`
    and leave any previous acquisition untouched.
    """
    spec = get_source(source_name)
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
        archive = _fetch_apt(spec, download) if spec.client == "apt" else _fetch_npm(spec, download)
        digest = sha256_file(archive)
        if digest != spec.sha256:
            raise AcquireError(f"sha256 mismatch for {archive.name} (source {spec.name!r}): got {digest}, pinned "
                               f"{spec.sha256}; the mirror serves different bytes than the pin, do not use them")
        unpacked = tmp / "unpacked"
        unpacked.mkdir()
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
    log.info("acquired %s %s=%s (%s) into %s", spec.client, spec.package, spec.version, digest[:12], dest)
    return dest
