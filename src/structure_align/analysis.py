"""The analysis experiments as run grids: which runs each target trains, where they live, what it writes
(docs/analysis.md).

Five targets, each configured by one block of params ``analysis`` and each training under its own results root with
the main run-path grammar (:class:`structure_align.runs.RunSpec`), so that a changed value never reuses another
experiment's artefacts::

    <results>/analysis/<target>/runs/<vision>__<text>/<head>/layers~../lambda~../.../<size>/seed~<s>
    <results>/analysis/in_domain/<pool>/k~<k>/runs/...          (one root per number of in-domain samples)

- ``combinations``: the ``methods`` rows on every (vision, text) pair of its encoder lists;
- ``layer_correlation``: one head on a grid of explicit layer pairs ``v<i>t<j>`` plus "similar" and "last";
- ``ablations``: R_S variants around params ``structure``, one axis at a time (lambda, levels, weighting,
  distance), at a small and a large training size; lambda 0 is the variant without R_S;
- ``in_domain``: the ``methods`` rows with k labelled pool samples per class added (:mod:`.indomain`);
- ``neighbourhood``: the ``methods`` rows with per-epoch trustworthiness / continuity (:mod:`.neighbourhood`).

Layer scores, layer choices and features are shared with the main grid (``<results>/layers``, ``features``). Every
function here is pure (config in, names out), so the Snakemake rules, the aggregation and the tests agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .runs import RunSpec, Size, Variant, encoder_pairs, fmt_value, variants

TARGETS: tuple[str, ...] = ("combinations", "layer_correlation", "ablations", "in_domain", "neighbourhood")
# targets whose runs are evaluated (neighbourhood reads its values from the training history)
EVALUATED = ("combinations", "layer_correlation", "ablations", "in_domain")
# the ablation axes, in table order
ABLATION_AXES: tuple[str, ...] = ("lambda", "levels", "weighting", "distance")


class AnalysisError(ValueError):
    """An ``analysis`` params block that cannot be turned into runs; the message names the key."""


def block(config: Mapping[str, Any], target: str) -> Mapping[str, Any]:
    """``config['analysis'][target]`` (an error naming the key when the block is missing)."""
    try:
        return config["analysis"][target]
    except (KeyError, TypeError):
        raise AnalysisError(f"params key 'analysis.{target}' is missing") from None


def seeds(config: Mapping[str, Any], target: str) -> list[int]:
    """The target's seeds: ``analysis.<target>.seeds``, else ``analysis.seeds``."""
    values = block(config, target).get("seeds", config["analysis"].get("seeds"))
    if not values:
        raise AnalysisError(f"params key 'analysis.{target}.seeds' (or 'analysis.seeds') is missing")
    return [int(s) for s in values]


def sizes(config: Mapping[str, Any], target: str) -> list[Size]:
    """Training sizes of a target (``fractions`` of the pool, then ``sizes`` as pair counts)."""
    b = block(config, target)
    out = [Size("frac", float(f)) for f in b.get("fractions", [])] + [Size("n", int(n)) for n in b.get("sizes", [])]
    if not out:
        raise AnalysisError(f"params key 'analysis.{target}': give fractions or sizes")
    return out


def pairs(config: Mapping[str, Any], target: str) -> list[tuple[str, str]]:
    """Encoder pairs: the ``combinations`` lists for that target, the main grid's pairs for the others."""
    if target == "combinations":
        b = block(config, target)
        return [(v, t) for v in b["vision"] for t in b["text"]]
    return encoder_pairs(config)


def _method_variants(config: Mapping[str, Any], target: str) -> list[Variant]:
    methods = block(config, target)["methods"]
    try:
        return variants({"methods": methods, "structure": config["structure"]})
    except ValueError as exc:
        raise AnalysisError(str(exc).replace("'methods", f"'analysis.{target}.methods")) from None


def layer_grid(config: Mapping[str, Any]) -> list[str]:
    """Layer choices of ``layer_correlation``: every ``v<i>t<j>`` of the grid, then ``similar`` and ``last``."""
    b = block(config, "layer_correlation")
    return [f"v{int(i)}t{int(j)}" for i in b["vision_layers"] for j in b["text_layers"]] + ["similar", "last"]


def ablation_structures(config: Mapping[str, Any]) -> list[tuple[str, Any, dict[str, Any] | None]]:
    """``(axis, value, R_S block or None)`` of every ablation variant, axis by axis around params ``structure``.

    ``weighting`` only matters with more than one level (w_1 = 1 for both), so its variants use
    ``weighting_levels`` levels; ``lambda 0`` is the variant without R_S. Repeats of the base are dropped.
    """
    b, base = block(config, "ablations"), dict(config["structure"])
    out: list[tuple[str, Any, dict[str, Any] | None]] = []
    for axis in ABLATION_AXES:
        for value in b.get(axis, []):
            if axis == "lambda" and float(value) == 0:
                out.append((axis, value, None))
                continue
            rs = {**base, axis: value}
            if axis == "weighting":
                rs["levels"] = int(b.get("weighting_levels", base["levels"]))
            out.append((axis, value, rs))
    return out


