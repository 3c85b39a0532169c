"""CLI steps on synthetic manifests and feature files in the documented formats (no models, no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open

from structure_align import cli
from structure_align.data import DatasetInfo, write_manifest
from structure_align.features import FORMAT_VERSION, layer_key, write_safetensors_streaming

N_PAIRS, N_ZS, N_CLASSES = 60, 30, 3
V_DIMS, T_DIMS = (6, 8, 8), (5, 7)


def _features(path: Path, layers: list[np.ndarray], modality: str, dataset: str, sha: str,
              groups: np.ndarray | None = None) -> None:
    tensors = {layer_key(i): x.astype(np.float32) for i, x in enumerate(layers)}
    if groups is not None:
        tensors["groups"] = groups.astype(np.int64)
    meta = {"format_version": FORMAT_VERSION, "encoder": f"toy-{modality}", "modality": modality,
            "layer_names": json.dumps([f"{modality}{i}" for i in range(len(layers))]), "pooling": "mean",
            "dataset": dataset, "manifest_sha256": sha, "dtype": "float32", "n_rows": str(layers[0].shape[0]),
            "n_layers": str(len(layers))}
    write_safetensors_streaming(path, tensors, meta)


@pytest.fixture()
def toy(tmp_path: Path) -> dict[str, Path]:
    """A pairs dataset (2 captions per image, 25 % test) and a zero-shot set, with correlated toy features."""
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(N_PAIRS, 4))
    df = pd.DataFrame({"sample_id": [f"p{i}" for i in range(N_PAIRS)], "image_path": [f"img/p{i}.png" for i in
                                                                                       range(N_PAIRS)],
                       "captions": [[f"thing {i}", f"object {i}"] for i in range(N_PAIRS)], "label": -1,
                       "split": ["test" if i % 4 == 0 else "train" for i in range(N_PAIRS)], "source": "toy",
                       "version": "1"})
    info = write_manifest(df, DatasetInfo(name="toypairs", task="pairs", source="toy", version="1"),
                          tmp_path / "manifests/toypairs.parquet")
    mix = [rng.normal(size=(4, d)) for d in V_DIMS + T_DIMS]
    vision = [latent @ mix[i] + 0.1 * rng.normal(size=(N_PAIRS, d)) for i, d in enumerate(V_DIMS)]
    text_rows = np.repeat(latent, 2, axis=0)
    text = [text_rows @ mix[len(V_DIMS) + j] + 0.1 * rng.normal(size=(2 * N_PAIRS, d)) for j, d in
            enumerate(T_DIMS)]
    _features(tmp_path / "features/toypairs/v.safetensors", vision, "vision", "toypairs", info.manifest_sha256)
    _features(tmp_path / "features/toypairs/t.safetensors", text, "text", "toypairs", info.manifest_sha256,
              np.repeat(np.arange(N_PAIRS), 2))

    labels = np.arange(N_ZS) % N_CLASSES
    zdf = pd.DataFrame({"sample_id": [f"z{i}" for i in range(N_ZS)], "image_path": [f"img/z{i}.png" for i in
                                                                                    range(N_ZS)],
                        "captions": [[] for _ in range(N_ZS)], "label": labels.astype(np.int64), "split": "test",
                        "source": "toy", "version": "1"})
    zinfo = write_manifest(zdf, DatasetInfo(name="toyzs", task="zeroshot", classnames=["a", "b", "c"],
                                            templates=["a {}", "the {}"], source="toy", version="1"),
                           tmp_path / "manifests/toyzs.parquet")
    centers = rng.normal(size=(N_CLASSES, 4))
    zl = centers[labels] + 0.05 * rng.normal(size=(N_ZS, 4))
    prompts = np.repeat(centers, 2, axis=0)
    _features(tmp_path / "features/toyzs/v.safetensors", [zl @ mix[i] for i in range(len(V_DIMS))], "vision",
              "toyzs", zinfo.manifest_sha256)
    _features(tmp_path / "features/toyzs/t.safetensors", [prompts @ mix[len(V_DIMS) + j] for j in range(len(T_DIMS))],
              "text", "toyzs", zinfo.manifest_sha256, np.repeat(np.arange(N_CLASSES), 2))
    return {"root": tmp_path}


def _run(args: list[str]) -> None:
    assert cli.main([str(a) for a in args]) == 0


def _pool_args(root: Path) -> list[str]:
    return ["--vision-features", root / "features/toypairs/v.safetensors", "--text-features",
            root / "features/toypairs/t.safetensors", "--manifests", root / "manifests/toypairs.parquet"]


def _score(root: Path) -> Path:
    layers = root / "layers/v__t"
    _run(["score-layers", *_pool_args(root), "--n-samples", "30", "--k", "5", "--seed", "0", "--val-fraction", "0.2",
          "--val-seed", "0", "--out", layers / "scores.csv", "--choice-out", layers / "choice.json"])
    return layers


def _train(root: Path, layers: Path, run: Path, structure: str = "{}", head: str = "linear") -> None:
    _run(["train", *_pool_args(root), "--choice", layers / "choice.json", "--head", head, "--layers", "similar",
          "--structure", structure, "--fraction", "0.5", "--seed", "3", "--val-fraction", "0.2", "--val-seed", "0",
          "--batch-size", "16", "--epochs", "3", "--patience", "2", "--lr", "0.01", "--dim", "4",
          "--device", "cpu", "--out", run / "heads.safetensors", "--info-out", run / "train.json"])


def test_score_train_evaluate_aggregate(toy: dict[str, Path]) -> None:
    root = toy["root"]
    layers = _score(root)
    scores = pd.read_csv(layers / "scores.csv")
    assert len(scores) == len(V_DIMS) * len(T_DIMS) and scores.score.between(0, 1).all()
    choice = json.loads((layers / "choice.json").read_text())
    assert choice["last"]["vision_layer"] == len(V_DIMS) - 1 and choice["last"]["text_layer"] == len(T_DIMS) - 1
    best = scores.loc[scores.score.idxmax()]
    assert (choice["similar"]["vision_layer"], choice["similar"]["text_layer"]) == (best.vision_layer,
                                                                                    best.text_layer)
    # pool: 45 train-split images; 20 % validation -> 36 train rows; fraction 0.5 -> 18
    assert choice["n_rows"] == 30

    run = root / "runs/v__t/linear/layers~similar/lambda~10/levels~1/tau~0.05/frac~0.5/seed~3"
    structure = json.dumps({"lambda": 10, "levels": 1, "tau": 0.05, "warmup_steps": 2, "weighting": "none"})
    _train(root, layers, run, structure)
    info = json.loads((run / "train.json").read_text())
    assert info["n_pool"] == 45 and info["n_val"] == 9 and info["n_train"] == 18
    assert (info["vision_layer"], info["text_layer"]) == (choice["similar"]["vision_layer"],
                                                          choice["similar"]["text_layer"])
    assert info["train_config"]["lam"] == 10 and 1 <= info["epochs_run"] <= 3

    _run(["evaluate", "--heads", run / "heads.safetensors", "--info", run / "train.json",
          "--datasets", "toypairs", "toyzs",
          "--vision-features", root / "features/toypairs/v.safetensors", root / "features/toyzs/v.safetensors",
          "--text-features", root / "features/toypairs/t.safetensors", root / "features/toyzs/t.safetensors",
          "--manifests", root / "manifests/toypairs.parquet", root / "manifests/toyzs.parquet",
          "--test-split-datasets", "toypairs", "--device", "auto", "--out", run / "metrics.json"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["run"]["vision"] == "v" and metrics["run"]["lambda"] == "10" and metrics["run"]["tau"] == "0.05"
    pairs = metrics["datasets"]["toypairs"]
    assert pairs["n_images"] == 15 and pairs["n_texts"] == 30  # the test split only, both captions
    assert 0 <= pairs["metrics"]["i2t_r1"] <= 100 and pairs["metrics"]["t2i_r5"] >= pairs["metrics"]["t2i_r1"]
    zs = metrics["datasets"]["toyzs"]
    assert zs["n_images"] == N_ZS and zs["n_classes"] == N_CLASSES and 0 <= zs["metrics"]["top1"] <= 100

    out = root / "report"
    variants = json.dumps([{"label": "Linear + Similar + R_S", "head": "linear", "layers": "similar",
                            "lambda": "10", "levels": "1", "tau": "0.05"}])
    _run(["aggregate", "--runs", run / "metrics.json", "--variants", variants, "--retrieval", "toypairs",
          "--zeroshot", "toyzs", "--summary-metrics", "zeroshot_top1", "retrieval_r1",
          *[x for name in ("main-csv", "main-md", "main-tex", "scaling-csv", "summary-csv", "scaling-png",
                           "scaling-pdf", "metrics-out")
            for x in (f"--{name}", out / f"{name}.{name.split('-')[-1] if '-' in name else 'x'}")]])
    table = pd.read_csv(out / "main-csv.csv")
    assert table.loc[0, "toyzs top-1"] == pytest.approx(zs["metrics"]["top1"], abs=1e-3)
    assert table.loc[0, "toypairs I2T R@1"] == pytest.approx(pairs["metrics"]["i2t_r1"], abs=1e-3)


def test_train_is_deterministic(toy: dict[str, Path]) -> None:
    root = toy["root"]
    layers = _score(root)
    a, b = root / "runs/a", root / "runs/b"
    _train(root, layers, a)
    _train(root, layers, b)
    # tensors and metadata, not file bytes: safetensors writes the metadata map in hash order
    with safe_open(a / "heads.safetensors", "pt") as fa, safe_open(b / "heads.safetensors", "pt") as fb:
        assert fa.metadata() == fb.metadata() and sorted(fa.keys()) == sorted(fb.keys())
        for key in fa.keys():
            assert torch.equal(fa.get_tensor(key), fb.get_tensor(key)), key
    hist_a = json.loads((a / "train.json").read_text())["history"]
    assert hist_a == json.loads((b / "train.json").read_text())["history"]


def test_validation_split_is_fixed_and_disjoint() -> None:
    train, val = cli.validation_split(100, 0.1, seed=0)
    assert len(val) == 10 and len(train) == 90 and not set(train) & set(val)
    again = cli.validation_split(100, 0.1, seed=0)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    assert not np.array_equal(val, cli.validation_split(100, 0.1, seed=1)[1])
    with pytest.raises(cli.CLIError, match="too small"):
        cli.validation_split(5, 0.1, seed=0)


def test_failure_is_logged_with_the_file_and_exits_nonzero(toy: dict[str, Path], tmp_path: Path) -> None:
    root = toy["root"]
    log_path = tmp_path / "fail.log"
    code = cli.main(["--log", str(log_path), "score-layers", "--vision-features", str(root / "nope.safetensors"),
                     "--text-features", str(root / "features/toypairs/t.safetensors"), "--manifests",
                     str(root / "manifests/toypairs.parquet"), "--val-fraction", "0.2", "--val-seed", "0",
                     "--out", str(tmp_path / "s.csv"), "--choice-out", str(tmp_path / "c.json")])
    assert code == 1
    text = log_path.read_text()
    assert "step 'score-layers' failed" in text and "nope.safetensors" in text
    assert not (tmp_path / "s.csv").exists()


def test_mismatched_feature_file_is_rejected(toy: dict[str, Path], tmp_path: Path) -> None:
    root = toy["root"]
    # the zero-shot set's vision file does not belong to the pairs manifest: its manifest_sha256 differs
    with pytest.raises(Exception, match="manifest_sha256"):
        cli.load_pair_pool([str(root / "features/toyzs/v.safetensors")], [str(root / "features/toypairs/t.safetensors")],
                           [str(root / "manifests/toypairs.parquet")])


def test_bad_structure_json_and_keys_fail_before_loading(toy: dict[str, Path]) -> None:
    root = toy["root"]
    layers = _score(root)
    run = root / "runs/bad"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", "--head", "transformer"])
    code = cli.main(["train", *[str(a) for a in _pool_args(root)], "--choice", str(layers / "choice.json"),
                     "--head", "linear", "--layers", "similar", "--structure", '{"lambda": 10}', "--fraction", "0.5",
                     "--seed", "1", "--val-fraction", "0.2", "--val-seed", "0", "--batch-size", "8", "--epochs", "1",
                     "--patience", "1", "--lr", "0.01", "--out", str(run / "h.safetensors"),
                     "--info-out", str(run / "t.json")])
    assert code == 1 and not run.exists()


def test_train_config_mapping() -> None:
    args = cli.build_parser().parse_args(
        ["train", "--vision-features", "v", "--text-features", "t", "--manifests", "m", "--choice", "c", "--head",
         "mlp", "--layers", "last", "--fraction", "1", "--seed", "7", "--val-fraction", "0.1", "--val-seed", "0",
         "--batch-size", "32", "--epochs", "5", "--patience", "2", "--lr", "0.001", "--out", "o", "--info-out", "i"])
    cfg = cli.train_config(args, {})
    assert cfg.head == "mlp" and cfg.head_options == {} and cfg.lam == 0
    args.head = "released_mlp"
    assert cli.train_config(args, {}).head == "released_mlp"
    assert cfg.max_epochs == 5 and cfg.seed == 7 and cfg.batch_size == 32
    args.head = "csa"
    cfg = cli.train_config(args, {"lambda": 10, "levels": 2, "tau": 0.2, "warmup_steps": 0, "weighting": "inverse"})
    assert cfg.head == "csa" and cfg.csa_refine and cfg.csa_tau == 0.2 and cfg.csa_levels == 2 and cfg.lam == 0
    args.head = "linear"
    cfg = cli.train_config(args, {"lambda": 5, "levels": 1, "tau": 0.1, "warmup_steps": 3, "weighting": "none"})
    assert cfg.lam == 5 and cfg.rs_tau == 0.1 and cfg.tau == 0.05 and cfg.warmup_steps == 3


def test_torch_threads_are_set(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    monkeypatch.setattr(torch, "set_num_threads", seen.append)
    cli._set_threads(3)
    cli._set_threads(None)
    assert seen == [3]
