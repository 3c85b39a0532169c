"""The smoke workflow end to end in a temporary copy of the repository (marker ``workflow``; a few minutes).

One module-scoped run of `snakemake --configfile workflow/configs/smoke.yaml` feeds the checks: the main table
(rows, columns, finite numbers), the figures, the partial-rerun plan after a parameter change (from the dry-run job
list), the linter, and a DVC push/pull round trip through a local remote followed by `snakemake --touch`.
Acquired sources are shared with the repository's resources/ (linked file by file, `_link_resources`), so a second
run downloads nothing and no copy can delete a shared file.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from figure_util import assert_figure, has_colour, on_white, pdf_pages, png_colours, tab10
from workflow_util import job_counts

pytestmark = pytest.mark.workflow

ROOT = Path(__file__).resolve().parents[1]
SMOKE = "workflow/configs/smoke.yaml"
BIN = Path(sys.executable).parent
RUN_TIMEOUT = 1800


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # the rules call `python -m structure_align`
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _run(cmd: list[str], cwd: Path, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, check=False, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return proc


def _copy_repo(dest: Path) -> Path:
    """Tracked and untracked-but-not-ignored files (the working tree as a fresh clone would see it), with the
    acquired sources shared (:func:`_link_resources`)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    _link_resources(dest)
    return dest


def _link_resources(dest: Path) -> None:
    """``dest/resources/<source>/``: links to the repository's acquired files plus a private ``SOURCE.json``.

    The smoke config's sources are acquired into the repository's resources/ first (a no-op when present), so a
    source is downloaded once for every copy. The private, freshly written ``SOURCE.json`` (the acquire rule's
    output) makes the copy's Snakemake see acquisition as done, and whatever it deletes or rewrites (a killed or
    failed job's outputs) stays inside the copy: the shared files are never touched.
    """
    from structure_align.config import dataset_specs, load_params
    from structure_align.data import acquire
    from structure_align.runs import grid_datasets

    shared = ROOT / "resources"
    conf = load_params(ROOT / "params.yaml", ROOT / SMOKE)
    specs = dataset_specs(conf)
    for name in dict.fromkeys(s for d in grid_datasets(conf) for s in specs[d].sources):
        acquire(name, shared)
    (dest / "resources").mkdir()
    for source in sorted(p for p in shared.iterdir() if p.is_dir() and (p / "SOURCE.json").is_file()):
        (dest / "resources" / source.name).mkdir()
        for entry in source.iterdir():
            if entry.name == "SOURCE.json":
                shutil.copyfile(entry, dest / "resources" / source.name / entry.name)
            else:
                (dest / "resources" / source.name / entry.name).symlink_to(entry)


