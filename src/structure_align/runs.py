"""The run identity: method variants, training sizes, the run-path grammar and params -> :class:`TrainConfig`.

A run is (encoder pair, variant, training size, seed); a variant is one table row (head x layer choice x R_S
settings). Its directory is the one place where these values are written down::

    <root>/runs/<vision>__<text>/<head>/layers~<c>/lambda~<l>/levels~<L>/tau~<t>/weighting~<w>/distance~<d>/<size>/seed~<s>

with ``<size>`` = ``frac~<f>`` (a fraction of the training pool) or ``n~<count>`` (an absolute number of pairs).
Variants without R_S have ``lambda~0/levels~0/tau~0/weighting~none/distance~none``. Every R_S key a variant may set
(``lambda, levels, tau, weighting, distance``) is in the path, so two variants never share a directory; the other
settings are profile-wide (params.yaml, tracked by Snakemake's params trigger). The Snakefile's wildcard patterns,
the train/evaluate steps and the report all use :meth:`RunSpec.dir`, :meth:`RunSpec.from_path` and
:func:`group_pattern` from here.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from .heads import HEADS
from .trainconfig import TrainConfig

LAYER_LABELS = {"last": "Last", "similar": "Similar"}
# R_S keys a variant may override; each is a path component (in this order)
VARIANT_RS_KEYS: tuple[str, ...] = ("lambda", "levels", "tau", "weighting", "distance")
_PATH_KEYS: tuple[str, ...] = ("layers", *VARIANT_RS_KEYS)
# keys of params `training` that the run path carries (train_blocks leaves them out of a job's params)
PATH_GRID_KEYS = frozenset({"fractions", "sizes", "seeds", "seeds_by_size"})
# keys of params `training` that define the grid and the pool, not a TrainConfig field
GRID_KEYS = PATH_GRID_KEYS | {"val_fraction", "val_seed", "val_split"}
# what CSA reads (train_blocks): the pool split and the joint width, the CCA fit keys, never the λ warm-up
_CSA_TRAINING_KEYS = frozenset({"dim", "val_fraction", "val_seed", "val_split"})
_CSA_FIT_KEYS = frozenset({"sim_dim", "reg", "weighting"})
_WARMUP_KEYS = frozenset({"warmup_steps", "warmup_epochs"})
_NUMBER = r"[0-9][0-9.e+-]*"
# an encoder slug (see encoder_slug): no '/', and '__' only as the pair separator
_ENCODER = r"[A-Za-z0-9][A-Za-z0-9.:+-]*(_[A-Za-z0-9.:+-]+)*"
# Snakemake wildcard constraints of the run grammar (common.smk reads them)
WILDCARDS: dict[str, str] = {
    "vision": _ENCODER, "text": _ENCODER, "head": "|".join(HEADS), "layers": r"last|similar|v[0-9]+t[0-9]+",
    "lam": _NUMBER, "levels": r"[0-9]+", "tau": _NUMBER, "weighting": r"none|inverse",
    "distance": r"none|cosine|rbf|spearman", "size": rf"(frac|n)~{_NUMBER}", "seed": r"[0-9]+",
}


class RunPathError(ValueError):
    """A path that is not a run directory of this grammar (names the path and what is wrong)."""


def encoder_slug(name: str) -> str:
    """An encoder name as a path component: hub ids keep their ``:`` and their ``/`` becomes ``--``
    (``hf:org/model`` -> ``hf:org--model``), so every encoder is one directory level."""
    if "--" in name:
        raise ValueError(f"encoder name {name!r} must not contain '--' (reserved for '/' in paths)")
    return name.replace("/", "--")


def encoder_name(slug: str) -> str:
    """Inverse of :func:`encoder_slug`."""
    return slug.replace("--", "/")


def fmt_value(value: float) -> str:
    """A number as it appears in a path component: ``10`` -> ``10``, ``0.050`` -> ``0.05``, ``1.0`` -> ``1``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"path value {value!r} must be a finite number")
    return f"{float(value):g}" if float(value) != int(value) or abs(value) >= 1e16 else str(int(value))


@dataclass(frozen=True)
class Size:
    """A training size: ``kind = "frac"`` (a fraction of the training pool in (0, 1]) or ``"n"`` (a pair count)."""

    kind: str
    value: float

    @property
    def component(self) -> str:
        """``frac~0.25`` or ``n~1000``."""
        return f"{self.kind}~{fmt_value(int(self.value) if self.kind == 'n' else self.value)}"

    @classmethod
    def parse(cls, text: str) -> Size:
        """Inverse of :attr:`component`."""
        kind, sep, value = text.partition("~")
        if not sep or kind not in ("frac", "n"):
            raise RunPathError(f"training size {text!r} is neither frac~<fraction> nor n~<count>")
        return cls(kind, float(value) if kind == "frac" else int(value))


