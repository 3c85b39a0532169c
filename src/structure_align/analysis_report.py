"""The aggregation step of each analysis target: its runs' files -> the table(s) and figure of
:func:`structure_align.analysis.output_files` (docs/analysis.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from .analysis import output_files
from .analysis_figures import (
    plot_ablations,
    plot_combination_gains,
    plot_in_domain,
    plot_layer_correlation,
    plot_neighbourhood,
)
from .analysis_tables import (
    ablations_table,
    combinations_table,
    in_domain_table,
    layer_correlation_tables,
    markdown,
    neighbourhood_history,
    neighbourhood_table,
    run_summary,
)
from .io import write_text_atomic
from .tables import ReportError
from .utils import log


def _csv(path: str, frame: Any) -> None:
    write_text_atomic(path, frame.to_csv(index=False, float_format="%.4f"))


def _summary(inputs: Sequence[str], config: Mapping[str, Any], extra: Sequence[str] = ()) -> Any:
    return run_summary(inputs, config["retrieval"], config["zeroshot"], config["summary_metrics"], extra)


def aggregate_target(target: str, inputs: Sequence[str | os.PathLike], *, results_dir: str,
                     config: Mapping[str, Any]) -> None:
    """Write every output of ``target`` from ``inputs`` (metrics.json of each run; train.json for neighbourhood).

    ``config``: ``records`` (the target's variant records), ``retrieval``, ``zeroshot``, ``summary_metrics``, and
    per target ``scores`` (pair -> scores.csv) + ``n_boot`` (layer_correlation) or ``dataset`` (in_domain).
    """
    missing = [os.fspath(p) for p in inputs if not os.path.isfile(p)]
    if missing:
        raise ReportError(f"analysis {target}: missing run files {missing[:5]}")
    out = output_files(target, results_dir)
    inputs = [os.fspath(p) for p in inputs]
    records, names = config["records"], list(config["summary_metrics"])
    if target == "combinations":
        means, gains = combinations_table(_summary(inputs, config), records, names)
        _csv(out["csv"], gains)
        write_text_atomic(out["md"], "## Means over seeds\n\n" + markdown(means) + "\n## Paired gains (95 % CI)\n\n"
                          + markdown(gains.drop(columns=["gain_text"])))
        plot_combination_gains(gains, names, out["png"], out["pdf"])
    elif target == "layer_correlation":
        per_pair, rho = layer_correlation_tables(_summary(inputs, config), config["scores"], names,
                                                 n_boot=int(config["n_boot"]))
        _csv(out["csv"], per_pair)
        _csv(out["rho_csv"], rho)
        write_text_atomic(out["md"], "## Spearman rho of layer score vs metric (bootstrap 95 % CI over pairs)\n\n"
                          + markdown(rho.drop(columns=["rho_text"])) + "\n## Layer pairs\n\n" + markdown(per_pair, 3))
        plot_layer_correlation(per_pair, rho, names, out["png"], out["pdf"])
    elif target == "ablations":
        table = ablations_table(_summary(inputs, config), records, names)
        _csv(out["csv"], table)
        write_text_atomic(out["md"], markdown(table))
        plot_ablations(table, names, out["png"], out["pdf"])
    elif target == "in_domain":
        metric = f"{config['dataset']} top1"
        table = in_domain_table(_summary(inputs, config, [config["dataset"]]), records, metric, names)
        _csv(out["csv"], table)
        write_text_atomic(out["md"], markdown(table))
        plot_in_domain(table, metric, out["png"], out["pdf"], config.get("reference"))
    elif target == "neighbourhood":
        history = neighbourhood_history(inputs, records)
        table = neighbourhood_table(history)
        _csv(out["csv"], table)
        write_text_atomic(out["md"], markdown(table, 4))
        plot_neighbourhood(history, out["png"], out["pdf"])
    else:
        raise ReportError(f"unknown analysis target {target!r}")
    log.info("analysis %s: %d run files -> %s", target, len(inputs), sorted(out.values()))
