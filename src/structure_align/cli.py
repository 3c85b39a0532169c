"""``python -m structure_align <step> ...``: what the Snakemake rules call, one subcommand per rule family.

The CLI only parses and dispatches. Result-defining values arrive as one JSON block of params.yaml per step
(``--config``), so params.yaml stays their one default; the library functions it calls (:mod:`structure_align.steps`,
``data``, ``features``, ``report``) check their inputs and write atomically. A failure is logged with the step and
its cause, then the process exits non-zero, so the rule's log file says what failed and why.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from .utils import log, setup_logging


def _json(text: str) -> Any:
    """argparse type: a JSON value (the message names the bad text)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text[:200]!r}") from None


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def cmd_acquire(args: argparse.Namespace) -> None:
    """Fetch one pinned source into ``resources/<source>/``."""
    from .data import acquire

    downloads = dict(args.downloads or {})
    if args.urls:
        downloads["urls"] = args.urls
    acquire(args.source, args.resources_dir, mirror=args.mirror or None, downloads=downloads)


def cmd_manifest(args: argparse.Namespace) -> None:
    """Build ``<dataset>.parquet`` + ``.json``; ``--config`` = ``{"options": {...}, "declaration": {...} | null,
    "images": {...}}`` (params ``images``: the pre-flight image check)."""
    from pathlib import Path

    from .data import build_manifest

    out = Path(args.out)
    if out.name != f"{args.dataset}.parquet":
        raise ValueError(f"--out {out} must be named {args.dataset}.parquet")
    spec = args.config
    build_manifest(args.dataset, args.resources_dir, out.parent, args.images_dir,
                   declaration=spec.get("declaration"), images=spec.get("images"), **spec.get("options", {}))


def revisions_to_env(config: dict) -> dict:
    """``config`` without ``hub_revisions``; those (checked) go to the hub loaders' environment variable."""
    import json
    import os

    from .encoders.paper import REVISIONS_ENV, check_revisions

    options = dict(config)
    if "hub_revisions" in options:
        revisions = check_revisions(options.pop("hub_revisions"), "params encoders.revisions")
        os.environ[REVISIONS_ENV] = json.dumps(revisions, sort_keys=True)
    return options


def cmd_extract(args: argparse.Namespace) -> None:
    """Extract every layer of one encoder on one manifest; ``--config`` = params ``extraction`` (+ ``hub_revisions``:
    params ``encoders.revisions``, handed to the hub loaders through their environment variable)."""
    from .extract import extract_features

    options = revisions_to_env(args.config)
    _set_threads(args.threads)
    extract_features(args.manifest, args.encoder, args.out, device=args.device, **options)


def cmd_score_layers(args: argparse.Namespace) -> None:
    """Layer scores + choice; ``--config`` = ``{"layers": params layers, "val_fraction", "val_seed"}``."""
    from .steps import score_layers

    _set_threads(args.threads)
    cfg = args.config
    score_layers(args.vision_features, args.text_features, args.manifests, layers=cfg["layers"],
                 val_fraction=cfg["val_fraction"], val_seed=cfg["val_seed"], scores_out=args.scores_out,
                 choice_out=args.choice_out, val_split=cfg.get("val_split", "pool"))


def cmd_train(args: argparse.Namespace) -> None:
    """Train the runs of one group; ``--config`` = params ``{"training", "structure", "csa"}``."""
    from .steps import train_runs

    _set_threads(args.threads)
    train_runs(args.runs, args.config, args.vision_features, args.text_features, args.manifests, args.choice,
               device=args.device)


def cmd_evaluate(args: argparse.Namespace) -> None:
    """Evaluate the runs of one group; ``--datasets`` = evaluation records, ``--config`` = params ``evaluation``."""
    from .steps import evaluate_runs

    _set_threads(args.threads)
    evaluate_runs(args.runs, args.datasets, evaluation=args.config, device=args.device)


def cmd_evaluate_reference(args: argparse.Namespace) -> None:
    """Evaluate a reference joint space (no training); ``--config`` = params ``evaluation``."""
    from .reference import evaluate_reference

    _set_threads(args.threads)
    evaluate_reference(args.datasets, evaluation=args.config, out=args.out, label=args.label, vision=args.vision,
                       text=args.text, device=args.device)


def cmd_paper_table(args: argparse.Namespace) -> None:
    """Our main table and reference rows beside the paper's numbers, with the differences."""
    from .reference import write_paper_table

    write_paper_table(args.main, args.references or [], args.paper, args.out_csv, args.out_md, notes=args.notes)


def cmd_heatmap(args: argparse.Namespace) -> None:
    """Layer-similarity heatmap with the chosen pairs marked (docs/method.md §3)."""
    from .report import plot_layer_heatmap

    plot_layer_heatmap(args.scores, args.choice, args.png, args.pdf)


