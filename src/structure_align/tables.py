"""Tables from the runs' ``metrics.json`` files: the paper's main table, the tidy scaling rows, the per-seed summary
metrics and the DVC metrics; and the tidy layer-score CSV (docs/method.md §0, §3, §10).

Aggregation rules (stated again in results/README.md):
- main table: one row per (encoder pair, method variant) at the largest training size; each cell is mean ± std
  over seeds (sample std, ddof = 1; 0 for one seed); zero-shot columns are top-1 %, retrieval columns R@1 and R@5
  in both directions (%);
- "avg. rel. improvement vs + Last": per head, for every column c with a non-zero base, (variant_c - base_c) /
  base_c where base = the same head's "+ Last" row without R_S (seed means), averaged over the columns, in %;
- scaling: tidy rows (encoders, variant, fraction, n_train_pairs, seed, dataset, metric, value); the summary metrics
  are means over datasets (zero-shot top-1; retrieval (I2T + T2I) / 2 at R@1 or R@5) per seed.
A run's identity (pair, head, layers, R_S values, size, seed) is read from its directory (:class:`RunSpec`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .io import write_text_atomic
from .runs import VARIANT_RS_KEYS, RunSpec

RETRIEVAL_METRICS = (("i2t_r1", "I2T R@1"), ("i2t_r5", "I2T R@5"), ("t2i_r1", "T2I R@1"), ("t2i_r5", "T2I R@5"))
ZEROSHOT_METRICS = (("top1", "top-1"),)
SUMMARY_LABELS = {"zeroshot_top1": "zero-shot top-1 (%)", "retrieval_r1": "retrieval R@1 (%)",
                  "retrieval_r5": "retrieval R@5 (%)"}
REL_COLUMN = "avg. rel. improvement vs + Last (%)"
COMPARED = "compared with"
GAIN = "Δ "
VARIANT_KEYS: tuple[str, ...] = ("head", "layers", *VARIANT_RS_KEYS)


class ReportError(ValueError):
    """Inconsistent run results (a run matching no variant, a missing dataset or metric); names the file."""



def write_layer_scores(path: str | os.PathLike, scores: np.ndarray, vision_names: Sequence[str],
                       text_names: Sequence[str]) -> None:
    """Tidy CSV of a layer-score matrix: vision_layer, text_layer, vision_name, text_name, score."""
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (len(vision_names), len(text_names)):
        raise ReportError(f"layer scores {s.shape} do not match {len(vision_names)} x {len(text_names)} layer names")
    rows = [(i, j, vision_names[i], text_names[j], float(s[i, j])) for i in range(s.shape[0])
            for j in range(s.shape[1])]
    df = pd.DataFrame(rows, columns=["vision_layer", "text_layer", "vision_name", "text_name", "score"])
    write_text_atomic(path, df.to_csv(index=False, float_format="%.6f"))


def read_layer_scores(path: str | os.PathLike) -> tuple[np.ndarray, list[str], list[str]]:
    """Inverse of :func:`write_layer_scores`: (matrix [n_vision, n_text], vision names, text names)."""
    df = pd.read_csv(path)
    missing = {"vision_layer", "text_layer", "vision_name", "text_name", "score"} - set(df.columns)
    if missing:
        raise ReportError(f"{path}: missing column(s) {sorted(missing)}")
    nv, nt = int(df.vision_layer.max()) + 1, int(df.text_layer.max()) + 1
    if len(df) != nv * nt:
        raise ReportError(f"{path}: {len(df)} rows, expected {nv} x {nt} layer pairs")
    m = np.full((nv, nt), np.nan)
    m[df.vision_layer.to_numpy(), df.text_layer.to_numpy()] = df.score.to_numpy()
    vnames = df.drop_duplicates("vision_layer").sort_values("vision_layer").vision_name.astype(str).tolist()
    tnames = df.drop_duplicates("text_layer").sort_values("text_layer").text_name.astype(str).tolist()
    return m, vnames, tnames


def collect_runs(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """Tidy frame of every metric of every run: vision, text, the variant keys (head, layers, lambda, levels, tau,
    weighting, distance), fraction, seed, n_train, dataset, task, metric, value, source (the file)."""
    rows = []
    for path in paths:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        run = data.get("run")
        if not isinstance(run, dict) or not isinstance(data.get("datasets"), dict):
            raise ReportError(f"{path}: expected keys 'run' and 'datasets'")
        missing = {"fraction", "n_train"} - set(run)
        if missing:
            raise ReportError(f"{path}: run lacks {sorted(missing)}")
        spec = RunSpec.from_path(path)
        ident = {"vision": spec.vision, "text": spec.text, **spec.variant.values()}
        for dataset, res in data["datasets"].items():
            for metric, value in res["metrics"].items():
                if value is None:  # undefined for this dataset (evaluate writes null), e.g. top-5 of 3 classes
                    continue
                rows.append({**ident, "fraction": float(run["fraction"]), "seed": spec.seed,
                             "n_train": int(run["n_train"]), "dataset": dataset, "task": res["task"],
                             "metric": metric, "value": float(value), "source": os.fspath(path)})
    if not rows:
        raise ReportError("no run metrics to aggregate")
    return pd.DataFrame(rows)


def attach_variants(tidy: pd.DataFrame, variants: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Add ``variant`` (label) and ``variant_order``; a run matching no variant is an error naming its file.

    ``variants`` are records with a ``label`` and the :data:`VARIANT_KEYS` path values (``Variant.values()``).
    """
    lookup = {tuple(str(v[k]) for k in VARIANT_KEYS): (i, v["label"]) for i, v in enumerate(variants)}
    keys = list(zip(*(tidy[k] for k in VARIANT_KEYS)))
    unknown = sorted({(k, s) for k, s in zip(keys, tidy["source"]) if k not in lookup})
    if unknown:
        raise ReportError(f"run {unknown[0][1]} ({dict(zip(VARIANT_KEYS, unknown[0][0]))}) matches no variant")
    out = tidy.copy()
    out["variant_order"] = [lookup[k][0] for k in keys]
    out["variant"] = [lookup[k][1] for k in keys]
    out["encoders"] = out["vision"] + " + " + out["text"]
    return out


