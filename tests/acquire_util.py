"""Acquiring a real pinned source in a test: a source that cannot be fetched here (no network, no apt-get / npm)
skips the test, but a package that arrives and fails its pin (sha256, size, expected paths, unpacking) fails it:
that is a broken pin or a tampered package, never an environment limitation (issue 25)."""

from __future__ import annotations

from pathlib import Path

import pytest

from structure_align.data import AcquireError, acquire

# the AcquireError messages (data/acquire.py, data/download.py) of a package that was fetched but is not the pinned one
INTEGRITY_FAILURES = ("sha256 mismatch", "checksum mismatch", "the pin says", "lacks the expected paths",
                      "refusing unsafe", "cannot unpack")


def acquire_or_skip(source: str, resources: Path) -> None:
    """``acquire(source, resources)``; skip when it cannot be fetched, fail when it fails its integrity check."""
    try:
        acquire(source, resources)
    except AcquireError as exc:
        if any(marker in str(exc) for marker in INTEGRITY_FAILURES):
            pytest.fail(f"pinned source {source} fails its integrity check: {exc}")
        pytest.skip(f"source {source} cannot be fetched here: {exc}")
