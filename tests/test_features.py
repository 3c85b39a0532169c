"""Feature extraction and the feature-file format (docs/encoders.md "Feature file") on tiny random models."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from tiny_models import TEXT_HIDDEN, TEXT_LAYERS, VIT_HIDDEN, VIT_LAYERS, make_tiny_bert, make_tiny_vit

from structure_align.data import DatasetInfo, dataset_texts, read_manifest, write_manifest
from structure_align.data.images import open_rgb
from structure_align.encoders import load_encoder, masked_mean
from structure_align.extract import extract_features
from structure_align.features import (
    FeatureFileError,
    feature_file_info,
    load_features,
)
from structure_align.io import write_safetensors

torch.set_num_threads(1)
N_IMAGES = 7


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    vit = make_tiny_vit(tmp_path_factory.mktemp("vit"))
    bert = make_tiny_bert(tmp_path_factory.mktemp("bert"))
    return load_encoder(f"hf:{vit}", device="cpu"), load_encoder(f"hf:{bert}", device="cpu")


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    """A working directory with images (RGB, RGBA, grey, odd sizes) and a `pairs` manifest using relative paths."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    rows = []
    for i in range(N_IMAGES):
        mode = ["RGB", "RGBA", "L"][i % 3]
        shape = (20 + 7 * i, 33 + 3 * i) + ((len(mode),) if mode != "L" else ())
        rel = f"images/{i}.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(tmp_path / rel)
        caps = [f"caption {j} of image {i}" + " word" * (i * j) for j in range(1 + i % 3)]
        rows.append({"sample_id": f"s{i}", "image_path": rel, "captions": caps, "label": -1,
                     "split": "train" if i < 5 else "test", "source": "unit", "version": "0"})
    info = write_manifest(pd.DataFrame(rows), DatasetInfo(name="unit", task="pairs", source="unit", version="0"),
                          tmp_path / "manifests" / "unit.parquet")
    return tmp_path, tmp_path / "manifests" / "unit.parquet", info


def test_vision_round_trip_and_direct_model_call(workdir, encoders):
    root, manifest, info = workdir
    vit, _ = encoders
    out = extract_features(manifest, vit, root / "f" / "vit.safetensors", batch_size=3, device="cpu",
                           progress=False)
    fs = load_features(out, encoder=vit.name, modality="vision", manifest_sha256=info.manifest_sha256,
                       dataset="unit")
    assert fs.n_rows == N_IMAGES and fs.embed_dims == [VIT_HIDDEN] * VIT_LAYERS and fs.groups is None
    assert fs.layer_names == vit.layer_names
    meta = feature_file_info(out)
    assert meta["n_rows"] == str(N_IMAGES) and meta["n_layers"] == str(VIT_LAYERS) and meta["pooling"] == "cls"
    assert json.loads(meta["embed_dims"]) == [VIT_HIDDEN] * VIT_LAYERS
    # direct model call on a few manifest rows, opened independently
    df, _ = read_manifest(manifest)
    rows = [0, 4, 6]
    imgs = [open_rgb(df["image_path"][r]) for r in rows]  # row 4 is RGBA: composited on white
    with torch.inference_mode():
        hs = vit.model(pixel_values=vit.preprocess(imgs), output_hidden_states=True).hidden_states
    for layer in range(VIT_LAYERS):
        torch.testing.assert_close(fs.layers[layer][rows], hs[layer + 1][:, 0], atol=1e-5, rtol=1e-5)


