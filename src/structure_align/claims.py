"""Paired comparisons between table rows (docs/method.md §8): per-seed gains with 95 % CIs, the claims table and the
data-utility factor.

Every comparison pairs two variants of the same encoder pair and head at the same training size seed by seed (same
subsample, same validation split, same initialisation seed), see :mod:`.stats`. The compared row of a variant is its
*counterpart*: a variant with R_S is compared with the same head and layer choice without R_S; "Similar" without
R_S is compared with "Last" without R_S. Summary metrics are the per-seed means over the datasets of a kind
(``zeroshot_top1``: zero-shot top-1 over the zero-shot sets; ``retrieval_r1``: I2T and T2I R@1 over the retrieval
sets), so a gain is in percentage points of that mean.

Every comparison also carries its power (:mod:`.stats`): the minimal detectable effect (MDE) at 80 % power and
alpha = 0.05 for the observed paired SD and seed count, and the seeds needed to detect the stated ``target_effect``
(params ``report.target_effect``). A claim's *reference effect* is the effect the paper reports for the same
comparison (from the paper's published table, params ``report.paper_effects``) or, where the paper reports none,
the target effect; an inconclusive claim whose MDE exceeds it is ``underpowered``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from .stats import PairedDifference, data_utility, paired_difference

GAIN_COLUMNS = ["encoders", "variant", "vs", "head", "n_train_pairs", "metric", "mean", "lo", "hi", "std", "n",
                "p_value", "mde", "seeds_needed"]
# summary metric -> suffix of the paper table's columns it averages (tables.SUMMARY metrics are dataset means)
_PAPER_SUFFIX = {"zeroshot_top1": " top-1", "retrieval_r1": " R@1", "retrieval_r5": " R@5"}


def counterpart(variant: Mapping[str, Any], variants: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The row ``variant`` is compared with (module docstring), or None (a baseline "Last" row, or no such row)."""
    if str(variant["lambda"]) != "0":
        want = (variant["head"], variant["layers"])
    elif variant["layers"] == "similar":
        want = (variant["head"], "last")
    else:
        return None
    for other in variants:
        if (other["head"], other["layers"]) == want and str(other["lambda"]) == "0":
            return other
    return None


def _seed_values(summary: pd.DataFrame, encoders: str, label: str, n: int, metric: str) -> pd.Series:
    sel = summary[(summary.encoders == encoders) & (summary.variant == label) & (summary.n_train_pairs == n)]
    return sel.groupby("seed")[metric].mean()


def paired_gain(summary: pd.DataFrame, encoders: str, label: str, base: str, n: int, metric: str) -> PairedDifference:
    """``label - base`` per seed at ``n`` training pairs (seeds present in both)."""
    a, b = _seed_values(summary, encoders, base, n, metric), _seed_values(summary, encoders, label, n, metric)
    seeds = sorted(set(a.index) & set(b.index))
    if not seeds:
        raise ValueError(f"no common seeds of {label!r} and {base!r} at n={n} ({encoders})")
    return paired_difference(a.loc[seeds].to_numpy(), b.loc[seeds].to_numpy())


def gains_table(summary: pd.DataFrame, variants: Sequence[Mapping[str, Any]], names: Sequence[str],
                target_effect: float = 1.0) -> pd.DataFrame:
    """Every variant with a counterpart, at every training size and summary metric: the paired gain, its CI, its
    MDE and the seeds needed to detect ``target_effect`` points."""
    rows = []
    for encoders in dict.fromkeys(summary.encoders):
        for v in variants:
            base = counterpart(v, variants)
            if base is None:
                continue
            sizes = sorted(summary[(summary.encoders == encoders) & (summary.variant == v["label"])]
                           .n_train_pairs.unique())
            for n in sizes:
                for metric in (m for m in names if m in summary.columns):
                    d = paired_gain(summary, encoders, v["label"], base["label"], int(n), metric)
                    rows.append({"encoders": encoders, "variant": v["label"], "vs": base["label"], "head": v["head"],
                                 "n_train_pairs": int(n), "metric": metric, "mean": d.mean, "lo": d.lo, "hi": d.hi,
                                 "std": d.std, "n": d.n, "p_value": d.p_value, "mde": d.mde(),
                                 "seeds_needed": d.seeds_needed(target_effect)})
    return pd.DataFrame(rows, columns=GAIN_COLUMNS)


