"""The paper profile plans offline: `snakemake -n` of both paper configs, job counts per rule (docs/paper-profile.md).

No hub, GPU or network is touched: the paper encoders are registered names (or families) whose modality is known
without weights, and dataset sources are only planned, never fetched, in a dry run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from paper_fixtures import write_local
from workflow_util import copy_sources, job_counts

from structure_align import config as params_mod
from structure_align.reference import paper_markdown, paper_table, write_paper_table

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PAPER = "workflow/configs/paper.yaml"
SCALING = "workflow/configs/paper-scaling.yaml"

# the counts recorded in docs/paper-profile.md "Planned jobs"
PAPER_COUNTS = {"acquire": 9, "manifest": 9, "extract_features": 36, "evaluate_reference": 1, "score_layers": 1,
                "layer_heatmap": 1, "train": 10, "evaluate": 10, "aggregate": 1, "paper_table": 1, "paper": 1}
SCALING_COUNTS = {"acquire": 9, "manifest": 9, "extract_features": 18, "score_layers": 1, "layer_heatmap": 1,
                  "train": 54, "evaluate": 54, "aggregate": 1, "paper": 1}
KARPATHY = "workflow/configs/paper-coco-karpathy.yaml"
KARPATHY_COUNTS = {**PAPER_COUNTS, "acquire": 10, "manifest": 10, "extract_features": 38}
EXTRA = "workflow/configs/paper-zeroshot-extra.yaml"
EXTRA_COUNTS = {**PAPER_COUNTS, "acquire": 13, "manifest": 13, "extract_features": 52}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkout with the hand-placed sources placed (ImageNet, Flickr30k as tiny trees; Karpathy's COCO split file
    only planned, never read), as the planned counts assume."""
    path = copy_sources(tmp_path_factory.mktemp("paper-plan"))
    write_local(path / "resources")
    (path / "resources" / "coco_karpathy").mkdir()
    (path / "resources" / "coco_karpathy" / "dataset_coco.json").write_text("{}")
    return path


