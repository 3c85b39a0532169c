"""Karpathy's caption split files, shared by Flickr30k and COCO (a helper module: it registers nothing).

``dataset_flickr30k.json`` and ``dataset_coco.json`` (both in ``caption_datasets.zip`` of Karpathy's
"deepimagesent" page) have one format: ``{"images": [...], "dataset": ...}``, where each image has ``filename``,
``split`` (``train`` / ``restval`` / ``val`` / ``test``), ``sentences[].raw`` and, for COCO, ``filepath``
(``train2014`` / ``val2014``) and ``cocoid``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ._local import clean

KARPATHY_SPLIT_NAMES: tuple[str, ...] = ("train", "restval", "val", "test")
_REQUIRED_KEYS: tuple[str, ...] = ("filename", "split", "sentences")


@dataclass(frozen=True)
class KarpathyImage:
    """One image of a Karpathy split file: where it is, its Karpathy split and its cleaned captions."""

    filename: str
    split: str
    captions: list[str]
    filepath: str = ""
    image_id: int | None = None


def _image(json_path: Path, i: int, img: dict) -> KarpathyImage:
    """Parse ``images[i]``; a missing key or an unknown split raises ``ValueError`` naming the file and index."""
    for key in _REQUIRED_KEYS:
        if key not in img:
            raise ValueError(f"{json_path}: images[{i}] lacks key {key!r}")
    split = str(img["split"])
    if split not in KARPATHY_SPLIT_NAMES:
        raise ValueError(f"{json_path}: images[{i}] has split {split!r}, expected one of {list(KARPATHY_SPLIT_NAMES)}")
    caps = [clean(s["raw"]) for s in img["sentences"] if clean(s.get("raw", ""))]
    image_id = img.get("cocoid", img.get("imgid"))
    return KarpathyImage(filename=str(img["filename"]), split=split, captions=caps,
                         filepath=str(img.get("filepath", "")), image_id=None if image_id is None else int(image_id))


def load_karpathy_images(json_path: Path) -> list[KarpathyImage]:
    """Every image of a Karpathy split file, in file order (captions whitespace-cleaned, empty ones dropped)."""
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{json_path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or "images" not in data:
        raise ValueError(f"{json_path}: key 'images' is missing (not a Karpathy split file)")
    return [_image(json_path, i, img) for i, img in enumerate(data["images"])]
