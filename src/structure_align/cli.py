"""``python -m structure_align <step> ...``: the commands the Snakemake rules call (one per rule family).

Each subcommand parses its arguments, checks its inputs before any heavy work, calls the library and writes its
outputs atomically. A failure is logged with the step and the offending file, then the process exits non-zero, so
the rule's log file says what failed and why. Data flow and paths: docs/DESIGN.md, workflow/rules/*.smk.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .utils import log, resolve_device, setup_logging, write_text_atomic


# aligners a run can train (paper-spec §4); names as in params.yaml `methods[].head` and the run paths
HEADS: tuple[str, ...] = ("linear", "mlp", "released_mlp", "csa")


class CLIError(RuntimeError):
    """Bad command-line input (a missing file, mismatched lists, a file that is not what the rule promised)."""


# ---------------------------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------------------------

def _bool(text: str) -> bool:
    """Parse Snakemake's rendering of a Python bool (``True``/``False``) or the usual spellings."""
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True/False), got {text!r}")


def _k(text: str) -> int | str:
    """``--k``: an integer or a rule name (rice, sqrt, sturges)."""
    return int(text) if text.lstrip("-").isdigit() else text


def _require_files(paths: Sequence[str | os.PathLike], what: str) -> None:
    missing = [os.fspath(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise CLIError(f"{what}: missing input file(s) {missing}")


def _same_length(**lists: Sequence[Any]) -> None:
    lengths = {name: len(v) for name, v in lists.items()}
    if len(set(lengths.values())) > 1:
        raise CLIError(f"argument lists must have the same length (one entry per dataset): {lengths}")


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def _write_json(path: str | os.PathLike, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


@dataclass
class PairPool:
    """Paired training features of several datasets, one (image, first caption) pair per image (paper-spec §6.2)."""

    vision_layers: list[Any]
    text_layers: list[Any]
    vision_layer_names: list[str]
    text_layer_names: list[str]
    datasets: list[str]
    counts: dict[str, int]


def _check_dataset_features(fv: Any, ft: Any, n_rows: int, where: str) -> None:
    if fv.layers[0].shape[0] != n_rows:
        raise CLIError(f"{where}: vision features have {fv.layers[0].shape[0]} rows, manifest has {n_rows}")
    if ft.groups is None or ft.groups.shape[0] != ft.layers[0].shape[0]:
        raise CLIError(f"{where}: text features lack a 'groups' tensor matching their rows")


def load_pair_pool(vision_paths: Sequence[str], text_paths: Sequence[str], manifest_paths: Sequence[str],
                   split: str = "train") -> PairPool:
    """Load the training pool: rows of ``split``, each image with its first caption, datasets concatenated.

    Vision rows are manifest rows; text rows follow ``dataset_texts`` and ``groups`` maps each caption to its row,
    so the first caption of row r is the first text row with ``groups == r``. Images without a caption are skipped.
    """
    import torch

    from .data import read_manifest
    from .features import load_features

    _same_length(vision=vision_paths, text=text_paths, manifests=manifest_paths)
    _require_files([*vision_paths, *text_paths, *manifest_paths], "training pool")
    v_parts: list[list[Any]] = []
    t_parts: list[list[Any]] = []
    v_names: list[str] | None = None
    t_names: list[str] | None = None
    datasets, counts = [], {}
    for vp, tp, mp in zip(vision_paths, text_paths, manifest_paths):
        df, info = read_manifest(mp)
        fv = load_features(vp, modality="vision", manifest_sha256=info.manifest_sha256)
        ft = load_features(tp, modality="text", manifest_sha256=info.manifest_sha256)
        _check_dataset_features(fv, ft, len(df), f"dataset {info.name}")
        groups = ft.groups.numpy() if hasattr(ft.groups, "numpy") else np.asarray(ft.groups)
        first_text = {}
        for k, row in enumerate(groups.tolist()):
            first_text.setdefault(int(row), k)
        rows = [r for r in np.flatnonzero(df["split"].to_numpy() == split).tolist() if r in first_text]
        if not rows:
            raise CLIError(f"dataset {info.name} ({mp}): no {split!r} rows with a caption")
        v_idx = torch.as_tensor(rows, dtype=torch.long)
        t_idx = torch.as_tensor([first_text[r] for r in rows], dtype=torch.long)
        if v_names is None:
            v_names, t_names = list(fv.layer_names), list(ft.layer_names)
        elif list(fv.layer_names) != v_names or list(ft.layer_names) != t_names:
            raise CLIError(f"dataset {info.name}: layer names differ from the first dataset's ({vp}, {tp})")
        v_parts.append([layer[v_idx] for layer in fv.layers])
        t_parts.append([layer[t_idx] for layer in ft.layers])
        datasets.append(info.name)
        counts[info.name] = len(rows)
    vision = [torch.cat([p[i] for p in v_parts]) for i in range(len(v_parts[0]))]
    text = [torch.cat([p[j] for p in t_parts]) for j in range(len(t_parts[0]))]
    log.info("training pool: %d pairs from %s", vision[0].shape[0], counts)
    return PairPool(vision, text, v_names or [], t_names or [], datasets, counts)


def validation_split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed seeded split of the pool into (train rows, validation rows), both sorted (paper-spec §6.6).

    The validation part is independent of the run seed and the fraction, so every run of a grid stops early on
    the same rows and the fraction subsamples only the remaining training part.
    """
    if not 0.0 < val_fraction < 1.0:
        raise CLIError(f"val_fraction={val_fraction!r} must be in (0, 1)")
    n_val = int(round(val_fraction * n))
    if n_val < 2 or n - n_val < 2:
        raise CLIError(f"pool of {n} pairs is too small for val_fraction={val_fraction} (need >= 2 on each side)")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]).astype(np.int64), np.sort(perm[:n_val]).astype(np.int64)


# ---------------------------------------------------------------------------------------------------------------
# steps
# ---------------------------------------------------------------------------------------------------------------

def cmd_acquire(args: argparse.Namespace) -> None:
    """Fetch one pinned source into ``resources/<source>/`` (DESIGN.md "Paths")."""
    from .data import acquire

    dest = acquire(args.source, args.resources_dir)
    record = Path(dest) / "SOURCE.json"
    if args.out and Path(args.out).resolve() != record.resolve():
        raise CLIError(f"acquire wrote {record}, but the rule expects {args.out}")
    if not record.is_file():
        raise CLIError(f"acquire of {args.source!r} finished without {record}")


def cmd_manifest(args: argparse.Namespace) -> None:
    """Build ``<dataset>.parquet`` + ``.json`` from the acquired sources (DESIGN.md "Manifest")."""
    from .data import build_manifest

    try:
        options = json.loads(args.options)
    except json.JSONDecodeError as exc:
        raise CLIError(f"--options is not valid JSON: {args.options!r} ({exc})") from None
    if not isinstance(options, dict):
        raise CLIError(f"--options must be a JSON object, got {args.options!r}")
    out = Path(args.out)
    if out.name != f"{args.dataset}.parquet":
        raise CLIError(f"--out {out} must be named {args.dataset}.parquet")
    parquet, info = build_manifest(args.dataset, args.resources_dir, out.parent, args.images_dir, **options)
    log.info("manifest %s: %s rows=%s", parquet, info.task, info.counts)


def cmd_extract(args: argparse.Namespace) -> None:
    """Extract every layer of one encoder on one manifest (DESIGN.md "Feature file")."""
    from .features import extract_features

    _require_files([args.manifest], "extract")
    _set_threads(args.threads)
    extract_features(args.manifest, args.encoder, args.out, batch_size=args.batch_size, device=args.device,
                     dtype=args.dtype, limit=args.limit)


def cmd_score_layers(args: argparse.Namespace) -> None:
    """Score every layer pair on the training part of the pool and record the "last"/"similar" choices (§3.2)."""
    import torch

    from .similarity import choose_layers, layer_scores, score_subsample

    _set_threads(args.threads)
    pool = load_pair_pool(args.vision_features, args.text_features, args.manifests)
    train_rows, _ = validation_split(pool.vision_layers[0].shape[0], args.val_fraction, args.val_seed)
    rows = train_rows[score_subsample(len(train_rows), args.n_samples, seed=args.seed)]
    idx = torch.as_tensor(rows, dtype=torch.long)
    scores = layer_scores([v[idx] for v in pool.vision_layers], [t[idx] for t in pool.text_layers], k=args.k,
                          metric=args.metric, progress=True)
    from .report import write_layer_scores

    write_layer_scores(args.out, scores, pool.vision_layer_names, pool.text_layer_names)
    choice: dict[str, Any] = {"metric": args.metric, "k": args.k, "n_rows": int(len(rows)), "seed": args.seed,
                              "datasets": pool.datasets}
    for name in ("last", "similar"):
        i, j = choose_layers(scores, name)
        choice[name] = {"vision_layer": i, "text_layer": j, "vision_name": pool.vision_layer_names[i],
                        "text_name": pool.text_layer_names[j], "score": float(scores[i, j])}
    _write_json(args.choice_out, choice)
    log.info("layer choice: last=%s similar=%s", choice["last"], choice["similar"])


def train_config(args: argparse.Namespace, structure: dict[str, Any]) -> Any:
    """Map the rule's parameters onto :class:`TrainConfig` (paper-spec §4-§6).

    ``mlp`` is a real MLP (Linear -> GELU -> Linear); ``released_mlp`` is the released ResLowRankHead whose gate
    never opens, i.e. a bias-free linear map (§4.2), kept to reproduce the paper's "MLP" rows. For ``csa``, R_S
    becomes the post-hoc refinement of §4.4 with the variant's lambda, tau, levels and weighting.
    """
    from .train import TrainConfig

    cfg: dict[str, Any] = {
        "d_out": args.dim, "tau": args.temperature, "lr": args.lr, "use_lr_finder": args.lr_finder,
        "weight_decay": args.weight_decay, "batch_size": args.batch_size, "max_epochs": args.epochs,
        "patience": args.patience, "seed": args.seed,
    }
    if args.head not in HEADS:
        raise CLIError(f"--head {args.head!r} is not one of {', '.join(HEADS)}")
    cfg["head"] = args.head
    if structure:
        if args.head == "csa":
            cfg.update(csa_refine=True, csa_lam_rs=float(structure["lambda"]), csa_tau=float(structure["tau"]),
                       csa_levels=int(structure["levels"]), csa_rs_weighting=structure["weighting"])
        else:
            cfg.update(lam=float(structure["lambda"]), rs_tau=float(structure["tau"]),
                       rs_levels=int(structure["levels"]), rs_weighting=structure["weighting"],
                       warmup_steps=int(structure["warmup_steps"]))
    return TrainConfig.from_dict(cfg)


def cmd_train(args: argparse.Namespace) -> None:
    """Train one run: pool -> validation split -> fraction subsample -> chosen layers -> heads (paper-spec §6)."""
    from .train import subsample_pairs, train_heads

    try:
        structure = json.loads(args.structure)
    except json.JSONDecodeError as exc:
        raise CLIError(f"--structure is not valid JSON: {args.structure!r} ({exc})") from None
    missing = sorted({"lambda", "levels", "tau", "warmup_steps", "weighting"} - set(structure)) if structure else []
    if missing:
        raise CLIError(f"--structure lacks key(s) {missing}")
    _require_files([args.choice], "train")
    choice = json.loads(Path(args.choice).read_text(encoding="utf-8"))
    if args.layers not in choice:
        raise CLIError(f"{args.choice}: no layer choice {args.layers!r}")
    cfg = train_config(args, structure)  # before loading features: a bad value fails fast
    _set_threads(args.threads)
    start = time.perf_counter()
    pool = load_pair_pool(args.vision_features, args.text_features, args.manifests)
    i, j = int(choice[args.layers]["vision_layer"]), int(choice[args.layers]["text_layer"])
    if i >= len(pool.vision_layers) or j >= len(pool.text_layers):
        raise CLIError(f"{args.choice}: layer pair ({i}, {j}) is outside the features "
                       f"({len(pool.vision_layers)} x {len(pool.text_layers)} layers)")
    x_all, y_all = pool.vision_layers[i], pool.text_layers[j]
    train_rows, val_rows = validation_split(x_all.shape[0], args.val_fraction, args.val_seed)
    sub = train_rows[subsample_pairs(len(train_rows), args.fraction, args.seed)]
    log.info("run: head=%s layers=%s (%s, %s) fraction=%s seed=%s n_train=%d n_val=%d R_S=%s", args.head,
             args.layers, pool.vision_layer_names[i], pool.text_layer_names[j], args.fraction, args.seed, len(sub),
             len(val_rows), structure or "off")
    result = train_heads(x_all[sub], y_all[sub], x_all[val_rows], y_all[val_rows], cfg, device=args.device,
                         progress=True)
    result.aligner.save(args.out)
    info = {
        "head": args.head, "layers": args.layers, "structure": structure or None, "fraction": args.fraction,
        "seed": args.seed, "vision_layer": i, "text_layer": j, "vision_layer_name": pool.vision_layer_names[i],
        "text_layer_name": pool.text_layer_names[j], "n_train": int(len(sub)), "n_val": int(len(val_rows)),
        "n_pool": int(x_all.shape[0]), "pool_counts": pool.counts, "best_epoch": result.best_epoch,
        "lr": result.lr, "epochs_run": len(result.history), "train_config": cfg.to_dict(),
        "history": result.history, "seconds": round(time.perf_counter() - start, 3),
    }
    _write_json(args.info_out, info)


def _eval_one(aligner: Any, info_json: dict[str, Any], vp: str, tp: str, mp: str, test_split: bool,
              args: argparse.Namespace) -> dict[str, Any]:
    """Zero-shot or retrieval metrics of one dataset at the run's chosen layers (paper-spec §7)."""
    import torch

    from .data import read_manifest
    from .evaluate import retrieval_aligner, zero_shot_aligner
    from .features import load_features

    df, info = read_manifest(mp)
    fv = load_features(vp, modality="vision", manifest_sha256=info.manifest_sha256)
    ft = load_features(tp, modality="text", manifest_sha256=info.manifest_sha256)
    _check_dataset_features(fv, ft, len(df), f"dataset {info.name}")
    i, j = int(info_json["vision_layer"]), int(info_json["text_layer"])
    if i >= len(fv.layers) or j >= len(ft.layers):
        raise CLIError(f"dataset {info.name}: chosen layers ({i}, {j}) outside the features ({vp}, {tp})")
    rows = np.flatnonzero(df["split"].to_numpy() == "test") if test_split else np.arange(len(df))
    if len(rows) == 0:
        raise CLIError(f"dataset {info.name} ({mp}): no rows to evaluate (test_split={test_split})")
    groups = ft.groups.numpy() if hasattr(ft.groups, "numpy") else np.asarray(ft.groups)
    x = fv.layers[i][torch.as_tensor(rows, dtype=torch.long)]
    out: dict[str, Any] = {"task": info.task, "n_images": int(len(rows)), "test_split_only": test_split}
    if info.task == "zeroshot":
        labels = df["label"].to_numpy()[rows]
        out.update(n_texts=int(ft.layers[j].shape[0]), n_classes=len(info.classnames))
        out["metrics"] = zero_shot_aligner(aligner, x, labels, ft.layers[j], groups, len(info.classnames),
                                           batch_size=args.batch_size, device=args.device)
    else:
        position = np.full(len(df), -1, dtype=np.int64)
        position[rows] = np.arange(len(rows))
        keep = np.flatnonzero(position[groups] >= 0)
        if len(keep) == 0:
            raise CLIError(f"dataset {info.name}: no captions for the evaluated rows")
        y = ft.layers[j][torch.as_tensor(keep, dtype=torch.long)]
        out["n_texts"] = int(len(keep))
        out["metrics"] = retrieval_aligner(aligner, x, y, position[groups[keep]],
                                           duplicate_gallery=args.duplicate_gallery, batch_size=args.batch_size,
                                           device=args.device)
    # undefined metrics (e.g. top-5 with fewer than 5 classes) are NaN; JSON has no NaN, so they become null
    out["metrics"] = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in out["metrics"].items()}
    log.info("%s (%s): %s", info.name, info.task,
             {k: (round(v, 2) if v is not None else None) for k, v in out["metrics"].items()})
    return out


def cmd_evaluate(args: argparse.Namespace) -> None:
    """Evaluate one trained run on every evaluation dataset; write its metrics.json (paper-spec §7)."""
    from .heads import load_aligner

    _same_length(datasets=args.datasets, vision=args.vision_features, text=args.text_features,
                 manifests=args.manifests)
    _require_files([args.heads, args.info, *args.vision_features, *args.text_features, *args.manifests], "evaluate")
    _set_threads(args.threads)
    info_json = json.loads(Path(args.info).read_text(encoding="utf-8"))
    args.device = resolve_device(args.device)  # "auto" is not a torch device string
    aligner = load_aligner(args.heads, device=args.device)
    results = {}
    for name, vp, tp, mp in zip(args.datasets, args.vision_features, args.text_features, args.manifests):
        results[name] = _eval_one(aligner, info_json, vp, tp, mp, name in set(args.test_split_datasets), args)
    run = {k: info_json[k] for k in ("head", "layers", "structure", "fraction", "seed", "vision_layer",
                                     "text_layer", "vision_layer_name", "text_layer_name", "n_train")}
    run.update(_run_identity(Path(args.heads)))
    _write_json(args.out, {"run": run, "datasets": results})


def _run_identity(heads_path: Path) -> dict[str, Any]:
    """Encoder pair and R_S values read back from the run directory
    ``<v>__<t>/<head>/layers~<c>/lambda~<l>/levels~<L>/tau~<t>/frac~<f>/seed~<s>`` (config.run_dir)."""
    parts = heads_path.parent.parts[-8:]
    keys = ("layers", "lambda", "levels", "tau", "frac", "seed")
    if len(parts) != 8 or "__" not in parts[0] or [p.split("~", 1)[0] for p in parts[2:]] != list(keys):
        raise CLIError(f"{heads_path}: not inside a run directory <vision>__<text>/<head>/layers~.../lambda~.../"
                       "levels~.../tau~.../frac~.../seed~...")
    vision, text = parts[0].split("__", 1)
    values = dict(p.split("~", 1) for p in parts[2:])
    return {"vision": vision, "text": text, "lambda": values["lambda"], "levels": values["levels"],
            "tau": values["tau"]}


def cmd_heatmap(args: argparse.Namespace) -> None:
    """Layer-similarity heatmap with the chosen pairs marked (paper-spec §3)."""
    from .report import plot_layer_heatmap

    _require_files([args.scores, args.choice], "heatmap")
    plot_layer_heatmap(args.scores, args.choice, args.png, args.pdf)


def cmd_aggregate(args: argparse.Namespace) -> None:
    """Tables, scaling figure and DVC metrics from every run's metrics.json."""
    from .report import aggregate

    _require_files(args.runs, "aggregate")
    try:
        variants = json.loads(args.variants)
    except json.JSONDecodeError as exc:
        raise CLIError(f"--variants is not valid JSON ({exc})") from None
    aggregate(args.runs, variants, retrieval=args.retrieval, zeroshot=args.zeroshot,
              summary_metrics=args.summary_metrics, main_csv=args.main_csv, main_md=args.main_md,
              main_tex=args.main_tex, scaling_csv=args.scaling_csv, scaling_png=args.scaling_png,
              scaling_pdf=args.scaling_pdf, metrics_out=args.metrics_out, summary_csv=args.summary_csv)


# ---------------------------------------------------------------------------------------------------------------
# argument parsing
# ---------------------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """The ``structure_align`` argument parser with one subcommand per workflow step."""
    parser = argparse.ArgumentParser(prog="python -m structure_align", description=__doc__.splitlines()[0])
    parser.add_argument("--log", default=None, help="also append log lines to this file (rules redirect stderr)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("acquire", help="fetch one pinned source into resources/<source>/")
    p.add_argument("--source", required=True)
    p.add_argument("--resources-dir", default="resources")
    p.add_argument("--out", default=None, help="the SOURCE.json the rule expects")
    p.set_defaults(func=cmd_acquire)

    p = sub.add_parser("manifest", help="build a dataset manifest")
    p.add_argument("--dataset", required=True)
    p.add_argument("--resources-dir", default="resources")
    p.add_argument("--images-dir", required=True, help="root of materialised images (<dir>/<dataset>/...)")
    p.add_argument("--options", default="{}", help="builder options as a JSON object, e.g. '{\"limit\": 100}'")
    p.add_argument("--out", required=True, help="<out dir>/<dataset>.parquet")
    p.set_defaults(func=cmd_manifest)

    p = sub.add_parser("extract", help="extract all layers of one encoder on one manifest")
    p.add_argument("--manifest", required=True)
    p.add_argument("--encoder", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="auto")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("score-layers", help="mutual-kNN score of every layer pair + layer choices")
    p.add_argument("--vision-features", nargs="+", required=True)
    p.add_argument("--text-features", nargs="+", required=True)
    p.add_argument("--manifests", nargs="+", required=True)
    p.add_argument("--metric", default="mutual_knn")
    p.add_argument("--n-samples", type=int, default=5000)
    p.add_argument("--k", type=_k, default="rice")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--val-fraction", type=float, required=True)
    p.add_argument("--val-seed", type=int, required=True)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", required=True, help="scores.csv")
    p.add_argument("--choice-out", required=True, help="choice.json")
    p.set_defaults(func=cmd_score_layers)

    p = sub.add_parser("train", help="train one run (head pair or CSA) on cached features")
    p.add_argument("--vision-features", nargs="+", required=True)
    p.add_argument("--text-features", nargs="+", required=True)
    p.add_argument("--manifests", nargs="+", required=True)
    p.add_argument("--choice", required=True)
    p.add_argument("--head", required=True, choices=list(HEADS))
    p.add_argument("--layers", required=True, choices=["last", "similar"])
    p.add_argument("--structure", default="{}", help="R_S settings as JSON ({} = no R_S)")
    p.add_argument("--fraction", type=float, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--val-fraction", type=float, required=True)
    p.add_argument("--val-seed", type=int, required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--patience", type=int, required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--lr-finder", type=_bool, default=False)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", required=True, help="heads.safetensors")
    p.add_argument("--info-out", required=True, help="train.json")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="zero-shot + retrieval metrics of one run")
    p.add_argument("--heads", required=True)
    p.add_argument("--info", required=True, help="the run's train.json (chosen layers)")
    p.add_argument("--datasets", nargs="+", required=True)
    p.add_argument("--vision-features", nargs="+", required=True)
    p.add_argument("--text-features", nargs="+", required=True)
    p.add_argument("--manifests", nargs="+", required=True)
    p.add_argument("--test-split-datasets", nargs="*", default=[],
                   help="datasets evaluated on their test split only (the training datasets)")
    p.add_argument("--duplicate-gallery", type=_bool, default=False)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", required=True, help="metrics.json")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("heatmap", help="layer-similarity heatmap of one encoder pair")
    p.add_argument("--scores", required=True)
    p.add_argument("--choice", required=True)
    p.add_argument("--png", required=True)
    p.add_argument("--pdf", required=True)
    p.set_defaults(func=cmd_heatmap)

    p = sub.add_parser("aggregate", help="tables, scaling figure and metrics.json")
    p.add_argument("--runs", nargs="+", required=True, help="every run's metrics.json")
    p.add_argument("--variants", required=True, help="variant rows as JSON (label, head, layers, lambda, ...)")
    p.add_argument("--retrieval", nargs="*", default=[])
    p.add_argument("--zeroshot", nargs="*", default=[])
    p.add_argument("--summary-metrics", nargs="+", default=["zeroshot_top1", "retrieval_r1"])
    for name in ("main-csv", "main-md", "main-tex", "scaling-csv", "summary-csv", "scaling-png", "scaling-pdf",
                 "metrics-out"):
        p.add_argument(f"--{name}", required=True)
    p.set_defaults(func=cmd_aggregate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one step; log any failure with its context and return a non-zero exit status."""
    args = build_parser().parse_args(argv)
    setup_logging(args.log, logging.DEBUG if args.verbose else logging.INFO)
    log.info("structure_align %s: %s", args.command, " ".join(sys.argv[1:] if argv is None else argv))
    start = time.perf_counter()
    try:
        args.func(args)
    except Exception as exc:  # the rule's log must say which step failed and why, then the job fails
        log.exception("step %r failed: %s: %s", args.command, type(exc).__name__, exc)
        return 1
    log.info("step %r done in %.1f s", args.command, time.perf_counter() - start)
    return 0