def _label(variants: Sequence[Mapping[str, Any]], head: str, layers: str, rs: bool) -> str | None:
    for v in variants:
        if v["head"] == head and v["layers"] == layers and (str(v["lambda"]) != "0") == rs:
            return str(v["label"])
    return None


def _variant(variants: Sequence[Mapping[str, Any]], label: str) -> Mapping[str, Any]:
    return next(v for v in variants if v["label"] == label)


def paper_effect(paper: pd.DataFrame | None, new: Mapping[str, Any], base: Mapping[str, Any], metric: str) -> float:
    """The paper's effect of ``new`` over ``base`` on a summary metric: the mean over the paper table's columns of
    that kind (``* top-1`` for zeroshot_top1, ``* R@1`` for retrieval_r1) of paper[new] - paper[base].

    Rows match on (head, layers, R_S on/off) as in :func:`structure_align.reference.paper_table`. NaN when there is
    no paper table, a row is missing or the paper has no column of that kind.
    """
    if paper is None or metric not in _PAPER_SUFFIX:
        return math.nan
    cols = [c for c in paper.columns if str(c).endswith(_PAPER_SUFFIX[metric])]

    def row(v: Mapping[str, Any]) -> pd.Series | None:
        rs = str(v["lambda"]) != "0"
        hit = paper[(paper["head"] == v["head"]) & (paper["layers"] == v["layers"])
                    & (paper["structure"].astype(str).str.lower() == str(rs).lower())]
        return hit.iloc[0] if len(hit) else None

    a, b = row(base), row(new)
    if a is None or b is None or not cols:
        return math.nan
    return float((b[cols].astype(float) - a[cols].astype(float)).mean())


def _claim_row(cid: str, claim: str, comparison: str, metric: str, n: int | str, d: PairedDifference,
               condition: str, target_effect: float, paper: float = math.nan) -> dict[str, Any]:
    reference = paper if math.isfinite(paper) else target_effect
    return {"id": cid, "claim": claim, "comparison": comparison, "metric": metric, "n_train_pairs": n,
            "seeds": d.n, "effect": d.mean, "ci_lo": d.lo, "ci_hi": d.hi, "p_value": d.p_value, "mde": d.mde(),
            "paper_effect": paper, "target_effect": target_effect, "seeds_needed": d.seeds_needed(target_effect),
            "verdict": d.verdict(reference_effect=reference), "condition": condition}


