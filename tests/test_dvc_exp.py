"""DVC experiments on the smoke workflow (marker ``workflow``; docs/workflow.md "DVC").

A project whose params.yaml is the smoke config with ``results_dir: results`` (the paths of dvc.yaml) holds the
session smoke run's outputs. `make reproduce` (nothing left for Snakemake) records them with workflow/scripts/dvc-sync,
after which `dvc status` is clean and the cache holds every tracked output; `dvc exp run -S structure.lambda=5` then
runs exactly the Snakemake jobs a direct dry run with the same change plans, keeps every file it does not rewrite
(same inode and mtime), and `dvc exp show` / `exp diff` / `metrics diff` / `exp apply` see the experiment.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from test_workflow import BIN, DVC_OUTS, _copy_repo, _make, _run, _smoke_config, _snakemake
from workflow_util import job_counts

pytestmark = pytest.mark.workflow

GIT = ["git", "-c", "user.name=ci", "-c", "user.email=ci@example.org"]
# the outputs that only the features and training stages write; aggregation rewrites tables, figures, metrics.json
KEPT = ("manifests", "images", "features", "layers", "runs")


def _dvc(repo: Path, *args: str, timeout: int = 900) -> str:
    proc = _run([str(BIN / "dvc"), *args], repo, timeout=timeout)
    return proc.stdout + proc.stderr


def _snapshot(results: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime in ns) of every file under the outputs that a λ change must leave alone."""
    out = {}
    for name in KEPT:
        for path in sorted((results / name).rglob("*")):
            if path.is_file():
                st = path.stat()
                out[str(path.relative_to(results))] = (st.st_ino, st.st_mtime_ns)
    return out


def _stage_job_counts(output: str) -> dict[str, dict[str, int]]:
    """Snakemake's job table per DVC stage of a `dvc exp run` / `dvc repro` log."""
    parts = output.split("Running stage '")[1:]
    return {part.split("'", 1)[0]: job_counts(part) for part in parts}


def make_project(smoke_repo: Path, dest: Path) -> Path:
    """The smoke outputs in a git + DVC project after `make reproduce`, dvc.lock committed (the baseline)."""
    project = _copy_repo(dest)
    conf = _smoke_config(smoke_repo)
    conf["results_dir"] = "results"
    (project / "params.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    for name in DVC_OUTS:
        src, out = smoke_repo / "results/smoke" / name, project / "results" / name
        if out.is_dir():
            shutil.rmtree(out)  # the committed default tables and figures
        shutil.copytree(src, out) if src.is_dir() else shutil.copy2(src, out)  # mtimes kept
    # the acquisition records were written afresh by _copy_repo: give them the smoke run's times, else Snakemake
    # sees newer sources than the manifests built from them
    for record in (project / "resources").glob("*/SOURCE.json"):
        st = (smoke_repo / record.relative_to(project)).stat()
        os.utime(record, ns=(st.st_atime_ns, st.st_mtime_ns))
    _run(["git", "init", "-q"], project)
    _run(["git", "add", "-A"], project)
    _run([*GIT, "commit", "-qm", "project"], project)
    proc = _make(project, "reproduce", "CORES=2")
    out = proc.stdout + proc.stderr
    assert "Nothing to be done" in out and "dvc-sync: dvc commit -f features analysis" in out, out[-3000:]
    _run(["git", "add", "-A"], project)
    _run([*GIT, "commit", "-qm", "baseline: dvc.lock of the smoke run"], project)
    return project


@pytest.fixture(scope="module")
def project(smoke_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(smoke_repo, tmp_path_factory.mktemp("dvcexp") / "project")


def test_make_reproduce_leaves_dvc_in_sync_with_a_filled_cache(project: Path) -> None:
    status = json.loads(_dvc(project, "status", "--json") or "{}")
    assert status == {}, status
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    cache = project / ".dvc/cache/files/md5"
    for stage in lock["stages"].values():
        for out in stage["outs"]:
            if out["path"].startswith(("results/tables", "results/figures", "results/metrics")):
                continue  # cache: false, committed to Git
            digest = out["md5"]
            assert (cache / digest[:2] / digest[2:]).is_file(), f"{out['path']} is not in the DVC cache"


def test_exp_run_is_a_partial_rerun_that_keeps_untouched_outputs(project: Path) -> None:
    # the plan of a direct Snakemake run with the same change
    params = project / "params.yaml"
    baseline = params.read_text()
    conf = yaml.safe_load(baseline)
    conf["structure"]["lambda"] = 5
    params.write_text(yaml.safe_dump(conf, sort_keys=False))
    dry = _snakemake(project, "-n")
    planned = job_counts(dry.stdout + dry.stderr)
    params.write_text(baseline)
    assert planned and {"train", "evaluate", "aggregate"} <= set(planned), planned
    assert not {"extract_features", "manifest", "score_layers"} & set(planned), planned

    before = _snapshot(project / "results")
    log = _dvc(project, "exp", "run", "-S", "structure.lambda=5", "-n", "lam5", timeout=1800)
    counts = _stage_job_counts(log)
    assert counts.get("features") == {} and counts.get("analysis") == planned, (counts, planned, log[-3000:])
    after = _snapshot(project / "results")
    changed = sorted(p for p, v in before.items() if after.get(p) != v)
    assert not changed, f"exp run deleted or rewrote untouched outputs: {changed[:10]}"
    assert any("lambda~5" in p for p in after), "no λ = 5 run was written"
    assert json.loads(_dvc(project, "status", "--json") or "{}") == {}

    show = json.loads(_dvc(project, "exp", "show", "--json"))
    exps = [e for rev in show for e in (rev.get("experiments") or []) if e.get("name") == "lam5"]
    assert exps, "dvc exp show does not list lam5"
    data = exps[0]["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["structure"]["lambda"] == 5
    assert data["metrics"]["results/metrics.json"]["data"], "no headline metrics in exp show"

    assert "structure.lambda" in _dvc(project, "exp", "diff", "HEAD", "lam5")
    assert "results/metrics.json" in _dvc(project, "metrics", "diff", "HEAD", "lam5")
    exp_table = (project / "results/tables/main.md").read_bytes()
    _run(["git", "checkout", "HEAD", "--", "."], project)  # back to the baseline's params, lock and tables
    assert (project / "results/tables/main.md").read_bytes() != exp_table
    _dvc(project, "exp", "apply", "lam5")
    assert (project / "results/tables/main.md").read_bytes() == exp_table
    assert yaml.safe_load(params.read_text())["structure"]["lambda"] == 5
    _run(["git", "checkout", "HEAD", "--", "."], project)
