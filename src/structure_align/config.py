"""Workflow parameters: loading, merging and validating ``params.yaml`` (docs/workflow.md).

Validation happens before any job is planned and names the offending key in every message: the JSON schema
shipped with the package (``params.schema.yaml``) checks structure, types and ranges; :func:`check_params` adds what
a static schema cannot know (non-finite numbers, registered dataset, encoder and head names, encoder modalities,
dataset tasks, builder options, user dataset declarations, duplicate variants).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

SCHEMA_PATH = Path(__file__).with_name("params.schema.yaml")
# the task a dataset needs in each place of params `datasets`
_WANTED_TASK = {"train": ("pairs",), "retrieval": ("pairs", "retrieval"), "zeroshot": ("zeroshot",), "all": None}


class ParamsError(ValueError):
    """A params.yaml problem; the message names the key (dotted path) and the offending value."""


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a non-mapping top level raises :class:`ParamsError`."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file {path} does not exist")
    with path.open(encoding="utf-8") as fh:
        try:
            data = yaml.safe_load(fh)
        except yaml.YAMLError as exc:
            raise ParamsError(f"params file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ParamsError(f"params file {path}: top level must be a mapping, got {type(data).__name__}")
    return data


def merge_params(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge (lists and scalars of ``override`` replace), as Snakemake merges ``--configfile``."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_params(out[key], value)
        else:
            out[key] = value
    return out


def load_params(*paths: str | Path) -> dict[str, Any]:
    """``params.yaml`` merged with further config files in order (e.g. a profile under workflow/configs/)."""
    config: dict[str, Any] = {}
    for path in paths:
        config = merge_params(config, load_yaml(path))
    return config


def key_path(parts: Iterable[Any]) -> str:
    """``("training", "seeds", 1)`` -> ``training.seeds[1]``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<top level>"


