"""ImageNet-1k validation set prepared as an ImageFolder tree (docs/method.md §7 zero-shot; docs/datasets.md).

``resources/imagenet/val/<wnid>/*``, built by the shared ImageFolder builder with the released 1000 class names and
80 templates (data/prompts.py; they equal CLIP's lists in ``open_clip``'s ``zero_shot_metadata``). The names follow the
sorted wnid folders; a tree with fewer folders is matched by the standard class index (timm's
``imagenet_synsets.txt``). A class-name mapping file (``classnames_file``) or other ``templates`` may replace them.

CLIP's list names two pairs of classes alike ("missile" at 657 and 744, "sunglasses" at 836 and 837), which a
manifest refuses (two classes with one prompt set are indistinguishable); :func:`disambiguate_classnames` renames
744 to "projectile" and 836 to "sunglass", the names of those synsets (n04008634, n04355933) in the standard ImageNet
class index, and numbers any other repeat ("name (2)").
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ._local import dataset_root, require
from .imagefolder import build_imagefolder, require_class_folders
from .prompts import names_positional, released_classnames, zeroshot_prompts
from .registry import DatasetInfo, SourceSpec, register_dataset, register_source

SOURCE = "imagenet"
register_source(SourceSpec(name=SOURCE, client="local", package="ImageNet-1k val as an ImageFolder tree "
                           "val/<wnid>/<image>.JPEG (1000 wnid folders, 50 images each; ImageNet needs a login at "
                           "image-net.org, so it is never downloaded: unpack ILSVRC2012_img_val.tar and sort it into "
                           "wnid folders, e.g. with the valprep.sh script of the PyTorch ImageNet example)",
                           version="", sha256="", files=("val",), licence="ImageNet terms of access",
                           description="ImageNet-1k validation set, 1000 wnid folders"))

_MAPPING_LINE = re.compile(r"^([^\t, ]+)[\t, ]\s*(.+)$")
# index -> the synset's own name in the standard ImageNet class index, for CLIP's duplicated names
IMAGENET_DUPLICATE_NAMES: dict[int, tuple[str, str]] = {744: ("missile", "projectile"), 836: ("sunglasses", "sunglass")}


def disambiguate_classnames(names: Sequence[str]) -> tuple[list[str], dict[int, str]]:
    """Unique class names: CLIP's two known ImageNet repeats get their synset names, any other repeat a number.

    Returns the names and ``{index: new name}`` of what was renamed (first occurrences keep their name).
    """
    out = list(names)
    renamed: dict[int, str] = {}
    if len(out) == 1000:
        for index, (old, new) in IMAGENET_DUPLICATE_NAMES.items():
            if out[index] == old and out.count(old) > 1:
                out[index] = renamed[index] = new
    seen: dict[str, int] = {}
    for i, name in enumerate(out):
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            out[i] = renamed[i] = f"{name} ({seen[name]})"
    return out, renamed


def read_class_mapping(path: Path, folders: Sequence[str]) -> list[str]:
    """Class names for ``folders`` (sorted folder names) from a mapping file.

    Accepted: JSON object ``{folder: name}`` or list of names in folder order; or text lines ``folder<TAB|,|space>name``
    (e.g. ImageNet's ``LOC_synset_mapping.txt``: ``n01440764 tench, Tinca tinca``, of which the first comma-separated
    name is kept). Every folder must be mapped.
    """
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
        if isinstance(data, list):
            if len(data) != len(folders):
                raise ValueError(f"{path}: {len(data)} names for {len(folders)} class folders")
            return [str(n) for n in data]
        mapping = {str(k): str(v) for k, v in data.items()}
    else:
        mapping = {}
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            m = _MAPPING_LINE.match(line.strip())
            if m is None:
                raise ValueError(f"{path}:{lineno}: expected 'folder<TAB|,|space>name', got {line!r}")
            mapping[m.group(1)] = m.group(2).split(",")[0].strip()
    missing = [f for f in folders if not mapping.get(f)]
    if missing:
        raise ValueError(f"{path}: no class name for folder(s) {missing[:5]}")
    return [mapping[f] for f in folders]


def standard_wnids() -> list[str]:
    """The 1000 wnids in the standard class-index order, from timm's package data (read as a file: importing timm
    would import torch); ``ModuleNotFoundError`` when timm is not installed."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("timm is not installed; it provides the standard ImageNet wnid order")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "_info" / "imagenet_synsets.txt"
    return [w.strip() for w in path.read_text(encoding="utf-8").splitlines() if w.strip()]


def released_names_for(folders: Sequence[str], tree: Path) -> list[str]:
    """Released names of the wnid ``folders``: in order for the full 1000, else by each wnid's standard index."""
    if len(folders) == 1000:
        return names_positional(SOURCE, len(folders), str(tree))
    index = {w: i for i, w in enumerate(standard_wnids())}
    unknown = [f for f in folders if f not in index]
    if unknown:
        raise ValueError(f"{SOURCE}: folder(s) {unknown[:5]} under {tree} are not ImageNet-1k wnids; set manifest "
                         f"option prompts: fallback (or classnames_file) to name them")
    names = released_classnames(SOURCE)
    return [names[index[f]] for f in folders]


def _mapping_names(tree: Path, folders: Sequence[str], classnames_file: str) -> tuple[list[str], str]:
    """Names of a class-name mapping file (relative paths: beside the tree) and the file's path."""
    mapping_path = Path(classnames_file)
    if not mapping_path.is_absolute() and not mapping_path.exists():
        mapping_path = tree.parent / mapping_path  # relative to the dataset folder that holds the tree
    return read_class_mapping(require(mapping_path, SOURCE, "class-name mapping file"), folders), str(mapping_path)


@register_dataset("imagenet", sources=SOURCE, task="zeroshot",
                  description="ImageNet-1k val as ImageFolder (CLIP class names, 80 OpenAI templates)",
                  options={"root": None, "subdir": "val", "classnames_file": None, "templates": None,
                           "prompts": "released"})
def _build_imagenet_ds(resources_dir: Path, images_dir: Path, *, root: str | None = None, subdir: str = "val",
                       classnames_file: str | None = None, templates: Sequence[str] | None = None,
                       prompts: str = "released", limit: int | None = None,
                       seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    base = dataset_root(resources_dir, SOURCE, root)
    tree = require(base / subdir, SOURCE, "ImageFolder tree <wnid>/<image>")
    folders = require_class_folders(tree, SOURCE)
    mapped = _mapping_names(tree, folders, classnames_file) if classnames_file is not None else None
    file_names = mapped[0] if mapped else [f.replace("_", " ") for f in folders]
    classnames, prompt_templates, text_counts = zeroshot_prompts(
        SOURCE, prompts, (lambda: file_names) if mapped else (lambda: released_names_for(folders, tree)), file_names)
    if mapped:  # an explicit mapping file names the classes whatever the prompts choice
        classnames, text_counts["classnames_source"] = file_names, mapped[1]
    if templates:
        prompt_templates, text_counts["templates_source"] = list(templates), "manifest option templates"
    classnames, renamed = disambiguate_classnames(classnames)
    df, info = build_imagefolder(tree, name="imagenet", source=SOURCE, classnames=classnames,
                                 names_from=text_counts["classnames_source"], templates=prompt_templates, limit=limit,
                                 seed=seed)
    info.counts.update(text_counts)
    info.counts["renamed_duplicates"] = {str(k): v for k, v in renamed.items()}
    return df, info
