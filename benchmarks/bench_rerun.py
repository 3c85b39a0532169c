"""Cost of a partial rerun against the cold run (issue 12): what a change of one result-defining value costs.

In a temporary copy of the repository (tracked + untracked-not-ignored files; the acquired sources are linked from
the repository's ``resources/``, see :func:`copy_repo`, so nothing is downloaded twice), this runs

1. a cold run of the configuration (``params.yaml``, or ``params.yaml`` merged with ``--config FILE``),
2. a change of ``structure.lambda``, 3. a change of ``structure.levels``, 4. one training fraction added,

each as a plain ``snakemake`` call on the state the previous one left. It prints each run's wall time, its jobs per
rule (Snakemake's own job table) and its ratio to the cold run, the median ``s`` of the train / evaluate benchmark
files the rerun wrote, and writes everything to ``results/benchmarks/rerun.json`` (of the repository it is run from).
Acquisition is not part of the cold run (the sources are shared); manifests, extraction and layer scoring are.

    .venv/bin/python benchmarks/bench_rerun.py                                      # the default (params.yaml)
    .venv/bin/python benchmarks/bench_rerun.py --config workflow/configs/smoke.yaml # the smoke config (minutes)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "src"))

from structure_align.config import load_params
from structure_align.snakemake_util import copy_sources, job_counts


def copy_repo(dest: Path, config: dict[str, Any]) -> Path:
    """The working tree as a fresh clone would see it, with the acquired sources shared.

    The sources ``config`` needs are acquired into the repository's resources/ (a no-op when present); the copy gets
    one folder per source whose entries link to the shared files, and a private ``SOURCE.json``, so that its
    Snakemake sees acquisition as done and can never delete or rewrite a shared file.
    """
    from structure_align.config import dataset_specs
    from structure_align.data import acquire
    from structure_align.runs import grid_datasets

    copy_sources(ROOT, dest)
    shared = ROOT / "resources"
    specs = dataset_specs(config)
    for name in dict.fromkeys(s for d in grid_datasets(config) for s in specs[d].sources):
        acquire(name, shared)
    for source in sorted(p for p in shared.iterdir() if p.is_dir() and (p / "SOURCE.json").is_file()):
        (dest / "resources" / source.name).mkdir(parents=True)
        for entry in source.iterdir():
            if entry.name == "SOURCE.json":
                shutil.copyfile(entry, dest / "resources" / source.name / entry.name)
            else:
                (dest / "resources" / source.name / entry.name).symlink_to(entry)
    return dest


def bench_seconds(repo: Path, since: float) -> dict[str, float]:
    """Job and work seconds of the train / evaluate jobs written after ``since``.

    ``<rule>_job_median_s`` / ``<rule>_job_sum_s``: the ``s`` column (job wall time) of their benchmark files;
    ``train_work_s``: the sum of the training loops' own ``seconds`` in the train.json files written (the part of a
    train job that is training, not start-up, imports or loading). ``train_job_sum_s - train_work_s`` is the
    train jobs' overhead.
    """
    out: dict[str, float] = {}
    for rule in ("train", "evaluate"):
        values = []
        for path in (repo / "results").rglob(f"{rule}.benchmark.tsv"):
            if path.stat().st_mtime >= since:
                lines = path.read_text().splitlines()
                if len(lines) >= 2:
                    values.append(float(lines[1].split("\t")[0]))
        if values:
            out[f"{rule}_job_median_s"] = round(statistics.median(values), 2)
            out[f"{rule}_job_sum_s"] = round(sum(values), 2)
            out[f"{rule}_jobs_timed"] = len(values)
    work = [json.loads(path.read_text()).get("seconds", 0.0) for path in (repo / "results").rglob("train.json")
            if path.stat().st_mtime >= since]
    if work:
        out["train_work_s"] = round(sum(work), 2)
        out["train_runs"] = len(work)
    return out


def run(repo: Path, config: dict[str, Any], name: str, cores: str) -> dict[str, Any]:
    """One plain snakemake call on ``config`` (a complete replacement of params.yaml); wall time and job table."""
    path = repo / f"bench-{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    # the copy's own sources, whatever PYTHONPATH or the editable install point to
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONPATH=str(repo / "src"))
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [str(BIN / "snakemake"), "--workflow-profile", "workflow/profiles/default", "--cores", cores,
           "--replace-workflow-config", "--configfile", path.name]
    since = time.time() - 1
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name}: snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    counts = job_counts(proc.stdout + proc.stderr)
    return {"name": name, "wall_s": round(wall, 2), "jobs": counts, "n_jobs": sum(counts.values()),
            **bench_seconds(repo, since)}


def new_fraction(fractions: list[float]) -> float:
    """A fraction not in the list: halfway between the two largest (or half of the only one)."""
    ordered = sorted(fractions)
    value = ordered[-1] / 2 if len(ordered) < 2 else (ordered[-1] + ordered[-2]) / 2
    return round(value, 4)


def changes(base: dict[str, Any]) -> list[tuple[str, Callable[[dict[str, Any]], None]]]:
    """The reruns: one result-defining value changed each time (relative to the cold config).

    The first three are the issue's (λ, levels, a fraction added); the last two touch fewer jobs, to show that a
    rerun's cost follows the work its change touches: ``csa.epochs`` reruns only the CSA + R_S rows,
    ``evaluation.duplicate_gallery`` only the evaluate jobs.
    """
    lam = float(base["structure"]["lambda"])
    extra = new_fraction(list(base["training"]["fractions"]))
    csa_epochs = int(base["csa"]["epochs"])
    gallery = bool(base["evaluation"]["duplicate_gallery"])
    return [
        (f"lambda {lam:g} -> {lam / 2:g}", lambda c: c["structure"].update({"lambda": lam / 2})),
        (f"levels {base['structure']['levels']} -> {base['structure']['levels'] + 1}",
         lambda c: c["structure"].update(levels=int(base["structure"]["levels"]) + 1)),
        (f"fraction {extra:g} added", lambda c: c["training"].update(
            fractions=sorted([*base["training"]["fractions"], extra]))),
        (f"csa.epochs {csa_epochs} -> {2 * csa_epochs}", lambda c: c["csa"].update(epochs=2 * csa_epochs)),
        (f"duplicate_gallery {gallery} -> {not gallery}",
         lambda c: c["evaluation"].update(duplicate_gallery=not gallery)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="config file merged over params.yaml (e.g. the smoke config)")
    parser.add_argument("--cores", default="all", help="snakemake --cores (default: all)")
    parser.add_argument("--out", default=str(ROOT / "results/benchmarks/rerun.json"), help="JSON written here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy (its path is printed)")
    parser.add_argument("--changes", type=int, default=None, help="run only the first N reruns (default: all)")
    args = parser.parse_args()

    base = load_params(ROOT / "params.yaml", *([ROOT / args.config] if args.config else []))
    tmp = Path(tempfile.mkdtemp(prefix="bench-rerun-"))
    try:
        repo = copy_repo(tmp / "repo", base)
        load = os.getloadavg()
        print(f"copy: {repo}  load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
        n_cores = (os.cpu_count() or 1) if args.cores == "all" else int(args.cores)
        rows = [run(repo, base, "cold", args.cores)]
        print(f"{'cold':<26} {rows[0]['wall_s']:8.1f} s  jobs {rows[0]['n_jobs']:4d}  {rows[0]['jobs']}", flush=True)
        for i, (label, change) in enumerate(changes(base)[:args.changes]):
            conf = copy.deepcopy(base)
            change(conf)
            row = run(repo, conf, f"rerun{i}", args.cores)
            row.update(name=label, ratio_to_cold=round(row["wall_s"] / rows[0]["wall_s"], 4))
            if "train_work_s" in row:
                # no scheduler can beat the training loops' own time spread over the cores
                row["work_floor_ratio"] = round(row["train_work_s"] / n_cores / rows[0]["wall_s"], 4)
            rows.append(row)
            print(f"{label:<26} {row['wall_s']:8.1f} s  jobs {row['n_jobs']:4d}  ratio {row['ratio_to_cold']:.3f}  "
                  f"{row['jobs']}  train/evaluate job median: {row.get('train_job_median_s')} / "
                  f"{row.get('evaluate_job_median_s')} s  training work {row.get('train_work_s')} s "
                  f"(floor ratio {row.get('work_floor_ratio')})", flush=True)
        after = os.getloadavg()
        result = {"config": args.config or "params.yaml", "cores": args.cores, "cpu_count": os.cpu_count(),
                  "machine": platform.platform(), "python": platform.python_version(),
                  "load_average_before": [round(x, 2) for x in load],
                  "load_average_after": [round(x, 2) for x in after],
                  "date": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": rows}
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