def _snakemake(repo: Path, *args: str, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    return _run([str(BIN / "snakemake"), "--workflow-profile", "workflow/profiles/default", "--cores", "2", *args],
                repo, timeout=timeout, check=check)


@pytest.fixture(scope="module")
def smoke(smoke_repo: Path) -> Path:
    """The session's smoke run (tests/conftest.py; tests/test_reliability.py compares with it too)."""
    return smoke_repo


def _smoke_config(repo: Path) -> dict:
    base = yaml.safe_load((repo / "params.yaml").read_text())
    smoke = yaml.safe_load((repo / SMOKE).read_text())
    from structure_align.config import merge_params

    return merge_params(base, smoke)


def test_smoke_table_rows_columns_and_numbers(smoke: Path) -> None:
    conf = _smoke_config(smoke)
    out = smoke / conf["results_dir"]
    table = pd.read_csv(out / "tables/main.csv")
    assert list(table.method) == ["Linear + Last", "Linear + Similar", "Linear + Similar + R_S", "CSA + Similar",
                                  "CSA + Similar + R_S"]
    metric_cols = [f"{d} top-1" for d in conf["datasets"]["zeroshot"]]
    metric_cols += [f"{d} {m}" for d in conf["datasets"]["retrieval"]
                    for m in ("I2T R@1", "I2T R@5", "T2I R@1", "T2I R@5")]
    missing = [c for c in metric_cols if c not in table.columns]
    assert not missing, missing
    # every cell is the seed mean of the runs' metrics.json at the largest fraction (what a run wrote is checked
    # against an independent recomputation in test_smoke_metrics_equal_an_independent_recomputation)
    runs = _run_metrics(out)
    top = runs[runs.fraction == runs.fraction.max()]
    for _, row in table.iterrows():
        for col in metric_cols:
            dataset, title = col.split(" ", 1)
            sel = top[(top.method == row.method) & (top.dataset == dataset) & (top.metric == METRIC_OF[title])]
            assert len(sel) == len(conf["training"]["seeds"]) and row[col] == pytest.approx(sel.value.mean(),
                                                                                          abs=1e-4), (row.method, col)
    assert (table.n_seeds == len(conf["training"]["seeds"])).all()
    rel = table["avg. rel. improvement vs + Last (%)"]
    linear = table["head"] == "linear"
    assert rel.iloc[0] == 0 and all(math.isfinite(v) for v in rel[linear])
    assert rel[~linear].isna().all()  # the smoke grid has no "CSA + Last" row to compare with
    assert "±" in (out / "tables/main.md").read_text()
    scaling = pd.read_csv(out / "tables/scaling.csv")
    assert len(scaling.n_train_pairs.unique()) == len(conf["training"]["fractions"]) + len(conf["training"]["sizes"])
    assert 40 in set(scaling.n_train_pairs)
    claims = pd.read_csv(out / "tables/claims.csv")
    assert {"C1", "C2", "C3", "C4"} <= set(claims.id)
    assert (claims.seeds == len(conf["training"]["seeds"])).all()
    _check_claims(claims, _summary(runs, conf))
    _check_utility((out / "tables/data_utility.md").read_text(), _summary(runs, conf), conf)
    rs_rows = table[table.method.str.endswith("R_S")]
    assert rs_rows["compared with"].tolist() == ["Linear + Similar", "CSA + Similar"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["effnet-lite0__minilm-l6"]) == set(table.method)
    # scaling: a column per head (linear, csa) + the R_S gain column, a row per summary metric; three linear lines
    n_metrics = len(conf["report"]["summary_metrics"])
    assert_figure(out / "figures/scaling.png", series=3, inches=(2.9 * 3 + 0.4, 2.5 * n_metrics + 0.3))
    scores = pd.read_csv(out / "layers/effnet-lite0__minilm-l6/scores.csv")
    n_v, n_t = scores.vision_layer.nunique(), scores.text_layer.nunique()
    assert_figure(out / "figures/layers_effnet-lite0__minilm-l6.png", series=0,
                  inches=(max(3.5, 1.2 + 0.28 * n_t), max(3.5, 1.6 + 0.22 * n_v)))


METRIC_OF = {"top-1": "top1", "I2T R@1": "i2t_r1", "I2T R@5": "i2t_r5", "T2I R@1": "t2i_r1", "T2I R@5": "t2i_r5"}


def _main_run_dirs(out: Path) -> list[Path]:
    """The main grid's run directories (runs/<pair>/<head>/layers~.../<size>/seed~<s>)."""
    return sorted(p.parent for p in (out / "runs").glob("*/*/layers~*/*/*/*/*/*/*/seed~*/metrics.json"))


def _run_metrics(out: Path) -> pd.DataFrame:
    """Tidy rows (method, n_train, fraction, seed, dataset, metric, value) from every run's metrics.json."""
    from structure_align.runs import RunSpec

    rows = []
    for run in _main_run_dirs(out):
        record = json.loads((run / "metrics.json").read_text())
        label = RunSpec.from_path(run).variant.label
        for dataset, entry in record["datasets"].items():
            for metric, value in entry["metrics"].items():
                rows.append({"method": label, "n_train": record["run"]["n_train"], "seed": record["run"]["seed"],
                             "fraction": record["run"]["fraction"], "dataset": dataset, "metric": metric,
                             "value": value})
    return pd.DataFrame(rows)


def _summary(runs: pd.DataFrame, conf: dict) -> pd.DataFrame:
    """Per (method, N, seed): zero-shot top-1 averaged over the zero-shot sets, retrieval R@1 over both directions
    of the retrieval sets (docs/method.md §8), recomputed from the runs."""
    zs = runs[runs.dataset.isin(conf["datasets"]["zeroshot"]) & (runs.metric == "top1")]
    rt = runs[runs.dataset.isin(conf["datasets"]["retrieval"]) & runs.metric.isin(["i2t_r1", "t2i_r1"])]
    keys = ["method", "n_train", "seed"]
    return pd.concat([zs.groupby(keys).value.mean().rename("zeroshot_top1"),
                      rt.groupby(keys).value.mean().rename("retrieval_r1")], axis=1).reset_index()


def _per_seed(summary: pd.DataFrame, method: str, n: int, metric: str) -> pd.Series:
    return summary[(summary.method == method) & (summary.n_train == n)].set_index("seed")[metric].sort_index()


def _check_claims(claims: pd.DataFrame, summary: pd.DataFrame) -> None:
    """Each claim's effect and Student-t CI from the per-seed differences, and its verdict by the stated rule."""
    from scipy.stats import t as student_t

    for _, c in claims.iterrows():
        if c.id == "C3":
            small, large = (int(v) for v in c.n_train_pairs.split(" vs "))
            a, b = re.search(r"\((.+) - (.+)\)$", c.comparison).groups()
            d = ((_per_seed(summary, a, small, c.metric) - _per_seed(summary, b, small, c.metric))
                 - (_per_seed(summary, a, large, c.metric) - _per_seed(summary, b, large, c.metric)))
        else:
            a, b = c.comparison.split(" - ")
            n = int(c.n_train_pairs)
            d = _per_seed(summary, a, n, c.metric) - _per_seed(summary, b, n, c.metric)
        half = student_t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
        assert (c.effect, c.ci_lo, c.ci_hi) == pytest.approx((d.mean(), d.mean() - half, d.mean() + half),
                                                             abs=1e-4), (c.id, c.claim, c.metric)
        # minimal detectable effect at 80 % power (t approximation, docs/method.md §10 "Power") against the paper's effect,
        # or the target effect where the paper reports none
        mde = (student_t.ppf(0.975, len(d) - 1) + student_t.ppf(0.8, len(d) - 1)) * d.std(ddof=1) / math.sqrt(len(d))
        assert c.mde == pytest.approx(mde, abs=1e-4), (c.id, c.claim, c.metric)
        reference = c.target_effect if math.isnan(c.paper_effect) else abs(c.paper_effect)
        verdict = ("supported" if c.ci_lo > 0 else "not supported" if c.ci_hi <= 0
                   else "underpowered" if mde > reference else "inconclusive")
        assert c.verdict == verdict, (c.id, c.claim, c.metric)


def _check_utility(markdown: str, summary: pd.DataFrame, conf: dict) -> None:
    """One row per R_S variant and summary metric, its baseline score the counterpart's seed mean at the largest N."""
    rows = [line.strip("|").split(" | ") for line in markdown.splitlines()[2:] if line.startswith("| ")]
    largest = int(summary.n_train.max())
    expected = [(v, base, m) for v, base in (("Linear + Similar + R_S", "Linear + Similar"),
                                            ("CSA + Similar + R_S", "CSA + Similar"))
                for m in conf["report"]["summary_metrics"]]
    assert [(r[1].strip(), r[2].strip(), r[3].strip()) for r in rows] == expected
    for r, (_, base, metric) in zip(rows, expected):
        assert int(r[4]) == largest
        assert r[5].strip() == f"{_per_seed(summary, base, largest, metric).mean():.1f}", r


def _assert_runs_recomputed(out: Path, conf: dict) -> list[Path]:
    """Every main-grid run's metrics.json under ``out`` equals the recomputation from its heads and the manifests
    (tests/recompute.py); returns the run directories."""
    from recompute import expected_run_metrics

    from structure_align.runs import RunSpec, eval_datasets

    runs = _main_run_dirs(out)
    for run in runs:
        spec = RunSpec.from_path(run)
        records = [{"name": d, "vision": out / "features" / d / f"{spec.vision}.safetensors",
                    "text": out / "features" / d / f"{spec.text}.safetensors",
                    "manifest": out / "manifests" / f"{d}.parquet", "test_split": d in conf["datasets"]["train"]}
                   for d in eval_datasets(conf)]
        written = json.loads((run / "metrics.json").read_text())["datasets"]
        assert written == expected_run_metrics(run, records, conf["evaluation"]), run
    return runs


def test_smoke_metrics_equal_an_independent_recomputation(smoke: Path) -> None:
    conf = _smoke_config(smoke)
    runs = _assert_runs_recomputed(smoke / conf["results_dir"], conf)
    assert len(runs) == len(conf["methods"]) * 2 * len(conf["training"]["seeds"])  # sizes [40] + fractions [1.0]


def _modified_plan(repo: Path, tmp_path: Path, change) -> dict[str, int]:
    conf = _smoke_config(repo)
    change(conf)
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(conf))
    # a complete replacement (not a merge onto params.yaml), so that list values can shrink
    proc = _snakemake(repo, "-n", "--replace-workflow-config", "--configfile", str(path))
    return job_counts(proc.stdout + proc.stderr)


