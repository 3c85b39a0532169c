"""Figures of the analysis targets (docs/analysis.md), byte-reproducible like the main figures
(:func:`structure_align.figures.save_figure`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .figures import STYLE, save_figure
from .tables import SUMMARY_LABELS


def _label(metric: str) -> str:
    return SUMMARY_LABELS.get(metric, f"{metric} (%)")


def _figure(ncols: int, nrows: int = 1, width: float = 3.2, height: float = 2.8) -> tuple[Any, np.ndarray]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols + 0.4, height * nrows + 0.3), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _colors() -> Sequence[Any]:
    from matplotlib import colormaps

    return colormaps["tab10"].colors


def plot_combination_gains(gains: pd.DataFrame, names: Sequence[str], png: str | os.PathLike,
                           pdf: str | os.PathLike) -> None:
    """Grouped bars: per encoder pair (group) the paired gain of each comparison (bar), 95 % CI as error bars."""
    import matplotlib

    with matplotlib.rc_context(STYLE):
        colors = _colors()
        comps = list(dict.fromkeys(gains.comparison))
        encs = list(dict.fromkeys(gains.encoders))
        fig, axes = _figure(len(names), width=max(3.2, 0.9 * len(encs) + 1.2))
        width = 0.8 / len(comps)
        for ax, m in zip(axes[0], names):
            for ci, comp in enumerate(comps):
                sel = gains[(gains.metric == m) & (gains.comparison == comp)].set_index("encoders").reindex(encs)
                x = np.arange(len(encs)) + (ci - (len(comps) - 1) / 2) * width
                lo = (sel.gain - sel.ci_lo).fillna(0).to_numpy()
                hi = (sel.ci_hi - sel.gain).fillna(0).to_numpy()
                ax.bar(x, sel.gain.to_numpy(), width, color=colors[ci % len(colors)], label=comp,
                       yerr=np.vstack([lo, hi]), capsize=2, error_kw={"lw": 0.8})
            ax.axhline(0, color="black", lw=0.6)
            ax.set_xticks(range(len(encs)), [e.replace(" + ", "\n+ ") for e in encs], fontsize=7)
            ax.set_ylabel(f"paired gain, {_label(m)}")
            ax.grid(True, axis="y", lw=0.3)
        axes[0][0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), frameon=False, fontsize=7)
        save_figure(fig, png, pdf)


def plot_layer_correlation(per_pair: pd.DataFrame, rho: pd.DataFrame, names: Sequence[str],
                           png: str | os.PathLike, pdf: str | os.PathLike) -> None:
    """Scatter of layer score vs each metric (one panel per metric, a colour per encoder pair); the Similar
    (star) and Last (square) pairs marked; ρ [CI] in the title."""
    import matplotlib

    with matplotlib.rc_context(STYLE):
        colors = _colors()
        encs = list(dict.fromkeys(per_pair.encoders))
        fig, axes = _figure(len(names))
        for ax, m in zip(axes[0], names):
            title = []
            for ei, enc in enumerate(encs):
                sel = per_pair[per_pair.encoders == enc]
                ax.scatter(sel.score, sel[m], s=14, color=colors[ei % len(colors)], alpha=0.8, label=enc)
                for flag, marker, name in (("is_similar", "*", "Similar"), ("is_last", "s", "Last")):
                    pick = sel[sel[flag]]
                    ax.scatter(pick.score, pick[m], s=120 if marker == "*" else 60, marker=marker,
                               facecolors="none" if marker == "s" else "white", edgecolors="black", linewidths=1.0,
                               label=name if ei == 0 else None, zorder=3)
                r = rho[(rho.encoders == enc) & (rho.metric == m)]
                if not r.empty:
                    title.append(f"ρ = {r.rho_text.iloc[0]}")
            ax.set_xlabel("mutual-kNN score of the layer pair")
            ax.set_ylabel(_label(m))
            ax.set_title("; ".join(title), fontsize=8)
            ax.grid(True, lw=0.3)
        axes[0][0].legend(loc="best", frameon=False, fontsize=7)
        save_figure(fig, png, pdf)


def plot_ablations(table: pd.DataFrame, names: Sequence[str], png: str | os.PathLike,
                   pdf: str | os.PathLike) -> None:
    """One panel per (metric, axis): the metric against the axis value, a line per training size (± std)."""
    import matplotlib

    axes_list = list(dict.fromkeys(table.axis))
    with matplotlib.rc_context(STYLE):
        colors = _colors()
        fig, axes = _figure(len(axes_list), len(names), width=2.6, height=2.3)
        for ri, m in enumerate(names):
            for ci, axis in enumerate(axes_list):
                ax = axes[ri][ci]
                sel = table[table.axis == axis]
                values = list(dict.fromkeys(sel.value))
                for si, (n, grp) in enumerate(sel.groupby("n_train_pairs", sort=True)):
                    grp = grp.set_index("value").reindex(values)
                    x = np.arange(len(values))
                    ax.errorbar(x, grp[m], yerr=grp[f"{m} std"], marker="o", ms=3, lw=1.1, capsize=2,
                                color=colors[si % len(colors)], label=f"{n} pairs")
                ax.set_xticks(range(len(values)), values)
                ax.set_xlabel(axis if axis != "lambda" else "λ")
                if ci == 0:
                    ax.set_ylabel(_label(m))
                ax.grid(True, lw=0.3)
        axes[0][0].legend(loc="best", frameon=False, fontsize=7)
        save_figure(fig, png, pdf)


def plot_in_domain(table: pd.DataFrame, metric: str, png: str | os.PathLike, pdf: str | os.PathLike,
                   reference: float | None = None) -> None:
    """The in-domain set's top-1 against k (labelled samples per class), a curve per variant (± std); an optional
    horizontal reference line (e.g. CLIP in the paper profile)."""
    import matplotlib

    with matplotlib.rc_context(STYLE):
        colors = _colors()
        fig, axes = _figure(1, width=4.0, height=3.0)
        ax = axes[0][0]
        for vi, (var, grp) in enumerate(table.groupby("variant", sort=False)):
            grp = grp.sort_values("k")
            x, y, s = grp.k.to_numpy(), grp[metric].to_numpy(), grp[f"{metric} std"].to_numpy()
            ax.plot(x, y, marker="o", ms=3, lw=1.2, color=colors[vi % len(colors)], label=var)
            ax.fill_between(x, y - s, y + s, color=colors[vi % len(colors)], alpha=0.2, lw=0)
        if reference is not None:
            ax.axhline(reference, color="black", ls="--", lw=0.8, label="reference")
        ks = sorted(table.k.unique())
        ax.set_xticks(ks, [str(int(k)) for k in ks])
        ax.set_xlabel("labelled in-domain samples per class (k)")
        ax.set_ylabel(f"{metric.replace(' top1', ' top-1')} (%)")
        ax.grid(True, lw=0.3)
        ax.legend(loc="best", frameon=False, fontsize=7)
        save_figure(fig, png, pdf)


def plot_neighbourhood(history: pd.DataFrame, png: str | os.PathLike, pdf: str | os.PathLike) -> None:
    """Trustworthiness (top row) and continuity (bottom row) per epoch, a column per k; a colour per variant,
    solid = image head, dashed = text head; mean over the seeds that reached the epoch."""
    import matplotlib

    ks = sorted(history.k.unique())
    with matplotlib.rc_context(STYLE):
        colors = _colors()
        fig, axes = _figure(len(ks), 2, width=3.4, height=2.5)
        variants = list(dict.fromkeys(history.variant))
        for ri, meas in enumerate(("trust", "cont")):
            for ci, k in enumerate(ks):
                ax = axes[ri][ci]
                for vi, var in enumerate(variants):
                    for mod, ls in (("image", "-"), ("text", "--")):
                        sel = history[(history.variant == var) & (history.modality == mod) & (history.measure == meas)
                                      & (history.k == k)]
                        curve = sel.groupby("epoch").value.mean()
                        ax.plot(curve.index, curve.to_numpy(), ls=ls, lw=1.1, color=colors[vi % len(colors)],
                                label=f"{var} ({mod})")
                used = int(history[history.k == k].k_used.min())
                ax.set_title(f"{'trustworthiness' if meas == 'trust' else 'continuity'}, k = {k}"
                             + (f" (capped to {used})" if used != k else ""), fontsize=8)
                ax.set_xlabel("epoch")
                ax.grid(True, lw=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=2, frameon=False, fontsize=7)
        save_figure(fig, png, pdf)
