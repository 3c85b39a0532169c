"""Reliability suite (docs/reliability.md): hard kills, corrupted files, bad params, locks, byte-identical reruns.

* Corruption (fast, package functions): a truncated or bit-flipped feature file, manifest parquet, heads file or
  downloaded archive is refused with an error naming the file, and no result is written from it.
* Bad params (fast): more than 20 invalid configurations are refused by ``check_params`` with the key named; a few
  of them also through ``snakemake -n`` (marker ``workflow``), before any job.
* Locks (fast): ``workflow/scripts/snakemake-locked`` (what every Makefile target runs) with a stand-in Snakemake:
  a stale Snakemake lock is removed, a held flock or a Snakemake process outside make is refused.
* Kills (marker ``workflow``): `make smoke` in a fresh copy is killed with SIGKILL (whole process group) at a seeded
  moment, a second concurrent `make smoke` is refused meanwhile, then a plain `make smoke` completes without a
  manual unlock, and every result file is byte-identical to the uninterrupted session smoke run (which also shows
  that two runs of the same params give the same bytes). The long variant (marker ``reliability``, `make
  reliability`) kills five times at seeded moments before the final rerun.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import ToyData, toy_params

from structure_align import config as cfgmod
from structure_align import steps
from structure_align.data import SOURCES, acquire
from structure_align.data.acquire import AcquireError
from structure_align.data.registry import SourceSpec
from structure_align.io import FileFormatError, read_safetensors_header
from structure_align.runs import RunSpec, Size, Variant

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SMOKE = "workflow/configs/smoke.yaml"
LOCK_SCRIPT = ROOT / "workflow/scripts/snakemake-locked"
RS = {"lambda": 10, "levels": 1, "tau": 0.05, "weighting": "none", "distance": "cosine"}


# ----------------------------------------------------------------------------------------------------- corruption

def _corruptions(data: bytes, seed: int, n_flips: int = 6,
                 spans: list[tuple[int, int]] | None = None) -> list[tuple[str, bytes]]:
    """Truncations (half, last byte) and single-bit flips at seeded offsets spread over the whole file (or over
    ``spans``, the byte ranges a step reads)."""
    rng = random.Random(seed)
    out = [("truncated to half", data[: len(data) // 2]), ("last byte cut", data[:-1])]
    spans = spans or [(0, len(data))]
    # one flip in the 8-byte length prefix / the header start, the others anywhere (in the spans)
    offsets = [rng.randrange(0, 16)] + [rng.randrange(*rng.choice(spans)) for _ in range(n_flips - 1)]
    for off in offsets:
        flipped = bytearray(data)
        flipped[off] ^= 1 << rng.randrange(8)
        out.append((f"bit flip at byte {off}", bytes(flipped)))
    return out


def _score(toy: ToyData) -> Path:
    vision, text, manifests = toy.pool_args()
    out = toy.root / "layers/v__t"
    steps.score_layers(vision, text, manifests, layers={"metric": "mutual_knn", "n_samples": 30, "k": 5, "seed": 0},
                       val_fraction=0.2, val_seed=0, scores_out=out / "scores.csv", choice_out=out / "choice.json")
    return out / "choice.json"


def _runs(toy: ToyData) -> list[Path]:
    variant = Variant.make("linear", "similar", RS)
    return [Path(RunSpec("v", "t", variant, Size("frac", 0.5), s).dir(str(toy.root))) for s in (3, 4)]


def _train(toy: ToyData, runs: list[Path], choice: Path) -> None:
    vision, text, manifests = toy.pool_args()
    steps.train_runs(runs, toy_params(), vision, text, manifests, choice, device="cpu", progress=False)


def _outputs(runs: list[Path], *names: str) -> list[Path]:
    return [run / name for run in runs for name in names if (run / name).exists()]


def _read_spans(path: Path, tensors: list[str]) -> list[tuple[int, int]]:
    """Byte ranges of a safetensors file a lazy reader touches: the header and the named tensors."""
    header, start = read_safetensors_header(path)
    return [(0, start)] + [(start + header[t]["data_offsets"][0], start + header[t]["data_offsets"][1])
                           for t in tensors]


def _each_corruption(path: Path, seed: int, call: Callable[[], None], runs: list[Path], outputs: tuple[str, ...],
                     spans: list[tuple[int, int]] | None = None):
    """Corrupt ``path`` every way of :func:`_corruptions`; ``call`` must raise naming it and write no output."""
    good = path.read_bytes()
    try:
        for label, data in _corruptions(good, seed, spans=spans):
            path.write_bytes(data)
            with pytest.raises((FileFormatError, ValueError)) as err:
                call()
            assert str(path) in str(err.value), (label, str(err.value))
            assert _outputs(runs, *outputs) == [], (label, "an output was written from a corrupted file")
    finally:
        path.write_bytes(good)


def test_corrupted_feature_file_is_refused_before_training(toy_data: ToyData) -> None:
    """A corruption of the bytes the train step reads (header, its layer pair, ``groups``) is refused; the step reads
    nothing else (per-tensor checksums, docs/reliability.md "Corruption")."""
    choice = _score(toy_data)
    runs = _runs(toy_data)
    pick = json.loads(choice.read_text())["similar"]
    read = {"vision": [f"layer_{pick['vision_layer']:03d}"], "text": [f"layer_{pick['text_layer']:03d}", "groups"]}
    for i, modality in enumerate(("vision", "text")):
        path = toy_data.features("toypairs", modality)
        _each_corruption(path, 10 + i, lambda: _train(toy_data, runs, choice), runs,
                         ("heads.safetensors", "train.json"), spans=_read_spans(path, read[modality]))
    _train(toy_data, runs, choice)  # the restored files train
    assert len(_outputs(runs, "heads.safetensors", "train.json")) == 4


def test_corrupted_manifest_is_refused_before_training_and_evaluation(toy_data: ToyData) -> None:
    choice = _score(toy_data)
    runs = _runs(toy_data)
    _each_corruption(toy_data.manifest("toypairs"), 20, lambda: _train(toy_data, runs, choice), runs,
                     ("heads.safetensors", "train.json"))
    _train(toy_data, runs, choice)

    def evaluate() -> None:
        steps.evaluate_runs(runs, toy_data.eval_records(), evaluation={"duplicate_gallery": False, "batch_size": 64},
                            device="cpu")

    _each_corruption(toy_data.manifest("toyzs"), 21, evaluate, runs, ("metrics.json",))


def test_corrupted_eval_features_and_heads_are_refused_before_metrics(toy_data: ToyData) -> None:
    choice = _score(toy_data)
    runs = _runs(toy_data)
    _train(toy_data, runs, choice)

    def evaluate() -> None:
        steps.evaluate_runs(runs, toy_data.eval_records(), evaluation={"duplicate_gallery": False, "batch_size": 64},
                            device="cpu")

    _each_corruption(toy_data.features("toyzs", "text"), 30, evaluate, runs, ("metrics.json",))
    _each_corruption(runs[1] / "heads.safetensors", 31, evaluate, runs, ("metrics.json",))
    evaluate()
    assert len(_outputs(runs, "metrics.json")) == 2


def _npm_archive(path: Path) -> bytes:
    """A small npm-style .tgz (files under package/)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in (("package/package.json", '{"name": "toy"}'), ("package/data/a.txt", "hello " * 200)):
            info = tarfile.TarInfo(name)
            raw = text.encode()
            info.size, info.mtime = len(raw), 0
            tar.addfile(info, io.BytesIO(raw))
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def test_corrupted_downloaded_archive_is_refused_before_unpacking(tmp_path: Path, monkeypatch) -> None:
    good = _npm_archive(tmp_path / "toy-1.0.0.tgz")
    spec = SourceSpec(name="toy-npm", client="npm", package="toy", version="1.0.0",
                      sha256=hashlib.sha256(good).hexdigest(), files=("data/a.txt",))
    monkeypatch.setitem(SOURCES, spec.name, spec)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    served = tmp_path / "served.tgz"
    # a stand-in `npm pack` that "downloads" whatever served.tgz holds
    (bin_dir / "npm").write_text(f"#!/bin/sh\ncp {served} ./toy-1.0.0.tgz\n")
    (bin_dir / "npm").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    res = tmp_path / "resources"
    for label, data in _corruptions(good, 40):
        served.write_bytes(data)
        with pytest.raises(AcquireError, match="sha256 mismatch") as err:
            acquire("toy-npm", res)
        assert "toy-1.0.0.tgz" in str(err.value), label
        assert not (res / "toy-npm").exists() and list(res.iterdir()) == [], label
    served.write_bytes(good)
    assert (acquire("toy-npm", res) / "data/a.txt").read_text().startswith("hello")


