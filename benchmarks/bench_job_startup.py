"""What a rerun job spends its time on: process start-up and imports vs the step itself (issue 12).

Given a repository copy with a completed run (e.g. ``benchmarks/bench_rerun.py --config workflow/configs/smoke.yaml
--keep``), this re-executes the shell commands Snakemake printed for one ``train``, one ``evaluate`` and the
``aggregate`` job (they rewrite the same files with the same bytes), several times, and splits each job's wall time
into the step's logged time (the ``step ... done in X s`` line of its log; imports done lazily inside the step
count there) and what comes before it (interpreter start, the CLI's own imports, argument parsing). It also times
bare imports in fresh interpreters: ``torch``, ``torch._dynamo`` (imported by the first ``torch.optim`` call of a
train job), ``structure_align.cli`` and the data stack (pandas + pyarrow), which every such job pays once.

With ``--baseline-rev REV`` the same commands also run with the package sources of git revision ``REV`` (extracted
to a temporary folder and put first on PYTHONPATH), interleaved with the current ones, so that machine load
affects both alike. Timings are medians; the load average is printed.

    .venv/bin/python benchmarks/bench_job_startup.py --repo /tmp/bench-rerun-xxxx/repo --baseline-rev 1ebe514
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
IMPORTS = {"torch": "import torch", "torch._dynamo (after torch)": "import torch; t0 = time.perf_counter(); "
           "import torch._dynamo", "structure_align.cli": "import structure_align.cli",
           "pandas + pyarrow.parquet": "import pandas, pyarrow.parquet"}


def job_commands(repo: Path) -> dict[str, str]:
    """The first printed shell command of each rule of interest, from the Snakemake logs of ``repo``."""
    found: dict[str, str] = {}
    for log in sorted((repo / ".snakemake/log").glob("*.snakemake.log")):
        for line in log.read_text(errors="replace").splitlines():
            m = re.match(r"^(?:Shell command: )?(python -m structure_align (train|evaluate|aggregate) .*)", line.strip())
            if m and m.group(2) not in found:
                found[m.group(2)] = m.group(1)
    missing = {"train", "evaluate", "aggregate"} - set(found)
    if missing:
        raise SystemExit(f"{repo}: no printed shell command for {sorted(missing)} in .snakemake/log (printshellcmds)")
    return found


def run_job(repo: Path, command: str, src: Path) -> tuple[float, float]:
    """(wall seconds, the step's own seconds from its log) of one shell command run with sources ``src``."""
    log_path = Path(shlex.split(command.split(">", 1)[1])[0])
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONPATH=str(src))
    env.setdefault("OMP_NUM_THREADS", "1")
    start = time.perf_counter()
    subprocess.run(["bash", "-c", command], cwd=repo, env=env, check=True)
    wall = time.perf_counter() - start
    m = re.findall(r"step '\w[\w-]*' done in ([0-9.]+) s", (repo / log_path).read_text())
    return wall, float(m[-1]) if m else float("nan")


def time_import(code: str, src: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(src))
    script = f"import time; t0 = time.perf_counter(); {code}; print(time.perf_counter() - t0)"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def baseline_sources(rev: str, dest: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", required=True, help="a repository copy with a completed run and .snakemake/log")
    parser.add_argument("--baseline-rev", default=None, help="also time the sources of this git revision")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    repo = Path(args.repo).resolve()
    commands = job_commands(repo)
    with tempfile.TemporaryDirectory() as tmp:
        sources = {"current": repo / "src"}
        if args.baseline_rev:
            sources[f"baseline {args.baseline_rev}"] = baseline_sources(args.baseline_rev, Path(tmp))
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        for name, code in IMPORTS.items():
            times = [time_import(code, repo / "src") for _ in range(args.repeats)]
            print(f"import {name:<28} median {statistics.median(times):6.2f} s")
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for _ in range(args.repeats):
            for label, src in sources.items():  # interleaved; train -> evaluate -> aggregate with the same sources
                for rule in ("train", "evaluate", "aggregate"):
                    results.setdefault((rule, label), []).append(run_job(repo, commands[rule], src))
        for rule in ("train", "evaluate", "aggregate"):
            for label in sources:
                rows = results[(rule, label)]
                wall = statistics.median(r[0] for r in rows)
                step = statistics.median(r[1] for r in rows)
                # imports done inside the step function (lazy ones) count as step time
                print(f"{rule:<9} {label:<20} wall {wall:6.2f} s  logged step {step:6.2f} s  before the step "
                      f"{wall - step:5.2f} s")
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