def test_completed_run_is_up_to_date(smoke: Path) -> None:
    proc = _snakemake(smoke, "-n", "--configfile", SMOKE)
    assert job_counts(proc.stdout + proc.stderr) == {}, proc.stdout[-3000:]


@pytest.mark.parametrize("change, expected_train", [
    # one train and one evaluate job per (variant, size) group, each writing every seed's run folder
    (lambda c: c["structure"].update({"lambda": 5}), 2 * 2),   # the 2 R_S variants at their 2 sizes
    (lambda c: c["structure"].update({"levels": 2}), 2 * 2),
    (lambda c: c["training"].update({"fractions": [0.5, 1.0]}), 5),  # 5 variants at the new fraction
    (lambda c: c["training"].update({"seeds": [1, 2, 3]}), 5 * 2),  # every group gains a seed
    # keys CSA does not read leave its runs alone (runs.train_blocks): the refinement reaches CSA + R_S only,
    # training.lr the 3 gradient-trained variants only
    (lambda c: c.setdefault("csa", {}).update({"epochs": 20}), 1 * 2),
    (lambda c: c["training"].update({"lr": 0.002}), 3 * 2),
])
def test_parameter_change_reruns_only_train_evaluate_aggregate(smoke: Path, tmp_path: Path, change,
                                                              expected_train: int) -> None:
    counts = _modified_plan(smoke, tmp_path, change)
    assert set(counts) <= {"train", "evaluate", "aggregate", "all"}, counts
    assert counts.get("train") == expected_train and counts.get("evaluate") == expected_train
    assert counts.get("aggregate") == 1