# ----------------------------------------------------------------------------------------------------- bad params

def _base() -> dict:
    return cfgmod.load_params(ROOT / "params.yaml", ROOT / SMOKE)


def _set(path: str, value) -> Callable[[dict], None]:
    """A mutation that sets the dotted ``path`` (list indices as ``[i]``) to ``value``."""
    parts = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]

    def mutate(conf: dict) -> None:
        node = conf
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value

    return mutate


def _append(path: str, value) -> Callable[[dict], None]:
    def mutate(conf: dict) -> None:
        node = conf
        for part in path.split("."):
            node = node[part]
        node.append(value)

    return mutate


NAN, INF = float("nan"), float("inf")
# (case, mutation, the key the message must name)
BAD_PARAMS = [
    ("unknown top-level key", _set("trainig", {"epochs": 3}), "trainig"),
    ("unknown nested key", _set("structure.lamda", 3), "lamda"),
    ("wrong type: string for an integer", _set("training.epochs", "8"), "training.epochs"),
    ("wrong type: bool for an integer", _set("training.patience", True), "training.patience"),
    ("wrong type: list for a mapping", _set("structure", [1, 2]), "structure"),
    ("wrong type: string for a boolean", _set("training.lr_finder", "no"), "training.lr_finder"),
    ("missing required key", lambda c: c["training"].pop("epochs"), "training"),
    ("fraction above 1", _set("training.fractions", [0.5, 1.5]), "training.fractions[1]"),
    ("fraction 0", _set("training.fractions", [0.0, 1.0]), "training.fractions[0]"),
    ("negative lambda", _set("structure.lambda", -1), "structure.lambda"),
    ("levels 0", _set("structure.levels", 0), "structure.levels"),
    ("tau 0", _set("structure.tau", 0), "structure.tau"),
    ("val_fraction 1", _set("training.val_fraction", 1.0), "training.val_fraction"),
    ("batch size 1", _set("training.batch_size", 1), "training.batch_size"),
    ("NaN lambda", _set("structure.lambda", NAN), "structure.lambda"),
    ("infinite learning rate", _set("training.lr", INF), "training.lr"),
    ("NaN fraction", _set("training.fractions", [0.5, NAN]), "training.fractions[1]"),
    ("NaN in a variant override", lambda c: c["methods"].append(
        {"head": "linear", "layers": "last", "structure": {"lambda": NAN}}), "methods[5].structure.lambda"),
    ("unknown vision encoder", _set("encoders.vision", ["resnet-9000"]), "encoders.vision[0]"),
    ("text encoder as vision encoder", _set("encoders.vision", ["minilm-l6"]), "encoders.vision[0]"),
    ("unknown dataset", _set("datasets.train", ["emoji", "imagenet21k"]), "datasets.train[1]"),
    ("zero-shot dataset used for training", _set("datasets.train", ["fashion_mnist"]), "datasets.train[0]"),
    ("pair dataset used for zero-shot", _append("datasets.zeroshot", "emoji"), "datasets.zeroshot[2]"),
    ("unknown builder option", _set("manifest.emoji", {"limit": 300, "colour": "red"}), "manifest.emoji"),
    ("builder option for an unknown dataset", _set("manifest.nope", {"limit": 3}), "manifest.nope"),
    ("duplicate fractions", _set("training.fractions", [0.5, 0.5]), "training.fractions"),
    ("duplicate seeds", _set("training.seeds", [1, 2, 1]), "training.seeds"),
    ("duplicate sizes", _set("training.sizes", [50, 50]), "training.sizes"),
    ("seeds_by_size key that is not a count", _set("training.seeds_by_size", {"n~40": [1, 2, 3]}),
     "training.seeds_by_size.n~40"),
    ("seeds_by_size without a seed of training.seeds", _set("training.seeds_by_size", {40: [1, 3]}),
     "training.seeds_by_size[40]"),
    ("duplicate seeds_by_size seeds", _set("training.seeds_by_size", {40: [1, 2, 2]}), "training.seeds_by_size[40]"),
    ("duplicate variant", lambda c: c["methods"].append(dict(c["methods"][0])), "methods[5]"),
    ("unknown head", _append("methods", {"head": "transformer", "layers": "last", "structure": False}),
     "methods[5].head"),
    ("bad layer choice", _set("methods[0].layers", "first"), "methods[0].layers"),
    ("unknown device", _set("device", "tpu"), "device"),
    ("unknown summary metric", _set("report.summary_metrics", ["accuracy"]), "report.summary_metrics[0]"),
    ("results_dir outside the repository", _set("results_dir", "../elsewhere"), "results_dir"),
    ("absolute results_dir", _set("results_dir", "/tmp/results"), "results_dir"),
    ("unknown user dataset kind", _set("user_datasets", {"mine": {"kind": "video"}}), "user_datasets.mine.kind"),
]


