"""Report: tables, relative improvement, scaling rows, deterministic figures (synthetic run metrics)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from structure_align import report, tables
from structure_align.runs import RunSpec, Size, Variant

RS = {"lambda": 10.0, "levels": 1, "tau": 0.05, "weighting": "none", "distance": "cosine"}
VARIANT_OBJS = [Variant.make("linear", "last", None), Variant.make("linear", "similar", RS)]
VARIANTS = [{"label": v.label, **v.values()} for v in VARIANT_OBJS]


def _write_run(root: Path, variant: Variant, fraction: float, seed: int, top1: float, r1: float) -> Path:
    spec = RunSpec("v", "t", variant, Size("frac", fraction), seed)
    path = Path(spec.dir(str(root))) / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    run = {"vision": "v", "text": "t", **variant.values(), "fraction": fraction, "seed": seed,
           "n_train": int(1000 * fraction)}
    datasets = {
        "zs": {"task": "zeroshot", "metrics": {"top1": top1, "top5": top1 + 10}},
        "ret": {"task": "retrieval", "metrics": {"i2t_r1": r1, "i2t_r5": r1 + 5, "t2i_r1": r1 / 2,
                                                   "t2i_r5": r1, "i2t_r10": r1 + 6, "t2i_r10": r1 + 1}},
    }
    path.write_text(json.dumps({"run": run, "datasets": datasets}))
    return path


@pytest.fixture()
def runs(tmp_path: Path) -> list[Path]:
    paths = []
    for fraction in (0.5, 1.0):
        for seed in (1, 2):
            paths.append(_write_run(tmp_path, VARIANT_OBJS[0], fraction, seed, 20.0 + seed, 10.0 * fraction))
            paths.append(_write_run(tmp_path, VARIANT_OBJS[1], fraction, seed, 40.0 + seed, 20.0 * fraction))
    return paths


def test_main_table_means_std_and_relative_improvement(runs: list[Path]) -> None:
    tidy = tables.collect_runs(runs)
    table = tables.main_table(tidy, VARIANTS, retrieval=["ret"], zeroshot=["zs"])
    assert list(table.method) == ["Linear + Last", "Linear + Similar + R_S"]
    last, rs = table.iloc[0], table.iloc[1]
    assert last["zs top-1"] == pytest.approx(21.5)  # seeds 1, 2 at the largest fraction only
    assert last["zs top-1 std"] == pytest.approx(np.std([21.0, 22.0], ddof=1))
    assert last.n_train_pairs == 1000 and last.n_seeds == 2
    assert last[tables.REL_COLUMN] == pytest.approx(0.0)
    # columns: zs top-1 41.5 vs 21.5; I2T R@1 20 vs 10; I2T R@5 25 vs 15; T2I R@1 10 vs 5; T2I R@5 20 vs 10
    expected = 100 * np.mean([(41.5 - 21.5) / 21.5, 1.0, (25 - 15) / 15, 1.0, 1.0])
    assert rs[tables.REL_COLUMN] == pytest.approx(expected)


def test_relative_improvement_skips_zero_base_and_missing_base() -> None:
    table = pd.DataFrame({"encoders": ["a", "a", "b"], "head": ["linear"] * 3, "layers": ["last", "similar", "last"],
                          "structure": [False, True, True], "x": [0.0, 5.0, 1.0], "y": [2.0, 3.0, 1.0]})
    rel = tables.relative_improvement(table, ["x", "y"])
    assert rel[0] == pytest.approx(0.0)
    assert rel[1] == pytest.approx(50.0)  # x skipped (base 0), y: (3 - 2) / 2
    assert math.isnan(rel[2])  # pair b has no "+ Last" row without R_S


def test_run_matching_no_variant_names_the_file(runs: list[Path]) -> None:
    tidy = tables.collect_runs(runs)
    with pytest.raises(tables.ReportError, match="metrics.json"):
        tables.main_table(tidy, VARIANTS[:1], retrieval=["ret"], zeroshot=["zs"])


def test_missing_dataset_is_an_error(runs: list[Path]) -> None:
    tidy = tables.collect_runs(runs)
    with pytest.raises(tables.ReportError, match="other"):
        tables.main_table(tidy, VARIANTS, retrieval=["ret", "other"], zeroshot=["zs"])


def test_aggregate_writes_everything_and_figures_are_byte_reproducible(runs: list[Path], tmp_path: Path) -> None:
    first, second = report.output_files(str(tmp_path / "a")), report.output_files(str(tmp_path / "b"))
    for tag in ("a", "b"):
        report.aggregate(runs, results_dir=str(tmp_path / tag), variants=VARIANTS, retrieval=["ret"],
                         zeroshot=["zs"], summary_metrics=["zeroshot_top1", "retrieval_r1"])
    first = {k: Path(v) for k, v in first.items()}
    second = {k: Path(v) for k, v in second.items()}
    for key in first:
        assert first[key].read_bytes() == second[key].read_bytes(), key
    assert first["scaling_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pdf = first["scaling_pdf"].read_bytes()
    assert pdf.startswith(b"%PDF") and b"CreationDate" not in pdf and b"Matplotlib" not in pdf
    assert b"Software" not in first["scaling_png"].read_bytes()
    scaling = pd.read_csv(first["scaling_csv"])
    assert list(scaling.columns) == ["encoders", "variant", "fraction", "n_train_pairs", "seed", "dataset", "metric",
                                     "value"]
    assert len(scaling) == 8 * 8  # 8 runs x (2 zero-shot + 6 retrieval metrics)
    md = first["main_md"].read_text()
    assert "| v + t | Linear + Similar + R_S | 1000 | 2 | 41.5 ± 0.7 |" in md
    tex = first["main_tex"].read_text()
    assert r"$\mathcal{R}_S$" in tex and r"\toprule" in tex and "±" not in tex
    metrics = json.loads(first["metrics"].read_text())
    assert metrics["v__t"]["Linear + Last"]["zeroshot_top1"] == pytest.approx(21.5)
    assert metrics["v__t"]["Linear + Last"]["retrieval_r1"] == pytest.approx((10.0 + 5.0) / 2)


def test_layer_scores_round_trip_and_heatmap(tmp_path: Path) -> None:
    scores = np.arange(12, dtype=float).reshape(3, 4) / 12
    report.write_layer_scores(tmp_path / "p__q/scores.csv", scores, ["v0", "v1", "v2"], ["t0", "t1", "t2", "t3"])
    back, vnames, tnames = report.read_layer_scores(tmp_path / "p__q/scores.csv")
    np.testing.assert_allclose(back, scores, atol=1e-6)
    assert vnames == ["v0", "v1", "v2"] and tnames == ["t0", "t1", "t2", "t3"]
    choice = {"metric": "mutual_knn", "k": 5, "n_rows": 10,
              "last": {"vision_layer": 2, "text_layer": 3, "score": 11 / 12},
              "similar": {"vision_layer": 2, "text_layer": 3, "score": 11 / 12}}
    (tmp_path / "p__q/choice.json").write_text(json.dumps(choice))
    pngs = []
    for tag in ("a", "b"):
        report.plot_layer_heatmap(tmp_path / "p__q/scores.csv", tmp_path / "p__q/choice.json",
                                  tmp_path / f"{tag}.png", tmp_path / f"{tag}.pdf")
        pngs.append((tmp_path / f"{tag}.png").read_bytes() + (tmp_path / f"{tag}.pdf").read_bytes())
    assert pngs[0] == pngs[1]


def test_read_layer_scores_rejects_incomplete_grid(tmp_path: Path) -> None:
    path = tmp_path / "scores.csv"
    path.write_text("vision_layer,text_layer,vision_name,text_name,score\n0,0,a,b,0.1\n1,1,c,d,0.2\n")
    with pytest.raises(tables.ReportError, match="expected 2 x 2"):
        report.read_layer_scores(path)


def test_skipped_images_are_named_under_the_claims_table(tmp_path: Path) -> None:
    clean = tmp_path / "clean.json"
    clean.write_text(json.dumps({"name": "a", "counts": {"image_check": {"checked": 5, "bad": 0}}}))
    messy = tmp_path / "messy.json"
    messy.write_text(json.dumps({"name": "mine", "counts": {"image_check": {
        "checked": 44, "bad": 4, "skipped": [{"path": f"x{i}.png", "reason": "empty"} for i in range(4)]}}}))
    assert report.skipped_images_note([clean]) == ""  # a clean run's claims.md is unchanged
    note = report.skipped_images_note([clean, messy])
    assert "- mine: 4 of 44 images skipped by the pre-flight check" in note and "- a:" not in note


def test_degenerate_csa_fits_are_marked_in_the_main_table(runs: list[Path]) -> None:
    # the second variant's run at fraction 0.5, seed 1 was fitted in the degenerate regime (train.json csa_fit)
    flagged = next(p for p in runs if "frac~0.5/seed~1" in str(p) and "similar" in str(p))
    data = json.loads(flagged.read_text())
    data["run"]["csa_fit"] = {"degenerate": True, "ridge_x": 1e-3, "ridge_y": 1e-3, "requested_dim": 8,
                              "kept_dim": 3}
    flagged.write_text(json.dumps(data))
    tidy = tables.collect_runs(runs)
    degenerate = tables.degenerate_csa_fits(tidy, VARIANTS)
    assert degenerate == {("v + t", "Linear + Similar + R_S"): [500]}
    table = tables.main_table(tidy, VARIANTS, retrieval=["ret"], zeroshot=["zs"])
    text = tables.table_markdown(table, degenerate)
    assert "Linear + Similar + R_S: N = 500." in text and "†" not in text.split("\n")[3]  # the table shows N = 1000
    marked = tables.table_markdown(table, {("v + t", "Linear + Similar + R_S"): [500, 1000]})
    assert "| Linear + Similar + R_S † |" in marked
    assert tables.table_markdown(table, {}) == tables.table_markdown(table)
    assert "†" not in tables.table_markdown(table)
