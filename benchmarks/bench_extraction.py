"""Throughput and peak memory of ``extract_features`` against a bare forward pass (docs/benchmarks.md "Feature extraction").

Two paths are compared on the same images at the same batch size:

* bare: all images decoded and preprocessed up front (not timed), then ``encoder.forward_layers`` over the
  batches under ``torch.inference_mode`` (timed): the model's own speed;
* extract: ``extract_features`` end to end on the manifest (timed): decoding, preprocessing, forward, copy into
  the output arrays and the safetensors write.

Throughput comes from one process that alternates the two ``--repeats`` times (same load on a shared machine for
both); peak memory (max RSS) from two further processes that run one path once each.

Images: scikit-image's sample photos, randomly cropped and resized (seeded), written as JPEG files and listed in a
``pairs`` manifest. Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_extraction.py --encoders effnet-lite0 dinov2-s-imgfocus --n 256
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_images(root: Path, n: int, seed: int) -> Path:
    """Write ``n`` JPEGs cut from skimage's colour sample photos and a manifest listing them; returns the manifest."""
    import pandas as pd
    from PIL import Image
    from skimage import data as skdata

    from structure_align.data import DatasetInfo, write_manifest

    names = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
             "motorcycle_left", "retina", "colorwheel", "cat"]
    photos = []
    for name in names:
        fn = getattr(skdata, name, None)
        if fn is None:
            continue
        arr = fn()
        if arr.ndim == 3 and arr.shape[2] == 3:
            photos.append(Image.fromarray(arr))
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        src = photos[i % len(photos)]
        w, h = src.size
        cw, ch = int(w * rng.uniform(0.4, 1.0)), int(h * rng.uniform(0.4, 1.0))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        side = int(rng.integers(200, 480))
        img = src.crop((x0, y0, x0 + cw, y0 + ch)).resize((side, int(side * ch / cw)))
        path = root / "images" / f"{i:04d}.jpg"
        img.save(path, quality=90)
        rows.append({"sample_id": f"{i:04d}", "image_path": str(path), "captions": [f"photo {i}"], "label": -1,
                     "split": "train", "source": "bench", "version": "0"})
    manifest = root / "bench.parquet"
    write_manifest(pd.DataFrame(rows), DatasetInfo(name="bench", task="pairs", source="bench", version="0"), manifest)
    return manifest


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _setup(encoder_name: str, manifest: Path, batch_size: int, threads: int):
    """Load the encoder (cpu, ``threads`` intra-op threads) and warm it up on one batch."""
    import torch
    from PIL import Image

    from structure_align.data import read_manifest
    from structure_align.encoders import load_encoder

    torch.set_num_threads(threads)
    enc = load_encoder(encoder_name, device="cpu")
    df, _ = read_manifest(manifest)
    paths = list(df["image_path"])
    warm = enc.preprocess([Image.open(p).convert("RGB") for p in paths[:batch_size]])
    with torch.inference_mode():
        enc.forward_layers(warm)
    return enc, paths


def _bare(enc, batches) -> float:
    import torch

    t0 = time.perf_counter()
    with torch.inference_mode():
        for x in batches:
            enc.forward_layers(x)
    return time.perf_counter() - t0


def _extract(enc, manifest: Path, out: Path, batch_size: int, num_workers: int) -> float:
    from structure_align.extract import extract_features

    t0 = time.perf_counter()
    extract_features(manifest, enc, out, batch_size=batch_size, device="cpu", num_workers=num_workers,
                     progress=False)
    return time.perf_counter() - t0


def _preprocessed(enc, paths: list[str], batch_size: int) -> list:
    from PIL import Image

    return [enc.preprocess([Image.open(p).convert("RGB") for p in paths[i:i + batch_size]])
            for i in range(0, len(paths), batch_size)]


