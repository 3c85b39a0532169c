"""Cost per 1,000 images of bringing your own data (docs/your-data.md "Cost on CPU").

* pre-flight: :func:`structure_align.data.preflight.check_images` (header + ``verify()``) and the header alone, on
  the images of the given manifests (page cache warmed first, so that the figure is the check's own cost);
* extraction: ``extract_features`` of each given encoder on the first ``--n`` rows of the first manifest (one
  caption per image), CPU seconds of this process and wall seconds, one torch thread.

Usage (from the repository root, after ``make reproduce`` built the default's manifests)::

    OMP_NUM_THREADS=1 python benchmarks/bench_your_data.py results/manifests/emoji.parquet \
        results/manifests/fashion_mnist.parquet --encoders effnet-lite0 minilm-l6 --n 256
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from structure_align.data import read_manifest, write_manifest
from structure_align.data.preflight import check_images
from structure_align.encoders import load_encoder
from structure_align.extract import extract_features


def bench_preflight(manifests: list[str]) -> None:
    """Print the pre-flight check's cost per 1,000 images of each manifest."""
    for manifest in manifests:
        df, info = read_manifest(manifest)
        paths = list(dict.fromkeys(str(p) for p in df["image_path"]))
        for p in paths:
            Path(p).read_bytes()
        t0 = time.perf_counter()
        result = check_images(paths)
        full = time.perf_counter() - t0
        t0 = time.perf_counter()
        for p in paths:
            with Image.open(p) as im:
                im.size  # noqa: B018  (the header read is the point)
        header = time.perf_counter() - t0
        print(f"pre-flight {info.name}: {len(paths)} images, {full:.2f} s = {1000 * full / len(paths):.2f} s per "
              f"1000 (header only {1000 * header / len(paths):.2f}); bad {len(result.bad)}, modes {dict(result.modes)}")


def bench_extraction(manifest: str, encoders: list[str], n: int) -> None:
    """Print the CPU and wall seconds per 1,000 images of each encoder on the first ``n`` rows."""
    torch.set_num_threads(1)
    df, info = read_manifest(manifest)
    sub = df.iloc[:n].copy()
    sub["captions"] = [list(c[:1]) if len(c) else [f"image {i}"] for i, c in enumerate(sub["captions"])]
    with tempfile.TemporaryDirectory() as tmp:
        parquet = Path(tmp) / "sub.parquet"
        write_manifest(sub, info, parquet)
        for name in encoders:
            encoder = load_encoder(name, device="cpu")
            load = os.getloadavg()[0]
            c0, t0 = time.process_time(), time.perf_counter()
            extract_features(parquet, encoder, Path(tmp) / f"{name}.safetensors", batch_size=32, device="cpu",
                             progress=False)
            cpu, wall = time.process_time() - c0, time.perf_counter() - t0
            print(f"extract {name} on {len(sub)} {info.name} rows: {1000 * cpu / len(sub):.1f} CPU s and "
                  f"{1000 * wall / len(sub):.1f} wall s per 1000 (load {load:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifests", nargs="*", default=["results/manifests/emoji.parquet"])
    parser.add_argument("--encoders", nargs="*", default=["effnet-lite0", "minilm-l6"])
    parser.add_argument("--n", type=int, default=256)
    args = parser.parse_args()
    missing = [m for m in args.manifests if not Path(m).is_file()]
    if missing:
        print(f"skipped: manifests {missing} do not exist (run make reproduce first)")
        return
    bench_preflight(args.manifests)
    bench_extraction(args.manifests[0], args.encoders, args.n)


if __name__ == "__main__":
    main()