def sizes(config: Mapping[str, Any]) -> list[Size]:
    """The grid's training sizes: ``training.fractions`` then ``training.sizes`` (counts), in params order."""
    training = config["training"]
    return [Size("frac", float(f)) for f in training.get("fractions", [])] + \
        [Size("n", int(n)) for n in training.get("sizes", [])]


def seeds_for(config: Mapping[str, Any], size: Size) -> list[int]:
    """The seeds of one training size: ``training.seeds_by_size[<count>]`` for an absolute size listed there (keys
    are the counts of ``training.sizes``; YAML int or digit-string keys), else ``training.seeds``.

    More seeds where runs are cheap (small N) give the paired comparisons there the power to see small effects
    (docs/method.md §10 "Power"); every variant of a size shares its seeds, so comparisons stay paired.
    """
    training = config["training"]
    if size.kind == "n":
        for key, seeds in (training.get("seeds_by_size") or {}).items():
            if int(key) == int(size.value):
                return [int(s) for s in seeds]
    return [int(s) for s in training["seeds"]]


def extra_seed_sets(config: Mapping[str, Any]) -> list[tuple[tuple[int, ...], list[Size]]]:
    """The seeds some sizes run beyond ``training.seeds`` (:func:`seeds_for` minus ``training.seeds``), grouped:
    ``[(extra seeds, sizes that run them), ...]`` in params order.

    ``training.seeds_by_size`` lists are supersets of ``training.seeds`` (config check), so the workflow keeps one
    train/evaluate job per group for ``training.seeds`` and adds one per group for its extra seeds (a rule's outputs
    cannot depend on a wildcard's value).
    """
    base = [int(s) for s in config["training"]["seeds"]]
    groups: dict[tuple[int, ...], list[Size]] = {}
    for size in sizes(config):
        extra = tuple(s for s in seeds_for(config, size) if s not in base)
        if extra:
            groups.setdefault(extra, []).append(size)
    return list(groups.items())


@dataclass(frozen=True)
class Variant:
    """One method variant = one table row (docs/method.md §8): head x layer choice x R_S settings.

    ``structure`` is the merged R_S block (``None`` = no R_S); only :data:`VARIANT_RS_KEYS` identify the variant.
    """

    head: str
    layers: str
    structure: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)
    key: tuple[str, ...] = ()

    @classmethod
    def make(cls, head: str, layers: str, structure: Mapping[str, Any] | None) -> Variant:
        structure = dict(structure) if structure is not None else None
        return cls(head, layers, structure, (head, *_path_values(layers, structure)))

    @property
    def uses_structure(self) -> bool:
        return self.structure is not None

    @property
    def label(self) -> str:
        """Row label as in the paper's tables, e.g. ``Linear + Similar + R_S``."""
        layers = LAYER_LABELS.get(self.layers, f"layers {self.layers}")
        return " + ".join([HEADS[self.head].label, layers] + (["R_S"] if self.uses_structure else []))

    @property
    def path(self) -> str:
        """The variant's part of a run directory: ``<head>/layers~<c>/lambda~.../distance~...``."""
        return "/".join([self.head] + [f"{k}~{v}" for k, v in zip(_PATH_KEYS, self.key[1:])])

    def values(self) -> dict[str, str]:
        """Path values by key (``head``, ``layers``, ``lambda``, ...), as strings."""
        return dict(zip(("head", *_PATH_KEYS), self.key))


def _path_values(layers: str, structure: Mapping[str, Any] | None) -> tuple[str, ...]:
    if structure is None:
        return (layers, "0", "0", "0", "none", "none")
    return (layers, fmt_value(structure["lambda"]), str(int(structure["levels"])), fmt_value(structure["tau"]),
            str(structure.get("weighting", "none")), str(structure.get("distance", "cosine")))