def _snakemake(repo: Path, *configs: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", HF_HUB_OFFLINE="1",
               no_proxy="*", http_proxy="http://0.0.0.0:9", https_proxy="http://0.0.0.0:9")
    proc = subprocess.run([str(BIN / "snakemake"), "paper", "-n", *extra, "--workflow-profile",
                           "workflow/profiles/default", "--cores", "1", "--configfile", *configs], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "Job stats:" in proc.stdout, proc.stdout[-3000:]
    return proc


def _dry_run(repo: Path, *configs: str) -> dict[str, int]:
    return job_counts(_snakemake(repo, *configs).stdout)


def test_missing_hand_placed_sets_are_left_out_and_marked(tmp_path_factory: pytest.TempPathFactory) -> None:
    """paper.missing_local: skip (paper.yaml): without ImageNet and Flickr30k every other column is planned."""
    bare = copy_sources(tmp_path_factory.mktemp("paper-bare"))
    proc = _snakemake(bare, PAPER, extra=("-p",))
    counts = job_counts(proc.stdout)
    # 7 datasets instead of 9: COCO, STL10, CIFAR-10, Caltech101, Food-101, CIFAR-100, Pets
    assert counts == {**PAPER_COUNTS, "acquire": 7, "manifest": 7, "extract_features": 28}
    for source in ("coco", "stl10", "cifar10", "caltech101", "food101", "cifar100", "pets"):
        assert f"acquire --source {source} " in proc.stdout
    assert "--source imagenet" not in proc.stdout and "--source flickr30k" not in proc.stdout
    assert "imagenet is not run: place ImageNet-1k val" in proc.stderr
    assert '"flickr30k": "not run: place ' in proc.stdout  # the paper table's notes
    (bare / "fail.yaml").write_text(yaml.safe_dump({"paper": {"missing_local": "fail"}}))
    assert job_counts(_snakemake(bare, PAPER, "fail.yaml").stdout) == PAPER_COUNTS  # planned; acquisition fails


def test_paper_table_marks_columns_not_run(tmp_path: Path) -> None:
    main = pd.DataFrame([{"encoders": "a + b", "method": "Linear + Last", "head": "linear", "layers": "last",
                          "structure": False, "n_seeds": 1, "stl10 top-1": 70.0}])
    main.to_csv(tmp_path / "main.csv", index=False)
    paper = pd.DataFrame([{"method": "Linear + Last", "head": "linear", "layers": "last", "structure": False,
                           "stl10 top-1": 75.6, "imagenet top-1": 60.1, "flickr30k I2T R@1": 40.0}])
    paper.to_csv(tmp_path / "paper.csv", index=False)
    notes = {"imagenet": "not run: place ImageNet-1k val at resources/imagenet/ (missing: val)",
             "stl10": "prompts: simple"}
    write_paper_table(tmp_path / "main.csv", [], tmp_path / "paper.csv", tmp_path / "out.csv", tmp_path / "out.md",
                      notes=notes)
    long = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert long.set_index("column").loc["imagenet top-1", "note"] == notes["imagenet"]
    assert long.set_index("column").loc["flickr30k I2T R@1", "note"] == ""
    md = (tmp_path / "out.md").read_text()
    assert "not run / 60.1" in md and "70.0 / 75.6 (-5.6)" in md and "n/a / 40.0 (n/a)" in md
    assert f"- imagenet top-1: {notes['imagenet']}" in md and "- stl10 top-1: prompts: simple" in md


def test_paper_config_plans_offline(repo: Path) -> None:
    assert _dry_run(repo, PAPER) == PAPER_COUNTS


def test_paper_scaling_config_plans_offline(repo: Path) -> None:
    assert _dry_run(repo, PAPER, SCALING) == SCALING_COUNTS


def test_coco_karpathy_option_plans_offline(repo: Path) -> None:
    assert _dry_run(repo, PAPER, KARPATHY) == KARPATHY_COUNTS


def test_extra_zeroshot_option_plans_offline(repo: Path) -> None:
    assert _dry_run(repo, PAPER, EXTRA) == EXTRA_COUNTS


def test_paper_configs_validate() -> None:
    extra = params_mod.load_params(ROOT / "params.yaml", ROOT / PAPER, ROOT / EXTRA)
    params_mod.check_params(extra)
    assert extra["datasets"]["zeroshot"][-4:] == ["mnist", "dtd", "flowers102", "country211"]
    config = params_mod.load_params(ROOT / "params.yaml", ROOT / PAPER, ROOT / KARPATHY)
    params_mod.check_params(config)
    assert config["datasets"]["retrieval"] == ["flickr30k", "coco_karpathy"] and config["datasets"]["train"] == ["coco"]
    for files in ((PAPER,), (PAPER, SCALING)):
        config = params_mod.load_params(ROOT / "params.yaml", *(ROOT / f for f in files))
        params_mod.check_params(config)
    config = params_mod.load_params(ROOT / "params.yaml", ROOT / PAPER)
    assert [m["head"] for m in config["methods"]].count("released_mlp") == 3 and len(config["methods"]) == 10
    assert config["datasets"]["zeroshot"] == ["stl10", "cifar10", "caltech101", "food101", "cifar100", "imagenet",
                                              "pets"]


def test_reference_file_matches_the_issue_table() -> None:
    ref = pd.read_csv(ROOT / "workflow/configs/paper-reference.csv")
    assert len(ref) == 9 and ref.shape[1] == 4 + 9
    row = ref[(ref["head"] == "linear") & (ref["layers"] == "similar") & ref["structure"]].iloc[0]
    assert row["stl10 top-1"] == 92.6 and row["flickr30k T2I R@1"] == 53.7
    assert ref.set_index("method").loc["CSA + Similar + R_S", "cifar10 top-1"] == 97.2


def test_paper_table_diffs_and_unmatched_rows() -> None:
    paper = pd.DataFrame([{"method": "Linear + Last", "head": "linear", "layers": "last", "structure": False,
                           "stl10 top-1": 75.6},
                          {"method": "CSA + Last", "head": "csa", "layers": "last", "structure": False,
                           "stl10 top-1": 77.9}])
    main = pd.DataFrame([{"encoders": "a + b", "method": "Linear + Last", "head": "linear", "layers": "last",
                          "structure": False, "stl10 top-1": 70.0},
                         {"encoders": "a + b", "method": "Linear + Last + R_S", "head": "linear", "layers": "last",
                          "structure": True, "stl10 top-1": 71.0}])
    refs = pd.DataFrame([{"encoders": "c + d", "method": "CLIP", "head": "reference", "layers": "",
                          "structure": False, "stl10 top-1": 99.0}])
    long = paper_table(main, refs, paper)
    first = long[long.method == "Linear + Last"].iloc[0]
    assert first.paper == 75.6 and abs(first["diff"] - (70.0 - 75.6)) < 1e-9
    assert long[long.method == "Linear + Last + R_S"]["paper"].isna().all()
    assert long[long.method == "CLIP"]["ours"].iloc[0] == 99.0
    assert (long[long.paper_method == "CSA + Last"]["method"] == "(not run)").all()
    md = paper_markdown(long)
    assert "70.0 / 75.6 (-5.6)" in md and "99.0 / n/a (n/a)" in md
