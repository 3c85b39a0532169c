"""Datasets: source and dataset registries, the manifest format, acquisition and one module per source.

Importing this package registers every dataset. The modules of the paper's hub datasets and the GCompris reader
(``gcompris``, ``paper``) are optional here so that the package works whichever of them is present.
"""

from __future__ import annotations

import importlib

from .acquire import AcquireError, acquire, sha256_file
from .manifest import (
    COLUMNS,
    SPLITS,
    ManifestError,
    assert_split_disjoint,
    build_manifest,
    composite_on_white,
    connected_groups,
    dataset_texts,
    file_sha256,
    grouped_split,
    manifest_sha256,
    read_info,
    read_manifest,
    save_png,
    split_pairs,
    stratified_subset,
    validate_manifest,
    write_manifest,
)
from .registry import (
    DATASETS,
    SOURCES,
    DatasetInfo,
    DatasetSpec,
    SourceSpec,
    UnknownNameError,
    get_dataset,
    get_source,
    list_datasets,
    register_dataset,
    register_source,
    source_dir,
)

_SOURCE_MODULES: tuple[str, ...] = ("tuxpaint", "emoji", "fashion_mnist", "art4apps")
_OPTIONAL_MODULES: tuple[str, ...] = ("gcompris", "paper")

for _mod in _SOURCE_MODULES:
    importlib.import_module(f".{_mod}", __name__)
for _mod in _OPTIONAL_MODULES:
    try:
        importlib.import_module(f".{_mod}", __name__)
    except ModuleNotFoundError as _exc:
        # only "this optional module does not exist yet" is tolerated; a missing dependency inside it is a bug
        if _exc.name != f"{__name__}.{_mod}":
            raise
del _mod

__all__ = [
    "COLUMNS", "DATASETS", "SOURCES", "SPLITS", "AcquireError", "DatasetInfo", "DatasetSpec", "ManifestError",
    "SourceSpec", "UnknownNameError", "acquire", "assert_split_disjoint", "build_manifest", "composite_on_white",
    "connected_groups", "dataset_texts", "file_sha256", "get_dataset", "get_source", "grouped_split", "list_datasets",
    "manifest_sha256", "read_info", "read_manifest", "register_dataset", "register_source", "save_png", "sha256_file",
    "source_dir", "split_pairs", "stratified_subset", "validate_manifest", "write_manifest",
]