def column_specs(retrieval: Sequence[str], zeroshot: Sequence[str]) -> list[tuple[str, str, str]]:
    """(dataset, metric key, column title) of the main table: zero-shot first, then retrieval."""
    cols = [(d, m, f"{d} {title}") for d in zeroshot for m, title in ZEROSHOT_METRICS]
    cols += [(d, m, f"{d} {title}") for d in retrieval for m, title in RETRIEVAL_METRICS]
    return cols


# ---------------------------------------------------------------------------------------------------------------
# main table
# ---------------------------------------------------------------------------------------------------------------

def _std(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def main_table(tidy: pd.DataFrame, variants: Sequence[Mapping[str, Any]], retrieval: Sequence[str],
               zeroshot: Sequence[str]) -> pd.DataFrame:
    """One row per (encoders, variant) at the largest fraction: ``<col>`` = mean, ``<col> std`` over seeds, the
    number of seeds and training pairs, and the average relative improvement (module docstring)."""
    cols = column_specs(retrieval, zeroshot)
    frame = attach_variants(tidy, variants)
    rows = []
    for (encoders, order), grp in frame.groupby(["encoders", "variant_order"], sort=True):
        top = grp[grp.fraction == grp.fraction.max()]
        row: dict[str, Any] = {"encoders": encoders, "method": variants[order]["label"],
                               "head": variants[order]["head"], "layers": variants[order]["layers"],
                               "structure": str(variants[order]["lambda"]) != "0",
                               "fraction": float(top.fraction.iloc[0]), "n_train_pairs": int(top.n_train.iloc[0]),
                               "n_seeds": int(top.seed.nunique())}
        for dataset, metric, title in cols:
            vals = top[(top.dataset == dataset) & (top.metric == metric)].groupby("seed")["value"].first()
            if vals.empty:
                raise ReportError(f"variant {row['method']} ({encoders}): no {metric!r} for dataset {dataset!r}")
            row[title], row[f"{title} std"] = float(vals.mean()), _std(vals)
        rows.append(row)
    table = pd.DataFrame(rows)
    table[REL_COLUMN] = relative_improvement(table, [t for _, _, t in cols])
    return table


def relative_improvement(table: pd.DataFrame, columns: Sequence[str]) -> list[float]:
    """Per row: mean over ``columns`` of (row - base) / base in %, base = same encoders and head, layers "last",
    no R_S. Columns whose base is 0 are skipped (the ratio is undefined); no base row gives NaN."""
    out = []
    for _, row in table.iterrows():
        base = table[(table.encoders == row.encoders) & (table["head"] == row["head"]) & (table.layers == "last")
                     & (~table.structure)]
        if base.empty:
            out.append(float("nan"))
            continue
        b = base.iloc[0]
        ratios = [(row[c] - b[c]) / b[c] for c in columns if b[c] != 0 and math.isfinite(b[c])]
        out.append(100.0 * float(np.mean(ratios)) if ratios else float("nan"))
    return out


def _cell(mean: float, std: float, n_seeds: int) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.1f} ± {std:.1f}" if n_seeds > 1 else f"{mean:.1f}"


