"""Deterministic figures: the layer-similarity heatmap and the data-scaling plot (docs/method.md §3, §10).

Figures are byte-reproducible: a fixed font and style, and no dates or software strings in the PDF/PNG metadata,
so re-running the aggregation gives identical files (DVC hashes and Snakemake checksums stay put).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .io import atomic_write
from .tables import SUMMARY_LABELS, read_layer_scores
from .utils import log

STYLE = {"font.family": "DejaVu Sans", "font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9,
         "legend.fontsize": 7, "xtick.labelsize": 8, "ytick.labelsize": 8, "svg.hashsalt": "structure-align",
         "pdf.fonttype": 42, "figure.dpi": 100}



def save_figure(fig: Any, png: str | os.PathLike, pdf: str | os.PathLike, dpi: int = 150) -> None:
    """Write ``fig`` as PNG and PDF with identical bytes on every call (no dates, no software strings)."""
    os.environ.setdefault("SOURCE_DATE_EPOCH", "0")
    with atomic_write(png) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
    with atomic_write(pdf) as tmp:
        fig.savefig(tmp, format="pdf", metadata={"CreationDate": None, "ModDate": None, "Producer": None,
                                                 "Creator": None})


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def plot_layer_heatmap(scores_csv: str | os.PathLike, choice_json: str | os.PathLike, png: str | os.PathLike,
                       pdf: str | os.PathLike, title: str | None = None) -> None:
    """Heatmap of the layer-pair scores with the "similar" (best) and "last x last" pairs marked."""
    import matplotlib

    scores, vnames, tnames = read_layer_scores(scores_csv)
    choice = json.loads(Path(choice_json).read_text(encoding="utf-8"))
    pair = Path(scores_csv).parent.name
    with matplotlib.rc_context(STYLE):
        fig, (ax,) = _figure(max(3.5, 1.2 + 0.28 * len(tnames)), max(3.5, 1.6 + 0.22 * len(vnames)))
        im = ax.imshow(scores, cmap="viridis", aspect="auto", origin="lower")
        fig.colorbar(im, ax=ax, label=choice.get("metric", "score"))
        # white star with a black edge stays visible on the colormap and in the legend
        marks = (("similar", "*", "white", "black", "similar (max)"), ("last", "s", "none", "red", "last x last"))
        for key, marker, face, edge, label in marks:
            c = choice[key]
            ax.scatter([c["text_layer"]], [c["vision_layer"]], marker=marker, s=110, facecolors=face,
                       edgecolors=edge, linewidths=1.2, label=f"{label}: vision {c['vision_layer']}, text "
                       f"{c['text_layer']} ({c['score']:.3f})")
        ax.set_xticks(range(len(tnames)))
        ax.set_yticks(range(len(vnames)))
        ax.set_xlabel(f"text layer ({pair.split('__')[-1]})")
        ax.set_ylabel(f"vision layer ({pair.split('__')[0]})")
        ax.set_title(title or f"{pair.replace('__', ' x ')}\n{choice.get('metric', 'score')}, "
                              f"n={choice.get('n_rows', '?')}, k={choice.get('k', '?')}")
        # a figure legend in the constrained layout's "outside" slot sits right under the x label; an axes legend
        # anchored below the axes made the layout reserve a large blank band above it
        handles, labels = ax.get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=1, frameon=False)
        save_figure(fig, png, pdf)
    log.info("heatmap %s: %d x %d layers", png, len(vnames), len(tnames))


def plot_scaling(summary: pd.DataFrame, names: Sequence[str], png: str | os.PathLike, pdf: str | os.PathLike,
                 gains: pd.DataFrame | None = None) -> None:
    """Summary metric vs number of training pairs (docs/method.md §10).

    One row of panels per summary metric; one column per head with a line per layer/R_S variant (mean, ± std band
    over seeds) and, when ``gains`` is given, a last column with the paired R_S gain (Similar + R_S minus Similar,
    per seed) of every head with its 95 % CI as error bars.
    """
    import matplotlib

    names = [n for n in names if n in summary.columns]
    heads = list(dict.fromkeys(v.split(" + ")[0] for v in summary.variant))
    rs_gains = None
    if gains is not None and not gains.empty:
        rs_gains = gains[gains.variant.str.endswith("Similar + R_S") & gains.vs.str.endswith("Similar")]
    ncols = len(heads) + (1 if rs_gains is not None and not rs_gains.empty else 0)
    multi_pair = summary.encoders.nunique() > 1
    with matplotlib.rc_context(STYLE):
        from matplotlib import colormaps
        from matplotlib.figure import Figure

        colors = colormaps["tab10"].colors
        fig = Figure(figsize=(2.9 * ncols + 0.4, 2.5 * len(names) + 0.3), layout="constrained")
        grid = fig.subplots(len(names), ncols, squeeze=False)
        sizes = sorted(summary.n_train_pairs.unique())
        for r, name in enumerate(names):
            for c, head in enumerate(heads):
                ax = grid[r][c]
                sel_head = summary[summary.variant.str.split(" + ", regex=False).str[0] == head]
                for ci, (enc, var) in enumerate(dict.fromkeys(zip(sel_head.encoders, sel_head.variant))):
                    sel = sel_head[(sel_head.encoders == enc) & (sel_head.variant == var)]
                    st = sel.groupby("n_train_pairs")[name].agg(["mean", "std", "count"]).sort_index()
                    std = st["std"].where(st["count"] > 1, 0.0).to_numpy()
                    x, m = st.index.to_numpy(), st["mean"].to_numpy()
                    label = var.split(" + ", 1)[1] + (f" ({enc})" if multi_pair else "")
                    ax.plot(x, m, marker="o", ms=3, lw=1.2, color=colors[ci % len(colors)], label=label)
                    ax.fill_between(x, m - std, m + std, color=colors[ci % len(colors)], alpha=0.15, lw=0)
                _log_axis(ax, sizes)
                ax.set_ylabel(SUMMARY_LABELS[name] if c == 0 else "")
                if r == 0:
                    ax.set_title(head)
                    ax.legend(loc="best", frameon=False)
            if ncols > len(heads):
                _plot_gains(grid[r][-1], rs_gains[rs_gains.metric == name], heads, colors, sizes, r == 0)
        save_figure(fig, png, pdf)


def _log_axis(ax: Any, sizes: Sequence[int]) -> None:
    """Log x axis labelled exactly at the measured sizes (minor labels of a log axis would overlap)."""
    from matplotlib.ticker import NullLocator

    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(sizes, [str(int(n)) for n in sizes])
    ax.set_xlabel("training pairs")
    ax.grid(True, which="major", lw=0.3)


def _plot_gains(ax: Any, gains: pd.DataFrame, heads: Sequence[str], colors: Sequence[Any], sizes: Sequence[int],
                title: bool) -> None:
    """Paired R_S gain per head vs N with 95 % CI error bars; heads are offset slightly on the log axis."""
    import numpy as np

    for i, head in enumerate(heads):
        g = gains[gains.variant.str.split(" + ", regex=False).str[0] == head].sort_values("n_train_pairs")
        if g.empty:
            continue
        x = g.n_train_pairs.to_numpy(dtype=float) * (1.0 + 0.04 * (i - (len(heads) - 1) / 2))
        m = g["mean"].to_numpy()
        lo, hi = np.nan_to_num(m - g.lo.to_numpy()), np.nan_to_num(g.hi.to_numpy() - m)
        ax.errorbar(x, m, yerr=[lo, hi], marker="o", ms=3, lw=1.0, capsize=2, color=colors[i % len(colors)],
                    label=head)
    ax.axhline(0.0, color="black", lw=0.6)
    _log_axis(ax, sizes)
    ax.set_ylabel("paired gain of R_S (points)")
    if title:
        ax.set_title("R_S gain (Similar), 95 % CI")
        ax.legend(loc="best", frameon=False)


