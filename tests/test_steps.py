"""The workflow steps (score -> train -> evaluate -> aggregate) on toy files, called directly and through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import N_ZS, T_DIMS, V_DIMS, ToyData, toy_params
from recompute import expected_run_metrics

from structure_align import cli, steps
from structure_align.pool import PoolError, load_pair_pool, validation_split
from structure_align.runs import RunSpec, Size, Variant

RS = {"lambda": 10, "levels": 1, "tau": 0.05, "weighting": "none", "distance": "cosine"}


def _score(toy: ToyData) -> Path:
    out = toy.root / "layers/v__t"
    vision, text, manifests = toy.pool_args()
    steps.score_layers(vision, text, manifests, layers={"metric": "mutual_knn", "n_samples": 30, "k": 5, "seed": 0},
                       val_fraction=0.2, val_seed=0, scores_out=out / "scores.csv", choice_out=out / "choice.json")
    return out


def _run_dir(toy: ToyData, structure: dict | None = RS, head: str = "linear", seed: int = 3,
             layers: str = "similar") -> Path:
    spec = RunSpec("v", "t", Variant.make(head, layers, structure), Size("frac", 0.5), seed)
    return Path(spec.dir(str(toy.root)))


def _train(toy: ToyData, runs: list[Path], params: dict | None = None) -> None:
    vision, text, manifests = toy.pool_args()
    steps.train_runs(runs, params or toy_params(), vision, text, manifests, toy.root / "layers/v__t/choice.json",
                     device="cpu", progress=False)


def test_score_train_evaluate_aggregate(toy_data: ToyData) -> None:
    layers = _score(toy_data)
    scores = pd.read_csv(layers / "scores.csv")
    assert len(scores) == len(V_DIMS) * len(T_DIMS) and scores.score.between(0, 1).all()
    choice = json.loads((layers / "choice.json").read_text())
    assert (choice["last"]["vision_layer"], choice["last"]["text_layer"]) == (len(V_DIMS) - 1, len(T_DIMS) - 1)
    best = scores.loc[scores.score.idxmax()]
    assert (choice["similar"]["vision_layer"], choice["similar"]["text_layer"]) == (best.vision_layer,
                                                                                    best.text_layer)
    assert choice["n_rows"] == 30

    runs = [_run_dir(toy_data, seed=s) for s in (3, 4)]
    _train(toy_data, runs)
    info = json.loads((runs[0] / "train.json").read_text())
    # pool: 45 train-split images; 20 % validation -> 36 train rows; fraction 0.5 -> 18
    assert info["n_pool"] == 45 and info["n_val"] == 9 and info["n_train"] == 18 and info["size"] == "frac~0.5"
    assert (info["vision_layer"], info["text_layer"]) == (choice["similar"]["vision_layer"],
                                                          choice["similar"]["text_layer"])
    assert info["train_config"]["rs_lambda"] == 10 and info["train_config"]["rs_warmup_steps"] == 2
    assert 1 <= info["epochs_run"] <= 3 and info["seed"] == 3

    steps.evaluate_runs(runs, toy_data.eval_records(), evaluation={"duplicate_gallery": False, "batch_size": 64},
                        device="cpu")
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["run"]["vision"] == "v" and metrics["run"]["lambda"] == "10" and metrics["run"]["tau"] == "0.05"
    pairs = metrics["datasets"]["toypairs"]
    assert pairs["n_images"] == 15 and pairs["n_texts"] == 30  # the test split only, both captions
    zs = metrics["datasets"]["toyzs"]
    assert zs["n_images"] == N_ZS and zs["n_classes"] == 3
    # every number equals the recomputation from the heads and the manifest (tests/recompute.py)
    evaluation = {"duplicate_gallery": False, "batch_size": 64}
    assert metrics["datasets"] == expected_run_metrics(runs[0], toy_data.eval_records(), evaluation)

    variant = Variant.make("linear", "similar", RS)
    code = cli.main(["aggregate", "--metrics", *[str(r / "metrics.json") for r in runs], "--results-dir",
                     str(toy_data.root), "--config", json.dumps({
                         "variants": [{"label": variant.label, **variant.values()}], "retrieval": ["toypairs"],
                         "zeroshot": ["toyzs"], "summary_metrics": ["zeroshot_top1", "retrieval_r1"]})])
    assert code == 0
    table = pd.read_csv(toy_data.root / "tables/main.csv")
    both = [json.loads((r / "metrics.json").read_text())["datasets"]["toyzs"]["metrics"]["top1"] for r in runs]
    assert table.loc[0, "toyzs top-1"] == pytest.approx(np.mean(both), abs=1e-3) and table.loc[0, "n_seeds"] == 2


def test_cli_train_and_evaluate_match_the_library(toy_data: ToyData) -> None:
    _score(toy_data)
    run = _run_dir(toy_data, seed=5, structure=None)
    vision, text, manifests = toy_data.pool_args()
    params = toy_params()
    evaluation = {"duplicate_gallery": False, "batch_size": 64}
    assert cli.main(["train", "--runs", str(run), "--vision-features", *vision, "--text-features", *text,
                     "--manifests", *manifests, "--choice", str(toy_data.root / "layers/v__t/choice.json"),
                     "--config", json.dumps(params), "--device", "cpu", "--threads", "1"]) == 0
    base = json.loads((run / "train.json").read_text())
    assert base["structure"] is None and base["train_config"]["rs_lambda"] == 0
    assert cli.main(["evaluate", "--runs", str(run), "--datasets", json.dumps(toy_data.eval_records()),
                     "--config", json.dumps(evaluation), "--device", "cpu"]) == 0
    via_cli = (run / "heads.safetensors").read_bytes(), json.loads((run / "metrics.json").read_text())
    # the same run through the library: byte-identical heads, the same train record and metrics
    _train(toy_data, [run])
    steps.evaluate_runs([run], toy_data.eval_records(), evaluation=evaluation, device="cpu")
    lib = json.loads((run / "train.json").read_text())
    assert (run / "heads.safetensors").read_bytes() == via_cli[0]
    assert {k: v for k, v in lib.items() if k != "seconds"} == {k: v for k, v in base.items() if k != "seconds"}
    assert json.loads((run / "metrics.json").read_text()) == via_cli[1]
    assert via_cli[1]["datasets"] == expected_run_metrics(run, toy_data.eval_records(), evaluation)


def test_training_is_deterministic(toy_data: ToyData) -> None:
    _score(toy_data)
    run = _run_dir(toy_data)
    _train(toy_data, [run])
    first = (run / "heads.safetensors").read_bytes(), json.loads((run / "train.json").read_text())["history"]
    _train(toy_data, [run])
    assert (run / "heads.safetensors").read_bytes() == first[0]  # byte-identical weights file
    assert json.loads((run / "train.json").read_text())["history"] == first[1]


def test_explicit_layer_pair_and_absolute_size(toy_data: ToyData) -> None:
    _score(toy_data)
    spec = RunSpec("v", "t", Variant.make("linear", "v1t0", None), Size("n", 10), 1)
    run = Path(spec.dir(str(toy_data.root)))
    _train(toy_data, [run])
    info = json.loads((run / "train.json").read_text())
    assert (info["vision_layer"], info["text_layer"]) == (1, 0) and info["n_train"] == 10
    assert info["fraction"] == pytest.approx(10 / 36)
    too_big = Path(RunSpec("v", "t", spec.variant, Size("n", 37), 1).dir(str(toy_data.root)))
    with pytest.raises(PoolError, match="training.sizes"):
        _train(toy_data, [too_big])


def test_validation_split_is_fixed_and_disjoint() -> None:
    train, val = validation_split(100, 0.1, seed=0)
    assert len(val) == 10 and len(train) == 90 and not set(train) & set(val)
    again = validation_split(100, 0.1, seed=0)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    assert not np.array_equal(val, validation_split(100, 0.1, seed=1)[1])
    with pytest.raises(PoolError, match="too small"):
        validation_split(5, 0.1, seed=0)


def test_failure_is_logged_with_the_file_and_exits_nonzero(toy_data: ToyData, tmp_path: Path) -> None:
    log_path = tmp_path / "fail.log"
    _, text, manifests = toy_data.pool_args()
    code = cli.main(["--log", str(log_path), "score-layers", "--vision-features", str(tmp_path / "nope.safetensors"),
                     "--text-features", *text, "--manifests", *manifests, "--config",
                     json.dumps({"layers": {"metric": "mutual_knn", "n_samples": 30, "k": 5, "seed": 0},
                                 "val_fraction": 0.2, "val_seed": 0}),
                     "--scores-out", str(tmp_path / "s.csv"), "--choice-out", str(tmp_path / "c.json")])
    assert code == 1
    text_log = log_path.read_text()
    assert "step 'score-layers' failed" in text_log and "nope.safetensors" in text_log
    assert not (tmp_path / "s.csv").exists()


def test_mismatched_feature_file_is_rejected(toy_data: ToyData) -> None:
    # the zero-shot set's vision file does not belong to the pairs manifest: its manifest_sha256 differs
    with pytest.raises(ValueError, match="manifest_sha256"):
        load_pair_pool([str(toy_data.features("toyzs", "vision"))], [str(toy_data.features("toypairs", "text"))],
                       [str(toy_data.manifest("toypairs"))])


def test_bad_params_fail_before_any_feature_is_read(toy_data: ToyData, monkeypatch: pytest.MonkeyPatch) -> None:
    _score(toy_data)
    monkeypatch.setattr("structure_align.pool.load_pair_pool", lambda *a: pytest.fail("features were read"))
    with pytest.raises(ValueError, match="epochs"):
        _train(toy_data, [_run_dir(toy_data)], toy_params(training={"epochs": 0}))
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", "--runs", "x", "--vision-features", "v", "--text-features", "t",
                                       "--manifests", "m", "--choice", "c", "--config", "{not json"])


def test_torch_threads_are_set(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    monkeypatch.setattr(torch, "set_num_threads", seen.append)
    cli._set_threads(3)
    cli._set_threads(None)
    assert seen == [3]


def test_subsample_scope_scores_the_run_rows_and_records_full_lambda(toy_data: ToyData) -> None:
    """layers.scope = subsample picks Similar on each run's own rows; the honest protocol restores full lambda."""
    _score(toy_data)
    params = toy_params()
    params["layers"] = {"metric": "mutual_knn", "n_samples": 30, "k": 3, "seed": 0, "scope": "subsample"}
    params["structure"].update(warmup_epochs=1)
    params["training"].update(select_on="clip", select_after_warmup=True, epochs=4, patience=2)
    runs = [_run_dir(toy_data, seed=s) for s in (3, 4)]
    _train(toy_data, runs, params)
    vision, text, manifests = toy_data.pool_args()
    pool = load_pair_pool(vision, text, manifests)
    for run in runs:
        info = json.loads((run / "train.json").read_text())
        spec = RunSpec.from_path(run)
        from structure_align.pool import run_rows

        rows, _ = run_rows(pool.n, spec.size, spec.seed, 0.2, 0)
        i, j, score = steps.subsample_choice(pool, rows, params["layers"])
        assert (info["vision_layer"], info["text_layer"], info["subsample_layer_score"]) == (i, j, score)
        assert info["layer_scope"] == "subsample" and info["lambda_at_best"] == pytest.approx(10.0)
        assert all(not h["eligible"] for h in info["history"][:1])
