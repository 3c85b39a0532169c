"""Source and dataset registries (docs/design.md "Manifest"; docs/method.md §7 datasets, docs/datasets.md sources).

A *source* is a pinned package fetched with an ordinary client (apt, npm) or a directory the user provides (local);
a *dataset* is a builder that turns one or more acquired sources into a manifest table plus a :class:`DatasetInfo`;
a *kind* (:mod:`.kinds`) is a generic builder that a user dataset declared in ``params.yaml`` is built with. Each
dataset module registers its own source pins and datasets at import time, next to its builder, through
:func:`register_source` and :func:`register_dataset`; ``structure_align.data`` imports every dataset module of the
package (found with ``pkgutil``).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

CLIENTS: tuple[str, ...] = ("apt", "npm", "url", "local")
TASKS: tuple[str, ...] = ("pairs", "zeroshot", "retrieval")
# every builder takes these two options (CI subsets and the seeded split); added to each spec's defaults
COMMON_OPTIONS: dict[str, Any] = {"limit": None, "seed": 0}

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.+-]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_MD5_RE = re.compile(r"^[0-9a-f]{32}$")
UNPACK: tuple[str, ...] = ("auto", "zip", "tar", "none")


class UnknownNameError(KeyError):
    """A dataset or source name that is not registered; the message lists the registered names."""

    def __str__(self) -> str:  # KeyError would repr() the message and hide the line breaks / quotes
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Download:
    """One file of a ``url`` source: where it is published, how it is pinned and where it goes.

    ``file`` names the file in the download cache (and under a mirror: ``<mirror>/<source>/<file>``); ``sha256`` or,
    where the publisher gives only that, ``md5`` pins its bytes; ``size`` (bytes, optional) lets a truncated file be
    named as such. ``unpack`` is ``auto`` (by suffix: .zip, .tar, .tar.gz, .tgz), ``zip``, ``tar`` or ``none`` (the
    file is placed as is); ``into`` is the folder of the source tree it is unpacked into (or placed in); ``inner``
    are archives inside it (paths relative to ``into``) that are unpacked in turn and then removed.
    """

    file: str
    url: str
    sha256: str = ""
    md5: str = ""
    size: int | None = None
    unpack: str = "auto"
    into: str = ""
    inner: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.file or "/" in self.file or self.file.startswith("."):
            raise ValueError(f"download file name {self.file!r} must be a plain file name")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"download {self.file!r}: url {self.url!r} must be http(s)")
        if not (_SHA256_RE.match(self.sha256) or (not self.sha256 and _MD5_RE.match(self.md5))):
            raise ValueError(f"download {self.file!r}: needs a sha256 (64 hex digits) or, where only that is "
                             f"published, an md5 (32 hex digits); got sha256={self.sha256!r} md5={self.md5!r}")
        if self.unpack not in UNPACK:
            raise ValueError(f"download {self.file!r}: unpack {self.unpack!r} is not one of {UNPACK}")
        object.__setattr__(self, "inner", tuple(self.inner))

    @property
    def checksum(self) -> tuple[str, str]:
        """``(algorithm, hex digest)`` the file is verified with: sha256 when pinned, else md5."""
        return ("sha256", self.sha256) if self.sha256 else ("md5", self.md5)


@dataclass(frozen=True)
class SourceSpec:
    """A pinned raw source.

    ``files`` are paths (relative to the unpacked package root) that must exist after acquisition; they are what the
    dataset builders read, so acquisition checks them before writing ``SOURCE.json``. For ``local`` sources
    ``package`` is a human hint of what to place under ``resources/<name>/`` and ``version``/``sha256`` may be empty.
    A ``url`` source lists its published files in ``downloads`` (each pinned by its own checksum; ``sha256`` of the
    spec stays empty) and names the release in ``version``.
    """

    name: str
    client: str
    package: str
    version: str
    sha256: str
    files: tuple[str, ...] = ()
    licence: str = ""
    description: str = ""
    downloads: tuple[Download, ...] = ()

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"source name {self.name!r} must match {_NAME_RE.pattern}")
        if self.client not in CLIENTS:
            raise ValueError(f"source {self.name!r}: client {self.client!r} is not one of {CLIENTS}")
        object.__setattr__(self, "downloads", tuple(self.downloads))
        if self.client == "url":
            if not self.downloads or not self.version:
                raise ValueError(f"source {self.name!r}: client 'url' needs downloads and a version")
            names = [d.file for d in self.downloads]
            if len(set(names)) != len(names):
                raise ValueError(f"source {self.name!r}: download file names {names} are not unique")
        elif self.downloads:
            raise ValueError(f"source {self.name!r}: downloads are only for client 'url', not {self.client!r}")
        elif self.client != "local":
            if not self.package or not self.version:
                raise ValueError(f"source {self.name!r}: client {self.client!r} needs a package and a pinned version")
            if not _SHA256_RE.match(self.sha256):
                raise ValueError(f"source {self.name!r}: sha256 {self.sha256!r} is not 64 lower-case hex digits")
        object.__setattr__(self, "files", tuple(self.files))

    @property
    def pin(self) -> str:
        """One string that changes whenever what is fetched changes (the workflow's params trigger of acquisition)."""
        base = f"{self.client}:{self.package}={self.version}@{self.sha256}"
        if self.client != "url":
            return base
        return base + "".join(f"|{d.file}<{d.url}#{':'.join(d.checksum)}" for d in self.downloads)


@dataclass
class DatasetInfo:
    """The JSON that sits beside every manifest parquet (docs/design.md "Manifest").

    ``templates`` hold exactly one ``{}`` each and are only used for zero-shot sets; ``counts`` is free-form
    bookkeeping of the builder (skipped files, duplicates, ...); ``manifest_sha256`` is filled in by
    :func:`structure_align.data.manifest.write_manifest`.
    """

    name: str
    task: str
    classnames: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    source: str = ""
    version: str = ""
    description: str = ""
    counts: dict[str, Any] = field(default_factory=dict)
    manifest_sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict, keys in field order."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "DatasetInfo") -> DatasetInfo:
        """Rebuild from :meth:`to_dict` output; unknown or missing keys raise ``ValueError`` naming ``where``."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"{where}: unknown DatasetInfo keys {unknown}; expected {names}")
        for key in ("name", "task"):
            if key not in data:
                raise ValueError(f"{where}: DatasetInfo key {key!r} is missing")
        return cls(**{k: data[k] for k in names if k in data})


BuildFn = Callable[..., "tuple[pd.DataFrame, DatasetInfo]"]


@dataclass(frozen=True)
class DatasetSpec:
    """A registered or declared dataset: its sources, task, builder and option defaults.

    ``build(resources_dir, images_dir, **options) -> (df, info)``: ``resources_dir`` is the root that holds
    ``<source>/`` folders, ``images_dir`` the folder reserved for this dataset's materialised images. A dataset
    declared in ``params.yaml`` has no sources and names its ``kind``; its declared keys are its option defaults.
    """

    name: str
    sources: tuple[str, ...]
    task: str
    build: BuildFn
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    kind: str = ""

    @property
    def source(self) -> str:
        """The primary source name ('' for datasets that need none)."""
        return self.sources[0] if self.sources else ""

    def resolve_options(self, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults overridden by ``options``; an unknown option name raises ``ValueError`` listing the known ones."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"dataset {self.name!r}: unknown option(s) {unknown}; known: {sorted(self.options)}")
        merged = {**self.options, **options}
        limit = merged.get("limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"dataset {self.name!r}: option limit={limit!r} must be None or a positive int")
        seed = merged.get("seed")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"dataset {self.name!r}: option seed={seed!r} must be an int")
        return merged


SOURCES: dict[str, SourceSpec] = {}
DATASETS: dict[str, DatasetSpec] = {}
# source name -> the module that registered it (its pin sits beside the builder that reads it)
SOURCE_ORIGINS: dict[str, str] = {}


def register_source(spec: SourceSpec) -> SourceSpec:
    """Add a source; re-registering the same name with a different spec is an error (pins must be unique).

    Called at the top of the dataset module that builds from the source; the calling module is recorded in
    :data:`SOURCE_ORIGINS`.
    """
    old = SOURCES.get(spec.name)
    if old is not None and old != spec:
        raise ValueError(f"source {spec.name!r} is already registered with a different spec: {old}")
    SOURCES[spec.name] = spec
    SOURCE_ORIGINS.setdefault(spec.name, sys._getframe(1).f_globals.get("__name__", ""))
    return spec


def _check_builder_signature(name: str, build: BuildFn, options: Mapping[str, Any]) -> None:
    """Fail at import time, not mid-workflow, when a builder cannot take its declared options."""
    params = inspect.signature(build).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    missing = [opt for opt in options if opt not in params]
    if missing:
        raise TypeError(f"dataset {name!r}: builder {build.__qualname__} does not accept option(s) {missing}")


def register_dataset(name: str, *, sources: str | tuple[str, ...] | list[str] = (), task: str,
                     description: str = "", options: Mapping[str, Any] | None = None) -> Callable[[BuildFn], BuildFn]:
    """Decorator registering ``build(resources_dir, images_dir, **options)`` as dataset ``name``.

    ``options`` are the defaults; ``limit`` (None = all rows) and ``seed`` (0) are always added. The sources must be
    registered first so that a typo surfaces when the module is imported.
    """
    if not _NAME_RE.match(name):
        raise ValueError(f"dataset name {name!r} must match {_NAME_RE.pattern}")
    if task not in TASKS:
        raise ValueError(f"dataset {name!r}: task {task!r} is not one of {TASKS}")
    source_names = (sources,) if isinstance(sources, str) else tuple(sources)
    for src in source_names:
        if src not in SOURCES:
            raise ValueError(f"dataset {name!r}: source {src!r} is not registered; known: {sorted(SOURCES)}")
    defaults = {**COMMON_OPTIONS, **dict(options or {})}

    def decorator(build: BuildFn) -> BuildFn:
        _check_builder_signature(name, build, defaults)
        spec = DatasetSpec(name=name, sources=source_names, task=task, build=build, description=description,
                           options=defaults)
        old = DATASETS.get(name)
        if old is not None and old.build is not build:
            raise ValueError(f"dataset {name!r} is already registered by {old.build.__module__}")
        DATASETS[name] = spec
        return build

    return decorator


def get_dataset(name: str) -> DatasetSpec:
    """The spec of ``name``; unknown names raise :class:`UnknownNameError` listing the registered datasets."""
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise UnknownNameError(f"unknown dataset {name!r}; registered datasets: {known}") from None


def get_source(name: str) -> SourceSpec:
    """The spec of ``name``; unknown names raise :class:`UnknownNameError` listing the registered sources."""
    try:
        return SOURCES[name]
    except KeyError:
        raise UnknownNameError(f"unknown source {name!r}; registered sources: {', '.join(sorted(SOURCES))}") from None


def source_dir(resources_dir: str | Path, name: str, subdir: str | None = None) -> Path:
    """``resources/<name>/[<subdir>]`` of an acquired source; raises ``FileNotFoundError`` saying how to acquire it,
    or, when ``subdir`` is missing from an acquired source, that the source looks incomplete."""
    get_source(name)
    path = Path(resources_dir) / name
    if not (path / "SOURCE.json").is_file():
        raise FileNotFoundError(
            f"source {name!r} is not acquired: {path / 'SOURCE.json'} is missing; acquire it first with "
            f"structure_align.data.acquire({name!r}, {str(resources_dir)!r}) (the workflow's acquire step)")
    if subdir is None:
        return path
    if not (path / subdir).is_dir():
        raise FileNotFoundError(f"{path / subdir} does not exist; the acquired {name} looks incomplete, re-acquire it")
    return path / subdir


def list_datasets() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(DATASETS)
