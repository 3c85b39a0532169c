"""Class names and prompt templates of the paper's zero-shot sets, as released (docs/method.md §7, §11).

The released evaluation builds each zero-shot classifier from ``DATASETS_TO_CLASSES`` and ``DATASETS_TO_TEMPLATES``
of its ``src/evaluation/consts.py``. Those entries of the paper's sets are package data here
(``released_zeroshot.json``, its ``origin`` names repository, commit, file and licence), so that the lists are
installed with the code and pinned by it: nothing falls back silently when an optional package is missing.

Three choices, per dataset by the manifest option ``prompts`` (docs/datasets.md):

* ``released`` (default): the released class names and templates. The builder must be able to assign every class
  its released name, or it raises before writing anything;
* ``simple``: the released class names with the single template the released code uses without extended prompts
  (``SIMPLE_PROMPT_TEMPLATE``, "a photo of a {}");
* ``fallback``: names derived from the dataset's files and "a photo of a {}." (for partial trees); the paper table
  marks such columns.

Every manifest built here records the choice, the origin and the sha256 of the package data in its ``counts``
(:func:`prompt_counts`), and the manifest rule reruns when the package data changes (:func:`rule_token`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from importlib.resources import files
from typing import Any

from ..io import sha256_bytes

PACKAGE_FILE = "released_zeroshot.json"
# manifest dataset name -> key of the released consts.py
RELEASED_KEYS: dict[str, str] = {
    "stl10": "stl10", "cifar10": "cifar10", "cifar100": "cifar100", "caltech101": "caltech101",
    "food101": "food101", "imagenet": "imagenet", "pets": "pets", "mnist": "mnist", "dtd": "dtd",
    "flowers102": "flowers", "country211": "country211",
}
CHOICES: tuple[str, ...] = ("released", "simple", "fallback")
SIMPLE_TEMPLATE = "a photo of a {}"  # released SIMPLE_PROMPT_TEMPLATE (no full stop)
FALLBACK_TEMPLATE = "a photo of a {}."


@lru_cache(maxsize=1)
def _package_text() -> str:
    return files("structure_align.data").joinpath(PACKAGE_FILE).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def _package() -> dict[str, Any]:
    data = json.loads(_package_text())
    for key in RELEASED_KEYS.values():
        entry = data["sets"].get(key)
        if entry is None or not entry["classnames"] or not entry["templates"]:
            raise ValueError(f"{PACKAGE_FILE}: set {key!r} lacks class names or templates")
        if any(t.count("{}") != 1 for t in entry["templates"]):
            raise ValueError(f"{PACKAGE_FILE}: a template of {key!r} does not hold exactly one '{{}}'")
    return data


def package_sha256() -> str:
    """sha256 of the installed package data (the lists' version)."""
    return sha256_bytes(_package_text().encode("utf-8"))


def rule_token(dataset: str) -> str:
    """What the manifest rule's params carry for ``dataset``: the package data's sha256 for a paper zero-shot set
    (a changed list rebuilds its manifests), ``""`` for every other dataset (their rules are unaffected)."""
    return f"{PACKAGE_FILE}@{package_sha256()}" if dataset in RELEASED_KEYS else ""


def released_classnames(dataset: str) -> list[str]:
    """The released class names of ``dataset`` in the released label order."""
    return list(_package()["sets"][RELEASED_KEYS[dataset]]["classnames"])


def released_templates(dataset: str) -> list[str]:
    """The released prompt templates of ``dataset`` (``{}`` marks the class name)."""
    return list(_package()["sets"][RELEASED_KEYS[dataset]]["templates"])


def check_choice(dataset: str, prompts: str) -> None:
    """``ValueError`` naming the manifest option unless ``prompts`` is one of :data:`CHOICES`."""
    if prompts not in CHOICES:
        raise ValueError(f"{dataset}: manifest option prompts={prompts!r} is not one of {list(CHOICES)}")


def names_by_index(dataset: str, n_classes: int, where: str) -> list[str]:
    """Released names of classes ``0..n_classes-1`` when the dataset's labels are the set's own class indices
    (CIFAR, STL10, MNIST, Flowers102 files); more classes than released raise ``ValueError``."""
    names = released_classnames(dataset)
    if n_classes > len(names):
        raise ValueError(f"{dataset}: {where} has {n_classes} classes, the released list {len(names)}")
    return names[:n_classes]


def names_by_key(dataset: str, keys: Sequence[str], where: str) -> list[str]:
    """Released names of classes identified by file names (Pets breeds, Food-101 ids, DTD folders): a key's name is
    the key with ``_`` read as a space, and it must be in the released list (else ``ValueError`` naming it)."""
    released = set(released_classnames(dataset))
    names = [k.replace("_", " ") for k in keys]
    unknown = [k for k, n in zip(keys, names) if n not in released]
    if unknown:
        raise ValueError(f"{dataset}: class(es) {unknown[:5]} of {where} have no released name; set manifest option "
                         f"prompts: fallback to use names from the files")
    return names


def names_positional(dataset: str, n_classes: int, where: str, *, skip: int = 0) -> list[str]:
    """Released names in order for a tree of the full set (sorted class folders: Caltech101, Country211, ImageNet);
    ``skip`` leading released names are left out (Caltech101 without its background class). Another class count
    raises ``ValueError``: the names could not be matched to the folders."""
    names = released_classnames(dataset)[skip:]
    if n_classes != len(names):
        raise ValueError(f"{dataset}: {where} has {n_classes} class folders, the released list names {len(names)} "
                         f"in order; place the full set or set manifest option prompts: fallback")
    return names


def zeroshot_prompts(dataset: str, prompts: str, released_names: Any, file_names: Sequence[str]
                     ) -> tuple[list[str], list[str], dict[str, str]]:
    """``(class names, templates, counts entries)`` of ``dataset`` for the option ``prompts`` (module docstring).

    ``released_names`` is a zero-argument callable giving the released names for this tree (one of the ``names_*``
    helpers); it is only called for ``released`` / ``simple``; ``file_names`` are the names derived from the files.
    """
    check_choice(dataset, prompts)
    if prompts == "fallback":
        names, templates, names_from = list(file_names), [FALLBACK_TEMPLATE], "files"
    else:
        names = list(released_names())
        templates = released_templates(dataset) if prompts == "released" else [SIMPLE_TEMPLATE]
        names_from = "released"
    return names, templates, prompt_counts(dataset, prompts, names_from)


def prompt_counts(dataset: str, prompts: str, names_from: str) -> dict[str, str]:
    """The manifest ``counts`` entries that say where the names and templates came from."""
    origin = _package()["origin"]
    source = f"{PACKAGE_FILE} sha256:{package_sha256()[:16]} = {origin['file']}@{origin['commit'][:7]}"
    return {"prompts": prompts, "prompts_source": source,
            "classnames_source": f"{source} [{RELEASED_KEYS[dataset]}]" if names_from == "released" else "files",
            "templates_source": {"released": f"{source} [{RELEASED_KEYS[dataset]}]", "simple": SIMPLE_TEMPLATE,
                                 "fallback": FALLBACK_TEMPLATE}[prompts]}
