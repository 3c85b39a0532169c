"""Oxford-IIIT Pet zero-shot set (docs/method.md §7; docs/paper-profile.md), from the VGG archives.

``images.tar.gz`` and ``annotations.tar.gz`` (md5 as published with torchvision's loader) unpack to
``resources/pets/images/<Breed_name>_<n>.jpg`` and ``resources/pets/annotations/{trainval,test}.txt`` (lines
``<image> <class id 1..37> <species> <breed id>``). Class names follow torchvision (and CLIP-benchmark): the image
name without its number, ``_``-separated parts title-cased ("american_bulldog" -> "American Bulldog"), in class-id
order. Images are used in place.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ._local import (
    LOCAL_VERSION,
    check_images_exist,
    check_split,
    clip_benchmark_templates,
    dataset_root,
    manifest_row,
    require,
)
from .helpers import stratified_subset
from .registry import DatasetInfo, Download, SourceSpec, register_dataset, register_source

SOURCE = "pets"
_VGG = "https://www.robots.ox.ac.uk/~vgg/data/pets/data"
register_source(SourceSpec(
    name=SOURCE, client="url", package="Oxford-IIIT Pet (images + annotations)", version="1", sha256="",
    files=("images", "annotations/test.txt", "annotations/trainval.txt"), licence="CC BY-SA 4.0",
    description="Oxford-IIIT Pet, 37 breeds",
    downloads=(Download("images.tar.gz", f"{_VGG}/images.tar.gz", md5="5c4f3ee8e5d25df40f4fd59a7f44e54c"),
               Download("annotations.tar.gz", f"{_VGG}/annotations.tar.gz", md5="95a8c909bbe2e81eed6a22bccdf3f68f"))))


def read_pet_list(path: Path) -> list[tuple[str, int]]:
    """``(image id, 0-based class)`` per line of ``trainval.txt`` / ``test.txt`` (``#`` lines skipped)."""
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) != 4 or not parts[1].isdigit():
            raise ValueError(f"{path}:{lineno}: expected '<image> <class id> <species> <breed id>', got {line!r}")
        out.append((parts[0], int(parts[1]) - 1))
    return out


def pet_classnames(entries: list[tuple[str, int]]) -> list[str]:
    """torchvision's class names: per class id, the image name without its number, parts title-cased."""
    raw = {label: image.rsplit("_", 1)[0] for image, label in entries}
    if sorted(raw) != list(range(len(raw))):
        raise ValueError(f"pets: class ids {sorted(raw)[:5]}... are not 1..{len(raw)}")
    return [" ".join(part.title() for part in raw[i].split("_")) for i in range(len(raw))]


def build_pets(root: Path, *, split: str = "test", limit: int | None = None,
               seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    """Oxford-IIIT Pet rows of the official ``split`` (``test`` or ``trainval``)."""
    check_split(split, ["test", "trainval"], SOURCE)
    ann = require(root / "annotations", SOURCE, "the unpacked annotations folder")
    entries = read_pet_list(require(ann / f"{split}.txt", SOURCE, f"the {split} list"))
    # names from both lists, so that a class missing from one split still has its name
    other = ann / ("trainval.txt" if split == "test" else "test.txt")
    classnames = pet_classnames(entries + (read_pet_list(other) if other.is_file() else []))
    labels = np.asarray([label for _, label in entries], dtype=np.int64)
    keep = stratified_subset(labels, limit, seed)
    paths = [root / "images" / f"{entries[i][0]}.jpg" for i in keep]
    check_images_exist(paths, SOURCE)
    manifest_split = "test" if split == "test" else "train"
    rows = [manifest_row(entries[i][0], path, [], labels[i], manifest_split, SOURCE) for i, path in zip(keep, paths)]
    templates, tsource = clip_benchmark_templates("pets")
    info = DatasetInfo(name="pets", task="zeroshot", classnames=classnames, templates=templates, source=SOURCE,
                       version=LOCAL_VERSION,
                       counts={f"{split}_images": len(entries), "rows": len(rows), "templates_source": tsource},
                       description=f"Oxford-IIIT Pet {split} split")
    return pd.DataFrame(rows), info


@register_dataset("pets", sources=SOURCE, task="zeroshot", description="Oxford-IIIT Pet (official archives)",
                  options={"root": None, "split": "test"})
def _build_pets_ds(resources_dir: Path, images_dir: Path, *, root: str | None = None, split: str = "test",
                   limit: int | None = None, seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    return build_pets(dataset_root(resources_dir, SOURCE, root), split=split, limit=limit, seed=seed)
