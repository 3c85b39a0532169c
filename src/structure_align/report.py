"""The aggregation step: every run's ``metrics.json`` -> tables, figures and DVC metrics under the results folder.

:func:`output_files` is the one list of what aggregation writes (the Snakemake rule declares exactly these paths);
the tables are built in :mod:`.tables`, the figures drawn in :mod:`.figures`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from .claims import claims_markdown, claims_table, gains_table, headline_markdown, utility_markdown, utility_table
from .figures import plot_layer_heatmap, plot_scaling, save_figure
from .io import write_text_atomic
from .tables import (
    ReportError,
    add_gains,
    collect_runs,
    degenerate_csa_fits,
    dvc_metrics,
    main_table,
    read_layer_scores,
    scaling_table,
    summary_frame,
    table_latex,
    table_markdown,
    write_layer_scores,
)
from .utils import log

__all__ = ["ReportError", "aggregate", "output_files", "plot_layer_heatmap", "read_layer_scores", "save_figure",
           "write_layer_scores"]


def output_files(results_dir: str) -> dict[str, str]:
    """Every file the aggregation writes, by role (main table csv/md/tex, scaling csv + summary + figure, metrics)."""
    tables, figures = f"{results_dir}/tables", f"{results_dir}/figures"
    return {"main_csv": f"{tables}/main.csv", "main_md": f"{tables}/main.md", "main_tex": f"{tables}/main.tex",
            "scaling_csv": f"{tables}/scaling.csv", "summary_csv": f"{tables}/scaling_summary.csv",
            "gains_csv": f"{tables}/gains.csv", "claims_csv": f"{tables}/claims.csv",
            "claims_md": f"{tables}/claims.md", "utility_csv": f"{tables}/data_utility.csv",
            "utility_md": f"{tables}/data_utility.md", "headline_md": f"{tables}/headline.md",
            "scaling_png": f"{figures}/scaling.png", "scaling_pdf": f"{figures}/scaling.pdf",
            "metrics": f"{results_dir}/metrics.json"}


def skipped_images_note(manifests: Sequence[str | os.PathLike]) -> str:
    """A line per dataset whose manifest dropped images (params ``images.on_bad_image: skip``, counts.image_check of
    its info JSON), or "" when none did (the tables of a clean run are unchanged)."""
    lines = []
    for path in manifests:
        with open(path, encoding="utf-8") as fh:
            info = json.load(fh)
        check = (info.get("counts") or {}).get("image_check") or {}
        if check.get("skipped"):
            lines.append(f"- {info['name']}: {len(check['skipped'])} of {check['checked']} images skipped by the "
                         f"pre-flight check (listed in its manifest info, counts.image_check.skipped)")
    return ("\nData:\n" + "\n".join(lines) + "\n") if lines else ""


def aggregate(runs: Sequence[str | os.PathLike], *, results_dir: str, variants: Sequence[Mapping[str, Any]],
              retrieval: Sequence[str], zeroshot: Sequence[str], summary_metrics: Sequence[str],
              condition: str = "", target_effect: float = 1.0,
              paper_effects: str | os.PathLike | None = None,
              manifests: Sequence[str | os.PathLike] = ()) -> pd.DataFrame:
    """Write every file of :func:`output_files` from the runs' metrics; returns the main table.

    ``variants`` are the table rows in params order (``label`` + path values, see :func:`tables.attach_variants`);
    ``condition`` describes the data for the claims table (training and evaluation sets); ``target_effect`` (points)
    and ``paper_effects`` (CSV of the paper's table, or None) are params ``report.target_effect`` /
    ``report.paper_effects``: the power columns and the ``underpowered`` verdict (:mod:`.claims`). ``manifests`` are
    the info JSONs of the datasets used: images the pre-flight check skipped are named under the claims table.
    """
    out = output_files(results_dir)
    names = list(summary_metrics)
    missing = [os.fspath(p) for p in runs if not os.path.isfile(p)]
    if missing:
        raise ReportError(f"aggregate: missing run metrics {missing[:5]}")
    tidy = collect_runs(runs)
    table = main_table(tidy, variants, retrieval, zeroshot)
    scaling = scaling_table(tidy, variants)
    summary = summary_frame(scaling, retrieval, zeroshot, names)
    gains = gains_table(summary, variants, names, target_effect)
    table = add_gains(table, gains, names)
    paper = pd.read_csv(paper_effects) if paper_effects else None
    claims = claims_table(summary, variants, names, condition, target_effect, paper)
    utility = utility_table(summary, variants, names)
    write_text_atomic(out["main_csv"], table.to_csv(index=False, float_format="%.4f"))
    write_text_atomic(out["main_md"], table_markdown(table, degenerate_csa_fits(tidy, variants)))
    write_text_atomic(out["main_tex"], table_latex(table))
    write_text_atomic(out["scaling_csv"], scaling.to_csv(index=False, float_format="%.4f"))
    write_text_atomic(out["summary_csv"], summary.to_csv(index=False, float_format="%.4f"))
    write_text_atomic(out["gains_csv"], gains.to_csv(index=False, float_format="%.4f"))
    write_text_atomic(out["claims_csv"], claims.to_csv(index=False, float_format="%.4f"))
    write_text_atomic(out["claims_md"], claims_markdown(claims) + skipped_images_note(manifests))
    write_text_atomic(out["utility_csv"], utility.to_csv(index=False, float_format="%.4f"))
    write_text_atomic(out["utility_md"], utility_markdown(utility))
    write_text_atomic(out["headline_md"], headline_markdown(summary, gains, variants, names))
    plot_scaling(summary, names, out["scaling_png"], out["scaling_pdf"], gains=gains)
    write_text_atomic(out["metrics"], json.dumps(dvc_metrics(table, summary, names), indent=2, sort_keys=True) + "\n")
    log.info("aggregated %d runs into %d table rows", len(runs), len(table))
    return table