def run_child(mode: str, encoder_name: str, manifest: Path, batch_size: int, threads: int, num_workers: int,
              out_dir: Path, repeats: int) -> dict:
    """One measurement process.

    ``timing``: bare forward and ``extract_features`` alternate ``repeats`` times in the same process (which one
    goes first alternates too), so both see
    the same load of the shared machine; the fastest run of each is reported (other jobs only ever slow a run
    down) together with the median of the per-round ratios. ``rss-bare`` / ``rss-extract``: one run each, for the
    peak resident set size of that path alone.
    """
    enc, paths = _setup(encoder_name, manifest, batch_size, threads)
    rss_model = _maxrss_mb()
    out = out_dir / f"{encoder_name}.safetensors"
    res: dict = {"mode": mode, "encoder": encoder_name, "n": len(paths), "batch_size": batch_size,
                 "threads": threads, "num_workers": num_workers}
    if mode == "timing":
        batches = _preprocessed(enc, paths, batch_size)
        bare, extract = [], []
        for r in range(repeats):
            # alternate which path goes first, so that neither always follows the other
            if r % 2 == 0:
                bare.append(_bare(enc, batches))
                extract.append(_extract(enc, manifest, out, batch_size, num_workers))
            else:
                extract.append(_extract(enc, manifest, out, batch_size, num_workers))
                bare.append(_bare(enc, batches))
        ratios = [b / e for b, e in zip(bare, extract, strict=True)]
        res.update({"repeats": repeats, "bare_seconds": [round(t, 3) for t in bare],
                    "extract_seconds": [round(t, 3) for t in extract],
                    "bare_images_per_s": round(len(paths) / min(bare), 2),
                    "extract_images_per_s": round(len(paths) / min(extract), 2),
                    "extract_over_bare_best": round(min(bare) / min(extract), 3),
                    "extract_over_bare_median_round": round(float(np.median(ratios)), 3)})
    elif mode == "rss-bare":
        _bare(enc, _preprocessed(enc, paths, batch_size))
    elif mode == "rss-extract":
        _extract(enc, manifest, out, batch_size, num_workers)
    else:
        raise ValueError(f"unknown mode {mode!r}")
    res.update({"maxrss_after_model_mb": round(rss_model, 1), "maxrss_mb": round(_maxrss_mb(), 1)})
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoders", nargs="+", default=["effnet-lite0"])
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement; the fastest is reported")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--_child", nargs=4, metavar=("MODE", "ENCODER", "MANIFEST", "OUTDIR"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        mode, enc, manifest, out_dir = args._child
        print(json.dumps(run_child(mode, enc, Path(manifest), args.batch_size, args.threads, args.num_workers,
                                   Path(out_dir), args.repeats)))
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_extraction_") as tmp:
        root = Path(tmp)
        manifest = make_images(root, args.n, args.seed)
        for enc in args.encoders:
            row = {}
            for mode in ("rss-extract", "rss-bare", "timing"):
                cmd = [sys.executable, __file__, "--batch-size", str(args.batch_size), "--threads",
                       str(args.threads), "--num-workers", str(args.num_workers), "--repeats", str(args.repeats),
                       "--_child", mode, enc, str(manifest), str(root)]
                proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
                row[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
                print(json.dumps(row[mode]), flush=True)
            t = row["timing"]
            results.append({"encoder": enc, **{k: v for k, v in t.items() if k not in ("mode", "encoder")},
                            "maxrss_extract_mb": row["rss-extract"]["maxrss_mb"],
                            "maxrss_bare_mb": row["rss-bare"]["maxrss_mb"],
                            "maxrss_after_model_mb": row["rss-extract"]["maxrss_after_model_mb"]})
            print(f"{enc}: extract {t['extract_images_per_s']} img/s vs bare {t['bare_images_per_s']} img/s "
                  f"(best of {args.repeats}) = {t['extract_over_bare_best']:.2f}x, median per-round ratio "
                  f"{t['extract_over_bare_median_round']:.2f}x; peak RSS extract {row['rss-extract']['maxrss_mb']} MB, "
                  f"bare {row['rss-bare']['maxrss_mb']} MB, after model load "
                  f"{row['rss-extract']['maxrss_after_model_mb']} MB", flush=True)
    summary = {"date": time.strftime("%Y-%m-%d"), "python": platform.python_version(), "threads": args.threads,
               "repeats": args.repeats,
               "n": args.n, "batch_size": args.batch_size, "results": results}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