def _rel(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:+.1f}"


def _titles(table: pd.DataFrame) -> list[str]:
    fixed = {"encoders", "method", "head", "layers", "structure", "fraction", "n_train_pairs", "n_seeds", REL_COLUMN,
             COMPARED}
    return [c for c in table.columns if c not in fixed and not c.endswith(" std") and not c.startswith(GAIN)]


def add_gains(table: pd.DataFrame, gains: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Add the paired gain over the row's counterpart (:mod:`.claims`) at the row's training size: columns
    ``compared with`` and, per summary metric, ``Δ <metric>`` with ``Δ <metric> lo`` / ``hi`` (95 % CI)."""
    out = table.copy()
    out[COMPARED] = ""
    for name in names:
        out[f"{GAIN}{name}"] = math.nan
        out[f"{GAIN}{name} lo"] = math.nan
        out[f"{GAIN}{name} hi"] = math.nan
    for i, r in out.iterrows():
        g = gains[(gains.encoders == r.encoders) & (gains.variant == r.method) & (gains.n_train_pairs == r.n_train_pairs)]
        for _, row in g.iterrows():
            out.loc[i, COMPARED] = row.vs
            out.loc[i, [f"{GAIN}{row.metric}", f"{GAIN}{row.metric} lo", f"{GAIN}{row.metric} hi"]] = [
                row["mean"], row.lo, row.hi]
    return out


def _gain_cell(r: pd.Series, name: str) -> str:
    mean, lo, hi = r[f"{GAIN}{name}"], r[f"{GAIN}{name} lo"], r[f"{GAIN}{name} hi"]
    if not math.isfinite(mean):
        return ""
    return f"{mean:+.1f}" if not math.isfinite(lo) else f"{mean:+.1f} [{lo:+.1f}, {hi:+.1f}]"


def _gain_names(table: pd.DataFrame) -> list[str]:
    return [c[len(GAIN):] for c in table.columns if c.startswith(GAIN) and not c.endswith((" lo", " hi"))]


def degenerate_csa_fits(tidy: pd.DataFrame, variants: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], list[int]]:
    """``{(encoders, method label): [training sizes]}`` of the CSA runs whose CCA was fitted in the degenerate regime
    (a singular covariance, d >= n; docs/method.md §4.3), read from the ``run.csa_fit`` record that evaluation copies
    from each run's ``train.json``."""
    flagged = [src for src in sorted(tidy["source"].unique())
               if (json.loads(Path(src).read_text(encoding="utf-8"))["run"].get("csa_fit") or {}).get("degenerate")]
    if not flagged:
        return {}
    frame = attach_variants(tidy[tidy["source"].isin(flagged)], variants)
    return {(enc, var): sorted(int(n) for n in grp.n_train.unique())
            for (enc, _, var), grp in frame.groupby(["encoders", "variant_order", "variant"], sort=True)}


def _degenerate_note(degenerate: Mapping[tuple[str, str], Sequence[int]]) -> str:
    parts = [f"{enc}, {var}: N = {', '.join(map(str, sizes))}" for (enc, var), sizes in degenerate.items()]
    return ("\n† CSA fitted in the degenerate regime (a singular feature covariance, d >= n): relative ridge 1e-3 "
            "and only the canonical directions the data determine instead of the released reg = 0 "
            "(docs/method.md §4.3). " + "; ".join(parts) + ".\n")


def table_markdown(table: pd.DataFrame, degenerate: Mapping[tuple[str, str], Sequence[int]] | None = None) -> str:
    """GitHub markdown of the main table (mean ± std over seeds; paired gains with their 95 % CI). ``degenerate``
    (:func:`degenerate_csa_fits`) marks those rows † at the table's size and lists every size in a footnote."""
    titles, gains = _titles(table), _gain_names(table)
    degenerate = degenerate or {}
    header = ["Encoders", "Method", "pairs", "seeds", *titles, REL_COLUMN]
    if gains:
        header += [COMPARED] + [f"Δ {SUMMARY_LABELS.get(g, g)} [95 % CI]" for g in gains]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    for _, r in table.iterrows():
        mark = " †" if r.n_train_pairs in degenerate.get((r.encoders, r.method), ()) else ""
        cells = [r.encoders, r.method + mark, str(r.n_train_pairs), str(r.n_seeds)]
        cells += [_cell(r[t], r[f"{t} std"], r.n_seeds) for t in titles] + [_rel(r[REL_COLUMN])]
        if gains:
            cells += [r[COMPARED] or "—"] + [_gain_cell(r, g) for g in gains]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n" + (_degenerate_note(degenerate) if degenerate else "")


def _tex_escape(text: str) -> str:
    """Escape LaTeX specials; the regulariser's name becomes math."""
    specials = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$",
                "{": r"\{", "}": r"\}"}
    out = "".join(specials.get(ch, ch) for ch in text)
    return out.replace(r"R\_S", r"$\mathcal{R}_S$")


