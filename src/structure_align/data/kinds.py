"""Kinds and user dataset declarations (docs/datasets.md "Your own datasets").

A *kind* is a generic builder, such as an image folder or a captions file. A user declares any number of named
datasets of a kind in ``params.yaml``::

    user_datasets:
      my_photos: {kind: imagefolder, root: data/photos}
      my_pairs: {kind: captions, file: data/pairs.csv}

:func:`check_declaration` refuses a bad declaration before any job runs, with one
``params key 'user_datasets.<name>.<key>': <problem>`` message per problem. :func:`dataset_spec` turns a
declaration into a :class:`DatasetSpec` that :func:`structure_align.data.build_manifest` builds like a registered
dataset. The kinds themselves live in their own modules (``imagefolder``, ``captions``) and register with
:func:`register_kind`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import registry
from .registry import _NAME_RE, COMMON_OPTIONS, TASKS, BuildFn, DatasetInfo, DatasetSpec, _check_builder_signature

USER_DATASETS_KEY = "user_datasets"


class _Required:
    """Marks a kind option that every declaration must set (see :data:`REQUIRED`)."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
# check(name, options) -> error messages; ``options`` are the kind's defaults overridden by the declared keys
CheckFn = Callable[[str, Mapping[str, Any]], "list[str]"]


class DeclarationError(ValueError):
    """A user dataset declaration is refused; the message holds one ``params key '...': ...`` line per problem."""


def declaration_error(name: str, key: str | None, problem: str) -> str:
    """``"params key 'user_datasets.<name>[.<key>]': <problem>"``, the format of every declaration error."""
    path = f"{USER_DATASETS_KEY}.{name}" + (f".{key}" if key else "")
    return f"params key '{path}': {problem}"