def target_variants(config: Mapping[str, Any], target: str) -> list[Variant]:
    """The variants a target trains (params order, no repeats)."""
    if target == "layer_correlation":
        head = block(config, target).get("head", "linear")
        out = [Variant.make(head, layers, None) for layers in layer_grid(config)]
    elif target == "ablations":
        b = block(config, target)
        out = [Variant.make(b.get("head", "linear"), b.get("layers", "similar"), rs)
               for _, _, rs in ablation_structures(config)]
    else:
        out = _method_variants(config, target)
    return list({v.path: v for v in out}.values())


def roots(config: Mapping[str, Any], target: str, results: str) -> list[str]:
    """The target's results roots (one per in-domain k)."""
    base = f"{results}/analysis/{target}"
    if target != "in_domain":
        return [base]
    b = block(config, target)
    return [f"{base}/{b['pool']}/k~{int(k)}" for k in b["k"]]


def in_domain_k(root: str) -> int:
    """The k of an in-domain root ``.../k~<k>``."""
    return int(root.rstrip("/").rsplit("k~", 1)[1])


def run_specs(config: Mapping[str, Any], target: str) -> list[RunSpec]:
    """pairs x variants x sizes x seeds of a target (one list, shared by all of its roots)."""
    return [RunSpec(v, t, var, size, seed) for v, t in pairs(config, target) for var in target_variants(config, target)
            for size in sizes(config, target) for seed in seeds(config, target)]


def run_dirs(config: Mapping[str, Any], target: str, results: str) -> list[str]:
    """Every run directory of a target under every one of its roots."""
    return [spec.dir(root) for root in roots(config, target, results) for spec in run_specs(config, target)]


def output_files(target: str, results: str) -> dict[str, str]:
    """What a target's aggregation writes, by role (tables under tables/, figures under figures/)."""
    if target not in TARGETS:
        raise AnalysisError(f"unknown analysis target {target!r}; expected one of {list(TARGETS)}")
    stem_t, stem_f = f"{results}/tables/analysis_{target}", f"{results}/figures/analysis_{target}"
    out = {"csv": f"{stem_t}.csv", "md": f"{stem_t}.md", "png": f"{stem_f}.png", "pdf": f"{stem_f}.pdf"}
    if target == "layer_correlation":
        out["rho_csv"] = f"{stem_t}_rho.csv"
    return out


def variant_records(config: Mapping[str, Any], target: str) -> list[dict[str, Any]]:
    """Table rows of a target: label + path values (+ the ablation axis and value), params order."""
    records = []
    if target == "ablations":
        b = block(config, target)
        for axis, value, rs in ablation_structures(config):
            v = Variant.make(b.get("head", "linear"), b.get("layers", "similar"), rs)
            records.append({"label": f"{axis} = {value}", "axis": axis, "value": str(value), **v.values()})
        return records
    return [{"label": v.label, **v.values()} for v in target_variants(config, target)]


def check_analysis(config: Mapping[str, Any]) -> list[str]:
    """What the schema cannot check about ``analysis`` (variants, sizes, seeds, the in-domain datasets and
    template); empty = fine. Encoder names of ``combinations`` are checked when their features are extracted."""
    if "analysis" not in config:
        return []
    errors: list[str] = []
    for target in TARGETS:
        try:
            run_specs(config, target)
        except (AnalysisError, ValueError, KeyError) as exc:
            errors.append(f"params key 'analysis.{target}': {exc}")
    b = config["analysis"].get("in_domain") or {}
    if b:
        from .config import dataset_specs

        specs = dataset_specs(config)
        for key in ("dataset", "pool"):
            spec = specs.get(b.get(key))
            if spec is None or spec.task != "zeroshot":
                errors.append(f"params key 'analysis.in_domain.{key}': {b.get(key)!r} is not a registered zero-shot "
                              "dataset")
        if b.get("dataset") == b.get("pool"):
            errors.append("params key 'analysis.in_domain.pool': must differ from the evaluated dataset")
        if "{}" not in str(b.get("template", "")):
            errors.append(f"params key 'analysis.in_domain.template': {b.get('template')!r} needs one '{{}}'")
    return errors


def label_size(size: Size) -> str:
    """``frac~0.1`` -> ``10 %``; ``n~200`` -> ``200 pairs`` (figure legends)."""
    return f"{fmt_value(100 * size.value)} %" if size.kind == "frac" else f"{int(size.value)} pairs"