def claims_table(summary: pd.DataFrame, variants: Sequence[Mapping[str, Any]], names: Sequence[str],
                 condition: str, target_effect: float = 1.0, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per paper claim (x summary metric x head where the claim is per head), measured on this run.

    C1 R_S improves over no R_S at small N (Linear, Similar, smallest N); C2 Similar >= Last (Linear, largest N);
    C3 the R_S gain shrinks as N grows (per-seed gain at the smallest minus at the largest N); C4 R_S helps every
    head (Similar + R_S vs Similar at the smallest N, one row per head). ``condition`` names encoders and data.
    Power columns and the ``underpowered`` verdict: module docstring (``paper`` = the paper's published table, as
    read by :func:`structure_align.reference.write_paper_table`, or None).
    """
    rows: list[dict[str, Any]] = []

    def claim(cid: str, text: str, comparison: str, metric: str, n: int | str, d: PairedDifference, cond: str,
              new: str | None = None, base: str | None = None) -> dict[str, Any]:
        effect = (paper_effect(paper, _variant(variants, new), _variant(variants, base), metric)
                  if new and base else math.nan)
        return _claim_row(cid, text, comparison, metric, n, d, cond, target_effect, effect)

    metrics = [m for m in names if m in summary.columns]
    for encoders in dict.fromkeys(summary.encoders):
        sizes = sorted(summary[summary.encoders == encoders].n_train_pairs.unique())
        small, large = int(sizes[0]), int(sizes[-1])
        cond = f"{encoders}; {condition}"
        heads = list(dict.fromkeys(v["head"] for v in variants))
        for metric in metrics:
            rs, sim, last = (_label(variants, "linear", "similar", True), _label(variants, "linear", "similar", False),
                             _label(variants, "linear", "last", False))
            if rs and sim:
                rows.append(claim("C1", "R_S improves over no R_S at small N", f"{rs} - {sim}", metric, small,
                                  paired_gain(summary, encoders, rs, sim, small, metric), cond, rs, sim))
            if sim and last:
                rows.append(claim("C2", "Similar >= Last", f"{sim} - {last}", metric, large,
                                  paired_gain(summary, encoders, sim, last, large, metric), cond, sim, last))
            if rs and sim and small != large:
                g_small = _per_seed_gain(summary, encoders, rs, sim, small, metric)
                g_large = _per_seed_gain(summary, encoders, rs, sim, large, metric)
                seeds = sorted(set(g_small.index) & set(g_large.index))
                d = paired_difference(g_large.loc[seeds].to_numpy(), g_small.loc[seeds].to_numpy())
                rows.append(claim("C3", "the R_S gain shrinks as N grows",
                                  f"gain at N={small} - gain at N={large} ({rs} - {sim})", metric,
                                  f"{small} vs {large}", d, cond))
            for head in heads:
                h_rs, h_sim = _label(variants, head, "similar", True), _label(variants, head, "similar", False)
                if h_rs and h_sim:
                    head_label = h_sim.split(" + ")[0]
                    rows.append(claim("C4", f"R_S helps every head ({head_label})", f"{h_rs} - {h_sim}", metric,
                                      small, paired_gain(summary, encoders, h_rs, h_sim, small, metric), cond,
                                      h_rs, h_sim))
    return pd.DataFrame(rows)


def _per_seed_gain(summary: pd.DataFrame, encoders: str, label: str, base: str, n: int, metric: str) -> pd.Series:
    a, b = _seed_values(summary, encoders, base, n, metric), _seed_values(summary, encoders, label, n, metric)
    return (b - a).dropna()


def _num(value: float, fmt: str) -> str:
    return "n/a" if not math.isfinite(value) else format(value, fmt)


def claims_markdown(claims: pd.DataFrame) -> str:
    """The claims table as Markdown: effect in points with its 95 % CI, seeds, p-value, power and verdict."""
    target = float(claims["target_effect"].iloc[0]) if len(claims) else 1.0
    header = ["id", "claim", "comparison", "metric", "N", "seeds", "effect [95 % CI] (points)", "p", "MDE (points)",
              "paper effect", f"seeds for {target:g} pt", "verdict", "condition"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for _, r in claims.iterrows():
        d = PairedDifference(r.effect, r.ci_lo, r.ci_hi, math.nan, int(r.seeds), r.p_value)
        needed = _num(r.seeds_needed, ".0f") if r.seeds_needed <= 1000 or not math.isfinite(r.seeds_needed) \
            else "> 1000"
        lines.append("| " + " | ".join([r.id, r.claim, r.comparison, r.metric, str(r.n_train_pairs), str(r.seeds),
                                        d.format(), _num(r.p_value, ".3f"), _num(r.mde, ".2f"),
                                        _num(r.paper_effect, "+.2f"), needed, f"**{r.verdict}**",
                                        r.condition]) + " |")
    note = ("\nVerdicts: supported = the 95 % CI of the paired per-seed difference lies above 0; not supported = it "
            "lies at or below 0; inconclusive = it contains 0; underpowered = it contains 0 and the MDE is above the "
            "effect the paper reports for this comparison (or, where the paper reports none, above the "
            f"{target:g}-point target effect), so the seeds could not have seen that effect. MDE = minimal "
            "detectable effect of a paired t-test at 80 % power and alpha = 0.05 for the observed paired SD and "
            f"seed count; seeds for {target:g} pt = seeds that detect a {target:g}-point effect at that SD. "
            "C3 compares the gain at the smallest N with the gain at the largest N (positive = the gain shrinks).\n")
    return "\n".join(lines) + "\n" + note


def utility_table(summary: pd.DataFrame, variants: Sequence[Mapping[str, Any]], names: Sequence[str]) -> pd.DataFrame:
    """Data-utility factor of every R_S variant against its counterpart, per summary metric (:func:`data_utility`)."""
    rows = []
    for encoders in dict.fromkeys(summary.encoders):
        for v in variants:
            base = counterpart(v, variants)
            if base is None or str(v["lambda"]) == "0":
                continue
            for metric in (m for m in names if m in summary.columns):
                b = _curve(summary, encoders, base["label"], metric)
                r = _curve(summary, encoders, v["label"], metric)
                needed, factor = data_utility(b.index, b.to_numpy(), r.index, r.to_numpy())
                reached_at_min = math.isfinite(needed) and needed == float(r.index.min())
                rows.append({"encoders": encoders, "variant": v["label"], "vs": base["label"], "metric": metric,
                             "baseline_n": int(b.index.max()), "baseline_score": float(b.iloc[-1]),
                             "n_needed": needed, "factor": factor,
                             "note": ("not reached" if not math.isfinite(needed) else
                                      "reached at the smallest size (factor is a lower bound)" if reached_at_min
                                      else "interpolated on log N")})
    return pd.DataFrame(rows)


def _curve(summary: pd.DataFrame, encoders: str, label: str, metric: str) -> pd.Series:
    sel = summary[(summary.encoders == encoders) & (summary.variant == label)]
    return sel.groupby("n_train_pairs")[metric].mean().sort_index()


def utility_markdown(table: pd.DataFrame) -> str:
    """The data-utility table as Markdown."""
    header = ["Encoders", "Variant", "vs", "metric", "baseline N", "baseline score", "N needed", "factor", "note"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for _, r in table.iterrows():
        needed = "—" if not math.isfinite(r.n_needed) else f"{r.n_needed:.0f}"
        factor = "—" if not math.isfinite(r.factor) else f"{r.factor:.2f}×"
        lines.append("| " + " | ".join([r.encoders, r.variant, r.vs, r.metric, str(r.baseline_n),
                                        f"{r.baseline_score:.1f}", needed, factor, r.note]) + " |")
    note = ("\nfactor = baseline N / N needed: how many times fewer pairs the R_S variant needs to reach the "
            "baseline's mean score at the baseline's largest N (seed means, linear interpolation on log N).\n")
    return "\n".join(lines) + "\n" + note


def headline_markdown(summary: pd.DataFrame, gains: pd.DataFrame, variants: Sequence[Mapping[str, Any]],
                      names: Sequence[str]) -> str:
    """Compact table for the README: per encoder pair, variant and the smallest / largest training size, each
    summary metric as mean ± std over seeds and the paired gain over the row's counterpart with its 95 % CI."""
    from .tables import SUMMARY_LABELS

    metrics = [m for m in names if m in summary.columns]
    header = ["Encoders", "Method", "N", "seeds"]
    for m in metrics:
        header += [SUMMARY_LABELS.get(m, m), "Δ [95 % CI]"]
    header.append("compared with")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 3) + ["---"])
             + "|"]
    for encoders in dict.fromkeys(summary.encoders):
        sizes = sorted(summary[summary.encoders == encoders].n_train_pairs.unique())
        for n in dict.fromkeys([sizes[0], sizes[-1]]):
            for v in variants:
                sel = summary[(summary.encoders == encoders) & (summary.variant == v["label"])
                              & (summary.n_train_pairs == n)]
                if sel.empty:
                    continue
                base = counterpart(v, variants)
                cells = [encoders, str(v["label"]), str(int(n)), str(sel.seed.nunique())]
                for m in metrics:
                    std = float(sel[m].std(ddof=1)) if len(sel) > 1 else 0.0
                    cells.append(f"{sel[m].mean():.1f} ± {std:.1f}")
                    g = gains[(gains.encoders == encoders) & (gains.variant == v["label"])
                              & (gains.n_train_pairs == n) & (gains.metric == m)]
                    cells.append("—" if g.empty else PairedDifference(
                        g["mean"].iloc[0], g.lo.iloc[0], g.hi.iloc[0], math.nan, int(g.n.iloc[0]), math.nan)
                        .format(1))
                cells.append(str(base["label"]) if base is not None else "—")
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
