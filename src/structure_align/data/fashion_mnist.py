"""Fashion-MNIST as a zero-shot classification set (docs/datasets.md "fashion_mnist").

The Debian package ships the four gzip'd IDX files of Zalando's release; the class names are only in its README,
so they are written here (in natural prompt form: "T-shirt/top" -> "t-shirt"). A seeded subset stratified by class
is materialised as RGB PNGs (28x28, gray replicated, so every encoder's preprocessing sees an ordinary image).
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from .helpers import save_png, stratified_subset
from .registry import DatasetInfo, SourceSpec, get_source, register_dataset, register_source, source_dir

log = logging.getLogger(__name__)

SOURCE = "dataset-fashion-mnist"
# Debian bookworm's package; sha256 of the exact .deb bytes measured when it was pinned
register_source(SourceSpec(
    name=SOURCE, client="apt", package="dataset-fashion-mnist", version="0.0~git20200523.55506a9-1",
    sha256="39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
    files=("usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz",
           "usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"), licence="MIT",
    description="Fashion-MNIST (Zalando) as gzip'd IDX files, 60k train + 10k test, 28x28 gray, 10 classes"))
DATA_SUBDIR = "usr/share/datasets/fashion-mnist"
# official label order 0..9 (T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot)
CLASSNAMES: tuple[str, ...] = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                               "bag", "ankle boot")
TEMPLATES: tuple[str, ...] = ("a photo of a {}.", "a black and white photo of a {}.",
                              "a low resolution photo of a {}.", "a grayscale photo of a {}.")
_FILES = {"test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
          "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")}
_IDX_DTYPE = {0x08: np.uint8}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip'd or plain): magic ``00 00 <dtype> <ndim>``, big-endian uint32 dims, then data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (magic {raw[:4].hex()})")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code not in _IDX_DTYPE:
        raise ValueError(f"{path}: IDX dtype code 0x{dtype_code:02x} is not supported (only unsigned bytes)")
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    data = np.frombuffer(raw, dtype=_IDX_DTYPE[dtype_code], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims.tolist()} ({int(np.prod(dims))} values), file holds {data.size}")
    return data.reshape(dims)


def load_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 28, 28]`` uint8 and labels ``[N]`` int64 of the ``train`` or ``test`` IDX files."""
    if split not in _FILES:
        raise ValueError(f"fashion_mnist: split={split!r} must be one of {sorted(_FILES)}")
    img_name, lbl_name = _FILES[split]
    images, labels = read_idx(root / img_name), read_idx(root / lbl_name).astype(np.int64)
    if images.ndim != 3 or len(images) != len(labels):
        raise ValueError(f"{root}: {img_name} has shape {images.shape}, {lbl_name} has {len(labels)} labels")
    if labels.min() < 0 or labels.max() >= len(CLASSNAMES):
        raise ValueError(f"{root / lbl_name}: labels outside 0..{len(CLASSNAMES) - 1}")
    return images, labels


@register_dataset("fashion_mnist", sources=SOURCE, task="zeroshot",
                  description="Fashion-MNIST test images (stratified seeded subset), 10 classes, zero-shot",
                  options={"size": 1000, "split": "test"})
def build_fashion_mnist(resources_dir: Path, images_dir: Path, *, limit: int | None = None, seed: int = 0,
                        size: int | None = 1000, split: str = "test") -> tuple[pd.DataFrame, DatasetInfo]:
    """Build the zero-shot manifest: ``min(size, limit)`` images (None = all) of the chosen IDX split."""
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"fashion_mnist: option size={size!r} must be None or a positive int")
    spec = get_source(SOURCE)
    root = source_dir(resources_dir, SOURCE) / DATA_SUBDIR
    images, labels = load_split(root, split)
    wanted = [n for n in (size, limit) if n is not None]
    keep = stratified_subset(labels, min(wanted) if wanted else None, seed)
    rows = []
    for i in tqdm(keep, desc="fashion_mnist", unit="img"):
        i = int(i)
        out = save_png(Image.fromarray(images[i], mode="L").convert("RGB"), images_dir / f"{split}_{i:05d}.png")
        rows.append({"sample_id": f"{split}_{i:05d}", "image_path": str(out), "captions": [],
                     "label": int(labels[i]), "split": "test", "source": SOURCE, "version": spec.version})
    df = pd.DataFrame(rows)
    per_class = np.bincount(df["label"].to_numpy(), minlength=len(CLASSNAMES))
    counts = {"idx_split": split, "idx_rows": len(labels), "rows": len(df),
              "per_class": {c: int(n) for c, n in zip(CLASSNAMES, per_class)}}
    info = DatasetInfo(name="fashion_mnist", task="zeroshot", classnames=list(CLASSNAMES), templates=list(TEMPLATES),
                       source=SOURCE, version=spec.version,
                       description=f"Fashion-MNIST {split} IDX, seeded class-stratified subset, 28x28 gray as RGB PNG",
                       counts=counts)
    return df, info
