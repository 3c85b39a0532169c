"""Paper-scale memory and disk of the workflow's steps on synthetic feature files (issue 20, docs/paper-profile.md).

Writes float16 feature files with the paper's real shapes (rows x layers x width) at ``--scale`` (1.0 = full size):
COCO 2014 (train2014 82,783 + val2014 40,504 images, five captions each; ``--captions first`` stores one caption
per training image, as a training set that keeps only the caption it uses), Flickr30k test (1,000 x 5 captions)
and the seven zero-shot sets of the main table at their test-set sizes with CLIP-benchmark's prompt counts. Vision
is DINOv2 ViT-L/14 (24 x 1024) or ``--vision vitg`` (40 x 1536), text RoBERTa-large (25 x 1024). Every file is
written by a streaming writer (per layer, in row chunks: never a whole layer in RAM) with the package's metadata and
checksums, beside a manifest in the workflow's format (fake image paths: nothing decodes them).

Then it runs, each as a fresh ``python -m structure_align <step>`` process exactly as the Snakemake rules call it:
``score-layers`` on the pool, ONE ``train`` job (linear head, Similar layers, R_S, all of COCO train, validation on
val2014 as in workflow/configs/paper.yaml; epochs capped by ``--epochs``, the memory is the real step's) and
``evaluate`` of that run on all nine sets. Peak RSS per process comes from ``os.wait4`` (the child's own
``ru_maxrss``), wall time from the clock. Prints a table and writes JSON with ``--out``.

    make bench-scale     # = nice -n 10 .venv/bin/python benchmarks/bench_scale.py --scale 1.0 \
                         #       --out results/benchmarks/scale.json   (~50 GB under --workdir, deleted after)
    # rerun one step on kept files: --workdir DIR --keep, later --workdir DIR --reuse --steps evaluate --update
"""

from __future__ import annotations

import argparse
import datetime
import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from structure_align.config import load_params
from structure_align.data.manifest import write_manifest
from structure_align.data.registry import DatasetInfo
from structure_align.features import FORMAT_VERSION, layer_key
from structure_align.io import TENSOR_CHECKSUM_KEY, safetensors_header, tensor_checksums_json
from structure_align.runs import RunSpec, Size, Variant, train_blocks

GiB = 1 << 30
ENCODERS = {"vitl": ("dinov2-vitl14", 24, 1024), "vitg": ("dinov2-vitg14", 40, 1536)}
TEXT = ("roberta-large", 25, 1024)
CAPTIONS_PER_IMAGE = 5
# (name, task, images at scale 1.0, classes, prompt templates): test-set sizes of docs/paper-profile.md; Caltech101
# with 30 images per class held out as train (~6,100 in the docs); templates = CLIP-benchmark's English prompt counts
EVAL_SETS = [("flickr30k", "retrieval", 1000, 0, 0), ("stl10", "zeroshot", 8000, 10, 2),
             ("cifar10", "zeroshot", 10000, 10, 18), ("caltech101", "zeroshot", 6085, 102, 34),
             ("food101", "zeroshot", 25250, 101, 1), ("cifar100", "zeroshot", 10000, 100, 18),
             ("imagenet", "zeroshot", 50000, 1000, 80), ("pets", "zeroshot", 3669, 37, 1)]
COCO_TRAIN, COCO_VAL = 82783, 40504
CHUNK_ROWS = 4096


def scaled(n: int, scale: float, minimum: int) -> int:
    """``round(n * scale)``, at least ``minimum``."""
    return max(minimum, round(n * scale))


def manifests(root: Path, scale: float, captions: str) -> dict[str, tuple[Path, DatasetInfo, int]]:
    """Write every dataset's manifest; ``{name: (parquet, info, text rows)}``."""
    out = {}
    n_train, n_val = scaled(COCO_TRAIN, scale, 20), scaled(COCO_VAL, scale, 10)
    caps = [[f"c{i}.{k}" for k in range(1 if (captions == "first" and i < n_train) else CAPTIONS_PER_IMAGE)]
            for i in range(n_train + n_val)]
    out["coco"] = _manifest(root, "coco", "pairs", ["train"] * n_train + ["test"] * n_val, caps, [])
    for name, task, n_img, n_cls, n_tpl in EVAL_SETS:
        n = scaled(n_img, scale, 10)
        if task == "retrieval":
            out[name] = _manifest(root, name, task, ["test"] * n,
                                  [[f"{name}{i}.{k}" for k in range(CAPTIONS_PER_IMAGE)] for i in range(n)], [])
        else:
            classes = [f"class{c}" for c in range(scaled(n_cls, scale, 2))]
            out[name] = _manifest(root, name, task, ["test"] * n, [[] for _ in range(n)], classes,
                                  [f"t{t} {{}}" for t in range(n_tpl)])
    return out


