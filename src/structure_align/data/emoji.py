"""Google Noto emoji as image-caption pairs (docs/datasets.md "emoji").

``emoji.json`` of npm ``emoji-datasource-google@16.0.0`` lists one entry per emoji (skin-tone variants are nested
and not used); entries with ``has_img_google`` have ``img/google/64/<image>``. Caption: ``"an emoji of a {name}"``
with the Unicode name lower-cased ("an emoji of a dog face"); the article is kept fixed, as specified, even where
English would use "an".
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from ..io import sha256_file
from .helpers import (
    assert_split_disjoint,
    check_test_fraction,
    composite_on_white,
    save_png,
    split_pairs,
    stratified_subset,
)
from .registry import DatasetInfo, SourceSpec, get_source, register_dataset, register_source, source_dir

log = logging.getLogger(__name__)

SOURCE = "emoji-datasource-google"
# the npm registry's package; sha256 of the exact .tgz bytes measured when it was pinned
register_source(SourceSpec(
    name=SOURCE, client="npm", package="emoji-datasource-google", version="16.0.0",
    sha256="fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438",
    files=("emoji.json", "img/google/64"), licence="MIT (data), Apache-2.0 (Noto emoji images)",
    description="Google Noto emoji PNGs (64 px) with Unicode names and categories in emoji.json"))
IMAGE_SUBDIR = "img/google/64"
CAPTION_TEMPLATE = "an emoji of a {}"


def emoji_caption(name: str) -> str:
    """``"an emoji of a {name}"`` with the name lower-cased and whitespace collapsed."""
    return CAPTION_TEMPLATE.format(" ".join(name.lower().split()))


def load_entries(package_root: Path) -> list[dict]:
    """The ``emoji.json`` entries that have a Google image, in ``sort_order`` (then ``unified``) order."""
    path = package_root / "emoji.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise TypeError(f"{path}: expected a JSON list of emoji entries, got {type(data).__name__}")
    for i, entry in enumerate(data):
        for key in ("image", "unified"):
            if key not in entry:
                raise ValueError(f"{path}: entry {i} lacks key {key!r}")
    entries = [e for e in data if e.get("has_img_google")]
    return sorted(entries, key=lambda e: (e.get("sort_order", 0), e["unified"]))


@register_dataset("emoji", sources=SOURCE, task="pairs",
                  description="Google Noto emoji (64 px) captioned 'an emoji of a <name>'; 20 % held out",
                  options={"test_fraction": 0.2})
def build_emoji(resources_dir: Path, images_dir: Path, *, limit: int | None = None, seed: int = 0,
                test_fraction: float = 0.2) -> tuple[pd.DataFrame, DatasetInfo]:
    """Build the emoji pairs manifest; ``limit`` keeps a seeded subset stratified by emoji category."""
    check_test_fraction(test_fraction, "emoji")
    spec = get_source(SOURCE)
    root = source_dir(resources_dir, SOURCE)
    entries = load_entries(root)
    counts: dict[str, int] = {"entries_with_google_image": len(entries), "no_name": 0, "missing_file": 0}
    usable = []
    for e in entries:
        if not (e.get("name") or "").strip():
            counts["no_name"] += 1
        elif not (root / IMAGE_SUBDIR / e["image"]).is_file():
            counts["missing_file"] += 1
        else:
            usable.append(e)
    if not usable:
        raise FileNotFoundError(f"no usable emoji under {root / IMAGE_SUBDIR}")
    cats = sorted({e.get("category", "") for e in usable})
    keep = stratified_subset(np.array([cats.index(e.get("category", "")) for e in usable]), limit, seed)
    rows = []
    for i in tqdm(keep, desc="emoji", unit="img"):
        e = usable[int(i)]
        with Image.open(root / IMAGE_SUBDIR / e["image"]) as im:
            image = composite_on_white(im)
        stem = Path(e["image"]).stem
        out = save_png(image, images_dir / f"{stem}.png")
        rows.append({"sample_id": e["unified"].lower(), "image_path": str(out), "captions": [emoji_caption(e["name"])],
                     "label": -1, "source": SOURCE, "version": spec.version, "digest": sha256_file(out)})
    df = pd.DataFrame(rows)
    captions = [c[0] for c in df["captions"]]
    df["split"] = split_pairs(captions, list(df["digest"]), test_fraction, seed)
    assert_split_disjoint(df, image_keys=list(df["digest"]), where="emoji")
    dup = pd.Series(captions).value_counts()
    counts.update({"rows": len(df), "train": int((df["split"] == "train").sum()),
                   "test": int((df["split"] == "test").sum()), "unique_captions": len(dup),
                   "captions_shared_by_several_emoji": int((dup > 1).sum()),
                   "identical_images": int(len(df) - df["digest"].nunique()), "categories": len(cats)})
    info = DatasetInfo(name="emoji", task="pairs", source=SOURCE, version=spec.version,
                       description="emoji-datasource-google 16.0.0, img/google/64 composited on white, captions "
                                   "'an emoji of a <lower-cased Unicode name>'", counts=counts)
    return df.drop(columns=["digest"]), info
