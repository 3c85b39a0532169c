"""Hand-placed sources that are missing: plan the paper run without them (docs/paper-profile.md "What is run").

ImageNet and Flickr30k cannot be downloaded (``client="local"``); a user without them would otherwise see the paper
run stop at their acquisition. With params ``paper.missing_local: skip`` (the paper configs' setting) the workflow
leaves every evaluation-only dataset whose hand-placed files are absent out of ``datasets.retrieval``,
``datasets.zeroshot`` and ``datasets.all`` before planning, runs every other column, and the paper table marks the
left-out columns "not run: place <what> at <where>" (:func:`column_notes`). ``fail`` (the default) keeps the
acquisition error. Training datasets are never left out: without them there is no table.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from .prompts import RELEASED_KEYS, SIMPLE_TEMPLATE
from .registry import SOURCES

CHOICES: tuple[str, ...] = ("fail", "skip")
EVAL_LISTS: tuple[str, ...] = ("retrieval", "zeroshot", "all")


def missing_local(dataset: str, sources: tuple[str, ...], resources_dir: str | Path) -> str | None:
    """``"place <what> at <where>"`` when a hand-placed source of ``dataset`` lacks its expected files, else None."""
    for name in sources:
        spec = SOURCES.get(name)
        if spec is None or spec.client != "local":
            continue
        dest = Path(resources_dir) / name
        missing = [f for f in spec.files if not (dest / f).exists()]
        if missing:
            return f"place {spec.package} at {dest}/ (missing: {', '.join(missing)})"
    return None


def skip_missing_local(config: MutableMapping[str, Any], specs: Mapping[str, Any],
                       resources_dir: str | Path = "resources") -> dict[str, str]:
    """Under ``paper.missing_local: skip``, remove the evaluation datasets whose hand-placed source is missing from
    ``config["datasets"]`` (in place) and return ``{dataset: "place ... at ..."}``; ``{}`` under ``fail``."""
    if ((config.get("paper") or {}).get("missing_local") or "fail") != "skip":
        return {}
    lists = config["datasets"]
    train = set(lists["train"])
    candidates = dict.fromkeys(d for key in EVAL_LISTS for d in lists.get(key) or [] if d not in train)
    skipped = {d: note for d in candidates
               if (note := missing_local(d, tuple(getattr(specs.get(d), "sources", ()) or ()), resources_dir))}
    for key in EVAL_LISTS:
        if key in lists:
            lists[key] = [d for d in lists[key] if d not in skipped]
    return skipped


def column_notes(config: Mapping[str, Any], skipped: Mapping[str, str]) -> dict[str, str]:
    """``{dataset: note}`` the paper table prints: "not run: ..." for the skipped datasets, and which prompts a
    paper zero-shot set used when its manifest option is not the released lists (docs/method.md §11)."""
    notes = {d: f"not run: {msg}" for d, msg in skipped.items()}
    manifest = config.get("manifest") or {}
    for d in config["datasets"].get("zeroshot") or []:
        choice = (manifest.get(d) or {}).get("prompts", "released")
        if d in RELEASED_KEYS and choice != "released":
            what = (f"the single template {SIMPLE_TEMPLATE!r}" if choice == "simple"
                    else "class names from the files and one template")
            notes[d] = f"prompts: {choice} ({what}), not the released lists"
    return notes