def variants(config: Mapping[str, Any]) -> list[Variant]:
    """The variants of ``config['methods']``, each R_S override merged onto ``config['structure']``.

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
                raise ValueError(f"params key 'methods[{i}].structure': lambda 0 is the variant without R_S; "
                                 "write structure: false")
        variant = Variant.make(method["head"], method["layers"], structure)
        if variant.path in seen:
            raise ValueError(f"params key 'methods[{i}]': same head, layers and R_S values as "
                             f"methods[{seen[variant.path]}]")
        seen[variant.path] = i
        out.append(variant)
    return out


@dataclass(frozen=True)
class RunSpec:
    """One run: encoder pair, variant, training size and seed."""

    vision: str
    text: str
    variant: Variant
    size: Size
    seed: int

    @property
    def pair(self) -> str:
        return pair_name(self.vision, self.text)

    def group_dir(self, root: str) -> str:
        """The directory of all seeds of this (pair, variant, size): ``<root>/runs/<pair>/<variant>/<size>``."""
        return f"{root}/runs/{self.pair}/{self.variant.path}/{self.size.component}"

    def dir(self, root: str) -> str:
        """The run directory ``<root>/runs/<pair>/<variant>/<size>/seed~<s>``."""
        return f"{self.group_dir(root)}/seed~{int(self.seed)}"

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> RunSpec:
        """Parse a run directory (or a file inside it); the variant carries the path's R_S values only."""
        parts = PurePath(path).parts
        if parts and not parts[-1].startswith("seed~"):
            parts = parts[:-1]  # a file inside the run directory
        parts = parts[-10:]
        keys = [p.split("~", 1)[0] for p in parts[2:]]
        if len(parts) != 10 or "__" not in parts[0] or keys[:6] != list(_PATH_KEYS) or keys[7] != "seed":
            raise RunPathError(f"{os.fspath(path)}: not a run directory <vision>__<text>/<head>/layers~../lambda~../"
                               "levels~../tau~../weighting~../distance~../<frac~f|n~count>/seed~..")
        vision, text = (encoder_name(p) for p in parts[0].split("__", 1))
        values = [p.split("~", 1)[1] for p in parts[2:8]]
        layers, lam, levels, tau, weighting, distance = values
        head = parts[1]
        if head not in HEADS:
            raise RunPathError(f"{os.fspath(path)}: unknown head {head!r}; expected one of {list(HEADS)}")
        structure = None if float(lam) == 0 else {"lambda": float(lam), "levels": int(levels), "tau": float(tau),
                                                  "weighting": weighting, "distance": distance}
        variant = Variant(head, layers, structure, (head, *values))
        return cls(vision, text, variant, Size.parse(parts[8]), int(parts[9].split("~", 1)[1]))


def group_pattern(root: str) -> str:
    """Snakemake wildcard pattern of a group directory (all seeds of one pair, variant and size)."""
    variant = "{head}/layers~{layers}/lambda~{lam}/levels~{levels}/tau~{tau}/weighting~{weighting}/distance~{distance}"
    return f"{root}/runs/{{vision}}__{{text}}/{variant}/{{size}}"


def pair_name(vision: str, text: str) -> str:
    """Directory name of an encoder pair: ``<vision>__<text>`` (path-safe slugs)."""
    return f"{encoder_slug(vision)}__{encoder_slug(text)}"


def encoder_pairs(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every (vision, text) pair of the main grid, in params order."""
    return [(v, t) for v in config["encoders"]["vision"] for t in config["encoders"]["text"]]


def run_specs(config: Mapping[str, Any]) -> list[RunSpec]:
    """All runs of the grid: pairs x variants x sizes x the size's seeds (:func:`seeds_for`; params order)."""
    return [RunSpec(v, t, var, size, seed) for v, t in encoder_pairs(config) for var in variants(config)
            for size in sizes(config) for seed in seeds_for(config, size)]


def run_dirs(config: Mapping[str, Any], root: str) -> list[str]:
    """The run directories of :func:`run_specs` under ``root``."""
    return [spec.dir(root) for spec in run_specs(config)]


def train_config(config: Mapping[str, Any], spec: RunSpec) -> TrainConfig:
    """Map params onto :class:`TrainConfig` mechanically (docs/workflow.md "One name per knob").

    ``training.<k>`` -> ``<k>`` (every key but the grid keys), ``structure.<k>`` -> ``rs_<k>`` with the variant's
    overrides (a variant without R_S gets ``rs_lambda = 0``), ``csa.<k>`` -> ``csa_<k>``; ``head`` and ``seed`` from
    the run. Only the keys of :func:`train_blocks` are read: a CSA run's fields that CSA does not use keep their
    :class:`TrainConfig` defaults.
    """
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    # the same keys the job is given (train_blocks), so that the Snakefile's check and the job build one config
    config = {**config, "csa": {}, **train_blocks(config, spec)}
    values: dict[str, Any] = {"head": spec.variant.head, "seed": int(spec.seed)}
    values.update({k: v for k, v in config["training"].items() if k not in GRID_KEYS})
    # profile-wide R_S keys (warm-up, centring, ...) reach every arm, so that a warm-up-based selection rule
    # treats the runs without R_S alike; the variant's own block (its path values) then decides whether R_S is on.
    # The path keys of the global block never apply directly: a run depends only on its own path's values.
    values.update({f"rs_{k}": v for k, v in config["structure"].items() if k not in VARIANT_RS_KEYS})
    structure = spec.variant.structure
    if structure is not None:
        values.update({f"rs_{k}": v for k, v in structure.items()})
    else:
        values["rs_lambda"] = 0.0
    values.update({f"csa_{k}": v for k, v in (config.get("csa") or {}).items()})
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"params keys {unknown} have no TrainConfig field (training.<k> -> <k>, structure.<k> -> "
                         f"rs_<k>, csa.<k> -> csa_<k>)")
    return TrainConfig.from_dict(values)


