"""CIFAR-10 / CIFAR-100 zero-shot sets from the official python batches (docs/method.md §7; docs/datasets.md).

``resources/cifar10/cifar-10-batches-py/`` or ``resources/cifar100/cifar-100-python/`` as unpacked from the official
``.tar.gz`` (a ``url`` source pinned by the md5 the authors publish on their page). Images are written as 32x32
PNG; class names and templates are the released lists by label index (data/prompts.py). The batches are Python pickles by format; they are read with a restricted unpickler
that only resolves the numpy array reconstruction helpers, so a tampered file cannot run code. Use only the official
archives.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._local import LOCAL_VERSION, array_image_rows, check_split, dataset_root, require
from .helpers import stratified_subset
from .prompts import names_by_index, zeroshot_prompts
from .registry import DatasetInfo, Download, SourceSpec, register_dataset, register_source

_TORONTO = "https://www.cs.toronto.edu/~kriz"
register_source(SourceSpec(name="cifar10", client="url", package="CIFAR-10 python version", version="python",
                           sha256="", files=("cifar-10-batches-py/test_batch", "cifar-10-batches-py/batches.meta"),
                           description="CIFAR-10 python batches",
                           downloads=(Download("cifar-10-python.tar.gz", f"{_TORONTO}/cifar-10-python.tar.gz",
                                               md5="c58f30108f718f92721af3b95e74349a"),)))
register_source(SourceSpec(name="cifar100", client="url", package="CIFAR-100 python version", version="python",
                           sha256="", files=("cifar-100-python/test", "cifar-100-python/meta"),
                           description="CIFAR-100 python batches",
                           downloads=(Download("cifar-100-python.tar.gz", f"{_TORONTO}/cifar-100-python.tar.gz",
                                               md5="eb9058c3a382ffc7106e4002c42a8d85"),)))

_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    # protocol-2 pickles written by Python 3 store bytes as _codecs.encode(str, "latin1"): harmless
    ("_codecs", "encode"),
}
CIFAR_LAYOUT = {
    "cifar10": {"dir": "cifar-10-batches-py", "meta": "batches.meta", "names": "label_names", "labels": "labels",
                "files": {"test": ["test_batch"], "train": [f"data_batch_{i}" for i in range(1, 6)]}},
    "cifar100": {"dir": "cifar-100-python", "meta": "meta", "names": "fine_label_names", "labels": "fine_labels",
                 "files": {"test": ["test"], "train": ["train"]}},
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler for the official CIFAR batches: plain containers and numpy arrays only, no other globals."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")


def load_cifar_pickle(path: Path) -> dict[str, Any]:
    """Read one CIFAR python batch (``test_batch``, ``batches.meta``, ``test``, ``meta``); keys decoded to str."""
    try:
        with open(path, "rb") as fh:
            data = _CifarUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise ValueError(f"{path}: not a CIFAR python batch ({exc})") from exc
    if not isinstance(data, dict):
        # a wrong file, not a wrong argument type: ValueError like every other bad-input error here
        raise ValueError(f"{path}: expected a dict, got {type(data).__name__}")  # noqa: TRY004
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in data.items()}


def _decode_names(values: Sequence[Any]) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _load_batches(batches: Sequence[Path], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """``[N, 32, 32, 3]`` uint8 images and int64 labels of the given batches, in order."""
    pixels, labels = [], []
    for batch in batches:
        data = load_cifar_pickle(batch)
        for key in ("data", label_key):
            if key not in data:
                raise ValueError(f"{batch}: key {key!r} is missing")
        arr = np.asarray(data["data"], dtype=np.uint8)
        if arr.ndim != 2 or arr.shape[1] != 3072 or len(arr) != len(data[label_key]):
            raise ValueError(f"{batch}: 'data' has shape {arr.shape}, expected [N, 3072] matching the labels")
        pixels.append(arr.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # channel planes, row-major -> HWC
        labels.extend(int(v) for v in data[label_key])
    return np.concatenate(pixels), np.asarray(labels, dtype=np.int64)


def build_cifar(root: Path, images_dir: Path, *, name: str, split: str = "test", limit: int | None = None,
                seed: int = 0, prompts: str = "released") -> tuple[pd.DataFrame, DatasetInfo]:
    """CIFAR-10/100 from the official python batches; images written as 32x32 PNG; the released class names and
    templates by label index (data/prompts.py; ``prompts: fallback``: the meta file's names, ``_`` as spaces)."""
    layout = CIFAR_LAYOUT[name]
    check_split(split, list(layout["files"]), name)
    base = require(root / layout["dir"], name, "folder of the official python version")
    meta = load_cifar_pickle(require(base / layout["meta"], name, "class names"))
    if layout["names"] not in meta:
        raise ValueError(f"{base / layout['meta']}: key {layout['names']!r} is missing")
    file_names = [c.replace("_", " ") for c in _decode_names(meta[layout["names"]])]
    classnames, templates, text_counts = zeroshot_prompts(
        name, prompts, lambda: names_by_index(name, len(file_names), str(base / layout["meta"])), file_names)
    batches = [require(base / f, name, f"{split} batch") for f in layout["files"][split]]
    images, label_arr = _load_batches(batches, layout["labels"])
    if label_arr.min() < 0 or label_arr.max() >= len(classnames):
        raise ValueError(f"{name}: labels span [{label_arr.min()}, {label_arr.max()}], {len(classnames)} classes")
    keep = stratified_subset(label_arr, limit, seed)
    rows = array_image_rows(images, label_arr, keep, images_dir, split, name)
    counts = {f"{split}_images": len(images), "rows": len(rows), **text_counts}
    info = DatasetInfo(name=name, task="zeroshot", classnames=classnames, templates=templates, source=name,
                       version=LOCAL_VERSION, counts=counts,
                       description=f"{name.upper()} {split} set from the official python batches")
    return pd.DataFrame(rows), info


def _cifar_builder(name: str):
    @register_dataset(name, sources=name, task="zeroshot", description=f"{name.upper()} (official python batches)",
                      options={"root": None, "split": "test", "prompts": "released"})
    def _build(resources_dir: Path, images_dir: Path, *, root: str | None = None, split: str = "test",
               prompts: str = "released", limit: int | None = None, seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
        return build_cifar(dataset_root(resources_dir, name, root), Path(images_dir), name=name, split=split,
                           limit=limit, seed=seed, prompts=prompts)

    _build.__qualname__ = _build.__name__ = f"_build_{name}_ds"
    return _build


_build_cifar10_ds = _cifar_builder("cifar10")
_build_cifar100_ds = _cifar_builder("cifar100")
