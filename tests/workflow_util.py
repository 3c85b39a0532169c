"""Helpers shared by the workflow tests: Snakemake's job table and a copy of the working tree."""

from __future__ import annotations

from pathlib import Path

from structure_align.snakemake_util import copy_sources as _copy_sources
from structure_align.snakemake_util import job_counts

__all__ = ["ROOT", "copy_sources", "job_counts"]

ROOT = Path(__file__).resolve().parents[1]


def copy_sources(dest: Path, skip: tuple[str, ...] = ("results/", "tests/")) -> Path:
    """The repository's files as a fresh clone sees them, minus ``skip`` (see :func:`snakemake_util.copy_sources`)."""
    return _copy_sources(ROOT, dest, skip)
