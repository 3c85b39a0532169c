"""Helpers shared by the workflow tests: Snakemake's job table and a copy of the working tree."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def job_counts(output: str) -> dict[str, int]:
    """Snakemake's 'Job stats' table as ``{rule: count}`` without ``total`` (empty dict = nothing to be done)."""
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


def copy_sources(dest: Path, skip: tuple[str, ...] = ("results/", "tests/")) -> Path:
    """Tracked and untracked-but-not-ignored files of the repository (as a fresh clone sees them), minus ``skip``."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file() and not rel.startswith(skip):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    return dest
