"""MNIST zero-shot set from the published idx files (docs/paper-profile.md "Downloads"; a released zero-shot set).

``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz`` are fetched from the mirror torchvision uses first
and pinned by the md5 values in torchvision's ``torchvision/datasets/mnist.py`` (``MNIST.resources``); they are kept
gzipped in ``resources/mnist/``. The idx format: a big-endian header (magic 2051 + count, rows, columns for images;
2049 + count for labels), then uint8 pixels / labels. The 10,000 test images are written as 28x28 PNGs (grey
replicated to RGB); class names and template are the released ones (data/prompts.py: "doughnut", "linear", "2" ...
"9" with the bare template "{}"; ``prompts: fallback``: the digits).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd

from ._local import (
    LOCAL_VERSION,
    array_image_rows,
    dataset_root,
    require,
)
from .helpers import stratified_subset
from .prompts import names_by_index, zeroshot_prompts
from .registry import DatasetInfo, Download, SourceSpec, register_dataset, register_source

SOURCE = "mnist"
_OSSCI = "https://ossci-datasets.s3.amazonaws.com/mnist"
IMAGES, LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
register_source(SourceSpec(
    name=SOURCE, client="url", package="MNIST test set (idx files)", version="idx", sha256="", files=(IMAGES, LABELS),
    licence="CC BY-SA 3.0 (Y. LeCun and C. Cortes)", description="MNIST handwritten digits, 10,000 test images",
    downloads=(Download(IMAGES, f"{_OSSCI}/{IMAGES}", md5="9fb629c4189551a2d022fa330f9573f3", unpack="none"),
               Download(LABELS, f"{_OSSCI}/{LABELS}", md5="ec29112dd5afa0611ce80d1b7f02629c", unpack="none"))))

IDX_IMAGES, IDX_LABELS = 2051, 2049


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array of a (gzipped) idx file: ``[N, rows, cols]`` for images (2051), ``[N]`` for labels (2049)."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    ndim = 3 if magic == IDX_IMAGES else 1
    header = 4 * (1 + ndim)
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        raise ValueError(f"{path}: not an idx file with magic {magic} (got {int.from_bytes(raw[:4], 'big')})")
    dims = [int.from_bytes(raw[4 * (i + 1):4 * (i + 2)], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims}, but {data.size} values follow")
    return data.reshape(dims)


def build_mnist(root: Path, images_dir: Path, *, limit: int | None = None, seed: int = 0,
                prompts: str = "released") -> tuple[pd.DataFrame, DatasetInfo]:
    """MNIST's test set as 28x28 RGB PNGs, labels 0-9."""
    grey = read_idx(require(root / IMAGES, SOURCE, "the test images (idx3)"), IDX_IMAGES)
    labels = read_idx(require(root / LABELS, SOURCE, "the test labels (idx1)"), IDX_LABELS).astype(np.int64)
    if len(labels) != len(grey) or labels.max(initial=0) > 9:
        raise ValueError(f"{root}: {len(labels)} labels (max {labels.max(initial=0)}) for {len(grey)} images")
    keep = stratified_subset(labels, limit, seed)
    rows = array_image_rows(np.repeat(grey[..., None], 3, axis=-1), labels, keep, images_dir, "test", SOURCE)
    names, templates, text_counts = zeroshot_prompts(
        SOURCE, prompts, lambda: names_by_index(SOURCE, 10, str(root / LABELS)), [str(d) for d in range(10)])
    info = DatasetInfo(name=SOURCE, task="zeroshot", classnames=names, templates=templates, source=SOURCE,
                       version=LOCAL_VERSION, counts={"test_images": len(grey), "rows": len(rows), **text_counts},
                       description="MNIST test set from the published idx files")
    return pd.DataFrame(rows), info


@register_dataset(SOURCE, sources=SOURCE, task="zeroshot", description="MNIST (published idx files)",
                  options={"root": None, "prompts": "released"})
def _build_mnist_ds(resources_dir: Path, images_dir: Path, *, root: str | None = None, prompts: str = "released",
                    limit: int | None = None, seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    return build_mnist(dataset_root(resources_dir, SOURCE, root), Path(images_dir), limit=limit, seed=seed,
                       prompts=prompts)