@dataclass(frozen=True)
class KindSpec:
    """A generic dataset builder: ``build(resources_dir, images_dir, *, name, **options)`` plus a fast ``check``.

    ``options`` are the declaration keys with their defaults (:data:`REQUIRED` for the required ones; ``limit`` and
    ``seed`` are always added). ``check`` must only list files and read text (no image decoding), so that every
    declaration can be checked before any job runs.
    """

    name: str
    task: str
    build: BuildFn
    check: CheckFn
    options: dict[str, Any]
    description: str = ""

    @property
    def required(self) -> tuple[str, ...]:
        """The keys a declaration of this kind must set."""
        return tuple(k for k, v in self.options.items() if v is REQUIRED)

    def resolve(self, declared: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults (without the required markers) overridden by the declared keys that this kind knows."""
        defaults = {k: v for k, v in self.options.items() if v is not REQUIRED}
        return {**defaults, **{k: v for k, v in declared.items() if k in self.options}}

    def spec(self, name: str, declaration: Mapping[str, Any]) -> DatasetSpec:
        """The :class:`DatasetSpec` of a (checked) declaration: no sources, declared keys as option defaults."""
        kind_build = self.build

        def build(resources_dir: Path, images_dir: Path, **options: Any) -> tuple[pd.DataFrame, DatasetInfo]:
            return kind_build(resources_dir, images_dir, name=name, **options)

        build.__qualname__ = build.__name__ = f"{kind_build.__name__}[{name}]"
        declared = {k: v for k, v in declaration.items() if k != "kind"}
        return DatasetSpec(name=name, sources=(), task=self.task, build=build, options=self.resolve(declared),
                           description=f"user dataset of kind {self.name!r}", kind=self.name)


KINDS: dict[str, KindSpec] = {}


def register_kind(name: str, *, task: str, options: Mapping[str, Any], check: CheckFn,
                  description: str = "") -> Callable[[BuildFn], BuildFn]:
    """Decorator registering ``build(resources_dir, images_dir, *, name, **options)`` as the kind ``name``."""
    if not _NAME_RE.match(name):
        raise ValueError(f"kind name {name!r} must match {_NAME_RE.pattern}")
    if task not in TASKS:
        raise ValueError(f"kind {name!r}: task {task!r} is not one of {TASKS}")
    if {"kind", "name"} & set(options):
        raise ValueError(f"kind {name!r}: 'kind' and 'name' cannot be option names")
    defaults = {**COMMON_OPTIONS, **dict(options)}

    def decorator(build: BuildFn) -> BuildFn:
        _check_builder_signature(f"kind {name}", build, {**defaults, "name": None})
        old = KINDS.get(name)
        if old is not None and old.build is not build:
            raise ValueError(f"kind {name!r} is already registered by {old.build.__module__}")
        KINDS[name] = KindSpec(name=name, task=task, build=build, check=check, options=defaults,
                               description=description)
        return build

    return decorator


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _common_errors(name: str, declared: Mapping[str, Any]) -> list[str]:
    errors = []
    limit = declared.get("limit")
    if limit is not None and not (_is_int(limit) and limit >= 1):
        errors.append(declaration_error(name, "limit", f"{limit!r} must be null or a positive integer"))
    if "seed" in declared and not _is_int(declared["seed"]):
        errors.append(declaration_error(name, "seed", f"{declared['seed']!r} must be an integer"))
    return errors


def check_declaration(name: str, declaration: Any) -> list[str]:
    """Every problem of the user dataset declaration ``user_datasets.<name>`` (empty = accepted).

    Checked: the name (pattern, not a registered dataset), ``kind``, unknown and missing keys, ``limit``/``seed``,
    then the kind's own check (files exist and parse, columns, images, class names, templates). Fast: files are
    listed and text files read, images are not decoded.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        return [declaration_error(str(name), None, f"the name must match {_NAME_RE.pattern}")]
    errors = []
    if name in registry.DATASETS:  # looked up at call time: tests swap the registry
        errors.append(declaration_error(name, None, "the name is already a registered dataset"))
    if not isinstance(declaration, Mapping):
        return [*errors, declaration_error(name, None, f"expected a mapping with a 'kind' key, got "
                                                       f"{type(declaration).__name__}")]
    kind_name = declaration.get("kind")
    if kind_name not in KINDS:
        problem = "missing required key" if kind_name is None else f"unknown kind {kind_name!r}"
        return [*errors, declaration_error(name, "kind", f"{problem}; known kinds: {', '.join(sorted(KINDS))}")]
    kind = KINDS[kind_name]
    declared = {k: v for k, v in declaration.items() if k != "kind"}
    for key in sorted(set(declared) - set(kind.options), key=str):
        errors.append(declaration_error(name, str(key), f"unknown key for kind {kind.name!r}; known keys: "
                                                        f"{', '.join(['kind', *kind.options])}"))
    missing = [k for k in kind.required if declared.get(k) is None]
    errors += [declaration_error(name, k, f"missing required key of kind {kind.name!r}") for k in missing]
    errors += _common_errors(name, declared)
    if not missing:
        errors += kind.check(name, kind.resolve(declared))
    return errors


def check_declarations(declarations: Any) -> list[str]:
    """:func:`check_declaration` of every entry of the ``user_datasets`` mapping (``None`` = no user datasets)."""
    if declarations is None:
        return []
    if not isinstance(declarations, Mapping):
        got = type(declarations).__name__
        return [f"params key '{USER_DATASETS_KEY}': expected a mapping of dataset names to declarations, got {got}"]
    return [msg for name, decl in declarations.items() for msg in check_declaration(name, decl)]


def dataset_spec(name: str, declaration: Mapping[str, Any] | None = None) -> DatasetSpec:
    """The spec of the registered dataset ``name``, or of the user dataset ``name`` declared by ``declaration``.

    A declaration is checked first (:func:`check_declaration`); any problem raises :class:`DeclarationError` listing
    them all. An unknown registered name raises :class:`UnknownNameError`.
    """
    if declaration is None:
        return registry.get_dataset(name)
    errors = check_declaration(name, declaration)
    if errors:
        raise DeclarationError("\n".join(errors))
    return KINDS[declaration["kind"]].spec(name, declaration)


def dataset_specs(declarations: Mapping[str, Any] | None = None) -> dict[str, DatasetSpec]:
    """Registered datasets plus the declared user datasets, by name (raises :class:`DeclarationError`)."""
    errors = check_declarations(declarations)
    if errors:
        raise DeclarationError("\n".join(errors))
    return {**registry.DATASETS, **{name: dataset_spec(name, decl) for name, decl in (declarations or {}).items()}}
