"""Country211 zero-shot set (docs/paper-profile.md "Downloads"; a released zero-shot set), OpenAI's archive.

``country211.tgz`` (about 11 GB) from openaipublic, pinned by the md5 of torchvision's
``torchvision/datasets/country211.py`` (``Country211._MD5``), unpacks to ``resources/country211/country211/
{train,valid,test}/<ISO 3166 code>/<image>.jpg``: 211 countries, 100 test images each. The split folder is read by
the shared ImageFolder builder; classes are the sorted codes, named in order by the released list of 211 country
names (data/prompts.py; ``prompts: fallback``: the codes). Images are used in place.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ._local import check_split, dataset_root, require
from .imagefolder import build_imagefolder, require_class_folders
from .prompts import names_positional, zeroshot_prompts
from .registry import DatasetInfo, Download, SourceSpec, register_dataset, register_source

SOURCE = "country211"
register_source(SourceSpec(
    name=SOURCE, client="url", package="Country211 (OpenAI country211.tgz)", version="1", sha256="",
    files=("country211/test",), licence="YFCC100M subset; images under their Flickr licences",
    description="Country211: geolocation as 211-way classification (about 11 GB archive)",
    downloads=(Download("country211.tgz", "https://openaipublic.azureedge.net/clip/data/country211.tgz",
                        md5="84988d7644798601126c29e9877aab6a"),)))


def build_country211(root: Path, *, split: str = "test", limit: int | None = None, seed: int = 0,
                     prompts: str = "released") -> tuple[pd.DataFrame, DatasetInfo]:
    """Country211 rows of one split folder (``test``, ``valid`` or ``train``)."""
    check_split(split, ["test", "valid", "train"], SOURCE)
    tree = require(root / "country211" / split, SOURCE, f"the {split} folder <country code>/<image>")
    folders = require_class_folders(tree, SOURCE)
    names, templates, text_counts = zeroshot_prompts(
        SOURCE, prompts, lambda: names_positional(SOURCE, len(folders), str(tree)), folders)
    df, info = build_imagefolder(tree, name=SOURCE, source=SOURCE, classnames=names,
                                 names_from=text_counts["classnames_source"], templates=templates,
                                 split="test" if split == "test" else "train", limit=limit, seed=seed)
    info.counts.update(text_counts)
    info.description = f"Country211 {split} split"
    return df, info


@register_dataset(SOURCE, sources=SOURCE, task="zeroshot", description="Country211 (OpenAI archive)",
                  options={"root": None, "split": "test", "prompts": "released"})
def _build_country211_ds(resources_dir: Path, images_dir: Path, *, root: str | None = None, split: str = "test",
                         prompts: str = "released", limit: int | None = None,
                         seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    return build_country211(dataset_root(resources_dir, SOURCE, root), split=split, limit=limit, seed=seed,
                            prompts=prompts)