def nonfinite_errors(value: Any, where: tuple = ()) -> list[str]:
    """NaN or infinite numbers anywhere in the config (JSON-schema range checks do not catch NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return [f"params key '{key_path(where)}': {value!r} is not a finite number"]
    if isinstance(value, Mapping):
        return [e for k, v in value.items() for e in nonfinite_errors(v, (*where, k))]
    if isinstance(value, list):
        return [e for i, v in enumerate(value) for e in nonfinite_errors(v, (*where, i))]
    return []


def schema_errors(config: Mapping[str, Any], schema_path: str | Path = SCHEMA_PATH) -> list[str]:
    """All JSON-schema violations of ``config`` as ``"params key 'a.b': message"`` strings (empty = valid)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_yaml(schema_path))
    errors = sorted(validator.iter_errors(dict(config)), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    messages = []
    for err in errors:
        if err.validator == "additionalProperties" and not err.absolute_path:
            messages.append(f"params: {err.message}")
        else:
            messages.append(f"params key '{key_path(err.absolute_path)}': {err.message}")
    return messages


def _default_encoder_modality() -> Callable[[str], str]:
    from .encoders import encoder_modality

    return encoder_modality


def dataset_specs(config: Mapping[str, Any]) -> dict[str, Any]:
    """Registered datasets plus the ``user_datasets`` declared in ``config`` (name -> DatasetSpec)."""
    from .data import DATASETS, dataset_spec

    specs: dict[str, Any] = dict(DATASETS)
    for name, declaration in (config.get("user_datasets") or {}).items():
        specs[name] = dataset_spec(name, declaration)
    return specs


def _user_dataset_errors(config: Mapping[str, Any]) -> list[str]:
    from .data import check_declaration

    return [e for name, decl in (config.get("user_datasets") or {}).items() for e in check_declaration(name, decl)]


def _dataset_errors(config: Mapping[str, Any], datasets: Mapping[str, Any]) -> list[str]:
    errors: list[str] = []
    known = ", ".join(sorted(datasets))
    for group, tasks in _WANTED_TASK.items():
        for i, name in enumerate(config.get("datasets", {}).get(group, [])):
            if name not in datasets:
                errors.append(f"params key 'datasets.{group}[{i}]': unknown dataset {name!r}; known: {known}")
            elif tasks is not None and datasets[name].task not in tasks:
                errors.append(f"params key 'datasets.{group}[{i}]': dataset {name!r} has task "
                              f"{datasets[name].task!r}, expected one of {list(tasks)}")
    for name, options in (config.get("manifest") or {}).items():
        if name not in datasets:
            errors.append(f"params key 'manifest.{name}': unknown dataset {name!r}; known: {known}")
            continue
        try:
            datasets[name].resolve_options(options)
        except (TypeError, ValueError) as exc:
            errors.append(f"params key 'manifest.{name}': {exc}")
    return errors


def _encoder_errors(config: Mapping[str, Any], encoder_modality: Callable[[str], str]) -> list[str]:
    errors: list[str] = []
    for group, modality in (("vision", "vision"), ("text", "text"), ("all_vision", "vision"), ("all_text", "text")):
        for i, name in enumerate(config.get("encoders", {}).get(group, [])):
            try:
                actual = encoder_modality(name)
            except (KeyError, ValueError, OSError) as exc:
                # KeyError/ValueError: not registered; OSError: a hub config that cannot be read (offline)
                errors.append(f"params key 'encoders.{group}[{i}]': unknown or unresolvable encoder {name!r} ({exc})")
                continue
            if actual != modality:
                errors.append(f"params key 'encoders.{group}[{i}]': encoder {name!r} is a {actual} encoder, "
                              f"expected {modality}")
    return errors


def _method_errors(config: Mapping[str, Any]) -> list[str]:
    from .heads import HEADS
    from .runs import variants

    errors = [f"params key 'methods[{i}].head': unknown head {m.get('head')!r}; expected one of {list(HEADS)}"
              for i, m in enumerate(config.get("methods", [])) if m.get("head") not in HEADS]
    if not errors:
        try:
            variants(config)
        except ValueError as exc:
            errors.append(str(exc))
    return errors


def _seeds_by_size_errors(config: Mapping[str, Any]) -> list[str]:
    """``training.seeds_by_size``: keys must be counts, and the list of a size of ``training.sizes`` a superset of
    ``training.seeds`` (:func:`runs.extra_seed_sets`). Entries for other sizes are unused (a config merged over
    params.yaml that changes ``training.sizes`` need not repeat or clear the block)."""
    training = config.get("training") or {}
    sizes = {int(n) for n in training.get("sizes") or []}
    base = [int(s) for s in training.get("seeds") or []]
    errors = []
    for key, seeds in (training.get("seeds_by_size") or {}).items():
        where = key_path(("training", "seeds_by_size", key))
        if not str(key).isdigit():
            errors.append(f"params key '{where}': {key!r} is not a training size (a count of training.sizes)")
            continue
        missing = [s for s in base if s not in seeds]
        if int(key) in sizes and missing:
            errors.append(f"params key '{where}': must contain every seed of training.seeds (the extra seeds run "
                          f"beside them); missing {missing}")
    return errors


def registry_errors(config: Mapping[str, Any], datasets: Mapping[str, Any] | None = None,
                    encoder_modality: Callable[[str], str] | None = None) -> list[str]:
    """Names the schema cannot check: datasets (registered or declared), their tasks and builder options, encoders
    and their modalities, heads and variants. ``datasets`` / ``encoder_modality`` default to the package's."""
    errors = _user_dataset_errors(config)
    if errors:
        return errors
    datasets = dataset_specs(config) if datasets is None else datasets
    encoder_modality = _default_encoder_modality() if encoder_modality is None else encoder_modality
    return (_dataset_errors(config, datasets) + _encoder_errors(config, encoder_modality) + _method_errors(config)
            + _seeds_by_size_errors(config))


def check_params(config: Mapping[str, Any], schema_path: str | Path = SCHEMA_PATH, *,
                 datasets: Mapping[str, Any] | None = None,
                 encoder_modality: Callable[[str], str] | None = None) -> None:
    """Validate ``config`` completely; raise :class:`ParamsError` listing every problem with its key.

    Registry checks run only when the schema passes, because they assume the documented structure.
    """
    errors = nonfinite_errors(config) or schema_errors(config, schema_path)
    if not errors:
        errors = registry_errors(config, datasets, encoder_modality)
    if errors:
        raise ParamsError("invalid workflow parameters:\n  " + "\n  ".join(errors))
