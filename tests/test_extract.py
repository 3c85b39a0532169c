"""Extraction at scale (extract.py, io.SafetensorsFileWriter): in-place writer, resume after SIGKILL or failure,
training-set text rows, /dev/shm fallback, precision."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from tiny_models import make_tiny_bert, make_tiny_vit

from structure_align import extract
from structure_align.data import DatasetInfo, dataset_texts, read_manifest, write_manifest
from structure_align.encoders import load_encoder
from structure_align.extract import extract_features, extraction_texts, shm_workers
from structure_align.features import load_features
from structure_align.io import SafetensorsFileWriter, verify_safetensors, write_safetensors
from structure_align.pool import first_caption_rows

torch.set_num_threads(1)
TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return make_tiny_vit(tmp_path_factory.mktemp("vit")), make_tiny_bert(tmp_path_factory.mktemp("bert"))


def _manifest(root: Path, n: int, captions_per_row=lambda i: 1 + i % 3) -> Path:
    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        path = root / "images" / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (30 + i % 5, 36, 3), dtype=np.uint8)).save(path)
        caps = [f"caption {j} of image {i}" + " word" * ((i * 7 + j) % 5) for j in range(captions_per_row(i))]
        rows.append({"sample_id": f"s{i}", "image_path": str(path), "captions": caps, "label": -1,
                     "split": "train" if i < n - 4 else "test", "source": "unit", "version": "0"})
    out = root / "manifests" / "unit.parquet"
    write_manifest(pd.DataFrame(rows), DatasetInfo(name="unit", task="pairs", source="unit", version="0"), out)
    return out


# --- the writer ---------------------------------------------------------------------------------------------------

def test_incremental_writer_gives_write_safetensors_bytes(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"layer_000": rng.standard_normal((13, 5)).astype(np.float16),
               "layer_001": rng.standard_normal((13, 3)).astype(np.float16),
               "groups": rng.integers(0, 9, 13).astype(np.int64), "empty": np.zeros((0, 4), np.float32)}
    meta = {"b": "2", "a": "1"}
    whole = write_safetensors(tmp_path / "whole.safetensors", tensors, meta)
    w = SafetensorsFileWriter(tmp_path / "inc.safetensors", {k: (v.dtype, v.shape) for k, v in tensors.items()},
                              meta)
    w.write_tensor("groups", tensors["groups"])
    for name in ("layer_000", "layer_001"):
        rows = w.rows(name)
        for block in np.array_split(rng.permutation(13), 4):  # scattered row blocks, like longest-first text
            rows[block] = tensors[name][block]
        rows.flush()
    w.finalize()
    assert (tmp_path / "inc.safetensors").read_bytes() == whole.read_bytes()
    header, _ = verify_safetensors(whole)
    per_tensor = {k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest() for k, v in tensors.items()}
    assert header["__metadata__"]["tensor_sha256"] == json.dumps(per_tensor, sort_keys=True)
    from safetensors.numpy import load_file
    loaded = load_file(str(whole))
    assert all(np.array_equal(loaded[k], v) for k, v in tensors.items())
    with pytest.raises(ValueError, match="tensor_sha256"):
        write_safetensors(tmp_path / "x.safetensors", tensors, {"tensor_sha256": "x"})


# --- training-set text rows ---------------------------------------------------------------------------------------

def test_train_captions_used_keeps_first_train_caption_and_all_test_captions(tmp_path, models):
    manifest = _manifest(tmp_path, 10)
    df, info = read_manifest(manifest)
    texts, groups = dataset_texts(df, info)
    used_texts, used_groups = extraction_texts(df, info, "used")
    train = df["split"].to_numpy() == "train"
    expected = [k for k in range(len(texts)) if not train[groups[k]] or k == int(np.flatnonzero(groups ==
                                                                                               groups[k])[0])]
    assert used_texts == [texts[k] for k in expected] and np.array_equal(used_groups, groups[expected])
    assert extraction_texts(df, info, "all")[0] == texts
    bert = load_encoder(f"hf:{models[1]}", device="cpu")
    used = load_features(extract_features(manifest, bert, tmp_path / "u.safetensors", batch_size=3, device="cpu",
                                          progress=False))
    full = load_features(extract_features(manifest, bert, tmp_path / "a.safetensors", batch_size=3, device="cpu",
                                          progress=False, train_captions="all"))
    assert used.meta["train_captions"] == "used" and used.n_rows == len(expected) < full.n_rows
    rows = np.flatnonzero(train)
    # the pool pairs every training image with the same caption whichever file it reads
    (iu, tu), (ia, ta) = first_caption_rows(used.groups.numpy(), rows), first_caption_rows(full.groups.numpy(), rows)
    assert np.array_equal(iu, ia)
    for layer in range(len(used.layers)):
        torch.testing.assert_close(used.layers[layer][tu], full.layers[layer][ta], atol=1e-5, rtol=1e-5)


def test_one_caption_per_row_gives_the_same_text_rows(tmp_path, models):
    """The offline default's training sets (tuxpaint, emoji) have one caption per row: `used` = `all`."""
    manifest = _manifest(tmp_path, 9, captions_per_row=lambda i: 1)
    bert = load_encoder(f"hf:{models[1]}", device="cpu")
    a, b = (load_features(extract_features(manifest, bert, tmp_path / f"{m}.safetensors", batch_size=2,
                                           device="cpu", progress=False, train_captions=m)) for m in ("used", "all"))
    assert torch.equal(a.groups, b.groups) and all(torch.equal(x, y) for x, y in zip(a.layers, b.layers))