def _manifest(root: Path, name: str, task: str, splits: list[str], caps: list[list[str]], classes: list[str],
              templates: list[str] | None = None) -> tuple[Path, DatasetInfo, int]:
    n = len(splits)
    labels = (np.arange(n) % len(classes)) if classes else np.full(n, -1)
    df = pd.DataFrame({"sample_id": [f"{name}{i}" for i in range(n)],
                       "image_path": [f"images/{name}/{i}.jpg" for i in range(n)], "captions": caps,
                       "label": labels.astype(np.int64), "split": splits, "source": "synthetic", "version": "1"})
    info = DatasetInfo(name=name, task=task, classnames=classes, templates=templates or [], source="synthetic",
                       version="1")
    path = root / "manifests" / f"{name}.parquet"
    info = write_manifest(df, info, path)
    n_text = len(classes) * len(templates or []) if task == "zeroshot" else sum(len(c) for c in caps)
    return path, info, n_text


BASE_ROWS = 256


@functools.lru_cache(maxsize=128)
def _base(layer: int, width: int) -> np.ndarray:
    """A ``[BASE_ROWS, width]`` float16 block per layer: finite, varied values (computed once per process)."""
    rows = np.arange(BASE_ROWS, dtype=np.float32)[:, None]
    cols = np.arange(width, dtype=np.float32)[None, :]
    phase = np.float32(0.37 * (layer + 1))
    return np.sin(rows * np.float32(0.0131) + cols * np.float32(0.7071) * phase + phase).astype(np.float16)


