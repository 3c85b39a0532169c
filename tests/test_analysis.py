"""The analysis targets' library pieces (docs/analysis.md): neighbourhood scores, Spearman with a bootstrap CI, the
in-domain sampler and its disjointness check, the run grids, and each target's train -> evaluate -> aggregate on toy
files (the workflow-level smoke run is in test_workflow.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import T_DIMS, V_DIMS, ToyData, toy_params, write_features
from figure_util import assert_figure
from PIL import Image

from structure_align import analysis as ana
from structure_align import cli, config, steps
from structure_align.analysis_report import aggregate_target
from structure_align.correlation import spearman_ci
from structure_align.data import DatasetInfo, write_manifest
from structure_align.indomain import InDomainError, assert_disjoint, in_domain_pairs, sample_per_class
from structure_align.neighbourhood import continuity, epoch_metrics, scaled_k, trustworthiness
from structure_align.runs import RunSpec, Size, Variant

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ neighbourhood

def _naive_trust(x: np.ndarray, e: np.ndarray, k: int) -> float:
    """T(k) = 1 - 2 / (n k (2n - 3k - 1)) * sum_i sum_{j in N_k^E(i) \\ N_k^X(i)} (r_X(i, j) - k)."""
    n = len(x)
    dx = np.linalg.norm(x[:, None] - x[None], axis=-1)
    de = np.linalg.norm(e[:, None] - e[None], axis=-1)
    total = 0.0
    for i in range(n):
        order_x = [j for j in np.argsort(dx[i], kind="stable") if j != i]
        rank_x = {j: r + 1 for r, j in enumerate(order_x)}
        nn_e = [j for j in np.argsort(de[i], kind="stable") if j != i][:k]
        total += sum(max(rank_x[j] - k, 0) for j in nn_e)
    return 1.0 - 2.0 / (n * k * (2 * n - 3 * k - 1)) * total


def _circle(angles: np.ndarray) -> np.ndarray:
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def test_trustworthiness_and_continuity_on_a_known_example() -> None:
    # 12 points on a quarter circle with growing gaps (no distance ties); the embedding swaps the two end points,
    # so both get far-away neighbours
    angles = np.cumsum(np.linspace(0.05, 0.2, 12))
    x = _circle(angles)
    swapped = angles.copy()
    swapped[[0, 11]] = swapped[[11, 0]]
    e = _circle(swapped)
    assert trustworthiness(x, x, 3) == pytest.approx(1.0)
    assert continuity(x, x, 3) == pytest.approx(1.0)
    t = trustworthiness(x, e, 3)
    assert t == pytest.approx(_naive_trust(x, e, 3), abs=1e-12)
    assert t < 0.9
    assert continuity(x, e, 3) == pytest.approx(trustworthiness(e, x, 3))
    # the measures look at rows' directions only (cosine geometry): scaling rows changes nothing
    assert trustworthiness(x * np.arange(1, 13)[:, None], e, 3) == pytest.approx(t)


def test_k_is_capped_to_the_set_size() -> None:
    assert scaled_k(10, 216) == 10 and scaled_k(100, 216) == 100 and scaled_k(100, 100) == 49
    with pytest.raises(ValueError, match="positive"):
        scaled_k(0, 10)


def test_epoch_metrics_callback_reports_both_heads() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(40, 6), torch.randn(40, 5)
    from structure_align.heads import HeadAligner

    aligner = HeadAligner.build("linear", 6, 5, 4)
    values = epoch_metrics(x, y, [5, 100])(aligner)
    assert values["image_k100_used"] == 19 and values["text_k5_used"] == 5
    assert all(0 <= values[f"{m}_{s}_k{k}"] <= 1 for m in ("image", "text") for s in ("trust", "cont")
               for k in (5, 100))
    assert aligner.training  # restored


# ------------------------------------------------------------------------------------------------ Spearman

def test_spearman_ci_known_cases() -> None:
    x = np.arange(10.0)
    up = spearman_ci(x, x ** 3, n_boot=300)
    assert up.rho == pytest.approx(1.0) and up.lo == pytest.approx(1.0) and up.hi == pytest.approx(1.0)
    down = spearman_ci(x, -x, n_boot=300)
    assert down.rho == pytest.approx(-1.0) and down.format() == "-1.00 [-1.00, -1.00]"
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=300), rng.normal(size=300)
    c = spearman_ci(a, b, n_boot=500, seed=3)
    assert c.lo < 0 < c.hi and c.hi - c.lo < 0.35 and c.lo <= c.rho <= c.hi
    assert c == spearman_ci(a, b, n_boot=500, seed=3)  # seeded
    noisy = spearman_ci(x, x + rng.normal(scale=3, size=10), n_boot=500)
    assert noisy.lo < noisy.rho < noisy.hi
    assert math.isnan(spearman_ci(x, np.ones(10)).rho)
    with pytest.raises(ValueError, match="at least 3"):
        spearman_ci([1, 2], [2, 1])


# ------------------------------------------------------------------------------------------------ in-domain sampler

def test_sampler_draws_k_per_class_nested_and_respects_exclusions() -> None:
    labels = np.repeat(np.arange(3), 6)
    rows2 = sample_per_class(labels, 2, seed=5, n_classes=3)
    rows4 = sample_per_class(labels, 4, seed=5, n_classes=3)
    assert np.bincount(labels[rows2]).tolist() == [2, 2, 2] and set(rows2) <= set(rows4)
    assert not np.array_equal(rows2, sample_per_class(labels, 2, seed=6, n_classes=3))
    excluded = np.arange(0, 18, 2)
    kept = sample_per_class(labels, 3, seed=5, n_classes=3, exclude=excluded)
    assert not set(kept) & set(excluded)
    assert len(sample_per_class(labels, 0, seed=5, n_classes=3)) == 0
    with pytest.raises(InDomainError, match="fewer than k=4"):
        sample_per_class(labels, 4, seed=5, n_classes=3, exclude=excluded)


def _png(path: Path, value: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), value, dtype=np.uint8)).save(path)
    return str(path)


def _pool(root: Path, n_per_class: int = 6, clash_with_test: bool = True) -> dict:
    """A toy in-domain pool (3 classes, train split, real PNGs) and a test set sharing one image's pixels."""
    labels = np.repeat(np.arange(3), n_per_class)
    n = len(labels)
    pool = pd.DataFrame({"sample_id": [f"train_{i}" for i in range(n)],
                         "image_path": [_png(root / f"img/pool{i}.png", 10 + i) for i in range(n)],
                         "captions": [[] for _ in range(n)], "label": labels, "split": "train", "source": "toy",
                         "version": "1"})
    classes, templates = ["a", "b", "c"], ["a photo of a {}.", "the {}"]
    pinfo = write_manifest(pool, DatasetInfo(name="toypool", task="zeroshot", classnames=classes, templates=templates,
                                             source="toy", version="1"), root / "manifests/toypool.parquet")
    test_values = [10, 200, 201] if clash_with_test else [200, 201, 202]  # 10 = the pixels of pool row 0
    test = pd.DataFrame({"sample_id": [f"test_{i}" for i in range(3)],
                         "image_path": [_png(root / f"img/test{i}.png", v) for i, v in enumerate(test_values)],
                         "captions": [[] for _ in range(3)], "label": [0, 1, 2], "split": "test", "source": "toy",
                         "version": "1"})
    write_manifest(test, DatasetInfo(name="toyzs", task="zeroshot", classnames=classes, templates=templates,
                                     source="toy", version="1"), root / "manifests/toytest.parquet")
    rng = np.random.default_rng(0)
    write_features(root / "features/toypool/v.safetensors", [rng.normal(size=(n, d)) for d in V_DIMS], "vision",
                   "toypool", pinfo.manifest_sha256)
    prompts = [np.tile(np.arange(6, dtype=float)[:, None], (1, d)) for d in T_DIMS]  # row r holds r everywhere
    write_features(root / "features/toypool/t.safetensors", prompts, "text", "toypool", pinfo.manifest_sha256,
                   np.repeat(np.arange(3), 2))
    return {"template": "a photo of a {}.", "vision": str(root / "features/toypool/v.safetensors"),
            "text": str(root / "features/toypool/t.safetensors"), "manifest": str(root / "manifests/toypool.parquet"),
            "test_manifest": str(root / "manifests/toytest.parquet")}