# --- /dev/shm -----------------------------------------------------------------------------------------------------

def test_shm_workers_falls_back_to_what_fits(monkeypatch, caplog):
    usage = namedtuple("usage", "total used free")
    batch = 256 * 3 * 518 * 518 * 4
    monkeypatch.setattr(extract.shutil, "disk_usage", lambda _p: usage(0, 0, 16 * 2**30))
    assert shm_workers(8, batch) == 8
    monkeypatch.setattr(extract.shutil, "disk_usage", lambda _p: usage(0, 0, 5 * batch))
    with caplog.at_level(logging.WARNING, logger="structure_align.extract"):
        assert shm_workers(8, batch) == 2
    assert "need" in caplog.text and "--shm-size=" in caplog.text
    monkeypatch.setattr(extract.shutil, "disk_usage", lambda _p: usage(0, 0, 64 * 2**20))  # Docker's default
    assert shm_workers(8, batch) == 0
    assert shm_workers(0, batch) == 0

    def missing(_p):
        raise FileNotFoundError(_p)
    monkeypatch.setattr(extract.shutil, "disk_usage", missing)
    assert shm_workers(3, batch) == 3


# --- precision ----------------------------------------------------------------------------------------------------

def test_released_precision_runs_text_in_bfloat16(tmp_path, models):
    manifest = _manifest(tmp_path, 6)
    with pytest.raises(ValueError, match="autocast must be 'none'"):
        extract_features(manifest, f"hf:{models[1]}", tmp_path / "x.safetensors", precision="released",
                         autocast="bf16", progress=False)
    bert = load_encoder(f"hf:{models[1]}", device="cpu")
    ref = load_features(extract_features(manifest, bert, tmp_path / "f32.safetensors", device="cpu",
                                         progress=False))
    rel = load_features(extract_features(manifest, bert, tmp_path / "rel.safetensors", device="cpu",
                                         progress=False, precision="released"))
    assert next(bert.model.parameters()).dtype == torch.bfloat16
    assert rel.meta["precision"] == "released" and ref.meta["precision"] == "autocast"
    assert not torch.equal(rel.layers[-1], ref.layers[-1])
    torch.testing.assert_close(rel.layers[-1], ref.layers[-1], atol=0.1, rtol=0.1)
    vit = load_encoder(f"hf:{models[0]}", device="cpu")
    extract_features(manifest, vit, tmp_path / "v.safetensors", device="cpu", progress=False, precision="released")
    assert next(vit.model.parameters()).dtype == torch.float32


# --- resume -------------------------------------------------------------------------------------------------------

def _side_files(out: Path) -> list[Path]:
    return [p for p in (out.with_name(out.name + ".partial"), out.with_name(out.name + ".progress.json"))
            if p.exists()]