def _payload(n: int, dims: list[int], groups: np.ndarray | None, salt: int):
    """``(name, array)`` chunks in file order (int64 ``groups`` first, then the layers), never a whole layer.

    Row r of a layer is row ``(r + salt) % BASE_ROWS`` of the layer's base block rotated by ``r // BASE_ROWS + salt``
    columns: cheap (copies, no arithmetic per value), deterministic, and rows differ across blocks and files."""
    if groups is not None:
        yield "groups", np.ascontiguousarray(groups.astype("<i8"))
    for layer, width in enumerate(dims):
        base = _base(layer, width)
        for start in range(0, n, CHUNK_ROWS):
            rows = np.arange(start, min(n, start + CHUNK_ROWS))
            block = base[(rows + salt) % BASE_ROWS]
            for shift in np.unique(rows // BASE_ROWS):
                sel = rows // BASE_ROWS == shift
                block[sel] = np.roll(block[sel], int(shift + salt) % width, axis=1)
            yield layer_key(layer), block


def write_feature_file(path: Path, encoder: str, modality: str, n_layers: int, width: int, n: int,
                       groups: np.ndarray | None, info: DatasetInfo, salt: int) -> int:
    """Stream one feature file in one pass over the generator; returns its size.

    The header is written first with placeholder digests of the final length, the payload streamed while each
    tensor is hashed, then the header rewritten with the real ``tensor_sha256`` (same length, so no byte moves).
    The whole-file ``content_sha256`` would need a second pass over ~50 GB; the steps check ``tensor_sha256``
    (io.verify_tensor), which is what a file without ``content_sha256`` is read with here.
    """
    dims = [width] * n_layers
    shapes = {layer_key(i): (np.dtype(np.float16), (n, width)) for i in range(n_layers)}
    if groups is not None:
        shapes["groups"] = (np.dtype(np.int64), (n,))
    meta = {"format_version": FORMAT_VERSION, "encoder": encoder, "modality": modality,
            "layer_names": json.dumps([f"block{i}" for i in range(n_layers)]), "pooling": "synthetic",
            "dataset": info.name, "manifest_sha256": info.manifest_sha256, "dtype": "float16", "n_rows": str(n),
            "n_layers": str(n_layers), "embed_dims": json.dumps(dims), "encoder_description": "bench_scale",
            "limit": ""}
    placeholder, order, size = safetensors_header(
        shapes, {**meta, TENSOR_CHECKSUM_KEY: tensor_checksums_json({k: "0" * 64 for k in shapes})})
    if order != [*(["groups"] if groups is not None else []), *(layer_key(i) for i in range(n_layers))]:
        raise RuntimeError(f"{path}: unexpected tensor order {order[:3]}...")  # _payload yields this order
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    digests: dict[str, Any] = {}
    with open(tmp, "wb") as f:
        f.write(placeholder)
        for name, data in _payload(n, dims, groups, salt):
            digests.setdefault(name, hashlib.sha256()).update(data)
            f.write(data)
        head, _, _ = safetensors_header(
            shapes, {**meta, TENSOR_CHECKSUM_KEY: tensor_checksums_json({k: d.hexdigest() for k, d in digests.items()})})
        if len(head) != len(placeholder):
            raise RuntimeError(f"{path}: header length changed ({len(placeholder)} -> {len(head)})")
        f.seek(0)
        f.write(head)
    os.replace(tmp, path)
    return len(head) + size


def write_features(root: Path, sets: dict, vision: str) -> dict[str, int]:
    """Vision and text feature files of every dataset; ``{path: bytes}``."""
    v_name, v_layers, v_width = ENCODERS[vision]
    t_name, t_layers, t_width = TEXT
    sizes = {}
    for salt, (name, (_, info, n_text)) in enumerate(sets.items()):
        from structure_align.data import dataset_texts, read_manifest

        df, info = read_manifest(root / "manifests" / f"{name}.parquet")
        _, groups = dataset_texts(df, info)
        assert len(groups) == n_text
        vp, tp = root / "features" / name / f"{v_name}.safetensors", root / "features" / name / f"{t_name}.safetensors"
        sizes[str(vp)] = write_feature_file(vp, v_name, "vision", v_layers, v_width, len(df), None, info, 2 * salt)
        sizes[str(tp)] = write_feature_file(tp, t_name, "text", t_layers, t_width, n_text, groups, info,
                                            2 * salt + 1)
        print(f"  {name}: {len(df)} images, {n_text} texts, {(sizes[str(vp)] + sizes[str(tp)]) / GiB:.2f} GiB",
              flush=True)
    return sizes


def run_step(name: str, args: list[str], log: Path) -> dict[str, float]:
    """Run ``python -m structure_align <args>`` in a fresh process; its peak RSS (own ru_maxrss) and wall time."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "structure_align", *args], stdout=fh, stderr=subprocess.STDOUT,
                                env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"step {name} failed (exit {proc.returncode}); log {log}:\n{log.read_text()[-3000:]}")
    row = {"peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "wall_s": round(wall, 1)}
    print(f"  {name}: peak RSS {row['peak_rss_mib']:.0f} MiB, wall {row['wall_s']:.1f} s", flush=True)
    return row


def run_steps(root: Path, params: dict, vision: str, epochs: int, n_samples: int | None,
              which: tuple[str, ...] = ("score_layers", "train", "evaluate")) -> dict[str, dict]:
    """score_layers, one train job and its evaluation, as the rules call them (``which``: a subset, on a kept
    ``--workdir`` whose earlier steps' outputs exist)."""
    v_name, t_name = ENCODERS[vision][0], TEXT[0]
    coco = [str(root / "features/coco" / f"{e}.safetensors") for e in (v_name, t_name)]
    manifest = str(root / "manifests/coco.parquet")
    layers = dict(params["layers"], **({"n_samples": n_samples} if n_samples else {}))
    training = dict(params["training"], epochs=epochs, lr_finder=False)
    choice = root / "layers/choice.json"
    out: dict[str, dict] = {}
    if "score_layers" in which:
        out["score_layers"] = run_step("score_layers", [
            "score-layers", "--vision-features", coco[0], "--text-features", coco[1], "--manifests", manifest,
            "--scores-out", str(root / "layers/scores.csv"), "--choice-out", str(choice), "--threads", "2",
            "--config", json.dumps({"layers": layers, "val_fraction": training["val_fraction"],
                                    "val_seed": training["val_seed"], "val_split": training["val_split"]})],
            root / "score_layers.log")
    variant = Variant.make("linear", "similar", params["structure"])
    spec = RunSpec(v_name, t_name, variant, Size("frac", 1.0), int(training["seeds"][0]))
    run = spec.dir(str(root / "runs"))
    config = {**params, "training": training, "layers": layers}
    if "train" in which:
        out["train"] = run_step("train", [
            "train", "--runs", run, "--vision-features", coco[0], "--text-features", coco[1], "--manifests", manifest,
            "--choice", str(choice), "--config", json.dumps(train_blocks(config, spec), sort_keys=True),
            "--device", "cpu", "--threads", "2"], root / "train.log")
        out["train"]["n_train"] = json.loads((Path(run) / "train.json").read_text())["n_train"]
    records = [{"name": d, "vision": str(root / "features" / d / f"{v_name}.safetensors"),
                "text": str(root / "features" / d / f"{t_name}.safetensors"),
                "manifest": str(root / "manifests" / f"{d}.parquet"), "test_split": d == "coco"}
               for d in ["coco"] + [s[0] for s in EVAL_SETS]]
    if "evaluate" in which:
        out["evaluate"] = run_step("evaluate", [
            "evaluate", "--runs", run, "--datasets", json.dumps(records), "--config",
            json.dumps(params["evaluation"], sort_keys=True), "--device", "cpu", "--threads", "2"],
            root / "evaluate.log")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=0.02, help="fraction of the paper's row counts (1.0 = full)")
    p.add_argument("--vision", choices=sorted(ENCODERS), default="vitl")
    p.add_argument("--captions", choices=("all", "first"), default="all",
                   help="COCO train text rows: all five captions (default, the worse case) or the first only")
    p.add_argument("--epochs", type=int, default=1, help="training epochs (capped: memory is per step, not epoch)")
    p.add_argument("--n-samples", type=int, default=None, help="override layers.n_samples (default: paper.yaml)")
    p.add_argument("--workdir", default=None, help="where the synthetic files go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep --workdir afterwards")
    p.add_argument("--reuse", action="store_true", help="use the feature files already in --workdir (same scale)")
    p.add_argument("--steps", default="score_layers,train,evaluate",
                   help="comma-separated subset of the steps to run (later steps need the earlier ones' outputs)")
    p.add_argument("--update", action="store_true",
                   help="update the steps run here in an existing --out JSON (each step records its date)")
    p.add_argument("--out", default="", help="JSON output (make bench-scale: results/benchmarks/scale.json)")
    args = p.parse_args(argv)
    if not 0 < args.scale <= 1.0:
        p.error(f"--scale must be in (0, 1], got {args.scale}")
    params = load_params(ROOT / "params.yaml", ROOT / "workflow/configs/paper.yaml")
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench-scale-", dir=os.environ.get("TMPDIR")))
    root.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        if args.reuse:
            sizes = {str(f): f.stat().st_size for f in sorted(root.glob("features/*/*.safetensors"))}
            print(f"reusing {len(sizes)} feature files in {root}")
        else:
            print(f"writing synthetic features (scale {args.scale}, {args.vision}, captions {args.captions}) to "
                  f"{root}")
            sizes = write_features(root, manifests(root, args.scale, args.captions), args.vision)
        write_s = time.perf_counter() - t0
        print(f"  {sum(sizes.values()) / GiB:.2f} GiB of features in {write_s:.0f} s")
        date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        steps = run_steps(root, params, args.vision, args.epochs, args.n_samples, tuple(args.steps.split(",")))
        for row in steps.values():
            row["date"] = date
        old = json.loads(Path(args.out).read_text()) if args.update and args.out and Path(args.out).is_file() else {}
        steps = {**old.get("steps", {}), **steps}
        if args.reuse and "write_s" in old:
            write_s = old["write_s"]
        result = {"scale": args.scale, "vision": ENCODERS[args.vision][0], "text": TEXT[0],
                  "captions": args.captions, "epochs": args.epochs,
                  "n_samples": args.n_samples or params["layers"]["n_samples"], "steps": steps,
                  "feature_bytes": sum(sizes.values()),
                  "feature_bytes_by_file": {str(Path(k).relative_to(root)): v for k, v in sorted(sizes.items())},
                  "write_s": round(write_s, 1),
                  "machine": {"cpus": os.cpu_count(), "mem_total_gib": round(os.sysconf("SC_PAGE_SIZE")
                                                                             * os.sysconf("SC_PHYS_PAGES") / GiB, 1),
                              "python": platform.python_version()},
                  "date": old.get("date", date)}
        print(f"{'step':<14}{'peak RSS (MiB)':>16}{'wall (s)':>10}")
        for name, row in steps.items():
            print(f"{name:<14}{row['peak_rss_mib']:>16.0f}{row['wall_s']:>10.1f}")
        print(f"features on disk: {result['feature_bytes'] / GiB:.2f} GiB")
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
            print(f"wrote {args.out}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
