"""Peak RSS of ``extract_features`` against the size of the file it writes (docs/encoders.md "Extraction at scale").

A stand-in text encoder with the paper's RoBERTa-large output shape (25 layers x 1024, float16 storage) and a
negligible forward (the features are a function of the token ids, so the bytes are deterministic) runs the real
extraction path (longest-first batches, rows scattered into the memory-mapped output file, chunked flushes and
progress files, checksums by re-reading) over ``n`` synthetic captions, once per size, each in a fresh process.
If the output were held in RAM or copied, peak RSS would grow with ``n``; it prints both. Usage::

    python benchmarks/bench_extract_memory.py --sizes 10000 40000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAYERS, WIDTH = 25, 1024


def _run(n: int, root: Path) -> dict:
    """One extraction of ``n`` captions in this process: wall time, file size, peak RSS."""
    import numpy as np
    import pandas as pd
    import torch

    from structure_align.data import DatasetInfo, write_manifest
    from structure_align.encoders import Encoder
    from structure_align.extract import extract_features

    class StandIn(Encoder):
        name, modality, pooling, description = "stand-in", "text", "masked_mean", "RoBERTa-large output shape"

        def __init__(self) -> None:
            self.layer_names = [f"layer.{i}" for i in range(LAYERS)]
            self.embed_dims = [WIDTH] * LAYERS
            self.model = torch.nn.Linear(1, 1)

        def tokenize(self, texts):
            return {"input_ids": torch.tensor([[len(t), sum(map(ord, t)) % 997] for t in texts])}

        def forward_layers(self, batch):
            base = batch["input_ids"].float().sum(dim=1, keepdim=True) / 1000.0
            return [(base + i).expand(-1, WIDTH) for i in range(LAYERS)]

    rng = np.random.default_rng(0)
    words = np.array(["a", "man", "dog", "red", "street", "table", "pizza", "bike", "people", "sitting", "grass", "water", "bus", "sign", "tree"])
    captions = [" ".join(rng.choice(words, int(rng.integers(5, 20)))) for _ in range(n)]
    df = pd.DataFrame({"sample_id": [f"{i}" for i in range(n)], "image_path": ["x.png"] * n,
                       "captions": [[c] for c in captions], "label": -1, "split": "test", "source": "bench",
                       "version": "0"})
    manifest = root / "m.parquet"
    write_manifest(df, DatasetInfo(name="bench", task="retrieval", source="bench", version="0"), manifest)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    out = extract_features(manifest, StandIn(), root / "f.safetensors", batch_size=256, dtype="float16",
                           device="cpu", progress=False)
    return {"n_texts": n, "file_mib": round(out.stat().st_size / 2**20, 1), "seconds": round(time.perf_counter() - start, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_before_extract_mib": round(rss_before, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 40000])
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
            print(json.dumps(_run(args.child, Path(tmp))))
        return
    for n in args.sizes:
        proc = subprocess.run([sys.executable, __file__, "--child", str(n)], capture_output=True, text=True,
                              check=True)
        print(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