def test_train_jobs_of_a_rerun_start_longest_first(smoke: Path, tmp_path: Path) -> None:
    """The train rule's priority (runs.train_priority) puts the full-pool groups before the small ones."""
    conf = _smoke_config(smoke)
    conf["structure"]["lambda"] = 5
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(conf))
    proc = _snakemake(smoke, "-n", "--replace-workflow-config", "--configfile", str(path))
    jobs = [block for block in (proc.stdout + proc.stderr).split("\nrule ")[1:] if block.startswith("train:")]
    prio: dict[str, list[int]] = {"frac": [], "n": []}
    for block in jobs:
        size = re.search(r"size=(frac|n)~", block)
        value = re.search(r"priority: (\d+)", block)
        assert size and value, block[-800:]
        prio[size.group(1)].append(int(value.group(1)))
    assert len(prio["frac"]) == 2 and len(prio["n"]) == 2, prio
    assert min(prio["frac"]) > max(prio["n"]), prio


def test_lint_reports_only_the_documented_conda_suggestion() -> None:
    proc = _run([str(BIN / "snakemake"), "--lint"], ROOT, check=False)
    bullets = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip().startswith("* ")]
    assert bullets, 'expected the conda/container suggestion (docs/workflow.md "Software environment")'
    assert all(b.startswith("* Specify a conda environment or container") for b in bullets), bullets


def test_invalid_params_fail_before_any_job_with_the_key(smoke: Path, tmp_path: Path) -> None:
    conf = _smoke_config(smoke)
    conf["training"]["fractions"] = [0.5, 1.5]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(conf))
    proc = _snakemake(smoke, "-n", "--replace-workflow-config", "--configfile", str(path), check=False)
    assert proc.returncode != 0
    assert "training.fractions[1]" in proc.stdout + proc.stderr


