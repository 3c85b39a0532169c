"""Fetch one pinned file over HTTP(S): resumable, atomic, verified (docs/paper-profile.md "Downloads").

:func:`fetch` is what the ``url`` sources of :mod:`.acquire` use. A file is streamed into ``<file>.part`` beside its
final place; an interrupted transfer keeps the ``.part`` so that the next call resumes it with an HTTP ``Range``
request (a server that ignores the range restarts it from byte 0). Only when the transfer is complete are the size
(when pinned) and the checksum checked, and only a verified file is renamed onto its final name, so a file under
that name has been verified; it is verified again before every use. A checksum mismatch or a truncated file removes
the ``.part``: nothing is left that a rerun would trust, and the rerun starts from scratch. Every error is a
:class:`DownloadError` naming the file and the URL. ``mirror`` replaces the published location by
``<mirror>/<source>/<file>`` (a local copy of the files, or the loopback server of the tests); the pin is the same.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from ..io import file_digest
from .registry import Download

log = logging.getLogger(__name__)

CHUNK = 1 << 20
TIMEOUT_S = 60.0
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
USER_AGENT = "structure-align-download/1"


class DownloadError(RuntimeError):
    """A file could not be fetched or verified; the message names the file, the URL and what to do."""


def file_url(download: Download, source: str, mirror: str | None = None) -> str:
    """The URL ``download`` is fetched from: its published one, or ``<mirror>/<source>/<file>``."""
    if not mirror:
        return download.url
    return f"{mirror.rstrip('/')}/{source}/{download.file}"


def verify(path: Path, download: Download, url: str) -> None:
    """Raise :class:`DownloadError` unless ``path`` has the pinned size (when pinned) and checksum."""
    size = path.stat().st_size
    if download.size is not None and size != download.size:
        kind = "truncated file" if size < download.size else "oversized file"
        raise DownloadError(f"{kind}: {download.file} from {url} has {size} bytes, the pin says {download.size}")
    algorithm, expected = download.checksum
    actual = file_digest(path, algorithm)
    if actual != expected:
        raise DownloadError(f"checksum mismatch: {download.file} from {url} has {algorithm} {actual}, pinned "
                            f"{expected}; the server sent other bytes than the published file")


def _open(url: str, start: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _total_size(resp: http.client.HTTPResponse, start: int, url: str, name: str) -> int | None:
    """Full size of the file from ``Content-Range`` (206) or ``Content-Length`` (200); None when not sent."""
    if resp.status == 206:
        m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
        if m is None or int(m.group(1)) != start:
            raise DownloadError(f"{name} from {url}: the server answered the resume request at byte {start} with "
                                f"Content-Range {resp.headers.get('Content-Range')!r}")
        return None if m.group(3) == "*" else int(m.group(3))
    length = resp.headers.get("Content-Length")
    return int(length) if length is not None else None


def _stream(url: str, part: Path, name: str, *, progress: bool, timeout: float) -> None:
    """Append the rest of ``url`` to ``part`` (resuming at its size). An incomplete body raises, keeping ``part``."""
    start = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(url, start, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # the part already holds every byte: let verification decide
            return
        raise DownloadError(f"{name}: HTTP {exc.code} {exc.reason} from {url}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"{name}: cannot reach {url} ({exc}); check the network or set downloads.mirror") \
            from None
    with resp:
        if start and resp.status != 206:
            log.info("%s: server ignored the range request, restarting from byte 0", name)
            start = 0
        total = _total_size(resp, start, url, name)
        received = start
        bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                   disable=not progress)
        try:
            with open(part, "ab" if start else "wb") as fh:
                while True:
                    block = resp.read(CHUNK)
                    if not block:
                        break
                    fh.write(block)
                    received += len(block)
                    bar.update(len(block))
        except (TimeoutError, http.client.HTTPException, OSError) as exc:
            raise DownloadError(f"interrupted transfer: {name} from {url} stopped after {received} of "
                                f"{total if total is not None else '?'} bytes ({type(exc).__name__}); the partial "
                                f"file {part} is kept and the next run resumes it") from None
        finally:
            bar.close()
    if total is not None and received < total:
        raise DownloadError(f"interrupted transfer: {name} from {url} stopped after {received} of {total} bytes; "
                            f"the partial file {part} is kept and the next run resumes it")


def fetch(download: Download, cache_dir: str | os.PathLike, source: str, *, mirror: str | None = None,
          progress: bool = True, timeout: float = TIMEOUT_S) -> Path:
    """``<cache_dir>/<file>``, downloaded (or resumed) and verified; see the module docstring for the guarantees."""
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / download.file
    part = cache / f"{download.file}.part"
    url = file_url(download, source, mirror)
    if final.is_file():
        try:
            verify(final, download, url)
            log.info("%s: already downloaded and verified (%s)", download.file, final)
            return final
        except DownloadError as exc:
            log.warning("%s; removing %s and downloading again", exc, final)
            final.unlink()
    log.info("downloading %s from %s", download.file, url)
    _stream(url, part, download.file, progress=progress, timeout=timeout)
    try:
        verify(part, download, url)
    except DownloadError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, final)
    log.info("%s: %d bytes, %s verified", download.file, final.stat().st_size, download.checksum[0])
    return final
