"""Workflow parameters: loading and validating ``params.yaml``, method variants and result paths.

The Snakefile, the CLI and the report all go through this module, so that the way a parameter value becomes a path
component (``lambda~10``) and back is defined once. Validation happens before any job is planned: the JSON schema
(``workflow/schemas/params.schema.yaml``) checks structure, types and ranges; :func:`check_params` adds what a static
schema cannot know (registered dataset and encoder names, encoder modalities, dataset tasks, builder options) and
names the offending key in every message.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SCHEMA_PATH = Path("workflow/schemas/params.schema.yaml")
# hub families resolved by name prefix in structure_align.encoders (DESIGN.md "Encoders")
HEAD_LABELS = {"linear": "Linear", "mlp": "MLP", "released_mlp": "MLP (released)", "csa": "CSA"}
LAYER_LABELS = {"last": "Last", "similar": "Similar"}
STRUCTURE_KEYS = ("lambda", "levels", "tau", "warmup_steps", "weighting")


class ParamsError(ValueError):
    """A params.yaml problem; the message names the key (dotted path) and the offending value."""


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a non-mapping top level raises :class:`ParamsError`."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file {path} does not exist")
    with path.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
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


def _key_path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<top level>"


def schema_errors(config: Mapping[str, Any], schema_path: str | Path = SCHEMA_PATH) -> list[str]:
    """All JSON-schema violations of ``config`` as ``"key.path: message"`` strings (empty = valid)."""
    import jsonschema

    schema = load_yaml(schema_path)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(dict(config)), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    messages = []
    for err in errors:
        where = _key_path(err.absolute_path)
        if err.validator == "additionalProperties" and not err.absolute_path:
            messages.append(f"params: {err.message}")
        else:
            messages.append(f"params key '{where}': {err.message}")
    return messages


def _default_dataset_registry() -> Mapping[str, Any]:
    from structure_align.data import DATASETS

    return DATASETS


def _default_encoder_modality() -> Callable[[str], str]:
    from structure_align.encoders import encoder_modality

    return encoder_modality


def registry_errors(config: Mapping[str, Any], datasets: Mapping[str, Any] | None = None,
                    encoder_modality: Callable[[str], str] | None = None) -> list[str]:
    """Names the schema cannot check: datasets, their tasks and builder options, encoders and their modalities.

    ``datasets`` maps names to specs with ``.task`` and ``.resolve_options(options)``; ``encoder_modality(name)``
    returns ``vision``/``text`` and raises ``KeyError``/``ValueError`` for unknown names. Both default to the package registries.
    """
    datasets = _default_dataset_registry() if datasets is None else datasets
    encoder_modality = _default_encoder_modality() if encoder_modality is None else encoder_modality
    errors: list[str] = []
    known = ", ".join(sorted(datasets))
    wanted_task = {"train": ("pairs",), "retrieval": ("pairs", "retrieval"), "zeroshot": ("zeroshot",), "all": None}
    for group, tasks in wanted_task.items():
        for i, name in enumerate(config.get("datasets", {}).get(group, [])):
            if name not in datasets:
                errors.append(f"params key 'datasets.{group}[{i}]': unknown dataset {name!r}; registered: {known}")
            elif tasks is not None and datasets[name].task not in tasks:
                errors.append(f"params key 'datasets.{group}[{i}]': dataset {name!r} has task "
                              f"{datasets[name].task!r}, expected one of {list(tasks)}")
    for name, options in (config.get("manifest") or {}).items():
        if name not in datasets:
            errors.append(f"params key 'manifest.{name}': unknown dataset {name!r}; registered: {known}")
            continue
        try:
            datasets[name].resolve_options(options)
        except (TypeError, ValueError) as exc:
            errors.append(f"params key 'manifest.{name}': {exc}")
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


def check_params(config: Mapping[str, Any], schema_path: str | Path = SCHEMA_PATH, *,
                 datasets: Mapping[str, Any] | None = None,
                 encoder_modality: Callable[[str], str] | None = None) -> None:
    """Validate ``config`` completely; raise :class:`ParamsError` listing every problem with its key.

    Registry checks run only when the schema passes, because they assume the documented structure.
    """
    errors = schema_errors(config, schema_path)
    if not errors:
        errors = registry_errors(config, datasets, encoder_modality)
    if errors:
        raise ParamsError("invalid workflow parameters:\n  " + "\n  ".join(errors))


def fmt_value(value: float | int) -> str:
    """A number as it appears in a path component: ``10`` -> ``10``, ``0.050`` -> ``0.05``, ``1.0`` -> ``1``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ParamsError(f"path value {value!r} must be a finite number")
    return f"{float(value):g}" if float(value) != int(value) or abs(value) >= 1e16 else str(int(value))