def test_failed_text_extraction_resumes_byte_identical(tmp_path, models, caplog):
    manifest = _manifest(tmp_path, 14)
    bert = load_encoder(f"hf:{models[1]}", device="cpu")
    clean = extract_features(manifest, bert, tmp_path / "clean.safetensors", batch_size=2, device="cpu",
                             progress=False, chunk_batches=2).read_bytes()
    out = tmp_path / "f" / "t.safetensors"
    forward, calls = bert.forward_layers, []

    def failing(batch):
        calls.append(1)
        if len(calls) == 6:
            raise RuntimeError("simulated failure")
        return forward(batch)
    bert.forward_layers = failing
    with pytest.raises(RuntimeError, match="simulated"):
        extract_features(manifest, bert, out, batch_size=2, device="cpu", progress=False, chunk_batches=2)
    assert not out.exists() and len(_side_files(out)) == 2
    assert json.loads(_side_files(out)[1].read_text())["batches_done"] == 4
    bert.forward_layers, calls[:] = forward, []
    with caplog.at_level(logging.INFO, logger="structure_align.extract"):
        extract_features(manifest, bert, out, batch_size=2, device="cpu", progress=False, chunk_batches=2)
    n_batches = -(-load_features(out).n_rows // 2)
    assert "resumed after 4)" in caplog.text and f"computed {n_batches - 4} of {n_batches} batches" in caplog.text
    assert out.read_bytes() == clean and not _side_files(out)


def test_stale_partial_is_discarded(tmp_path, models, caplog):
    manifest = _manifest(tmp_path, 8)
    vit = load_encoder(f"hf:{models[0]}", device="cpu")
    clean = extract_features(manifest, vit, tmp_path / "clean.safetensors", batch_size=2, device="cpu",
                             progress=False).read_bytes()
    out = tmp_path / "v.safetensors"
    out.with_name(out.name + ".partial").write_bytes(b"\x01" * len(clean))
    out.with_name(out.name + ".progress.json").write_text(json.dumps(
        {"digest": "0" * 64, "n_batches": 4, "batches_done": 3, "chunk_batches": 1}))
    with caplog.at_level(logging.WARNING, logger="structure_align.extract"):
        extract_features(manifest, vit, out, batch_size=2, device="cpu", progress=False)
    assert "discarding the partial file" in caplog.text
    assert out.read_bytes() == clean and not _side_files(out)


_KILLED_RUN = """
import sys, time
import torch
torch.set_num_threads(1)
from structure_align.encoders import load_encoder
from structure_align.extract import extract_features
enc = load_encoder("hf:" + sys.argv[1], device="cpu")
forward = enc.forward_layers
def slow(batch):
    time.sleep(0.3)  # long enough for the test to see some chunks complete before it kills the process
    return forward(batch)
enc.forward_layers = slow
extract_features(sys.argv[2], enc, sys.argv[3], batch_size=2, device="cpu", progress=False, chunk_batches=2)
"""


def test_sigkilled_extraction_resumes_byte_identical(tmp_path, models, caplog):
    manifest = _manifest(tmp_path, 40)
    vit = load_encoder(f"hf:{models[0]}", device="cpu")
    clean = extract_features(manifest, vit, tmp_path / "clean.safetensors", batch_size=2, device="cpu",
                             progress=False, chunk_batches=2).read_bytes()
    out = tmp_path / "f" / "v.safetensors"
    progress = out.with_name(out.name + ".progress.json")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_KILLED_RUN), str(models[0]), str(manifest),
                             str(out)], env=env)
    done, deadline = 0, time.monotonic() + 120
    try:
        while done < 4 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            if progress.is_file():
                try:
                    done = json.loads(progress.read_text())["batches_done"]
                except (json.JSONDecodeError, KeyError):
                    continue
        assert proc.poll() is None, "the extraction finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert 4 <= done < 20 and not out.exists()
    caplog.clear()  # only the resumed run's records (the clean run above may have logged too)
    with caplog.at_level(logging.INFO, logger="structure_align.extract"):
        extract_features(manifest, vit, out, batch_size=2, device="cpu", progress=False, chunk_batches=2)
    resumed = json.loads(caplog.text.split("resumed after ")[1].split(")")[0]) if "resumed after" in caplog.text \
        else 0
    assert resumed >= 4 and f"computed {20 - resumed} of 20 batches" in caplog.text
    assert out.read_bytes() == clean and not _side_files(out)
