"""COCO retrieval on Karpathy's 5k test split (docs/paper-profile.md "Models"; docs/datasets.md), an option.

The released code evaluates COCO retrieval on all of val2014 (the ``coco`` dataset's test split); the table of the
paper does not say which protocol it uses. This dataset is the other common protocol: the 5,000 images of split
``test`` in Karpathy's ``dataset_coco.json``, each with its (about 5) captions. The split file is a ``local`` source
(``resources/coco_karpathy/dataset_coco.json``; it is published only inside ``caption_datasets.zip`` on Karpathy's
"deepimagesent" page, with no checksum to pin it by); the images are those of the ``coco`` url source
(``resources/coco/<filepath>/<filename>``, all in ``val2014/``), used in place. The file is parsed by the parser
Flickr30k's Karpathy file uses (:mod:`._karpathy`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd

from ._karpathy import KARPATHY_SPLIT_NAMES, KarpathyImage, load_karpathy_images
from ._local import LOCAL_VERSION, check_images_exist, check_split, dataset_root, manifest_row, require
from .helpers import subset_rows
from .registry import DatasetInfo, SourceSpec, register_dataset, register_source

SOURCE = "coco_karpathy"
SPLIT_FILE = "dataset_coco.json"
KARPATHY_URL = "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip"
register_source(SourceSpec(
    name=SOURCE, client="local",
    package=f"{SPLIT_FILE} (Karpathy's COCO split: download {KARPATHY_URL}, unzip it and place its {SPLIT_FILE} as "
            f"resources/{SOURCE}/{SPLIT_FILE}; the images come from the coco source)",
    version="", sha256="", files=(SPLIT_FILE,), licence="the split file is distributed by A. Karpathy for research",
    description="Karpathy's COCO split file (5k val / 5k test / restval / train images of COCO 2014)"))


def _selected(images: list[KarpathyImage], split: str) -> list[KarpathyImage]:
    """The images of Karpathy ``split`` that have captions, in file order."""
    return [im for im in images if im.split == split and im.captions]


def build_coco_karpathy(split_file: Path, coco_root: Path, *, split: str = "test", limit: int | None = None,
                        seed: int = 0, check_images: bool = True) -> tuple[pd.DataFrame, DatasetInfo]:
    """One manifest row (split ``test``) per image of Karpathy ``split`` with all its captions; images from
    ``coco_root/<filepath>/<filename>``."""
    check_split(split, list(KARPATHY_SPLIT_NAMES), f"{SOURCE} split")
    images = load_karpathy_images(require(split_file, SOURCE, "Karpathy's COCO split file with images[].filepath"))
    kept = _selected(images, split)
    if not kept:
        raise ValueError(f"{split_file}: no image with split {split!r} and captions; "
                         f"splits in the file: {dict(Counter(im.split for im in images))}")
    missing_path = next((im for im in kept if not im.filepath), None)
    if missing_path is not None:
        raise ValueError(f"{split_file}: image {missing_path.filename!r} has no 'filepath' (is this the Flickr30k "
                         f"file? COCO's names its image folder, e.g. val2014)")
    paths = [coco_root / im.filepath / im.filename for im in kept]
    if check_images:
        check_images_exist(paths, SOURCE)
    rows = [manifest_row(f"{im.filepath}/{im.image_id if im.image_id is not None else Path(im.filename).stem}",
                         path, im.captions, -1, "test", SOURCE) for im, path in zip(kept, paths)]
    df = subset_rows(pd.DataFrame(rows), [0] * len(rows), limit, seed)
    counts = {"karpathy_splits": dict(sorted(Counter(im.split for im in images).items())), "split": split,
              "rows": len(df), "captions": int(sum(len(c) for c in df["captions"]))}
    info = DatasetInfo(name=SOURCE, task="retrieval", source=SOURCE, version=LOCAL_VERSION, counts=counts,
                       description=f"COCO 2014 images of Karpathy's {split!r} split with all their captions")
    return df, info


@register_dataset(SOURCE, sources=("coco", SOURCE), task="retrieval",
                  description="COCO retrieval on Karpathy's 5k test split (images from the coco source)",
                  options={"split": "test", "check_images": True})
def _build_coco_karpathy_ds(resources_dir: Path, images_dir: Path, *, split: str = "test", check_images: bool = True,
                            limit: int | None = None, seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    split_file = dataset_root(resources_dir, SOURCE, None) / SPLIT_FILE
    return build_coco_karpathy(split_file, dataset_root(resources_dir, "coco", None), split=split, limit=limit,
                               seed=seed, check_images=check_images)