def test_dvc_push_pull_round_trip_then_touch(smoke: Path, tmp_path: Path) -> None:
    """Features go to a local DVC remote and come back byte-identical; after `snakemake --touch` nothing reruns."""
    dvc = str(BIN / "dvc")
    conf = _smoke_config(smoke)
    features = f"{conf['results_dir']}/features"
    git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@example.org"]
    _run(["git", "init", "-q"], smoke)
    # the copy's results/ is git-ignored; let DVC place its .dvc file for the smoke features
    with (smoke / ".gitignore").open("a") as fh:
        fh.write(f"!/{conf['results_dir']}/\n")
    _run(["git", "add", ".gitignore", ".dvc", ".dvcignore", "dvc.yaml", "params.yaml"], smoke)
    _run([*git, "commit", "-qm", "smoke"], smoke)
    before = {p.relative_to(smoke): p.read_bytes() for p in sorted((smoke / features).rglob("*.safetensors"))}
    assert before
    remote = tmp_path / "remote"
    _run([dvc, "remote", "add", "--local", "-d", "local", str(remote)], smoke)
    _run([dvc, "add", features], smoke)
    # explicit targets: the dvc.yaml stages' outputs (resources/, results/...) are not part of this round trip
    _run([dvc, "push", f"{features}.dvc"], smoke)
    shutil.rmtree(smoke / features)
    shutil.rmtree(smoke / ".dvc/cache")
    _run([dvc, "pull", f"{features}.dvc"], smoke)
    after = {p.relative_to(smoke): p.read_bytes() for p in sorted((smoke / features).rglob("*.safetensors"))}
    assert after == before
    _snakemake(smoke, "--touch", "--configfile", SMOKE)
    proc = _snakemake(smoke, "-n", "--configfile", SMOKE)
    assert job_counts(proc.stdout + proc.stderr) == {}, proc.stdout[-3000:]


