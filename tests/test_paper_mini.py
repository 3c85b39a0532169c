"""Paper-mini: the paper profile's DAG end to end on generated fixtures (marker ``workflow``; a few minutes).

A loopback HTTP server serves every url source in its published format (tests/paper_fixtures.py); params
``downloads.mirror`` points the acquire rules at it and ``downloads.overrides`` re-pins the fixture files. ImageNet
and Flickr30k are placed by hand, as a user would. The encoders are tiny randomly initialised models of the paper's
architectures written in the transformers layouts (DINOv2, RoBERTa, CLIP; tests/tiny_models.py). The run goes
download -> manifest -> extraction -> layer scores -> the 10 rows' training -> evaluation -> the main table, the
CLIP reference row and the paper table with its reference columns; nothing contacts a hub.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from http_fixture import FileServer
from paper_fixtures import write_local, write_published
from tiny_models import make_tiny_clip, make_tiny_dinov2, make_tiny_roberta
from workflow_util import copy_sources

pytestmark = pytest.mark.workflow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ZEROSHOT = ["stl10", "cifar10", "caltech101", "food101", "cifar100", "imagenet", "pets"]


def _mini_config(mirror: str, overrides: dict) -> dict:
    clip = "models/tiny-clip"
    return {
        "results_dir": "results/mini", "device": "cpu",
        "encoders": {"vision": ["hf:models/tiny-dinov2"], "text": ["hf:models/tiny-roberta"], "all_vision": [],
                     "all_text": []},
        "extraction": {"batch_size": 16, "dtype": "float16", "num_workers": 0, "autocast": "none"},
        "manifest": {"caltech101": {"train_per_class": 2}, "coco": {"splits": ["train", "val"]},
                     "flickr30k": {"annotations": "karpathy"}},
        "layers": {"n_samples": 40},
        "structure": {"warmup_steps": 4},
        "csa": {"sim_dim": 8, "epochs": 2},
        "training": {"fractions": [1.0], "seeds": [1, 2], "batch_size": 16, "epochs": 4, "patience": 2,
                     "lr_finder": False, "dim": 16},
        "evaluation": {"batch_size": 256},
        "references": [{"vision": f"clip-image:{clip}", "text": f"clip-text:{clip}", "label": "CLIP (tiny)"}],
        "downloads": {"mirror": mirror, "overrides": overrides},
    }


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = copy_sources(tmp_path_factory.mktemp("paper-mini"))
    www = tmp_path_factory.mktemp("www")
    overrides = write_published(www)
    write_local(repo / "resources")
    make_tiny_dinov2(repo / "models" / "tiny-dinov2")
    make_tiny_roberta(repo / "models" / "tiny-roberta")
    make_tiny_clip(repo / "models" / "tiny-clip")
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    with FileServer(www) as server:
        (repo / "mini.yaml").write_text(yaml.safe_dump(_mini_config(server.url, overrides)))
        proc = subprocess.run([str(BIN / "snakemake"), "paper", "--workflow-profile", "workflow/profiles/default",
                               "--cores", "2", "--configfile", "workflow/configs/paper.yaml", "mini.yaml"],
                              cwd=repo, env=env, capture_output=True, text=True, timeout=1800, check=False)
        assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-4000:]
        requested = {path for path, _ in server.requests}
    assert {p.split("/")[1] for p in requested} == set(overrides)  # every url source came through the mirror
    return repo


def test_downloads_unpacked_and_recorded(mini: Path) -> None:
    res = mini / "resources"
    assert (res / "coco" / "annotations" / "captions_train2014.json").is_file()
    assert (res / "caltech101" / "caltech-101" / "101_ObjectCategories" / "Faces").is_dir()
    assert not (res / "caltech101" / "caltech-101" / "101_ObjectCategories.tar.gz").exists()
    assert not (res / ".downloads" / "coco").exists()
    assert '"client": "url"' in (res / "stl10" / "SOURCE.json").read_text()


def test_main_table_has_the_ten_rows(mini: Path) -> None:
    table = pd.read_csv(mini / "results/mini/tables/main.csv")
    assert len(table) == 10
    assert table["method"].tolist()[:4] == ["Linear + Last", "Linear + Similar", "Linear + Similar + R_S",
                                            "Linear + Last + R_S"]
    cols = [f"{d} top-1" for d in ZEROSHOT] + ["flickr30k I2T R@1", "flickr30k T2I R@1", "coco I2T R@1"]
    for col in cols:
        assert table[col].map(math.isfinite).all(), col
    assert (table["n_seeds"] == 2).all()


def test_training_stopped_on_coco_val(mini: Path) -> None:
    import json

    info = json.loads(next((mini / "results/mini/runs").rglob("train.json")).read_text())
    assert info["val_split"] == "test" and info["n_val"] == 18 and info["n_train"] == 48


def test_clip_row_and_paper_columns(mini: Path) -> None:
    long = pd.read_csv(mini / "results/mini/tables/paper.csv")
    clip = long[long.method == "CLIP (tiny)"]
    assert len(clip) == 9 and clip["ours"].map(math.isfinite).all() and clip["paper"].isna().all()
    linear = long[long.method == "Linear + Similar + R_S"]
    stl = linear[linear.column == "stl10 top-1"].iloc[0]
    assert stl.paper == 92.6 and math.isclose(stl["diff"], stl.ours - 92.6)
    mlp = long[long.paper_method == "MLP + Last"]
    assert set(mlp.method) == {"MLP (released) + Last"}
    md = (mini / "results/mini/tables/paper.md").read_text()
    assert "CLIP (tiny)" in md and "ours / paper (ours - paper)" in md
