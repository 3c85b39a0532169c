"""Helpers of the datasets read from user-provided local files (not a dataset module: it registers nothing).

The paper profile's datasets (docs/method.md §6 training on COCO 2014 captions; §7 zero-shot on STL10, CIFAR-10/100,
ImageNet and retrieval on Flickr30k, COCO) cannot be downloaded here, so each of their sources is
``client="local"``: place (or symlink) the files under ``resources/<source>/`` and run ``acquire(<source>)``, which
checks the expected paths and records ``SOURCE.json``; a builder's ``root`` option points it at another folder when
it is called directly. Every builder checks the files it needs first and raises ``FileNotFoundError`` naming the
missing file. User datasets of the generic kinds (``imagefolder``, ``captions``) share the row format and the
file checks.

Zero-shot class names and prompt templates are the released lists, installed as package data (data/prompts.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .helpers import save_png

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
FALLBACK_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)
LOCAL_VERSION = "local"


def dataset_root(resources_dir: str | os.PathLike, source: str, root: str | os.PathLike | None) -> Path:
    """The dataset folder: ``root`` when given, else ``resources_dir/<source>``; it must exist."""
    path = Path(root) if root is not None else Path(resources_dir) / source
    if not path.is_dir():
        raise FileNotFoundError(f"{source}: data folder {path} does not exist; place the official files there "
                                f"(or pass root=...)")
    return path


def require(path: Path, source: str, what: str) -> Path:
    """``path`` if it exists, else ``FileNotFoundError`` naming it and what it should hold."""
    if not path.exists():
        raise FileNotFoundError(f"{source}: expected {path} ({what})")
    return path


def clean(text: str) -> str:
    """Whitespace runs collapsed to one space, ends stripped."""
    return " ".join(str(text).split())


def check_images_exist(paths: Sequence[Path], source: str) -> None:
    """``FileNotFoundError`` counting the missing image files and naming the first."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{source}: {len(missing)} of {len(paths)} image files are missing, "
                                f"e.g. expected {missing[0]}")


def check_split(split: str, allowed: Sequence[str], source: str) -> None:
    """``ValueError`` unless ``split`` is one of ``allowed``."""
    if split not in allowed:
        raise ValueError(f"{source}: option split={split!r} is not one of {list(allowed)}")


def manifest_row(sample_id: str, image_path: Path, captions: list[str], label: int, split: str, source: str) -> dict:
    """One manifest row of a local dataset (version ``local``)."""
    return {"sample_id": sample_id, "image_path": str(image_path), "captions": captions, "label": int(label),
            "split": split, "source": source, "version": LOCAL_VERSION}


def array_image_rows(images: np.ndarray, labels: np.ndarray, keep: np.ndarray, images_dir: Path, split: str,
                     source: str) -> list[dict]:
    """Write the kept [H, W, 3] uint8 images as PNG (``<split>/<index>.png``) and return their manifest rows."""
    rows = []
    for i in tqdm(keep, desc=source, unit="img", leave=False):
        target = images_dir / split / f"{i:05d}.png"
        save_png(images[i], target)
        rows.append(manifest_row(f"{split}/{i:05d}", target, [], labels[i], split, source))
    return rows