def cmd_aggregate(args: argparse.Namespace) -> None:
    """Tables, figures and DVC metrics; ``--config`` = ``{"variants", "retrieval", "zeroshot", "summary_metrics"}``
    (+ optional ``condition``, ``target_effect``, ``paper_effects``: :func:`structure_align.report.aggregate`)."""
    from .report import aggregate

    aggregate(args.metrics, results_dir=args.results_dir, **args.config)


def cmd_analysis(args: argparse.Namespace) -> None:
    """Table and figure of one analysis target; ``--config`` = its records, datasets and metrics (docs/analysis.md)."""
    from .analysis_report import aggregate_target

    aggregate_target(args.target, args.inputs, results_dir=args.results_dir, config=args.config)


def _add(sub: Any, name: str, func: Callable[[argparse.Namespace], None], *flags: tuple[str, dict[str, Any]]) -> None:
    p = sub.add_parser(name, help=(func.__doc__ or "").splitlines()[0])
    for flag, kwargs in flags:
        p.add_argument(flag, **kwargs)
    p.set_defaults(func=func)


_REQ: dict[str, Any] = {"required": True}
_MANY: dict[str, Any] = {"nargs": "+", "required": True}
_CONFIG = ("--config", {"type": _json, "required": True, "help": "the step's params block as JSON"})
_DEVICE = ("--device", {"default": "auto", "help": "auto | cpu | cuda | cuda:N (runtime only)"})
_THREADS = ("--threads", {"type": int, "default": None, "help": "torch intra-op threads"})
_FEATURES = (("--vision-features", _MANY), ("--text-features", _MANY), ("--manifests", _MANY))


def build_parser() -> argparse.ArgumentParser:
    """The ``structure_align`` argument parser with one subcommand per workflow step."""
    parser = argparse.ArgumentParser(prog="python -m structure_align", description=__doc__.splitlines()[0])
    parser.add_argument("--log", default=None, help="also append log lines to this file (rules redirect stderr)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add(sub, "acquire", cmd_acquire, ("--source", _REQ), ("--resources-dir", _REQ),
         ("--mirror", {"default": "", "help": "fetch url sources from <mirror>/<source>/<file> ('' = published)"}),
         ("--downloads", {"type": _json, "default": None, "help": "params downloads block as JSON (overrides)"}),
         ("--urls", {"type": _json, "default": None, "help": "params downloads.urls as JSON (per-source locations)"}))
    _add(sub, "manifest", cmd_manifest, ("--dataset", _REQ), ("--resources-dir", _REQ), ("--images-dir", _REQ),
         _CONFIG, ("--out", _REQ))
    _add(sub, "extract", cmd_extract, ("--manifest", _REQ), ("--encoder", _REQ), ("--out", _REQ), _CONFIG, _DEVICE,
         _THREADS)
    _add(sub, "score-layers", cmd_score_layers, *_FEATURES, _CONFIG, ("--scores-out", _REQ), ("--choice-out", _REQ),
         _THREADS)
    _add(sub, "train", cmd_train, ("--runs", _MANY), *_FEATURES, ("--choice", _REQ), _CONFIG, _DEVICE, _THREADS)
    _add(sub, "evaluate", cmd_evaluate, ("--runs", _MANY), ("--datasets", {"type": _json, "required": True}),
         _CONFIG, _DEVICE, _THREADS)
    _add(sub, "evaluate-reference", cmd_evaluate_reference, ("--datasets", {"type": _json, "required": True}),
         _CONFIG, ("--out", _REQ), ("--label", _REQ), ("--vision", _REQ), ("--text", _REQ), _DEVICE, _THREADS)
    _add(sub, "paper-table", cmd_paper_table, ("--main", _REQ), ("--references", {"nargs": "*", "default": []}),
         ("--paper", _REQ), ("--out-csv", _REQ), ("--out-md", _REQ),
         ("--notes", {"type": _json, "default": None, "help": "{dataset: note} of columns not run or run otherwise"}))
    _add(sub, "heatmap", cmd_heatmap, ("--scores", _REQ), ("--choice", _REQ), ("--png", _REQ), ("--pdf", _REQ))
    _add(sub, "aggregate", cmd_aggregate, ("--metrics", _MANY), ("--results-dir", _REQ), _CONFIG)
    _add(sub, "analysis", cmd_analysis, ("--target", _REQ), ("--inputs", _MANY), ("--results-dir", _REQ), _CONFIG)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one step; log any failure with its context and return a non-zero exit status."""
    args = build_parser().parse_args(argv)
    setup_logging(args.log, logging.DEBUG if args.verbose else logging.INFO)
    log.info("structure_align %s: %s", args.command, " ".join(sys.argv[1:] if argv is None else argv))
    start = time.perf_counter()
    try:
        args.func(args)
    except Exception as exc:  # noqa: BLE001 -- the rule's log must say which step failed and why
        log.exception("step %r failed: %s: %s", args.command, type(exc).__name__, exc)
        return 1
    log.info("step %r done in %.1f s", args.command, time.perf_counter() - start)
    return 0