def test_text_round_trip_groups_and_order(workdir, encoders):
    root, manifest, info = workdir
    _, bert = encoders
    out = extract_features(manifest, bert, root / "f" / "bert.safetensors", batch_size=2, device="cpu",
                           progress=False, train_captions="all")
    fs = load_features(out, modality="text")
    df, _ = read_manifest(manifest)
    texts, groups = dataset_texts(df, info)
    assert fs.n_rows == len(texts) and fs.embed_dims == [TEXT_HIDDEN] * (TEXT_LAYERS + 1)
    assert torch.equal(fs.groups, torch.from_numpy(groups))
    # rows come back in dataset_texts order although batches were processed longest-first
    for k in (0, len(texts) - 1, len(texts) // 2):
        tok = bert.tokenize([texts[k]])
        with torch.inference_mode():
            hs = bert.model(**tok, output_hidden_states=True).hidden_states
        for layer in range(TEXT_LAYERS + 1):
            torch.testing.assert_close(fs.layers[layer][k], masked_mean(hs[layer], tok["attention_mask"])[0],
                                       atol=1e-5, rtol=1e-5)


def test_deterministic_bytes_workers_and_float16(workdir, encoders):
    root, manifest, _ = workdir
    vit, _ = encoders
    a = extract_features(manifest, vit, root / "a.safetensors", batch_size=4, device="cpu", progress=False)
    b = extract_features(manifest, vit, root / "b.safetensors", batch_size=4, device="cpu", progress=False,
                         num_workers=1)
    assert a.read_bytes() == b.read_bytes()
    h = extract_features(manifest, vit, root / "h.safetensors", batch_size=4, device="cpu", progress=False,
                         dtype="float16", limit=3)
    fh, fa = load_features(h), load_features(a)
    assert fh.meta["dtype"] == "float16" and fh.n_rows == 3 and fh.layers[0].dtype == torch.float32
    torch.testing.assert_close(fh.layers[-1], fa.layers[-1][:3], atol=2e-2, rtol=1e-2)


def test_limit_keeps_captions_of_first_rows(workdir, encoders):
    root, manifest, _ = workdir
    _, bert = encoders
    fs = load_features(extract_features(manifest, bert, root / "t.safetensors", limit=4, device="cpu",
                                        progress=False, train_captions="all"))
    assert fs.groups.max().item() <= 3 and fs.meta["limit"] == "4"
    assert fs.n_rows == sum(1 + i % 3 for i in range(4))


def test_bad_inputs_fail_before_work(workdir, encoders):
    root, manifest, _ = workdir
    vit, _ = encoders
    (root / "images" / "3.png").unlink()
    with pytest.raises(FileNotFoundError, match="image_path"):
        extract_features(manifest, vit, root / "x.safetensors", device="cpu", progress=False)
    with pytest.raises(ValueError, match="dtype"):
        extract_features(manifest, vit, root / "x.safetensors", dtype="bfloat16", progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        extract_features(manifest, vit, root / "x.safetensors", batch_size=0, progress=False)
    assert not (root / "x.safetensors").exists()
    assert not list(root.glob(".x.safetensors*"))  # no temp file left behind


@pytest.fixture()
def good_file(workdir, encoders):
    root, manifest, _ = workdir
    return extract_features(manifest, encoders[1], root / "good.safetensors", device="cpu", progress=False)


def test_metadata_mismatch_is_rejected(good_file):
    with pytest.raises(FeatureFileError, match="'encoder'"):
        load_features(good_file, encoder="minilm-l6")
    with pytest.raises(FeatureFileError, match="'modality'"):
        load_features(good_file, modality="vision")
    with pytest.raises(FeatureFileError, match="'manifest_sha256'"):
        load_features(good_file, manifest_sha256="0" * 64)
    with pytest.raises(FeatureFileError, match="'dataset'"):
        load_features(good_file, dataset="coco")


def test_truncated_and_corrupted_files_are_rejected(good_file, tmp_path):
    data = good_file.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:-10])
    with pytest.raises(FeatureFileError, match="truncated") as err:
        load_features(cut)
    assert "cut.safetensors" in str(err.value)
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(data[:5])
    with pytest.raises(FeatureFileError, match="truncated"):
        feature_file_info(tiny)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(data[:8] + b"\xff" * (len(data) - 8))
    with pytest.raises(FeatureFileError, match="corrupted"):
        load_features(garbage)
    with pytest.raises(FeatureFileError, match="does not exist"):
        load_features(tmp_path / "missing.safetensors")


def test_missing_tensor_and_metadata_keys_are_named(tmp_path):
    meta = {"format_version": "1", "encoder": "e", "modality": "text", "layer_names": json.dumps(["a", "b"]),
            "pooling": "masked_mean", "dataset": "d", "manifest_sha256": "x", "dtype": "float32", "n_rows": "2",
            "n_layers": "2"}
    p = write_safetensors(tmp_path / "m.safetensors", {"layer_000": np.zeros((2, 3), np.float32),
                                                                 "groups": np.zeros(2, np.int64)}, meta)
    with pytest.raises(FeatureFileError, match="'layer_001'"):
        load_features(p)
    p2 = write_safetensors(tmp_path / "n.safetensors", {"layer_000": np.zeros((2, 3), np.float32),
                                                                  "layer_001": np.zeros((2, 3), np.float32)}, meta)
    with pytest.raises(FeatureFileError, match="'groups'"):
        load_features(p2)
    p3 = write_safetensors(tmp_path / "o.safetensors", {"layer_000": np.zeros((2, 3), np.float32)},
                                     {k: v for k, v in meta.items() if k != "pooling"})
    with pytest.raises(FeatureFileError, match="'pooling'"):
        feature_file_info(p3)


def test_streaming_writer_is_standard_safetensors(tmp_path):
    from safetensors.numpy import load_file

    rng = np.random.default_rng(1)
    tensors = {"layer_000": rng.standard_normal((5, 3)).astype(np.float32),
               "layer_001": rng.standard_normal((5, 7)).astype(np.float16),
               "groups": np.arange(5, dtype=np.int64)}
    p = write_safetensors(tmp_path / "s.safetensors", tensors, {"k": "v"})
    back = load_file(str(p))
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v)
