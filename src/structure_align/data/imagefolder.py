"""Image-folder classification sets: the ``imagefolder`` kind of user datasets and the builder ImageNet shares.

A tree ``<root>/<class>/<image>`` (torchvision's ImageFolder layout: classes are the sorted folder names, images are
found recursively below each class folder) becomes a zero-shot manifest (docs/method.md §7 protocol) whose rows
point at the images in place. Declaration keys (``user_datasets: {my_photos: {kind: imagefolder, root: ...}}``):
``root`` (required), ``classnames_file`` (one display name per line, in sorted folder order; default: the folder
names with ``_`` as spaces), ``templates`` (each with exactly one ``{}``; default ``["a photo of a {}."]``),
``split`` (``test``), ``limit`` and ``seed``. Paths are relative to the working directory (the repository root).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ._local import FALLBACK_TEMPLATES, IMAGE_SUFFIXES, LOCAL_VERSION, check_split, manifest_row
from .helpers import subset_rows
from .kinds import REQUIRED, declaration_error, register_kind
from .manifest import _template_fields
from .registry import DatasetInfo


def class_folders(root: Path) -> list[str]:
    """The class folder names of an ImageFolder tree, sorted (hidden folders skipped)."""
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def require_class_folders(root: Path, source: str) -> list[str]:
    """:func:`class_folders`, refusing a tree without any."""
    folders = class_folders(root)
    if not folders:
        raise FileNotFoundError(f"{source}: expected class folders under {root} (ImageFolder layout root/<class>/...)")
    return folders


def image_files(folder: Path) -> list[Path]:
    """Image files (by suffix) anywhere below ``folder``, sorted by path."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_classnames_file(path: Path) -> list[str]:
    """Class display names of a text file, one per non-empty line (ends stripped)."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build_imagefolder(root: Path, *, name: str, source: str, classnames: Sequence[str], names_from: str,
                      templates: Sequence[str], split: str = "test", limit: int | None = None,
                      seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    """Zero-shot manifest of a ``root/<class>/<image>`` tree; ``classnames[i]`` names the i-th sorted folder.

    Images are used in place (no copy); ``limit`` keeps a seeded subset stratified by class.
    """
    check_split(split, ["test", "train"], source)
    folders = require_class_folders(root, source)
    if len(classnames) != len(folders):
        raise ValueError(f"{source}: {len(classnames)} class names for {len(folders)} class folders under {root}")
    rows, labels = [], []
    for label, folder in enumerate(folders):
        for path in image_files(root / folder):
            rows.append(manifest_row(path.relative_to(root).as_posix(), path, [], label, split, source))
            labels.append(label)
    if not rows:
        raise FileNotFoundError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)}) under {root}/<class>/")
    df = subset_rows(pd.DataFrame(rows), labels, limit, seed)
    counts = {"images": len(rows), "classes": len(folders), "rows": len(df), "classnames_source": names_from,
              "empty_classes": sum(1 for i in range(len(folders)) if i not in set(labels))}
    info = DatasetInfo(name=name, task="zeroshot", classnames=list(classnames), templates=list(templates),
                       source=source, version=LOCAL_VERSION, counts=counts, description=f"ImageFolder tree {root}")
    return df, info


def _template_problem(template: Any) -> str | None:
    try:
        ok = isinstance(template, str) and _template_fields(template) == [""]
    except ValueError:  # an unbalanced brace
        ok = False
    return None if ok else f"entry {template!r} must be a string with exactly one '{{}}'"


def _root_errors(name: str, root: Any) -> tuple[list[str], list[str] | None]:
    """Errors of ``root`` and its class folders (None when they could not be listed)."""
    if not isinstance(root, (str, os.PathLike)):
        return [declaration_error(name, "root", f"{root!r} must be a folder path")], None
    path = Path(root)
    if not path.is_dir():
        problem = "is not a folder" if path.exists() else "does not exist"
        return [declaration_error(name, "root", f"folder {path} {problem}")], None
    folders = class_folders(path)
    if not folders:
        return [declaration_error(name, "root", f"{path} has no class folders (expected {path}/<class>/<image>)")], []
    has_image = any(p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for f in folders for p in (path / f).rglob("*"))
    if not has_image:
        return [declaration_error(name, "root", f"no images ({', '.join(IMAGE_SUFFIXES)}) under {path}/<class>/")], []
    return [], folders


def _classnames_errors(name: str, classnames_file: Any, folders: list[str] | None) -> list[str]:
    if classnames_file is None:
        names = [f.replace("_", " ") for f in folders or []]
        dup = sorted({n for n in names if names.count(n) > 1})
        return [declaration_error(name, "root", f"class folders give duplicate class names {dup}")] if dup else []
    if not isinstance(classnames_file, (str, os.PathLike)) or not Path(classnames_file).is_file():
        return [declaration_error(name, "classnames_file", f"{classnames_file!r} is not an existing file")]
    try:
        names = read_classnames_file(Path(classnames_file))
    except (OSError, UnicodeDecodeError) as exc:
        return [declaration_error(name, "classnames_file", f"cannot read {classnames_file} as UTF-8 text ({exc})")]
    if folders and len(names) != len(folders):
        return [declaration_error(name, "classnames_file", f"{classnames_file} has {len(names)} non-empty lines for "
                                                           f"{len(folders)} class folders")]
    dup = sorted({n for n in names if names.count(n) > 1})
    return [declaration_error(name, "classnames_file", f"duplicate class names {dup}")] if dup else []


def check_imagefolder(name: str, options: Mapping[str, Any]) -> list[str]:
    """The problems of an ``imagefolder`` declaration (lists folders, reads the class-name file; no decoding)."""
    errors, folders = _root_errors(name, options["root"])
    errors += _classnames_errors(name, options["classnames_file"], folders)
    templates = options["templates"]
    if not isinstance(templates, (list, tuple)) or not templates:
        errors.append(declaration_error(name, "templates", f"{templates!r} must be a non-empty list of strings"))
    else:
        errors += [declaration_error(name, "templates", p) for p in map(_template_problem, templates) if p]
    if options["split"] not in ("train", "test"):
        errors.append(declaration_error(name, "split", f"{options['split']!r} must be 'train' or 'test'"))
    return errors


@register_kind("imagefolder", task="zeroshot", check=check_imagefolder,
               options={"root": REQUIRED, "classnames_file": None, "templates": list(FALLBACK_TEMPLATES),
                        "split": "test"},
               description="zero-shot classification set of an ImageFolder tree <root>/<class>/<image>")
def build_imagefolder_kind(resources_dir: Path, images_dir: Path, *, name: str, root: str,
                           classnames_file: str | None = None, templates: Sequence[str] = FALLBACK_TEMPLATES,
                           split: str = "test", limit: int | None = None,
                           seed: int = 0) -> tuple[pd.DataFrame, DatasetInfo]:
    """Build a declared ``imagefolder`` dataset; ``resources_dir``/``images_dir`` are unused (images in place)."""
    tree = Path(root)
    folders = require_class_folders(tree, name)
    if classnames_file is None:
        classnames, names_from = [f.replace("_", " ") for f in folders], "folder names"
    else:
        classnames, names_from = read_classnames_file(Path(classnames_file)), str(classnames_file)
    return build_imagefolder(tree, name=name, source=name, classnames=classnames, names_from=names_from,
                             templates=templates, split=split, limit=limit, seed=seed)