def test_enough_bad_params_cases() -> None:
    assert len(BAD_PARAMS) >= 20


@pytest.mark.parametrize("case, mutate, key", BAD_PARAMS, ids=[c[0] for c in BAD_PARAMS])
def test_bad_params_are_refused_with_the_key(case: str, mutate, key: str) -> None:
    conf = copy.deepcopy(_base())
    mutate(conf)
    with pytest.raises(cfgmod.ParamsError) as err:
        cfgmod.check_params(conf)
    message = str(err.value)
    assert f"'{key}'" in message or f"('{key}' was unexpected)" in message, message


# YAML text as a user writes it (the NaN case is the literal `.nan` of the issue)
DRY_RUN_CASES = [
    ("structure:\n  lambda: .nan\n", "structure.lambda"),
    ("encoders:\n  vision: [resnet-9000]\n", "encoders.vision[0]"),
    ("datasets:\n  train: [fashion_mnist]\n", "datasets.train[0]"),
    ("training:\n  seeds: [1, 1]\n", "training.seeds"),
]


@pytest.fixture(scope="module")
def light_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_workflow import _copy_repo

    return _copy_repo(tmp_path_factory.mktemp("light"))


@pytest.mark.workflow
@pytest.mark.parametrize("text, key", DRY_RUN_CASES, ids=[c[1] for c in DRY_RUN_CASES])
def test_bad_params_are_refused_by_snakemake_dry_run(light_copy: Path, tmp_path: Path, text: str, key: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    proc = subprocess.run([str(BIN / "snakemake"), "-n", "--cores", "1", "--configfile", SMOKE, str(bad)],
                          cwd=light_copy, env=_env(light_copy), capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"params key '{key}'" in out, out[-3000:]
    assert "Job stats" not in out and "Traceback (most recent call last)" not in out
    assert not (light_copy / "results/smoke").exists()


@pytest.mark.workflow
def test_seeds_by_size_plans_one_extra_job_per_group(light_copy: Path, tmp_path: Path) -> None:
    from workflow_util import job_counts

    conf = cfgmod.load_params(light_copy / "params.yaml", light_copy / SMOKE)
    conf["training"]["seeds_by_size"] = {40: [1, 2, 3, 4]}
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump(conf))
    proc = subprocess.run([str(BIN / "snakemake"), "-n", "-p", "--cores", "1", "--replace-workflow-config",
                           "--configfile", str(extra)],
                          cwd=light_copy, env=_env(light_copy), capture_output=True, text=True, timeout=300, check=True)
    out = proc.stdout + proc.stderr
    counts = job_counts(out)
    # smoke: 5 variants x 2 sizes (n~40, frac~1) for seeds 1, 2; seeds 3, 4 only at n~40, one more job per group
    assert counts["train"] == counts["evaluate"] == 10, counts
    assert counts["train_extra_seeds_0"] == counts["evaluate_extra_seeds_0"] == 5, counts
    planned = set(re.findall(r"runs/\S+?/(n~\d+|frac~[\d.]+)/seed~(\d+)/metrics\.json", out))
    assert {s for size, s in planned if size == "n~40"} == {"1", "2", "3", "4"}
    assert {s for size, s in planned if size != "n~40"} == {"1", "2"}


# ----------------------------------------------------------------------------------------------------------- locks

def _fake_snakemake(tmp_path: Path) -> Path:
    """A stand-in for `snakemake` that logs its arguments (and removes the locks on --unlock)."""
    fake = tmp_path / "fake-snakemake"
    fake.write_text('#!/bin/bash\necho "$*" >> calls.log\n'
                    'if [[ " $* " == *" --unlock "* ]]; then rm -rf .snakemake/locks; fi\n')
    fake.chmod(0o755)
    return fake


def _locked(cwd: Path, fake: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, SNAKEMAKE_BIN=str(fake))
    return subprocess.run([str(LOCK_SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
                          check=False)


needs_flock = pytest.mark.skipif(shutil.which("flock") is None or not Path("/proc/self/cwd").exists(),
                                 reason="needs flock(1) and /proc (Linux)")


@needs_flock
def test_lock_script_removes_a_stale_snakemake_lock(tmp_path: Path) -> None:
    fake = _fake_snakemake(tmp_path)
    (tmp_path / ".snakemake/locks").mkdir(parents=True)
    (tmp_path / ".snakemake/locks/0.input.lock").write_text("results/x\n")
    proc = _locked(tmp_path, fake, "--cores", "2", "all")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("\n") == 1 and "removing a stale Snakemake lock" in proc.stderr
    assert (tmp_path / "calls.log").read_text().splitlines() == ["--cores 2 all --unlock", "--cores 2 all"]
    proc = _locked(tmp_path, fake, "all")  # no lock left: no message, no unlock
    assert proc.returncode == 0 and proc.stderr == ""
    assert (tmp_path / "calls.log").read_text().splitlines()[-1] == "all"


@needs_flock
def test_lock_script_refuses_while_another_make_holds_the_flock(tmp_path: Path) -> None:
    fake = _fake_snakemake(tmp_path)
    (tmp_path / ".snakemake/locks").mkdir(parents=True)
    (tmp_path / ".snakemake/locks/0.input.lock").write_text("results/x\n")
    with open(tmp_path / ".snakemake/make.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = _locked(tmp_path, fake, "all")
    assert proc.returncode == 75 and "already running Snakemake" in proc.stderr
    assert not (tmp_path / "calls.log").exists()  # neither unlocked nor run
    assert (tmp_path / ".snakemake/locks/0.input.lock").exists()


@needs_flock
def test_lock_script_keeps_the_lock_of_a_snakemake_running_outside_make(tmp_path: Path) -> None:
    fake = _fake_snakemake(tmp_path)
    (tmp_path / ".snakemake/locks").mkdir(parents=True)
    (tmp_path / ".snakemake/locks/0.input.lock").write_text("results/x\n")
    # a process whose argv[0] is `snakemake`, working in this directory (a direct `snakemake` or `dvc repro` call)
    other = subprocess.Popen(["bash", "-c", "exec -a snakemake sleep 60"], cwd=tmp_path)
    try:
        time.sleep(0.3)
        proc = _locked(tmp_path, fake, "all")
    finally:
        other.kill()
        other.wait()
    assert proc.returncode == 75 and "outside make" in proc.stderr and str(other.pid) in proc.stderr
    assert (tmp_path / ".snakemake/locks/0.input.lock").exists() and not (tmp_path / "calls.log").exists()


# ------------------------------------------------------------------------------------------------- kills and reruns

def _env(repo: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(repo / "src")  # the copy's own sources
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _make_smoke(repo: Path, log: Path) -> subprocess.Popen:
    """`make smoke` as a user runs it (install skipped: -o install), in its own process group."""
    fh = open(log, "a")  # noqa: SIM115 -- closed by the caller through _finish
    return subprocess.Popen(["make", "-o", "install", "smoke", "CORES=2"], cwd=repo, env=_env(repo), stdout=fh,
                            stderr=subprocess.STDOUT, start_new_session=True)


def _steps_done(log: Path, start: int) -> int:
    """Snakemake's 'N of M steps done' count in ``log`` after byte offset ``start`` (0 before the first)."""
    found = re.findall(r"(\d+) of \d+ steps", log.read_text(errors="replace")[start:])
    return int(found[-1]) if found else 0


def _kill_after(proc: subprocess.Popen, log: Path, start: int, steps_done: int, delay: float,
                timeout: float = 1800) -> bool:
    """Wait until jobs run and ``steps_done`` more steps are done, plus ``delay`` seconds; then SIGKILL the process
    group (make, the lock script's Snakemake and every job).

    Returns False if the run finished on its own first.
    """
    deadline = time.monotonic() + timeout
    while _steps_done(log, start) < steps_done or "Execute " not in log.read_text(errors="replace")[start:]:
        if proc.poll() is not None:
            return False
        if time.monotonic() > deadline:
            raise AssertionError(f"no progress within {timeout} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    end = time.monotonic() + delay
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # the kernel releases the flock when the last process of the group has exited, not when make is reaped
    # (a thread group whose leader is already a zombie can still hold it while its other threads exit)
    end = time.monotonic() + 120
    while _live_group_members(proc.pid) or not _flock_free(log.parent / ".snakemake/make.lock"):
        if time.monotonic() > end:
            raise AssertionError(f"processes of group {proc.pid} outlived SIGKILL by 120 s")
        time.sleep(0.1)
    return True


def _flock_free(path: Path) -> bool:
    """Whether the make lock could be taken now (taken and released at once)."""
    if not path.exists():
        return True
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
    return True


def _live_group_members(pgid: int) -> list[int]:
    """Processes of process group ``pgid`` that have not exited (zombies waiting to be reaped do not count)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def _result_digests(repo: Path) -> dict[str, str]:
    """sha256 of every result file of the smoke run (logs, benchmark timings and atomic-write temp files aside);
    ``train.json`` without its ``seconds`` (wall time of the run)."""
    out = {}
    root = repo / "results/smoke"
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or rel.parts[0] in ("logs", "benchmarks") or path.suffix == ".log" \
                or path.name.endswith(".benchmark.tsv") or path.name.startswith("."):
            continue
        data = path.read_bytes()
        if path.name == "train.json":
            record = json.loads(data)
            record.pop("seconds", None)
            data = json.dumps(record, sort_keys=True).encode()
        out[str(rel)] = hashlib.sha256(data).hexdigest()
    return out


@pytest.fixture(scope="module")
def reference(smoke_repo: Path) -> dict[str, str]:
    """Digests of the uninterrupted session smoke run (tests/conftest.py)."""
    digests = _result_digests(smoke_repo)
    assert "metrics.json" in digests and any(k.endswith("/metrics.json") and k.startswith("runs/") for k in digests)
    return digests


def _assert_identical(repo: Path, reference: dict[str, str]) -> None:
    got = _result_digests(repo)
    assert sorted(got) == sorted(reference), sorted(set(got) ^ set(reference))
    differ = [k for k in reference if got[k] != reference[k]]
    assert not differ, differ
    locks = list((repo / ".snakemake/locks").glob("*"))
    assert not locks, locks


def _rerun_completes(repo: Path, log: Path) -> str:
    start = log.stat().st_size if log.exists() else 0
    proc = _make_smoke(repo, log)
    assert proc.wait(timeout=1800) == 0, log.read_text()[-5000:]
    text = log.read_text()[start:]
    assert "LockException" not in text and "cannot be locked" not in text
    return text


def _kill_and_recover(repo: Path, reference: dict[str, str], kills: int, seed: int,
                      check_concurrent: bool) -> list[tuple[int, float]]:
    rng = random.Random(seed)
    log = repo / "make-smoke.log"
    moments: list[tuple[int, float]] = []
    for i in range(kills):
        start = log.stat().st_size if log.exists() else 0
        proc = _make_smoke(repo, log)
        # at most 3 more steps per attempt: five kills stay within the smoke run's 25 steps
        steps_done, delay = rng.randint(0, 3), round(rng.uniform(0.0, 8.0), 2)
        if check_concurrent and i == 0:
            # a second `make smoke` while the first holds the flock is refused at once, and changes nothing
            while _steps_done(log, start) < 1:
                assert proc.poll() is None, log.read_text()[-3000:]
                time.sleep(0.2)
            second = subprocess.run(["make", "-o", "install", "smoke", "CORES=2"], cwd=repo, env=_env(repo),
                                    capture_output=True, text=True, timeout=120, check=False)
            assert second.returncode != 0 and "already running Snakemake" in second.stderr, second.stderr
        if not _kill_after(proc, log, start, steps_done, delay):
            pytest.fail(f"the run finished before kill {i + 1} (after {steps_done} steps + {delay} s)")
        moments.append((steps_done, delay))
        assert list((repo / ".snakemake/locks").glob("*")), "the kill should leave Snakemake's lock behind"
    text = _rerun_completes(repo, log)
    assert "removing a stale Snakemake lock" in text
    _assert_identical(repo, reference)
    return moments


@pytest.mark.workflow
def test_kill_9_then_make_smoke_recovers_without_unlock(reference: dict[str, str], tmp_path: Path) -> None:
    """One SIGKILL at a seeded moment; a concurrent `make smoke` is refused; the plain rerun gives the same bytes
    as the uninterrupted session run (so two runs with the same params are byte-identical too)."""
    from test_workflow import _copy_repo

    repo = _copy_repo(tmp_path / "repo")
    _kill_and_recover(repo, reference, kills=1, seed=12, check_concurrent=True)


@pytest.mark.workflow
@pytest.mark.reliability
def test_five_kills_then_make_smoke_is_byte_identical(reference: dict[str, str], tmp_path: Path) -> None:
    """Five SIGKILLs of the whole workflow at seeded moments (each after 0-3 more steps + 0-8 s), then a plain
    `make smoke`: every result file is byte-identical to the uninterrupted run."""
    from test_workflow import _copy_repo

    repo = _copy_repo(tmp_path / "repo")
    moments = _kill_and_recover(repo, reference, kills=5, seed=2026, check_concurrent=False)
    assert len(moments) == 5


@pytest.mark.workflow
@pytest.mark.reliability
def test_second_uninterrupted_run_is_byte_identical(reference: dict[str, str], tmp_path: Path) -> None:
    from test_workflow import _copy_repo

    repo = _copy_repo(tmp_path / "repo")
    _rerun_completes(repo, repo / "make-smoke.log")
    _assert_identical(repo, reference)