def table_latex(table: pd.DataFrame) -> str:
    """LaTeX (booktabs) version of the main table."""
    titles = _titles(table)
    header = ["Encoders", "Method", "pairs", *titles, "avg. rel. impr. (\\%)"]
    out = [r"\begin{tabular}{ll" + "r" * (len(header) - 2) + "}", r"\toprule",
           " & ".join(_tex_escape(h) if i < len(header) - 1 else h for i, h in enumerate(header)) + r" \\",
           r"\midrule"]
    for _, r in table.iterrows():
        cells = [_tex_escape(r.encoders), _tex_escape(r.method), str(r.n_train_pairs)]
        cells += [_cell(r[t], r[f"{t} std"], r.n_seeds).replace("±", r"$\pm$") for t in titles]
        cells.append(_rel(r[REL_COLUMN]))
        out.append(" & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# scaling
# ---------------------------------------------------------------------------------------------------------------

def scaling_table(tidy: pd.DataFrame, variants: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Tidy scaling rows: encoders, variant, fraction, n_train_pairs, seed, dataset, metric, value."""
    frame = attach_variants(tidy, variants).sort_values(
        ["encoders", "variant_order", "fraction", "seed", "dataset", "metric"], kind="stable")
    out = frame.rename(columns={"n_train": "n_train_pairs"})
    return out[["encoders", "variant", "fraction", "n_train_pairs", "seed", "dataset", "metric",
                "value"]].reset_index(drop=True)


def summary_frame(scaling: pd.DataFrame, retrieval: Sequence[str], zeroshot: Sequence[str],
                    names: Sequence[str]) -> pd.DataFrame:
    """Per (encoders, variant, fraction, n_train_pairs, seed): the summary metrics ``names`` (module docstring)."""
    keys = ["encoders", "variant", "fraction", "n_train_pairs", "seed"]
    parts = []
    for name in names:
        if name == "zeroshot_top1":
            sel = scaling[scaling.dataset.isin(zeroshot) & (scaling.metric == "top1")]
        elif name in ("retrieval_r1", "retrieval_r5"):
            k = name[-2:]
            sel = scaling[scaling.dataset.isin(retrieval) & scaling.metric.isin([f"i2t_{k}", f"t2i_{k}"])]
        else:
            raise ReportError(f"unknown summary metric {name!r}; known: {sorted(SUMMARY_LABELS)}")
        if sel.empty:
            continue
        parts.append(sel.groupby(keys, sort=False)["value"].mean().rename(name))
    if not parts:
        raise ReportError(f"none of the summary metrics {list(names)} has data")
    return pd.concat(parts, axis=1).reset_index()


def dvc_metrics(table: pd.DataFrame, summary: pd.DataFrame, names: Sequence[str]) -> dict[str, Any]:
    """Small nested dict for ``dvc metrics``: per encoder pair and variant, the summary metrics (seed means at the
    largest fraction) and the average relative improvement."""
    out: dict[str, Any] = {}
    for _, r in table.iterrows():
        top = summary[(summary.encoders == r.encoders) & (summary.variant == r.method)
                      & (summary.fraction == r.fraction)]
        entry = {n: round(float(top[n].mean()), 4) for n in names if n in top.columns}
        if math.isfinite(r[REL_COLUMN]):
            entry["rel_improvement_pct"] = round(float(r[REL_COLUMN]), 4)
        entry["n_train_pairs"] = int(r.n_train_pairs)
        out.setdefault(r.encoders.replace(" + ", "__"), {})[r.method] = entry
    return out


