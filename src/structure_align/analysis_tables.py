"""Tables of the analysis targets from their runs' files (docs/analysis.md; figures in :mod:`.analysis_figures`).

Per run, the summary metrics are those of the main report (:func:`structure_align.tables.summary_frame` rules):
zero-shot top-1 averaged over the zero-shot sets, retrieval R@k averaged over the retrieval sets and both
directions. Claims about one variant against another use the paired per-seed difference and its Student-t 95 % CI
(:func:`structure_align.stats.paired_difference`); layer-score correlations use Spearman ρ with a bootstrap CI over
layer pairs (:func:`structure_align.correlation.spearman_ci`).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .correlation import spearman_ci
from .runs import RunSpec
from .stats import paired_difference
from .tables import VARIANT_KEYS, ReportError, collect_runs, read_layer_scores

RUN_KEYS = ["vision", "text", *VARIANT_KEYS, "fraction", "n_train", "seed"]
_K_RE = re.compile(r"/k~([0-9]+)/runs/")


def _key(record: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(record[k]) for k in VARIANT_KEYS)


def run_summary(paths: Sequence[str | os.PathLike], retrieval: Sequence[str], zeroshot: Sequence[str],
                names: Sequence[str], extra: Sequence[str] = ()) -> pd.DataFrame:
    """One row per run: :data:`RUN_KEYS`, ``vision_layer``, ``text_layer``, ``k`` (in-domain roots, else 0), the
    summary metrics ``names`` and ``<dataset> top1`` for each zero-shot set in ``extra``."""
    tidy = collect_runs(paths)
    tidy["k"] = [int(m.group(1)) if (m := _K_RE.search(Path(s).as_posix())) else 0 for s in tidy["source"]]
    keys = [*RUN_KEYS, "k", "source"]
    parts = []
    for name in names:
        if name == "zeroshot_top1":
            sel = tidy[tidy.dataset.isin(zeroshot) & (tidy.metric == "top1")]
        else:
            k = name.rsplit("_", 1)[1]
            sel = tidy[tidy.dataset.isin(retrieval) & tidy.metric.isin([f"i2t_{k}", f"t2i_{k}"])]
        if not sel.empty:
            parts.append(sel.groupby(keys)["value"].mean().rename(name))
    for dataset in extra:
        sel = tidy[(tidy.dataset == dataset) & (tidy.metric == "top1")]
        if sel.empty:
            raise ReportError(f"no zero-shot top-1 of dataset {dataset!r} in the runs")
        parts.append(sel.groupby(keys)["value"].mean().rename(f"{dataset} top1"))
    if not parts:
        raise ReportError(f"none of the metrics {list(names)} has data")
    out = pd.concat(parts, axis=1).reset_index()
    layers = {}
    for src in out["source"].unique():
        run = json.loads(Path(src).read_text(encoding="utf-8"))["run"]
        layers[src] = (int(run["vision_layer"]), int(run["text_layer"]))
    out["vision_layer"] = [layers[s][0] for s in out["source"]]
    out["text_layer"] = [layers[s][1] for s in out["source"]]
    out["encoders"] = out["vision"] + " + " + out["text"]
    return out


def label_runs(summary: pd.DataFrame, records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Attach ``variant`` (label) and ``order`` from the target's variant records; an unknown run is an error."""
    lookup: dict[tuple[str, ...], tuple[int, str]] = {}
    for i, r in enumerate(records):
        lookup.setdefault(_key(r), (i, r["label"]))
    keys = [_key(r) for _, r in summary.iterrows()]
    unknown = [s for k, s in zip(keys, summary["source"]) if k not in lookup]
    if unknown:
        raise ReportError(f"run {unknown[0]} matches no variant of the target")
    out = summary.copy()
    out["order"] = [lookup[k][0] for k in keys]
    out["variant"] = [lookup[k][1] for k in keys]
    return out


def _by_seed(frame: pd.DataFrame, metric: str) -> pd.Series:
    return frame.groupby("seed")[metric].mean()


def paired_row(base: pd.DataFrame, new: pd.DataFrame, metric: str) -> dict[str, Any]:
    """Paired difference new - base over the seeds both have (mean, CI, p, n, verdict)."""
    a, b = _by_seed(base, metric), _by_seed(new, metric)
    common = a.index.intersection(b.index)
    if len(common) == 0:
        raise ReportError(f"no common seeds for the paired difference on {metric!r}")
    d = paired_difference(a[common].to_numpy(), b[common].to_numpy())
    return {"gain": d.mean, "ci_lo": d.lo, "ci_hi": d.hi, "p_value": d.p_value, "n_seeds": d.n,
            "verdict": d.verdict(), "gain_text": d.format()}