@dataclass(frozen=True)
class Variant:
    """One method variant = one table row (paper-spec §8): head x layer choice x R_S settings."""

    head: str
    layers: str
    structure: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)
    structure_key: tuple = ()

    @property
    def uses_structure(self) -> bool:
        return self.structure is not None

    @property
    def label(self) -> str:
        """Row label as in the paper's tables, e.g. ``Linear + Similar + R_S``."""
        parts = [HEAD_LABELS[self.head], LAYER_LABELS[self.layers]]
        return " + ".join(parts + (["R_S"] if self.uses_structure else []))

    @property
    def lam(self) -> str:
        return fmt_value(self.structure["lambda"]) if self.structure else "0"

    @property
    def levels(self) -> str:
        return str(int(self.structure["levels"])) if self.structure else "0"

    @property
    def tau(self) -> str:
        return fmt_value(self.structure["tau"]) if self.structure else "0"

    @property
    def path(self) -> str:
        """The variant's part of a run directory (head, layer choice, R_S values)."""
        return f"{self.head}/layers~{self.layers}/lambda~{self.lam}/levels~{self.levels}/tau~{self.tau}"


def variants(config: Mapping[str, Any]) -> list[Variant]:
    """The method variants of ``config['methods']``, structure overrides merged onto ``config['structure']``.

    Two entries that resolve to the same path would silently share results, so they are an error.
    """
    out: list[Variant] = []
    seen: dict[str, int] = {}
    for i, method in enumerate(config["methods"]):
        spec = method["structure"]
        structure = None
        if spec is True or isinstance(spec, Mapping):
            structure = {**config["structure"], **(spec if isinstance(spec, Mapping) else {})}
            if float(structure["lambda"]) == 0:
                raise ParamsError(f"params key 'methods[{i}].structure': lambda 0 is the variant without R_S; "
                                  "write structure: false")
        key = tuple((k, structure[k]) for k in STRUCTURE_KEYS) if structure else ()
        variant = Variant(head=method["head"], layers=method["layers"], structure=structure, structure_key=key)
        if variant.path in seen:
            raise ParamsError(f"params key 'methods[{i}]': same head, layers and R_S values as methods[{seen[variant.path]}]")
        seen[variant.path] = i
        out.append(variant)
    return out


def encoder_pairs(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every (vision, text) pair of the main grid, in params order."""
    return [(v, t) for v in config["encoders"]["vision"] for t in config["encoders"]["text"]]


def pair_name(vision: str, text: str) -> str:
    """Directory name of an encoder pair: ``<vision>__<text>``."""
    return f"{vision}__{text}"


def run_dir(vision: str, text: str, variant: Variant, fraction: float, seed: int, root: str = "results/runs") -> str:
    """``results/runs/<vision>__<text>/<head>/layers~<c>/lambda~<l>/levels~<L>/tau~<t>/frac~<f>/seed~<s>``."""
    return f"{root}/{pair_name(vision, text)}/{variant.path}/frac~{fmt_value(fraction)}/seed~{int(seed)}"


def run_dirs(config: Mapping[str, Any], root: str = "results/runs") -> list[str]:
    """All run directories of the grid: pairs x variants x fractions x seeds."""
    return [run_dir(v, t, var, f, s, root)
            for v, t in encoder_pairs(config)
            for var in variants(config)
            for f in config["training"]["fractions"]
            for s in config["training"]["seeds"]]


def eval_datasets(config: Mapping[str, Any]) -> list[str]:
    """Datasets the evaluate step reads (retrieval first, then zero-shot), without repeats."""
    seen: dict[str, None] = {}
    for name in list(config["datasets"]["retrieval"]) + list(config["datasets"]["zeroshot"]):
        seen.setdefault(name)
    return list(seen)


def grid_datasets(config: Mapping[str, Any]) -> list[str]:
    """Datasets whose features the main grid needs (training + evaluation), without repeats."""
    seen: dict[str, None] = {}
    for name in list(config["datasets"]["train"]) + eval_datasets(config):
        seen.setdefault(name)
    return list(seen)
