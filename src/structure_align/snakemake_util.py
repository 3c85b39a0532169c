"""Helpers for driving this workflow from Python (tests, ``benchmarks/bench_rerun.py``): Snakemake's job table and
a copy of the working tree as a fresh clone sees it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path


def job_counts(output: str) -> dict[str, int]:
    """Snakemake's 'Job stats' table (printed before any job runs) as ``{rule: count}`` without ``total``.

    An empty dict means nothing to be done (Snakemake prints no table then).
    """
    counts: dict[str, int] = {}
    block = output.split("Job stats:", 1)
    if len(block) < 2:
        return counts
    for line in block[1].splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        if m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


def copy_sources(root: Path, dest: Path, skip: tuple[str, ...] = ()) -> Path:
    """Copy the tracked and untracked-but-not-ignored files of the git checkout ``root`` into ``dest``, minus the
    paths starting with one of ``skip``; returns ``dest``."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        if (root / rel).is_file() and not rel.startswith(skip):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, dest / rel)
    return dest