def mean_std(frame: pd.DataFrame, metric: str) -> tuple[float, float, int]:
    vals = _by_seed(frame, metric)
    return float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0, len(vals)


def comparisons(labels: Sequence[str], records: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(base, new) label pairs: every variant against the first, and each R_S variant against the same head and
    layers without R_S when that is not the first."""
    out = [(labels[0], lab) for lab in labels[1:]]
    for r in records:
        if str(r["lambda"]) == "0":
            continue
        twin = [q["label"] for q in records if q["head"] == r["head"] and q["layers"] == r["layers"]
                and str(q["lambda"]) == "0"]
        if twin and twin[0] != labels[0]:
            out.append((twin[0], r["label"]))
    return list(dict.fromkeys(out))


def combinations_table(summary: pd.DataFrame, records: Sequence[Mapping[str, Any]],
                       names: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(means, gains)``: per encoder pair and variant mean ± std of each metric at the largest size; per pair,
    comparison and metric the paired gain with its CI."""
    frame = label_runs(summary, records)
    frame = frame[frame.fraction == frame.groupby("encoders").fraction.transform("max")]
    labels = [r["label"] for r in records]
    means, gains = [], []
    for enc, grp in frame.groupby("encoders", sort=False):
        for lab in labels:
            sel = grp[grp.variant == lab]
            if sel.empty:
                raise ReportError(f"combinations: no runs of {lab!r} for {enc}")
            row: dict[str, Any] = {"encoders": enc, "variant": lab, "n_train_pairs": int(sel.n_train.iloc[0])}
            for m in names:
                row[m], row[f"{m} std"], row["n_seeds"] = mean_std(sel, m)
            means.append(row)
        for base, new in comparisons(labels, records):
            for m in names:
                gains.append({"encoders": enc, "comparison": f"{new} vs {base}", "metric": m,
                              **paired_row(grp[grp.variant == base], grp[grp.variant == new], m)})
    return pd.DataFrame(means), pd.DataFrame(gains)


def layer_correlation_tables(summary: pd.DataFrame, scores_csv: Mapping[str, str], names: Sequence[str], *,
                             n_boot: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(per_pair, rho)``: per encoder pair and layer pair the layer score and the seed-mean metrics (a pair that
    is also "similar" / "last" is kept once, flagged), and Spearman ρ of score vs each metric with a CI."""
    rows = []
    for enc, grp in summary.groupby("encoders", sort=False):
        pair = f"{grp.vision.iloc[0]}__{grp.text.iloc[0]}"
        scores, vnames, tnames = read_layer_scores(scores_csv[pair])
        for (i, j), sel in grp.groupby(["vision_layer", "text_layer"]):
            row = {"encoders": enc, "vision_layer": int(i), "text_layer": int(j), "vision_name": vnames[i],
                   "text_name": tnames[j], "score": float(scores[i, j]),
                   "is_similar": bool((sel.layers == "similar").any()), "is_last": bool((sel.layers == "last").any()),
                   "n_seeds": int(sel.seed.nunique())}
            row.update({m: float(sel.groupby("seed")[m].mean().mean()) for m in names})
            rows.append(row)
    per_pair = pd.DataFrame(rows).sort_values(["encoders", "score"], ascending=[True, False], kind="stable")
    rho_rows = []
    for enc, grp in per_pair.groupby("encoders", sort=False):
        for m in names:
            c = spearman_ci(grp.score.to_numpy(), grp[m].to_numpy(), n_boot=n_boot, seed=seed)
            rho_rows.append({"encoders": enc, "metric": m, "rho": c.rho, "ci_lo": c.lo, "ci_hi": c.hi,
                             "p_value": c.p_value, "n_pairs": c.n, "n_boot_valid": c.n_valid,
                             "rho_text": c.format()})
    return per_pair.reset_index(drop=True), pd.DataFrame(rho_rows)


def ablations_table(summary: pd.DataFrame, records: Sequence[Mapping[str, Any]],
                    names: Sequence[str]) -> pd.DataFrame:
    """Per axis, value and training size: mean ± std of each metric and the paired gain over the variant without
    R_S (lambda 0) of the same size, when the grid has one."""
    frame = label_runs(summary, records)
    base_keys = [_key(r) for r in records if str(r["lambda"]) == "0"]
    rows = []
    for r in records:
        for frac, grp in frame.groupby("fraction", sort=True):
            sel = grp[[_key(q) == _key(r) for _, q in grp.iterrows()]]
            if sel.empty:
                raise ReportError(f"ablations: no runs of {r['label']!r} at fraction {frac}")
            base = grp[[_key(q) in base_keys for _, q in grp.iterrows()]]
            row: dict[str, Any] = {"axis": r["axis"], "value": r["value"], "label": r["label"], "fraction": frac,
                                   "n_train_pairs": int(sel.n_train.iloc[0])}
            for m in names:
                row[m], row[f"{m} std"], row["n_seeds"] = mean_std(sel, m)
                if not base.empty and str(r["lambda"]) != "0":
                    g = paired_row(base, sel, m)
                    row[f"{m} gain"], row[f"{m} gain CI"] = g["gain"], g["gain_text"]
            rows.append(row)
    return pd.DataFrame(rows)


def in_domain_table(summary: pd.DataFrame, records: Sequence[Mapping[str, Any]], metric: str,
                    names: Sequence[str]) -> pd.DataFrame:
    """Per variant and k: mean ± std of the in-domain set's top-1 (``metric``) and the summary metrics, and the
    paired gain of ``metric`` over k = 0 of the same variant."""
    frame = label_runs(summary, records)
    rows = []
    for lab in [r["label"] for r in records]:
        grp = frame[frame.variant == lab]
        base = grp[grp.k == grp.k.min()]
        for k, sel in grp.groupby("k", sort=True):
            row: dict[str, Any] = {"variant": lab, "k": int(k), "n_train_pairs": int(sel.n_train.iloc[0])}
            for m in (metric, *names):
                row[m], row[f"{m} std"], row["n_seeds"] = mean_std(sel, m)
            g = paired_row(base, sel, metric)
            row["gain vs k=0"], row["gain CI"] = g["gain"], g["gain_text"]
            rows.append(row)
    return pd.DataFrame(rows)


def neighbourhood_history(paths: Sequence[str | os.PathLike], records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Tidy per-epoch rows of every run's ``train.json``: variant, seed, epoch, best_epoch, modality, measure
    (trust | cont), k, value."""
    labels = {_key(r): r["label"] for r in records}
    rows = []
    for path in paths:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
        spec = RunSpec.from_path(path)
        label = labels.get(_key(spec.variant.values()))
        if label is None:
            raise ReportError(f"{path}: run matches no neighbourhood variant")
        for h in info["history"]:
            for key, value in h.items():
                m = re.fullmatch(r"(image|text)_(trust|cont)_k([0-9]+)", key)
                if m:
                    rows.append({"variant": label, "encoders": f"{spec.vision} + {spec.text}", "seed": spec.seed,
                                 "epoch": int(h["epoch"]), "best_epoch": int(info["best_epoch"]),
                                 "modality": m.group(1), "measure": m.group(2), "k": int(m.group(3)),
                                 "k_used": int(h[f"{m.group(1)}_k{m.group(3)}_used"]), "value": float(value)})
    if not rows:
        raise ReportError("no trustworthiness / continuity values in the training histories (neighbourhood block?)")
    return pd.DataFrame(rows)


def _at_epoch(g: pd.DataFrame, when: str) -> float:
    """One seed's value after the first epoch, at its restored (best) epoch, or at its last epoch."""
    epoch = {"first": g.epoch.min(), "best": g.best_epoch.iloc[0], "last": g.epoch.max()}[when]
    return float(g[g.epoch == epoch].value.mean())


def neighbourhood_table(history: pd.DataFrame) -> pd.DataFrame:
    """Per variant, modality, measure and k: the value after the first epoch, at the restored (best) epoch and
    at the last epoch, mean ± std over seeds."""
    rows = []
    for (var, mod, meas, k), grp in history.groupby(["variant", "modality", "measure", "k"], sort=False):
        row: dict[str, Any] = {"variant": var, "modality": mod, "measure": meas, "k": int(k),
                               "k_used": int(grp.k_used.iloc[0]), "n_seeds": int(grp.seed.nunique())}
        for when in ("first", "best", "last"):
            vals = grp.groupby("seed").apply(lambda g, w=when: _at_epoch(g, w), include_groups=False)
            row[when] = float(vals.mean())
            row[f"{when} std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(frame: pd.DataFrame, digits: int = 2) -> str:
    """A plain GitHub markdown rendering (numbers rounded; NaN as n/a)."""
    def cell(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return "n/a" if not math.isfinite(float(v)) else f"{float(v):.{digits}f}"
        return str(v)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "|".join(["---"] * len(frame.columns)) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"