def _user_data(root: Path) -> dict:
    """An ImageFolder tree (3 classes) and a caption CSV (40 pairs) of drawn shapes, declared as user datasets."""
    from PIL import Image, ImageDraw

    colours = {"red": (220, 30, 30), "green": (30, 160, 60), "blue": (40, 60, 220), "yellow": (230, 200, 20)}
    shapes = ("circle", "square", "triangle")

    def draw(path: Path, colour: str, shape: str, size: int) -> None:
        img = Image.new("RGB", (64, 64), "white")
        d = ImageDraw.Draw(img)
        box = (32 - size, 32 - size, 32 + size, 32 + size)
        if shape == "circle":
            d.ellipse(box, fill=colours[colour])
        elif shape == "square":
            d.rectangle(box, fill=colours[colour])
        else:
            d.polygon([(32, 32 - size), (32 - size, 32 + size), (32 + size, 32 + size)], fill=colours[colour])
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path)

    rows = ["image,caption"]
    for i in range(40):
        colour, shape = list(colours)[i % 4], shapes[(i // 4) % 3]
        draw(root / "pairs" / f"im{i:02d}.png", colour, shape, 10 + i % 17)
        rows.append(f"pairs/im{i:02d}.png,a {'small' if i % 17 < 8 else 'large'} {colour} {shape}")
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    for shape in shapes:
        for k, colour in enumerate(colours):
            draw(root / "shapes" / shape / f"{colour}.png", colour, shape, 12 + 3 * k)
    return {"my_pairs": {"kind": "captions", "file": f"{root.name}/pairs.csv", "test_fraction": 0.25},
            "my_shapes": {"kind": "imagefolder", "root": f"{root.name}/shapes", "templates": ["a drawing of a {}."]}}


def _with_bad_images(root: Path) -> list[str]:
    """Append the four bad files of issue 23 to the user caption CSV (unreadable, truncated PNG, 0-byte, 600 Mpx)."""
    from test_preflight import _bad_images

    bad = _bad_images(root / "pairs" / "bad")
    with (root / "pairs.csv").open("a") as fh:
        for i, path in enumerate(bad.values()):
            fh.write(f"pairs/bad/{path.name},a broken picture {i}\n")
    return [f"pairs/bad/{p.name}" for p in bad.values()]


def test_bad_images_stop_the_manifest_step_before_extraction(smoke: Path, tmp_path: Path) -> None:
    conf = _smoke_config(smoke)
    conf["user_datasets"] = _user_data(smoke / "bad_user_data")
    bad = _with_bad_images(smoke / "bad_user_data")
    conf["results_dir"] = "results/bad_user"
    conf["datasets"] = {"train": ["my_pairs"], "retrieval": ["my_pairs"], "zeroshot": ["my_shapes"],
                        "all": ["my_pairs", "my_shapes"]}
    conf["manifest"] = {}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(conf))
    proc = _snakemake(smoke, "--replace-workflow-config", "--configfile", str(path), "--keep-going", check=False)
    assert proc.returncode != 0
    log = (smoke / "results/bad_user/logs/manifest/my_pairs.log").read_text()
    assert "4 of 44 images refused by the pre-flight check" in log, log[-3000:]
    for name in bad:
        assert name in log, (name, log[-3000:])
    assert not (smoke / "results/bad_user/manifests/my_pairs.parquet").exists()
    assert not list((smoke / "results/bad_user").glob("features/my_pairs/*"))


def test_user_datasets_train_and_evaluate_end_to_end(smoke: Path, tmp_path: Path) -> None:
    """A caption CSV and an image folder declared in params only: trained on, retrieved on, classified; the
    caption file also lists four bad images, which images.on_bad_image: skip drops and reports."""
    conf = _smoke_config(smoke)
    conf["user_datasets"] = _user_data(smoke / "user_data")
    bad = _with_bad_images(smoke / "user_data")
    conf["images"] = {"on_bad_image": "skip"}
    conf["results_dir"] = "results/user"
    conf["datasets"] = {"train": ["my_pairs"], "retrieval": ["my_pairs"], "zeroshot": ["my_shapes"],
                        "all": ["my_pairs", "my_shapes"]}
    conf["manifest"] = {}
    conf["training"].update(fractions=[1.0], sizes=[], seeds=[1, 2])
    conf["methods"] = conf["methods"][:1]
    path = tmp_path / "user.yaml"
    path.write_text(yaml.safe_dump(conf))
    _snakemake(smoke, "--replace-workflow-config", "--configfile", str(path), timeout=RUN_TIMEOUT)
    table = pd.read_csv(smoke / "results/user/tables/main.csv")
    assert list(table.method) == ["Linear + Last"]
    assert len(_assert_runs_recomputed(smoke / "results/user", conf)) == 2
    runs = _run_metrics(smoke / "results/user")
    for col in ("my_shapes top-1", "my_pairs I2T R@1", "my_pairs T2I R@5"):
        dataset, title = col.split(" ", 1)
        sel = runs[(runs.dataset == dataset) & (runs.metric == METRIC_OF[title])]
        assert len(sel) == 2 and table[col].iloc[0] == pytest.approx(sel.value.mean(), abs=1e-4), col
    info = json.loads((smoke / "results/user/manifests/my_pairs.json").read_text())
    check = info["counts"]["image_check"]
    assert check["checked"] == 44 and check["bad"] == 4 and check["on_bad_image"] == "skip"
    assert sorted(Path(s["path"]).name for s in check["skipped"]) == sorted(Path(b).name for b in bad)
    assert "skipping 4 of 44 images" in (smoke / "results/user/logs/manifest/my_pairs.log").read_text()
    assert "my_pairs: 4 of 44 images skipped by the pre-flight check" in (
        smoke / "results/user/tables/claims.md").read_text()


def test_bad_user_dataset_is_refused_before_any_job(smoke: Path, tmp_path: Path) -> None:
    conf = _smoke_config(smoke)
    conf["user_datasets"] = {"my_photos": {"kind": "imagefolder", "root": "no/such/folder"}}
    conf["datasets"]["zeroshot"] = [*conf["datasets"]["zeroshot"], "my_photos"]
    conf["datasets"]["all"] = [*conf["datasets"]["all"], "my_photos"]
    path = tmp_path / "bad_user.yaml"
    path.write_text(yaml.safe_dump(conf))
    proc = _snakemake(smoke, "-n", "--replace-workflow-config", "--configfile", str(path), check=False)
    assert proc.returncode != 0
    assert "user_datasets.my_photos.root" in proc.stdout + proc.stderr


# the DVC stages' outputs (dvc.yaml) and the smoke run's files that fill them
DVC_OUTS = ("manifests", "images", "features", "layers", "runs", "tables", "figures", "metrics.json")


def _make(repo: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """A Makefile target as a user runs it (`-o install`: the test environment is already installed)."""
    env = _env()
    env["PYTHONPATH"] = str(repo / "src")
    proc = subprocess.run(["make", "-o", "install", *args], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"make {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-5000:]}\n"
                             f"{proc.stderr[-5000:]}")
    return proc


def test_make_remote_push_fresh_clone_make_pull_then_nothing_to_do(smoke: Path, tmp_path: Path) -> None:
    """The user's DVC path with the real dvc.yaml stages and Makefile targets, through a local remote.

    A project whose params.yaml is the smoke config with results_dir `results` (the paths of dvc.yaml), holding the
    session smoke run's outputs there: `make lock` records them in dvc.lock (committed), `make remote && make push`
    uploads them; a fresh `git clone` then runs `make remote && make pull` and `snakemake -n` has nothing to do;
    the pulled files are byte-identical and `dvc status` reports the pipeline up to date.
    """
    project = _copy_repo(tmp_path / "project")
    conf = _smoke_config(smoke)
    conf["results_dir"] = "results"
    (project / "params.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    for name in DVC_OUTS:
        src, dest = smoke / "results/smoke" / name, project / "results" / name
        if dest.is_dir():
            shutil.rmtree(dest)  # the committed default tables and figures
        shutil.copytree(src, dest) if src.is_dir() else shutil.copy2(src, dest)
    git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@example.org"]
    _run(["git", "init", "-q"], project)
    _run(["git", "add", "-A"], project)
    _run([*git, "commit", "-qm", "project"], project)
    _make(project, "lock")
    _run(["git", "add", "dvc.lock", "results"], project)
    _run([*git, "commit", "-qm", "dvc.lock of the outputs"], project)
    remote = tmp_path / "remote"
    _make(project, "remote", f"DVC_REMOTE={remote}")
    _make(project, "push")
    assert any(remote.rglob("*")), "nothing was pushed"

    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    _link_resources(clone)
    assert not (clone / "results/features").exists()
    _make(clone, "remote", f"DVC_REMOTE={remote}")
    _make(clone, "pull", "CORES=2")
    for path in sorted((project / "results/features").rglob("*.safetensors")):
        assert (clone / path.relative_to(project)).read_bytes() == path.read_bytes(), path
    proc = _snakemake(clone, "-n")
    assert job_counts(proc.stdout + proc.stderr) == {}, proc.stdout[-3000:]
    status = json.loads(_run([str(BIN / "dvc"), "status", "--json"], clone).stdout or "{}")
    assert status == {}, status


def _dvc_status_problems(status: dict) -> list[str]:
    """Changed code/workflow/params dependencies in `dvc status --json` (missing data and cache are allowed)."""
    problems = []
    for stage, entries in status.items():
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict):
                continue
            for dep, state in (entry.get("changed deps") or {}).items():
                if state != "deleted" or not dep.startswith("results/"):
                    problems.append(f"{stage}: {dep} {state}")
    return problems


def test_dvc_lock_is_in_sync_with_the_committed_code(tmp_path: Path) -> None:
    """On a clean clone of the committed tree, `dvc status` may report outputs missing from the cache, never a
    changed code, workflow or params dependency: a code change is released with `make lock` (docs/reliability.md)."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(ROOT), str(clone)], tmp_path)
    status = json.loads(_run([str(BIN / "dvc"), "status", "--json"], clone).stdout or "{}")
    problems = _dvc_status_problems(status)
    assert not problems, f"dvc.lock is stale (run `make reproduce && make lock` and commit dvc.lock): {problems}"
# ------------------------------------------------------------------------------------------------------------------
# analysis targets and the HTML report (docs/analysis.md), on the smoke config's `analysis` block
# ------------------------------------------------------------------------------------------------------------------

ANALYSIS_TARGETS = ("combinations", "layer_correlation", "ablations", "in_domain", "neighbourhood")


@pytest.fixture(scope="module")
def analysed(smoke: Path) -> Path:
    """The smoke copy after `snakemake analysis` and `snakemake --report` (the analysis reuses its features)."""
    _snakemake(smoke, "analysis", "--configfile", SMOKE, timeout=RUN_TIMEOUT)
    out = _smoke_config(smoke)["results_dir"]
    _snakemake(smoke, "--report", f"{out}/report.html", "report_inputs", "--configfile", SMOKE)
    return smoke


def test_every_analysis_target_writes_its_table_and_figure(analysed: Path) -> None:
    conf = _smoke_config(analysed)
    out = analysed / conf["results_dir"]
    for target in ANALYSIS_TARGETS:
        assert (out / f"tables/analysis_{target}.md").read_text().startswith(("|", "##")), target
        png = out / f"figures/analysis_{target}.png"
        assert pdf_pages(png.with_suffix(".pdf")) == 1, target
        # the plotted series: one colour per encoder pair (layer_correlation: scatter markers at alpha 0.8, seen
        # pure only where they overlap, so their blend on white counts too), else at least two series
        colours = png_colours(png)
        if target == "layer_correlation":
            assert tab10(0) in colours or has_colour(colours, on_white(tab10(0), 0.8)), target
        else:
            assert {tab10(0), tab10(1)} <= colours, target
    gains = pd.read_csv(out / "tables/analysis_combinations.csv")
    n_pairs = len(conf["analysis"]["combinations"]["vision"]) * len(conf["analysis"]["combinations"]["text"])
    assert gains.encoders.nunique() == n_pairs and gains.comparison.nunique() == 3
    assert (gains.n_seeds == len(conf["analysis"]["seeds"])).all() and gains.ci_lo.le(gains.ci_hi).all()
    rho = pd.read_csv(out / "tables/analysis_layer_correlation_rho.csv")
    grid = conf["analysis"]["layer_correlation"]
    assert (rho.n_pairs >= len(grid["vision_layers"]) * len(grid["text_layers"])).all()
    assert rho.rho.between(-1, 1).all()
    ablations = pd.read_csv(out / "tables/analysis_ablations.csv")
    assert set(ablations.axis) == {"lambda", "levels", "weighting", "distance"}
    assert ablations.n_train_pairs.nunique() == len(conf["analysis"]["ablations"]["fractions"])
    in_domain = pd.read_csv(out / "tables/analysis_in_domain.csv")
    assert sorted(in_domain.k.unique()) == conf["analysis"]["in_domain"]["k"]
    added = json.loads(next((out / "analysis/in_domain").glob("*/k~2/runs/**/seed~1/train.json")).read_text())
    assert added["in_domain"]["n_added"] == 2 * 10 and added["in_domain"]["evaluation_set"] == "fashion_mnist"
    neighbourhood = pd.read_csv(out / "tables/analysis_neighbourhood.csv")
    assert set(neighbourhood.k) == set(conf["analysis"]["neighbourhood"]["k"])
    assert neighbourhood[["first", "best", "last"]].stack().between(0, 1).all()


def test_completed_analysis_is_up_to_date(analysed: Path) -> None:
    proc = _snakemake(analysed, "-n", "analysis", "--configfile", SMOKE)
    assert job_counts(proc.stdout + proc.stderr) == {}, proc.stdout[-3000:]


def test_report_has_every_caption_and_embeds_the_figures(analysed: Path) -> None:
    out = analysed / _smoke_config(analysed)["results_dir"]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert len(html) > 100_000
    captions = sorted((ROOT / "workflow/report").glob("*.rst"))
    assert len(captions) >= 14
    for caption in captions:
        title = re.match(r"\*\*(.+?)\.?\*\*", caption.read_text()).group(1)  # each caption opens with a bold title
        assert title in html, (caption.name, title)
    figures = ["scaling.png", "layers_effnet-lite0__minilm-l6.png", *[f"analysis_{t}.png" for t in ANALYSIS_TARGETS]]
    for name in figures:
        assert name in html, name
    # the files travel inside the page as base64 data ("iVBORw0KGgo" = the PNG signature), not as links
    assert html.count("iVBORw0KGgo") >= len(figures)
    assert "src=\"results/" not in html


def test_report_renders_in_a_headless_browser(analysed: Path, tmp_path: Path) -> None:
    if shutil.which("chromium") is None and shutil.which("chromium-browser") is None:
        # CI (.ci/run sets CI) installs it through `make install`: there a missing browser is a failure
        message = "no headless chromium: `apt-get install chromium` (make install does it when run as root)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the report's browser test, but {message}")
        pytest.skip(message)
    out = analysed / _smoke_config(analysed)["results_dir"]
    shot = tmp_path / "report.png"
    _run(["bash", str(ROOT / "workflow/report/screenshot.sh"), str(out / "report.html"), str(shot)], analysed,
         timeout=300)
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size[0] >= 1000 and len(im.convert("L").getcolors(256) or []) > 20  # not a blank page
