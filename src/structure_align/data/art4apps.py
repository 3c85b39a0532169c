"""Art4Apps drawings (shipped inside Debian ``pysiogame``) as a zero-shot set over 12 categories (docs/datasets.md).

``usr/share/games/pysiogame/res/images/art4apps/<category>/<word>.jpg`` (200x200 RGB JPEG, ordinary files, so the
manifest points at them directly). Class names are the folder names made readable ("fruit_n_veg" -> "fruit and
vegetables"). Licence: not stated separately in the package, so these images stay out of anything redistributed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .helpers import stratified_subset
from .registry import DatasetInfo, SourceSpec, get_source, register_dataset, register_source, source_dir

log = logging.getLogger(__name__)

SOURCE = "pysiogame"
# Debian bookworm's package (extracted only, never installed); sha256 of the exact .deb bytes when it was pinned
register_source(SourceSpec(
    name=SOURCE, client="apt", package="pysiogame", version="4.20.01-1",
    sha256="6b22766dfd8ef3a046c2665fe2598ac8a1ecee3d331bda38accf53de65bc59bf",
    files=("usr/share/games/pysiogame/res/images/art4apps",),
    licence="not stated separately for the Art4Apps images: keep them out of anything redistributed",
    description="pysiogame game data (extracted only, never installed); holds 585 Art4Apps drawings in 12 categories"))
IMAGES_SUBDIR = "usr/share/games/pysiogame/res/images/art4apps"
# folder names whose generic cleaning ("_" -> " ") would not read as English
_SPECIAL_NAMES = {"clothes_n_accessories": "clothes and accessories", "fruit_n_veg": "fruit and vegetables"}
TEMPLATES: tuple[str, ...] = ("a drawing of {}.", "a cartoon drawing of {}.", "an illustration of {}.",
                              "a clip art picture of {}.")


def clean_classname(folder: str) -> str:
    """Readable class name of a category folder ("fruit_n_veg" -> "fruit and vegetables", "jobs" -> "jobs")."""
    if folder in _SPECIAL_NAMES:
        return _SPECIAL_NAMES[folder]
    return " ".join(folder.replace("_n_", " and ").replace("_", " ").split())


def scan_drawings(root: Path) -> tuple[list[str], list[tuple[str, Path]]]:
    """Category folders (sorted) and ``(folder, jpg path)`` of every drawing, sorted by path."""
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    items = [(f, p) for f in folders for p in sorted((root / f).iterdir())
             if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    return folders, items


@register_dataset("art4apps", sources=SOURCE, task="zeroshot",
                  description="Art4Apps drawings (pysiogame), zero-shot over 12 categories")
def build_art4apps(resources_dir: Path, images_dir: Path, *, limit: int | None = None,
                   seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    """Build the zero-shot manifest; images are referenced in place (they are ordinary JPEG files)."""
    spec = get_source(SOURCE)
    root = source_dir(resources_dir, SOURCE, IMAGES_SUBDIR)
    folders, items = scan_drawings(root)
    if not items:
        raise FileNotFoundError(f"no drawings under {root}")
    labels = np.array([folders.index(f) for f, _ in items], dtype=np.int64)
    keep = stratified_subset(labels, limit, seed)
    rows, unreadable = [], []
    for i in keep:
        folder, path = items[int(i)]
        try:
            with Image.open(path) as im:
                im.verify()  # a truncated JPEG would otherwise only fail inside feature extraction
        except Exception as exc:  # noqa: BLE001  (skip only this file, and count it)
            log.warning("skipping unreadable drawing %s: %s", path, exc)
            unreadable.append(str(path))
            continue
        rows.append({"sample_id": f"{folder}/{path.stem}", "image_path": str(path), "captions": [],
                     "label": int(labels[int(i)]), "split": "test", "source": SOURCE, "version": spec.version})
    df = pd.DataFrame(rows)
    classnames = [clean_classname(f) for f in folders]
    per_class = np.bincount(df["label"].to_numpy(), minlength=len(folders))
    counts = {"files": len(items), "unreadable": len(unreadable), "rows": len(df),
              "per_class": {c: int(n) for c, n in zip(classnames, per_class)}}
    info = DatasetInfo(name="art4apps", task="zeroshot", classnames=classnames, templates=list(TEMPLATES),
                       source=SOURCE, version=spec.version,
                       description="Art4Apps drawings from Debian pysiogame; class = category folder", counts=counts)
    return df, info
