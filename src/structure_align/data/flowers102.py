"""Oxford 102 Flowers zero-shot set (docs/paper-profile.md "Downloads"; the released config's ``flowers``).

``102flowers.tgz``, ``imagelabels.mat`` and ``setid.mat`` from the VGG page, pinned by the md5 values of
torchvision's ``torchvision/datasets/flowers102.py`` (``Flowers102._file_dict``): ``resources/flowers102/jpg/
image_NNNNN.jpg``, labels 1..102 per image id in ``imagelabels.mat`` (``labels``) and the split ids in
``setid.mat`` (``trnid`` / ``valid`` / ``tstid``; the test split has 6,149 images). The ``.mat`` files are MATLAB v5
data read with ``scipy.io.loadmat`` (no code is run). The files carry no class names: the released 102 names
(data/prompts.py) name labels 1..102 in order (``prompts: fallback``: "class <k>"). Images are used in place.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ._local import (
    LOCAL_VERSION,
    check_images_exist,
    check_split,
    dataset_root,
    manifest_row,
    require,
)
from .helpers import stratified_subset
from .prompts import names_by_index, zeroshot_prompts
from .registry import DatasetInfo, Download, SourceSpec, register_dataset, register_source

SOURCE = "flowers102"
_VGG = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102"
N_CLASSES = 102
SPLIT_KEYS = {"test": "tstid", "train": "trnid", "val": "valid"}
register_source(SourceSpec(
    name=SOURCE, client="url", package="Oxford 102 Flowers (102flowers.tgz + imagelabels.mat + setid.mat)",
    version="1", sha256="", files=("jpg", "imagelabels.mat", "setid.mat"), licence="research use (VGG)",
    description="Oxford 102 Category Flower Dataset, 8,189 images",
    downloads=(Download("102flowers.tgz", f"{_VGG}/102flowers.tgz", md5="52808999861908f626f3c1f4e79d11fa"),
               Download("imagelabels.mat", f"{_VGG}/imagelabels.mat", md5="e0620be6f572b9609742df49c70aed4d",
                        unpack="none"),
               Download("setid.mat", f"{_VGG}/setid.mat", md5="a5357ecc9cb78c4bef273ce3793fc85c", unpack="none"))))


def _mat_vector(path: Path, key: str) -> np.ndarray:
    """The integer vector ``key`` of a MATLAB file; ``ValueError`` naming file and key when absent."""
    from scipy.io import loadmat

    data = loadmat(path, squeeze_me=True)
    if key not in data:
        raise ValueError(f"{path}: key {key!r} is missing; keys: {sorted(k for k in data if not k.startswith('__'))}")
    return np.atleast_1d(np.asarray(data[key], dtype=np.int64))


def build_flowers102(root: Path, *, split: str = "test", limit: int | None = None, seed: int = 0,
                     prompts: str = "released") -> tuple[pd.DataFrame, DatasetInfo]:
    """Flowers102 rows of the official ``split`` (``setid.mat``)."""
    check_split(split, list(SPLIT_KEYS), SOURCE)
    labels_all = _mat_vector(require(root / "imagelabels.mat", SOURCE, "labels 1..102 per image"), "labels")
    ids = _mat_vector(require(root / "setid.mat", SOURCE, "split image ids"), SPLIT_KEYS[split])
    if labels_all.min() < 1 or labels_all.max() > N_CLASSES or ids.min() < 1 or ids.max() > len(labels_all):
        raise ValueError(f"{root}: labels must be 1..{N_CLASSES} and split ids 1..{len(labels_all)}")
    label_arr = labels_all[ids - 1] - 1
    keep = stratified_subset(label_arr, limit, seed)
    paths = [root / "jpg" / f"image_{ids[i]:05d}.jpg" for i in keep]
    check_images_exist(paths, SOURCE)
    manifest_split = "test" if split == "test" else "train"
    rows = [manifest_row(f"image_{ids[i]:05d}", path, [], label_arr[i], manifest_split, SOURCE)
            for i, path in zip(keep, paths)]
    names, templates, text_counts = zeroshot_prompts(
        SOURCE, prompts, lambda: names_by_index(SOURCE, N_CLASSES, str(root / "imagelabels.mat")),
        [f"class {k + 1}" for k in range(N_CLASSES)])
    info = DatasetInfo(name=SOURCE, task="zeroshot", classnames=names, templates=templates, source=SOURCE,
                       version=LOCAL_VERSION,
                       counts={f"{split}_images": len(ids), "rows": len(rows), **text_counts},
                       description=f"Oxford 102 Flowers {split} split (setid.mat {SPLIT_KEYS[split]})")
    return pd.DataFrame(rows), info


@register_dataset(SOURCE, sources=SOURCE, task="zeroshot", description="Oxford 102 Flowers (VGG files)",
                  options={"root": None, "split": "test", "prompts": "released"})
def _build_flowers102_ds(resources_dir: Path, images_dir: Path, *, root: str | None = None, split: str = "test",
                         prompts: str = "released", limit: int | None = None,
                         seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    return build_flowers102(dataset_root(resources_dir, SOURCE, root), split=split, limit=limit, seed=seed,
                            prompts=prompts)