def train_blocks(config: Mapping[str, Any], spec: RunSpec) -> dict[str, Any]:
    """The params blocks a run's training reads beyond its path: the train rule's ``params`` and the input of
    :func:`train_config` (docs/reliability.md "Partial reruns").

    Gradient-trained heads: ``training`` without the grid keys the path carries (fractions, sizes, seeds) and
    ``structure`` without the :data:`VARIANT_RS_KEYS` (the path has them). CSA (§4.3, §4.4) reads less: the pool
    split and ``dim`` of ``training``, the fit keys of ``csa`` and, only with the R_S refinement, the refinement keys
    of ``csa``, the R_S options of ``structure`` (no warm-up: the refinement has none) and ``training.batch_size``
    when ``csa.batch_size`` is null. ``layers`` is added for Similar runs with ``layers.scope: subsample``. Changing
    ``structure.lambda`` thus changes the paths of the R_S runs and nothing that the runs without R_S depend on, and
    ``csa.epochs`` or ``training.lr`` leave the CSA runs they do not reach alone.
    """
    training = {k: v for k, v in config["training"].items() if k not in PATH_GRID_KEYS}
    structure = {k: v for k, v in config["structure"].items() if k not in VARIANT_RS_KEYS}
    blocks: dict[str, Any] = {"training": training, "structure": structure}
    if spec.variant.head == "csa":
        csa = dict(config.get("csa") or {})
        keep = set(_CSA_TRAINING_KEYS)
        if spec.variant.uses_structure:
            blocks["structure"] = {k: v for k, v in structure.items() if k not in _WARMUP_KEYS}
            if csa.get("batch_size") is None:
                keep.add("batch_size")
        else:
            blocks["structure"] = {}
            csa = {k: v for k, v in csa.items() if k in _CSA_FIT_KEYS}
        blocks["training"] = {k: v for k, v in training.items() if k in keep}
        blocks["csa"] = csa
    if spec.variant.layers == "similar" and config.get("layers", {}).get("scope") == "subsample":
        blocks["layers"] = dict(config["layers"])  # "Similar" is scored on the run's own rows
    return blocks


# scheduling hint only (train_priority): the pool size assumed for frac~f groups, whose pool is unknown when the
# DAG is built (before the manifests exist)
_POOL_GUESS = 10_000


def train_priority(config: Mapping[str, Any], spec: RunSpec, n_runs: int) -> int:
    """Snakemake ``priority`` of a train job: larger for groups expected to train longer (longest first).

    With two cores, a rerun whose longest group starts last leaves one core idle for that group's whole duration;
    starting the longest groups first bounds the tail by the shortest jobs. The estimate is the B x B work of one
    epoch, ``n * min(n, B)`` (B = batch size, n = training pairs; ``frac~f`` counts as ``f * 10,000`` pairs), times
    ``1 + levels`` with R_S, times 0.3 for CSA with the R_S refinement (10 epochs) and 0.05 for the CCA fit alone,
    times the group's runs, on a log scale (integers 0-100). It changes the order of jobs only, never a result.
    """
    training = config["training"]
    n = float(spec.size.value) * (_POOL_GUESS if spec.size.kind == "frac" else 1)
    batch = float(training.get("batch_size") or n)
    cost = n * min(n, batch) * max(int(n_runs), 1)
    if spec.variant.head == "csa":
        cost *= 0.3 if spec.variant.uses_structure else 0.05
    elif spec.variant.uses_structure:
        cost *= 1 + int(spec.variant.structure.get("levels", 1))
    return min(100, max(0, round(10 * math.log10(1.0 + cost))))


def unique(items: Sequence[str]) -> list[str]:
    """``items`` without repeats, first occurrence order."""
    return list(dict.fromkeys(items))


def eval_datasets(config: Mapping[str, Any]) -> list[str]:
    """Datasets the evaluate step reads (retrieval first, then zero-shot), without repeats."""
    return unique(list(config["datasets"]["retrieval"]) + list(config["datasets"]["zeroshot"]))


def grid_datasets(config: Mapping[str, Any]) -> list[str]:
    """Datasets whose features the main grid needs (training + evaluation), without repeats."""
    return unique(list(config["datasets"]["train"]) + eval_datasets(config))
