"""The smoke workflow through a real one-node Slurm and workflow/profiles/slurm (marker ``slurm``; `make test-slurm`).

workflow/scripts/slurm-up brings up slurmctld, slurmd and munge from Debian's packages (state in a temporary folder,
PIDs recorded), workflow/scripts/slurm-down stops them by PID even when the test fails. Snakemake runs with the slurm
profile and only this machine's overrides: `--slurm-status-command squeue` (no accounting here) and kept logs. Needs
root and apt-get (or the packages installed) and the executor plugin (Python >= 3.11); skipped with a reason
otherwise. Checks: exit 0; one COMPLETED Slurm job per Snakemake job with the rule in its comment; each job's
partition, CPUs, memory, time limit and GPU request as Snakemake resolved them from the profile (and the profile's
own values for partition, time, GPU and threads); outputs byte-identical to the local smoke run; a failing rule
fails the run and names its Slurm log.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from test_workflow import BIN, ROOT, SMOKE, _copy_repo, _env
from workflow_util import job_counts

pytestmark = [pytest.mark.workflow, pytest.mark.slurm]

PROFILE = ROOT / "workflow/profiles/slurm/config.yaml"
# this machine's overrides: no accounting (squeue for status; MinJobAge keeps finished jobs listed), logs kept
OVERRIDES = ("--slurm-status-command", "squeue", "--slurm-no-account", "--slurm-keep-successful-logs",
             "--slurm-init-seconds-before-status-checks", "5")
# seconds for the smoke run through Slurm and for the failing rule (< 8 min with the bring-up); SIGINT first: SIGTERM
# does not stop the plugin's status loop
RUN_LIMIT, FAIL_LIMIT = 390, 75
# files that hold timings or machine state, not results
NOT_RESULTS = ("logs/", "benchmarks/")


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (starts slurmctld/slurmd/munged, writes /etc/slurm)"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "no Slurm installed and no apt-get to install it"
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]', Python >= 3.11)"
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = _skip_reason()
    if reason:
        pytest.skip(f"Slurm test skipped: {reason}")
    state = tmp_path_factory.mktemp("slurm")
    try:
        # a node wide enough that the profile's 10-CPU extraction and 48 GB training jobs run several at a time
        env = {**os.environ, "SLURM_UP_CPUS": "40", "SLURM_UP_MEM_MB": "400000"}
        subprocess.run([str(ROOT / "workflow/scripts/slurm-up"), str(state)], check=True, timeout=300, env=env)
        yield state
    finally:
        subprocess.run([str(ROOT / "workflow/scripts/slurm-down"), str(state)], check=False, timeout=60)


def _slurm_snakemake(repo: Path, *args: str, limit: int = RUN_LIMIT) -> subprocess.CompletedProcess:
    env = _env()
    env["OMP_NUM_THREADS"] = "1"
    cmd = ["timeout", "-s", "INT", "-k", "30", str(limit), str(BIN / "snakemake"), "--workflow-profile",
           "workflow/profiles/slurm", *OVERRIDES, *args]
    return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, check=False)


def _jobs(log: str) -> dict[int, dict]:
    """Snakemake job id -> {rule, threads, resources, slurm_id} from the run's log."""
    jobs: dict[int, dict] = {}
    for block in re.split(r"\n(?=rule \w+:\n)", log):
        m = re.match(r"rule (\w+):\n", block)
        jid = re.search(r"^\s+jobid: (\d+)$", block, re.MULTILINE)
        if not m or not jid:
            continue
        threads = re.search(r"^\s+threads: (\d+)$", block, re.MULTILINE)
        res = re.search(r"^\s+resources: (.*)$", block, re.MULTILINE)
        resources = dict(kv.split("=", 1) for kv in res.group(1).split(", ")) if res else {}
        jobs[int(jid.group(1))] = {"rule": m.group(1), "threads": int(threads.group(1)) if threads else 1,
                                   "resources": resources}
    for jid, sid in re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log):
        jobs[int(jid)]["slurm_id"] = sid
    return jobs


def _squeue() -> dict[str, dict[str, str]]:
    fields = ["JobID", "Comment:120", "Partition", "NumCPUs", "MinMemory", "TimeLimit", "tres-per-job", "State"]
    out = subprocess.run(["squeue", "--states=all", "-h", "-O", ",".join(fields)], capture_output=True, text=True,
                         check=True).stdout
    rows = {}
    for line in out.splitlines():
        jobid, comment, partition, cpus, mem, limit, tres, state = line.split()
        rows[jobid] = {"comment": comment, "partition": partition, "cpus": cpus, "mem": mem, "time": limit,
                       "tres": tres, "state": state}
    return rows


