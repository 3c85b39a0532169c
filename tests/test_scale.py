"""Issue 20: steps read only what they use (lazy row-sliced reads, per-tensor checksums), every rule declares mem_mb,
and the scale benchmark's steps stay in a memory bound that does not grow with the data (docs/design.md "Memory")."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from structure_align import reader as reader_mod
from structure_align import resources
from structure_align.features import FeatureFileError, layer_key, load_features
from structure_align.io import (
    TENSOR_CHECKSUM_KEY,
    FileFormatError,
    read_safetensors_header,
    verify_tensor,
    write_safetensors,
)
from structure_align.reader import open_features

ROOT = Path(__file__).resolve().parents[1]
DIMS = [6, 5, 7, 4]
N = 40


def _feature_file(path: Path, dtype=np.float16, text: bool = True) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    layers = [rng.normal(size=(N, d)).astype(dtype) for d in DIMS]
    tensors = {layer_key(i): a for i, a in enumerate(layers)}
    if text:
        tensors["groups"] = (np.arange(N) // 2).astype(np.int64)
    meta = {"format_version": "1", "encoder": "enc", "modality": "text" if text else "vision",
            "layer_names": json.dumps([f"b{i}" for i in range(len(DIMS))]), "pooling": "x", "dataset": "d",
            "manifest_sha256": "m", "dtype": np.dtype(dtype).name, "n_rows": str(N), "n_layers": str(len(DIMS))}
    write_safetensors(path, tensors, meta)
    return layers


class _Recorder:
    """A file object that records the (offset, length) of every read."""

    def __init__(self, fh, log: list[tuple[int, int]]) -> None:
        self._fh, self._log = fh, log

    def read(self, *args):
        pos = self._fh.tell()
        data = self._fh.read(*args)
        self._log.append((pos, len(data)))
        return data

    def readinto(self, buf):
        pos = self._fh.tell()
        n = self._fh.readinto(buf)
        self._log.append((pos, n))
        return n

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()


def test_reading_one_layer_reads_only_its_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening a text feature file and reading rows of layer 2 touches the header, ``groups`` and layer 2 only."""
    path = tmp_path / "t.safetensors"
    layers = _feature_file(path)
    header, start = read_safetensors_header(path)
    log: list[tuple[int, int]] = []
    real_open = open

    def recording_open(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        return _Recorder(fh, log) if Path(file) == path and "b" in mode else fh

    for module in ("structure_align.reader", "structure_align.io"):
        monkeypatch.setattr(f"{module}.open", recording_open, raising=False)
    fr = open_features(path, modality="text")
    rows = np.array([7, 3, 3, 39, 0])
    got = fr.read(2, rows)
    allowed = [(0, start)] + [(start + header[k]["data_offsets"][0], start + header[k]["data_offsets"][1])
                              for k in (layer_key(2), "groups")]
    touched = [(pos, pos + n) for pos, n in log if n]
    assert touched, "the recorder saw no read"
    for lo, hi in touched:
        assert any(a <= lo and hi <= b for a, b in allowed), (lo, hi, allowed)
    layer2 = (start + header[layer_key(2)]["data_offsets"][0], start + header[layer_key(2)]["data_offsets"][1])
    assert any(lo >= layer2[0] and hi <= layer2[1] for lo, hi in touched)  # layer 2 itself was read
    assert torch.equal(got, torch.from_numpy(layers[2][rows].astype(np.float32)))


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_lazy_rows_equal_eager_load(tmp_path: Path, dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any rows (unsorted, repeated, across several read blocks) equal load_features + indexing, bit for bit."""
    path = tmp_path / "v.safetensors"
    _feature_file(path, dtype, text=False)
    monkeypatch.setattr(reader_mod, "BLOCK_BYTES", 3 * 7 * 4)  # a few rows per block: many blocks
    eager = load_features(path)
    fr = open_features(path, modality="vision")
    rows = np.array([39, 1, 20, 20, 0, 38, 5])
    for i in range(len(DIMS)):
        assert torch.equal(fr.read(i, rows), eager.layers[i][torch.as_tensor(rows)])
        assert torch.equal(fr.read(i), eager.layers[i])
    assert fr.read(-1).shape == (N, DIMS[-1]) and fr.read(0, []).shape == (0, DIMS[0])
    with pytest.raises(FeatureFileError, match="outside"):
        fr.read(0, [N])


def test_tensor_checksums_format_and_corruption(tmp_path: Path) -> None:
    """``tensor_sha256`` = sorted JSON of sha256(raw bytes) per tensor; a flipped byte is refused for its tensor only."""
    path = tmp_path / "t.safetensors"
    layers = _feature_file(path)
    header, start = read_safetensors_header(path)
    expected = {layer_key(i): hashlib.sha256(a.tobytes()).hexdigest() for i, a in enumerate(layers)}
    expected["groups"] = hashlib.sha256((np.arange(N) // 2).astype("<i8").tobytes()).hexdigest()
    assert header["__metadata__"][TENSOR_CHECKSUM_KEY] == json.dumps(expected, sort_keys=True)
    data = bytearray(path.read_bytes())
    data[start + header[layer_key(1)]["data_offsets"][0] + 3] ^= 0x10
    path.write_bytes(bytes(data))
    verify_tensor(path, layer_key(0))
    with pytest.raises(FileFormatError, match="layer_001"):
        verify_tensor(path, layer_key(1))
    reader_mod._VERIFIED.clear()
    fr = open_features(path)
    assert fr.read(0).shape == (N, DIMS[0])
    with pytest.raises(FeatureFileError, match=str(path)):
        fr.read(1, [0])


def test_file_without_tensor_checksums_falls_back_to_the_whole_file(tmp_path: Path) -> None:
    """A file written before ``tensor_sha256`` existed is checked against ``content_sha256`` as a whole."""
    from structure_align import io as io_mod

    path = tmp_path / "old.safetensors"
    arrays = {"a": np.ones((3, 2), np.float32), "b": np.zeros((2, 2), np.float32)}
    _, order, _ = io_mod.safetensors_header({k: (v.dtype, v.shape) for k, v in arrays.items()}, {})
    bare, _, _ = io_mod._header_dict({k: (v.dtype, v.shape) for k, v in arrays.items()}, {})
    digest = io_mod._content_digest(bare, (arrays[n].tobytes() for n in order))
    head, _, _ = io_mod.safetensors_header({k: (v.dtype, v.shape) for k, v in arrays.items()},
                                           {io_mod.CHECKSUM_KEY: digest})
    path.write_bytes(head + b"".join(arrays[n].tobytes() for n in order))
    verify_tensor(path, "a")
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # in tensor "b": the whole-file check catches it even when "a" is asked for
    path.write_bytes(bytes(data))
    with pytest.raises(FileFormatError, match="content"):
        verify_tensor(path, "a")


# ----------------------------------------------------------------------------------------------------- mem_mb

def _rule_blocks(text: str) -> list[tuple[str, str]]:
    """``(rule name, body)`` of every rule in a .smk file (named rules and the generated ``rule:`` + ``name:``)."""
    parts = re.split(r"^(\s*)rule\b", text, flags=re.MULTILINE)
    out = []
    for k in range(2, len(parts), 2):
        body = parts[k]
        m = re.match(r"\s*(\w+)?\s*:", body)
        name = m.group(1) if m and m.group(1) else re.search(r"name:\s*\n\s*(.+)", body).group(1).strip()
        out.append((name, body.split("\n\n\n")[0]))
    return out


def test_every_rule_that_runs_a_job_declares_mem_mb() -> None:
    """Every rule with a shell command declares ``mem_mb`` under ``resources:`` (target rules run nothing)."""
    files = sorted((ROOT / "workflow/rules").glob("*.smk")) + [ROOT / "Snakefile"]
    jobs, missing = [], []
    for f in files:
        for name, body in _rule_blocks(f.read_text()):
            if re.search(r"^\s*(shell|run|script):", body, flags=re.MULTILINE):
                jobs.append(name)
                res = re.search(r"^\s*resources:\s*\n((?:\s{8,}.*\n)+)", body, flags=re.MULTILINE)
                if not res or "mem_mb=" not in res.group(1):
                    missing.append(f"{f.name}:{name}")
    assert len(jobs) >= 12, jobs
    assert missing == []


def test_gpu_rules_declare_gpu() -> None:
    """The rules that run torch on ``config['device']`` also declare ``gpu``."""
    for f, names in {"train.smk": ("train", "evaluate"), "features.smk": ("extract_features",),
                     "paper.smk": ("evaluate_reference",)}.items():
        blocks = dict(_rule_blocks((ROOT / "workflow/rules" / f).read_text()))
        for name in names:
            assert re.search(r"resources:\s*\n(?:\s+\w+=.*\n)*\s+gpu=GPU", blocks[name]), (f, name)


def _pool_files(root: Path, n_images: int, n_layers: int, width: int) -> tuple[list[str], list[str], list[str]]:
    import pandas as pd

    from structure_align.data.manifest import write_manifest
    from structure_align.data.registry import DatasetInfo

    df = pd.DataFrame({"sample_id": [f"s{i}" for i in range(n_images)], "image_path": "x.png",
                       "captions": [["a", "b"]] * n_images, "label": -1, "split": "train", "source": "t",
                       "version": "1"})
    info = write_manifest(df, DatasetInfo(name="p", task="pairs"), root / "p.parquet")
    meta = {"format_version": "1", "encoder": "e", "dataset": "p", "manifest_sha256": info.manifest_sha256,
            "dtype": "float16", "layer_names": json.dumps([str(i) for i in range(n_layers)]), "pooling": "x",
            "n_layers": str(n_layers)}
    for modality, rows in (("vision", n_images), ("text", 2 * n_images)):
        tensors = {layer_key(i): np.zeros((rows, width), np.float16) for i in range(n_layers)}
        if modality == "text":
            tensors["groups"] = np.repeat(np.arange(n_images), 2)
        write_safetensors(root / f"{modality}.safetensors", tensors, {**meta, "modality": modality,
                                                                       "n_rows": str(rows)})
    return [str(root / "vision.safetensors")], [str(root / "text.safetensors")], [str(root / "p.parquet")]


def test_mem_mb_grows_with_what_a_step_reads(tmp_path: Path) -> None:
    """train/evaluate estimates grow with rows x width; score_layers with layers but not with rows beyond
    n_samples; a missing input raises FileNotFoundError naming it (Snakemake evaluates it again later)."""
    small, big, wide = (tmp_path / n for n in ("small", "big", "wide"))
    for d in (small, big, wide):
        d.mkdir()
    s = _pool_files(small, 2000, 3, 64)
    b = _pool_files(big, 40000, 3, 64)
    w = _pool_files(wide, 2000, 6, 256)
    assert resources.train_mb(*b, 256) - resources.train_mb(*s, 256) >= 38000 * 128 * 4 * 2 // resources.MB
    assert resources.train_mb(*w, 256) > resources.train_mb(*s, 256)
    assert resources.evaluate_mb(*b[:2], b[2]) > resources.evaluate_mb(*s[:2], s[2])
    assert resources.score_layers_mb(*w, 500) > resources.score_layers_mb(*s, 500)
    # rows beyond n_samples only add their manifest/groups bookkeeping, not scored features
    grow = resources.score_layers_mb(*b, 500) - resources.score_layers_mb(*s, 500)
    per_row = resources.MANIFEST_ROW_BYTES + 2 * resources.GROUP_ROW_BYTES
    assert grow <= 38000 * per_row // resources.MB + 1
    assert resources.train_mb(*s, 4096) > resources.train_mb(*s, 256)
    missing = str(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError) as err:
        resources.train_mb([missing], s[1], s[2], 256)
    assert err.value.filename == missing


# ----------------------------------------------------------------------------------------------------- benchmark

def _bench(scale: float, tmp: Path) -> dict:
    out = tmp / f"scale-{scale}.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks/bench_scale.py"), "--scale", str(scale), "--n-samples",
                    "200", "--workdir", str(tmp / f"w{scale}"), "--out", str(out)], check=True, cwd=ROOT,
                   capture_output=True, timeout=900)
    return json.loads(out.read_text())


@pytest.mark.slow
def test_bench_scale_peak_rss_does_not_grow_with_the_data(tmp_path: Path) -> None:
    """The scale benchmark at 0.004 and 0.008 of the paper's rows (real layer counts and widths): doubling every
    file (unused rows and layers included) moves no step's peak RSS by more than a fixed 128 MiB. Eager loading
    would add the float32 COCO text file alone: 2,466 more rows x 25 x 1024 x 4 B = 241 MiB."""
    small, big = _bench(0.004, tmp_path), _bench(0.008, tmp_path)
    assert big["feature_bytes"] > 1.9 * small["feature_bytes"]
    for step in ("score_layers", "train", "evaluate"):
        grow = big["steps"][step]["peak_rss_mib"] - small["steps"][step]["peak_rss_mib"]
        assert grow < 128, (step, small["steps"][step], big["steps"][step])
    assert big["steps"]["train"]["n_train"] > small["steps"]["train"]["n_train"]


def test_slurm_profile_leaves_memory_to_the_rules() -> None:
    """No mem_mb in the Slurm profile: set-resources / default-resources would override the computed values."""
    assert "mem_mb" not in re.sub(r"#.*", "", (ROOT / "workflow/profiles/slurm/config.yaml").read_text())
