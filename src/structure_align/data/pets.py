"""Oxford-IIIT Pet zero-shot set (docs/method.md §7; docs/paper-profile.md), from the VGG archives.

``images.tar.gz`` and ``annotations.tar.gz`` (md5 as published with torchvision's loader) unpack to
``resources/pets/images/<Breed_name>_<n>.jpg`` and ``resources/pets/annotations/{trainval,test}.txt`` (lines
``<image> <class id 1..37> <species> <breed id>``). Class names are the released ones (data/prompts.py): the
released code sorts the images into one folder per image name without its number and names each class by its folder,
``_`` read as a space, so the 12 cat breeds stay capitalised and the 25 dog breeds lowercase ("Abyssinian",
"german shorthaired"); torchvision and CLIP-benchmark title-case all 37 instead (``prompts: fallback`` uses that).
Labels are the official class ids (the released ImageFolder numbers the classes in sorted folder order instead; every
image keeps its breed's name either way). Images are used in place.
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
from .prompts import names_by_key, zeroshot_prompts
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


def pet_breeds(entries: list[tuple[str, int]]) -> list[str]:
    """Per class id, the image name without its number (the released code's folder name, e.g. "german_shorthaired")."""
    raw = {label: image.rsplit("_", 1)[0] for image, label in entries}
    if sorted(raw) != list(range(len(raw))):
        raise ValueError(f"pets: class ids {sorted(raw)[:5]}... are not 1..{len(raw)}")
    return [raw[i] for i in range(len(raw))]


def pet_classnames(entries: list[tuple[str, int]]) -> list[str]:
    """torchvision's class names: per class id, the image name without its number, parts title-cased."""
    return [" ".join(part.title() for part in breed.split("_")) for breed in pet_breeds(entries)]


def build_pets(root: Path, *, split: str = "test", limit: int | None = None, seed: int = 0,
               prompts: str = "released") -> tuple[pd.DataFrame, DatasetInfo]:
    """Oxford-IIIT Pet rows of the official ``split`` (``test`` or ``trainval``)."""
    check_split(split, ["test", "trainval"], SOURCE)
    ann = require(root / "annotations", SOURCE, "the unpacked annotations folder")
    entries = read_pet_list(require(ann / f"{split}.txt", SOURCE, f"the {split} list"))
    # names from both lists, so that a class missing from one split still has its name
    other = ann / ("trainval.txt" if split == "test" else "test.txt")
    both = entries + (read_pet_list(other) if other.is_file() else [])
    classnames, templates, text_counts = zeroshot_prompts(
        "pets", prompts, lambda: names_by_key("pets", pet_breeds(both), str(ann)), pet_classnames(both))
    labels = np.asarray([label for _, label in entries], dtype=np.int64)
    keep = stratified_subset(labels, limit, seed)
    paths = [root / "images" / f"{entries[i][0]}.jpg" for i in keep]
    check_images_exist(paths, SOURCE)
    manifest_split = "test" if split == "test" else "train"
    rows = [manifest_row(entries[i][0], path, [], labels[i], manifest_split, SOURCE) for i, path in zip(keep, paths)]
    info = DatasetInfo(name="pets", task="zeroshot", classnames=classnames, templates=templates, source=SOURCE,
                       version=LOCAL_VERSION,
                       counts={f"{split}_images": len(entries), "rows": len(rows), **text_counts},
                       description=f"Oxford-IIIT Pet {split} split")
    return pd.DataFrame(rows), info


@register_dataset("pets", sources=SOURCE, task="zeroshot", description="Oxford-IIIT Pet (official archives)",
                  options={"root": None, "split": "test", "prompts": "released"})
def _build_pets_ds(resources_dir: Path, images_dir: Path, *, root: str | None = None, split: str = "test",
                   prompts: str = "released", limit: int | None = None,
                   seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    return build_pets(dataset_root(resources_dir, SOURCE, root), split=split, limit=limit, seed=seed,
                      prompts=prompts)
