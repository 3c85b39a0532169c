"""Datasets: registries, the manifest format, acquisition, and one module per dataset, format or kind.

Importing this package imports every *dataset module* of it, found by scanning the package with ``pkgutil`` (as
timm's ``@register_model`` does): each registers its own source pins, datasets and kinds in its own file, so a new
dataset is one new file here. Infrastructure modules (:data:`INFRASTRUCTURE`) and helper modules (names starting with
``_``) are not scanned. Dataset modules import optional third-party libraries (cairosvg, open_clip, zstandard) inside
functions, so a missing one never breaks this import; torch is never imported here.
"""

from __future__ import annotations

import importlib
import pkgutil

from ..io import sha256_file
from .acquire import AcquireError, acquire
from .download import DownloadError, fetch
from .helpers import (
    assert_split_disjoint,
    composite_on_white,
    connected_groups,
    grouped_split,
    save_png,
    split_pairs,
    stratified_subset,
    subset_rows,
)
from .kinds import (
    KINDS,
    REQUIRED,
    DeclarationError,
    KindSpec,
    check_declaration,
    check_declarations,
    dataset_spec,
    dataset_specs,
    declaration_error,
    register_kind,
)
from .manifest import (
    COLUMNS,
    SPLITS,
    ManifestError,
    build_manifest,
    dataset_texts,
    manifest_sha256,
    read_info,
    read_manifest,
    validate_manifest,
    write_manifest,
)
from .registry import (
    DATASETS,
    SOURCE_ORIGINS,
    SOURCES,
    TASKS,
    DatasetInfo,
    DatasetSpec,
    Download,
    SourceSpec,
    UnknownNameError,
    get_dataset,
    get_source,
    list_datasets,
    register_dataset,
    register_source,
    source_dir,
)

# modules of this package that define the machinery rather than datasets; never scanned
INFRASTRUCTURE: frozenset[str] = frozenset({"acquire", "download", "helpers", "images", "kinds", "manifest",
                                                "placed", "preflight", "prompts", "rcc", "registry"})


def _dataset_modules() -> tuple[str, ...]:
    """Names of the dataset modules of this package: every module that is not infrastructure or a ``_`` helper."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__)
                        if not m.ispkg and not m.name.startswith("_") and m.name not in INFRASTRUCTURE))


DATASET_MODULES: tuple[str, ...] = _dataset_modules()
for _name in DATASET_MODULES:
    importlib.import_module(f"{__name__}.{_name}")
del _name

__all__ = [
    "COLUMNS", "DATASETS", "DATASET_MODULES", "INFRASTRUCTURE", "KINDS", "REQUIRED", "SOURCES", "SOURCE_ORIGINS",
    "SPLITS", "TASKS", "AcquireError", "DatasetInfo", "DatasetSpec", "DeclarationError", "Download", "DownloadError", "KindSpec", "ManifestError",
    "SourceSpec", "UnknownNameError", "acquire", "assert_split_disjoint", "build_manifest", "check_declaration",
    "check_declarations", "composite_on_white", "connected_groups", "dataset_spec", "dataset_specs", "dataset_texts",
    "declaration_error", "fetch", "get_dataset", "get_source", "grouped_split", "list_datasets", "manifest_sha256",
    "read_info", "read_manifest", "register_dataset", "register_kind", "register_source", "save_png", "sha256_file",
    "source_dir", "split_pairs", "stratified_subset", "subset_rows", "validate_manifest", "write_manifest",
]