def test_in_domain_pairs_are_disjoint_from_the_test_images(tmp_path: Path) -> None:
    block = {**_pool(tmp_path), "k": 5}
    x, y, record = in_domain_pairs(block, 1, 0, seed=1)
    assert x.shape == (15, V_DIMS[1]) and y.shape == (15, T_DIMS[0])
    assert record["n_excluded_test_duplicates"] == 1 and "train_0" not in record["sample_ids"]
    assert not set(record["sample_ids"]) & {"test_0", "test_1", "test_2"}
    # captions: "a photo of a {}." is template 0, i.e. text row 2 * class
    labels = np.array([int(s.split("_")[1]) // 6 for s in record["sample_ids"]])
    assert torch.equal(y[:, 0], torch.as_tensor(2.0 * labels, dtype=torch.float32))
    with pytest.raises(InDomainError, match="fewer than k=6"):
        in_domain_pairs({**block, "k": 6}, 1, 0, seed=1)
    with pytest.raises(InDomainError, match="template"):
        in_domain_pairs({**block, "template": "an image of {}"}, 1, 0, seed=1)


def test_assert_disjoint_rejects_a_shared_image() -> None:
    pool = pd.DataFrame({"sample_id": ["a", "b"]})
    test = pd.DataFrame({"sample_id": ["c"]})
    assert_disjoint(pool, np.array([0, 1]), ["h1", "h2"], test, ["h3"])
    with pytest.raises(InDomainError, match="1 drawn image"):
        assert_disjoint(pool, np.array([0, 1]), ["h1", "h2"], test, ["h2"])
    with pytest.raises(InDomainError, match="sample id"):
        assert_disjoint(pool, np.array([0]), ["h1", "h2"], pd.DataFrame({"sample_id": ["a"]}), ["h3"])


# ------------------------------------------------------------------------------------------------ grids

def test_default_grids_are_valid_and_distinct() -> None:
    conf = config.load_params(ROOT / "params.yaml")
    config.check_params(conf)
    assert ana.check_analysis(conf) == []
    dirs = [d for t in ana.TARGETS for d in ana.run_dirs(conf, t, "results")]
    assert len(dirs) == len(set(dirs))
    assert all(d.startswith("results/analysis/") and RunSpec.from_path(d) for d in dirs)
    labels = [r["label"] for r in ana.variant_records(conf, "ablations")]
    assert "lambda = 0" in labels and "distance = rbf" in labels
    weighting = [rs for axis, _, rs in ana.ablation_structures(conf) if axis == "weighting"]
    assert all(rs["levels"] == conf["analysis"]["ablations"]["weighting_levels"] for rs in weighting)
    assert ana.pairs(conf, "combinations") == [(v, t) for v in ("effnet-lite0", "dinov2-s-imgfocus")
                                               for t in ("minilm-l6", "mpnet-base")]
    full = config.load_params(ROOT / "params.yaml", ROOT / "workflow/configs/analysis-full.yaml")
    config.check_params(full)
    assert ana.check_analysis(full) == []


def test_bad_analysis_values_are_named() -> None:
    conf = config.load_params(ROOT / "params.yaml")
    conf["analysis"]["in_domain"]["pool"] = "emoji"
    conf["analysis"]["combinations"]["methods"] = [{"head": "linear", "layers": "last", "structure": False}] * 2
    errors = ana.check_analysis(conf)
    assert any("analysis.in_domain.pool" in e and "zero-shot" in e for e in errors)
    assert any("analysis.combinations" in e and "same head" in e for e in errors)
    conf = config.load_params(ROOT / "params.yaml")
    conf["analysis"]["ablations"]["distance"] = ["euclid"]
    with pytest.raises(config.ParamsError, match="analysis.ablations.distance"):
        config.check_params(conf)


# ------------------------------------------------------------------------------------------------ toy targets

def _score(toy: ToyData) -> Path:
    vision, text, manifests = toy.pool_args()
    out = toy.root / "layers/v__t"
    steps.score_layers(vision, text, manifests, layers={"metric": "mutual_knn", "n_samples": 30, "k": 5, "seed": 0},
                       val_fraction=0.2, val_seed=0, scores_out=out / "scores.csv", choice_out=out / "choice.json")
    return out


def _train_eval(toy: ToyData, root: Path, variant: Variant, seeds=(1, 2), params: dict | None = None,
                evaluate: bool = True) -> list[Path]:
    runs = [Path(RunSpec("v", "t", variant, Size("frac", 1.0), s).dir(str(root))) for s in seeds]
    vision, text, manifests = toy.pool_args()
    steps.train_runs(runs, params or toy_params(), vision, text, manifests, toy.root / "layers/v__t/choice.json",
                     device="cpu", progress=False)
    if evaluate:
        steps.evaluate_runs(runs, toy.eval_records(), evaluation={"duplicate_gallery": False, "batch_size": 64},
                            device="cpu")
    return runs


def _report_config(records: list[dict], **extra) -> dict:
    return {"records": records, "retrieval": ["toypairs"], "zeroshot": ["toyzs"],
            "summary_metrics": ["zeroshot_top1", "retrieval_r1"], **extra}


def test_neighbourhood_target_on_toy_runs(toy_data: ToyData) -> None:
    _score(toy_data)
    root = toy_data.root / "analysis/neighbourhood"
    variants = [Variant.make("linear", "last", None), Variant.make("linear", "last", toy_params()["structure"])]
    params = {**toy_params(), "neighbourhood": {"k": [3, 100]}}
    runs = [r for v in variants for r in _train_eval(toy_data, root, v, params=params, evaluate=False)]
    history = json.loads((runs[0] / "train.json").read_text())["history"]
    assert {"image_trust_k3", "text_cont_k100", "image_k100_used"} <= set(history[0])
    assert history[0]["image_k100_used"] == 4  # 9 validation pairs -> k capped to ceil(9/2) - 1
    code = cli.main(["analysis", "--target", "neighbourhood", "--inputs", *[str(r / "train.json") for r in runs],
                     "--results-dir", str(toy_data.root), "--config",
                     json.dumps(_report_config([{"label": v.label, **v.values()} for v in variants]))])
    assert code == 0
    table = pd.read_csv(toy_data.root / "tables/analysis_neighbourhood.csv")
    assert len(table) == 2 * 2 * 2 * 2 and table["best"].between(0, 1).all()
    # 2 k values x (trustworthiness, continuity) panels of 3.4 x 2.5 in; one colour per variant
    assert_figure(toy_data.root / "figures/analysis_neighbourhood.png", series=2, inches=(2 * 3.4 + 0.4, 2 * 2.5 + 0.3))


def test_layer_correlation_and_combinations_on_toy_runs(toy_data: ToyData) -> None:
    layers = _score(toy_data)
    conf = {"structure": toy_params()["structure"],
            "analysis": {"layer_correlation": {"vision_layers": [0, 1, 2], "text_layers": [0, 1]}}}
    root = toy_data.root / "analysis/layer_correlation"
    variants = [Variant.make("linear", lay, None) for lay in ana.layer_grid(conf)]
    runs = [r for v in variants for r in _train_eval(toy_data, root, v, seeds=(1,))]
    aggregate_target("layer_correlation", [str(r / "metrics.json") for r in runs], results_dir=str(toy_data.root),
                     config=_report_config([{"label": v.label, **v.values()} for v in variants], n_boot=200,
                                           scores={"v__t": str(layers / "scores.csv")}))
    per_pair = pd.read_csv(toy_data.root / "tables/analysis_layer_correlation.csv")
    assert len(per_pair) == 6 and per_pair.is_similar.sum() == 1 and per_pair.is_last.sum() == 1
    rho = pd.read_csv(toy_data.root / "tables/analysis_layer_correlation_rho.csv")
    assert set(rho.metric) == {"zeroshot_top1", "retrieval_r1"} and (rho.n_pairs == 6).all()
    assert ((rho.ci_lo <= rho.rho) & (rho.rho <= rho.ci_hi)).all()

    root = toy_data.root / "analysis/combinations"
    variants = [Variant.make("linear", "last", None), Variant.make("linear", "similar", None),
                Variant.make("linear", "similar", toy_params()["structure"])]
    runs = [r for v in variants for r in _train_eval(toy_data, root, v, seeds=(1, 2, 3))]
    aggregate_target("combinations", [str(r / "metrics.json") for r in runs], results_dir=str(toy_data.root),
                     config=_report_config([{"label": v.label, **v.values()} for v in variants]))
    gains = pd.read_csv(toy_data.root / "tables/analysis_combinations.csv")
    assert len(gains) == 3 * 2 and (gains.n_seeds == 3).all()
    assert set(gains.comparison) == {"Linear + Similar vs Linear + Last", "Linear + Similar + R_S vs Linear + Last",
                                     "Linear + Similar + R_S vs Linear + Similar"}
    # a panel of 3.2 x 2.8 in per summary metric; one bar colour per comparison
    assert_figure(toy_data.root / "figures/analysis_combinations.png", series=3, inches=(2 * 3.2 + 0.4, 2.8 + 0.3))


def test_ablations_and_in_domain_on_toy_runs(toy_data: ToyData, tmp_path: Path) -> None:
    _score(toy_data)
    rs = toy_params()["structure"]
    conf = {"structure": rs, "analysis": {"ablations": {"lambda": [0, 10], "levels": [1, 2], "weighting": ["inverse"],
                                                        "weighting_levels": 2, "fractions": [1.0]}}}
    records = ana.variant_records(conf, "ablations")
    root = toy_data.root / "analysis/ablations"
    runs = [r for v in ana.target_variants(conf, "ablations") for r in _train_eval(toy_data, root, v)]
    aggregate_target("ablations", [str(r / "metrics.json") for r in runs], results_dir=str(toy_data.root),
                     config=_report_config(records))
    table = pd.read_csv(toy_data.root / "tables/analysis_ablations.csv")
    assert list(table.label) == ["lambda = 0", "lambda = 10", "levels = 1", "levels = 2", "weighting = inverse"]
    assert math.isnan(table.loc[0, "zeroshot_top1 gain"]) and not table["zeroshot_top1 gain"][1:].isna().any()

    block = _pool(tmp_path / "pool", clash_with_test=False)
    variant = Variant.make("linear", "similar", None)
    runs = []
    for k in (0, 2):
        params = {**toy_params(), **({"in_domain": {**block, "k": k}} if k else {})}
        runs += _train_eval(toy_data, toy_data.root / f"analysis/in_domain/toypool/k~{k}", variant, params=params)
    info = json.loads((runs[-1] / "train.json").read_text())
    assert info["in_domain"]["n_added"] == 6 and info["in_domain"]["n_excluded_test_duplicates"] == 0
    aggregate_target("in_domain", [str(r / "metrics.json") for r in runs], results_dir=str(toy_data.root),
                     config=_report_config([{"label": variant.label, **variant.values()}], dataset="toyzs"))
    table = pd.read_csv(toy_data.root / "tables/analysis_in_domain.csv")
    assert list(table.k) == [0, 2] and table.loc[0, "gain vs k=0"] == 0