def _minutes(limit: str) -> int:
    """Slurm's [D-]HH:MM:SS / MM:SS time limit in minutes."""
    days, _, rest = limit.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    return (int(days or 0) * 24 + parts[0]) * 60 + parts[1] + (parts[2] > 0)


def _megabytes(mem: str) -> int:
    """squeue's MinMemory (``16000M``, ``62.50G``; binary units) in MB as Slurm counts them."""
    scale = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2}[mem[-1]]
    return round(float(mem[:-1]) * scale)


def _result_files(results: Path) -> dict[str, bytes]:
    """Every output but logs, Snakemake's benchmark files and train.json (they hold timings)."""
    return {str(p.relative_to(results)): p.read_bytes() for p in sorted(results.rglob("*"))
            if p.is_file() and not str(p.relative_to(results)).startswith(NOT_RESULTS)
            and p.name != "train.json" and not p.name.endswith((".log", ".benchmark.tsv"))}


def test_smoke_workflow_through_slurm(cluster: Path, smoke_repo: Path, tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path / "repo")
    before = set(_squeue())
    proc = _slurm_snakemake(repo, "--configfile", SMOKE)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]

    planned = job_counts(log)
    jobs = _jobs(log)
    local = {r: n for r, n in planned.items() if r != "all"}  # the target rule runs in the main process
    assert {r: sum(j["rule"] == r for j in jobs.values() if "slurm_id" in j) for r in local} == local, planned
    queue = {k: v for k, v in _squeue().items() if k not in before}
    profile = yaml.safe_load(PROFILE.read_text())
    default, per_rule, threads = (profile["default-resources"], profile.get("set-resources") or {},
                                  profile.get("set-threads") or {})
    for job in jobs.values():
        if job["rule"] == "all":
            continue
        row = queue[job["slurm_id"]]
        rule, res = job["rule"], job["resources"]
        assert row["state"] == "COMPLETED", (rule, row)
        assert row["comment"].startswith(f"rule_{rule}"), (rule, row)
        # Slurm got what Snakemake resolved for the job ...
        assert row["partition"] == res["slurm_partition"], (rule, row, res)
        assert int(row["cpus"]) == int(res.get("cpus_per_task", job["threads"])), (rule, row, res)
        assert _megabytes(row["mem"]) == int(res["mem_mb"]), (rule, row, res)
        assert _minutes(row["time"]) == int(res["runtime"]), (rule, row, res)
        assert (row["tres"] == "gres:gpu:1") == ("gpu" in res), (rule, row, res)
        # ... and that is what the profile gives the rule
        wanted = {**default, **per_rule.get(rule, {})}
        assert res["slurm_partition"] == wanted["slurm_partition"] and int(res["runtime"]) == wanted["runtime"]
        assert ("gpu" in res) == ("gpu" in wanted), rule
        if rule in threads:
            assert job["threads"] == threads[rule], (rule, job)
        if "mem_mb" in per_rule.get(rule, {}):
            assert int(res["mem_mb"]) == per_rule[rule]["mem_mb"], (rule, res)
    assert len(list((repo / ".snakemake/slurm_logs").rglob("*.log"))) == sum(local.values())

    ours, reference = _result_files(repo / "results/smoke"), _result_files(smoke_repo / "results/smoke")
    assert sorted(ours) == sorted(reference)
    differ = [p for p in reference if ours[p] != reference[p]]
    assert not differ, f"Slurm outputs differ from the local smoke run: {differ}"


def test_a_failing_rule_fails_the_run_and_names_its_slurm_log(cluster: Path, tmp_path: Path) -> None:
    repo = tmp_path / "fail"
    (repo / "workflow/profiles").mkdir(parents=True)
    shutil.copytree(ROOT / "workflow/profiles/slurm", repo / "workflow/profiles/slurm")
    (repo / "Snakefile").write_text('rule fail_on_purpose:\n    output: "never.txt"\n'
                                    '    shell: "echo about to fail; exit 3"\n')
    proc = _slurm_snakemake(repo, "--retries", "0", limit=FAIL_LIMIT)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    logs = sorted((repo / ".snakemake/slurm_logs/rule_fail_on_purpose").rglob("*.log"))
    assert logs, log[-3000:]
    assert str(logs[0]) in log or os.fspath(logs[0].relative_to(repo)) in log, log[-3000:]
    assert "about to fail" in logs[0].read_text()
