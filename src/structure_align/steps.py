"""The workflow's steps as library functions: files in, files out (docs/design.md "Steps").

Each function is what one Snakemake rule family runs (through ``python -m structure_align``), and what a test or a
notebook can call directly. They compose the library (pool, runs, train, evaluate, similarity, report), check their
inputs before any heavy work, write every output atomically and raise the package's own errors. A train or
evaluate job handles all seeds of one (encoder pair, variant, training size): the pool and the evaluation features
are opened once per job and read lazily, only the rows and layers a run uses (docs/design.md "Memory"), and every
run still gets its own directory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .io import read_json, write_json

log = logging.getLogger("structure_align.steps")


class StepError(ValueError):
    """A step's inputs do not fit together (a layer choice that is missing, a run outside the pool); names the file."""


def score_layers(vision_paths: Sequence[str], text_paths: Sequence[str], manifests: Sequence[str], *,
                 layers: Mapping[str, Any], val_fraction: float, val_seed: int, scores_out: str | Path,
                 choice_out: str | Path, val_split: str = "pool") -> dict[str, Any]:
    """Score every layer pair on the training part of the pool; write ``scores.csv`` and ``choice.json`` (§3.2).

    ``layers`` is params ``layers`` (``metric``, ``n_samples``, ``k``, ``seed``); ``val_split="test"`` (validation
    on the datasets' test split) leaves the whole pool as the training part. Returns the choice record.
    """
    import numpy as np

    from .pool import open_pair_pool, validation_split
    from .report import write_layer_scores
    from .similarity import choose_layers, layer_scores, score_subsample

    pool = open_pair_pool(vision_paths, text_paths, manifests)
    train_rows = (np.arange(pool.n) if val_split == "test" else validation_split(pool.n, val_fraction, val_seed)[0])
    rows = train_rows[score_subsample(len(train_rows), int(layers["n_samples"]), seed=int(layers["seed"]))]
    # only the <= n_samples scored rows are read, one layer at a time (n_samples x sum(d) floats in all)
    scores = layer_scores(*_subsample_layers(pool, rows), k=layers["k"], metric=layers["metric"], progress=True)
    write_layer_scores(scores_out, scores, pool.vision_layer_names, pool.text_layer_names)
    choice: dict[str, Any] = {"metric": layers["metric"], "k": layers["k"], "n_rows": len(rows),
                              "seed": int(layers["seed"]), "datasets": pool.datasets}
    for name in ("last", "similar"):
        i, j = choose_layers(scores, name)
        choice[name] = {"vision_layer": i, "text_layer": j, "vision_name": pool.vision_layer_names[i],
                        "text_name": pool.text_layer_names[j], "score": float(scores[i, j])}
    write_json(choice_out, choice)
    log.info("layer choice: last=%s similar=%s", choice["last"], choice["similar"])
    return choice


def layer_pair(layers: str, choice: Mapping[str, Any], where: str) -> tuple[int, int]:
    """``(vision layer, text layer)`` of a run: ``last`` / ``similar`` from the choice record, or explicit
    ``v<i>t<j>``."""
    if layers in ("last", "similar"):
        if layers not in choice:
            raise StepError(f"{where}: no layer choice {layers!r}")
        return int(choice[layers]["vision_layer"]), int(choice[layers]["text_layer"])
    vision, _, text = layers[1:].partition("t")
    return int(vision), int(text)


def train_runs(run_dirs: Sequence[str | Path], params: Mapping[str, Any], vision_paths: Sequence[str],
               text_paths: Sequence[str], manifests: Sequence[str], choice_path: str | Path, *,
               device: str = "auto", progress: bool = True) -> None:
    """Train every run of ``run_dirs`` (one group: same pair, variant, size) and write ``heads.safetensors`` +
    ``train.json`` into each (docs/method.md §6).

    ``params`` holds the params blocks ``training``, ``structure`` and ``csa``; each run's identity (head, layers,
    R_S values, size, seed) comes from its directory (:meth:`RunSpec.from_path`). Two optional blocks of the
    analysis targets (docs/analysis.md): ``neighbourhood`` (``{"k": [...]}``: per-epoch trustworthiness and
    continuity on the validation pairs, in the history) and ``in_domain`` (labelled pool samples added to the
    training pairs, :func:`structure_align.indomain.in_domain_pairs`).
    """
    import numpy as np

    from .pool import open_pair_pool, run_rows
    from .runs import RunSpec, train_config
    from .train import train_heads
    from .utils import resolve_device

    specs = [RunSpec.from_path(d) for d in run_dirs]
    configs = [train_config(params, spec) for spec in specs]  # a bad value fails before any feature is read
    choice = read_json(choice_path, "layer choice")
    layers_cfg = params.get("layers") or {"scope": "pool"}
    pool = open_pair_pool(vision_paths, text_paths, manifests)
    dev = resolve_device(device)
    training = params["training"]
    scored: dict[bytes, tuple[int, int, float]] = {}
    val_split = str(training.get("val_split", "pool"))
    # validation on the training datasets' test split (COCO val2014 as released) instead of a part of the pool
    val_pool = open_pair_pool(vision_paths, text_paths, manifests, split="test") if val_split == "test" else pool
    for run_dir, spec, cfg in zip(run_dirs, specs, configs):
        start = time.perf_counter()
        sub, val_rows = run_rows(pool.n, spec.size, spec.seed, float(training["val_fraction"]),
                                 int(training["val_seed"]), val_split)
        if val_split == "test":
            val_rows = np.arange(val_pool.n)
        if spec.variant.layers == "similar" and layers_cfg.get("scope") == "subsample":
            key = sub.tobytes()  # the seeds of a fraction-1 group share their rows: score them once
            if key not in scored:
                scored[key] = subsample_choice(pool, sub, layers_cfg)
            i, j, score = scored[key]
        else:
            i, j = layer_pair(spec.variant.layers, choice, str(choice_path))
            score = None
        if i >= len(pool.vision_layer_names) or j >= len(pool.text_layer_names):
            raise StepError(f"{choice_path}: layer pair ({i}, {j}) is outside the features "
                            f"({len(pool.vision_layer_names)} x {len(pool.text_layer_names)} layers)")
        log.info("run %s: layers (%s, %s), n_train=%d, n_val=%d", run_dir, pool.vision_layer_names[i],
                 pool.text_layer_names[j], len(sub), len(val_rows))
        # only this run's rows at its layer pair are read (docs/design.md "Memory")
        x_val, y_val = val_pool.vision(i, val_rows), val_pool.text(j, val_rows)
        x_train, y_train, added = _with_in_domain(params, pool.vision(i, sub), pool.text(j, sub), i, j, spec.seed)
        result = train_heads(x_train, y_train, x_val, y_val, cfg, device=dev, progress=progress,
                             epoch_metrics=_epoch_metrics(params, x_val, y_val))
        result.aligner.save(Path(run_dir) / "heads.safetensors")
        n_available = pool.n - (0 if val_split == "test" else len(val_rows))
        write_json(Path(run_dir) / "train.json", {
            "head": spec.variant.head, "layers": spec.variant.layers, "structure": spec.variant.structure,
            "size": spec.size.component, "fraction": _fraction(spec, len(sub), n_available), "seed": spec.seed,
            "vision_layer": i, "text_layer": j, "vision_layer_name": pool.vision_layer_names[i],
            "text_layer_name": pool.text_layer_names[j], "layer_scope": layers_cfg.get("scope", "pool"),
            "subsample_layer_score": score, "n_train": len(sub), "n_val": len(val_rows),
            "n_pool": pool.n, "pool_counts": pool.counts, "val_split": val_split,
            "best_epoch": result.best_epoch, "lr": result.lr,
            "lambda_at_best": result.lambda_at_best, "warmup_steps": result.warmup_steps,
            "epochs_run": len(result.history), "train_config": cfg.to_dict(), "history": result.history,
            "seconds": round(time.perf_counter() - start, 3), **({"in_domain": added} if added else {}),
            **({"csa_fit": result.csa_fit} if result.csa_fit else {})})


def _with_in_domain(params: Mapping[str, Any], x: Any, y: Any, i: int, j: int, seed: int) -> tuple[Any, Any, Any]:
    """The run's training pairs plus, with a params ``in_domain`` block, its k-per-class labelled pool samples
    (docs/analysis.md "in_domain"); returns ``(x, y, record or None)``."""
    if not params.get("in_domain"):
        return x, y, None
    import torch

    from .indomain import in_domain_pairs

    x_add, y_add, record = in_domain_pairs(params["in_domain"], i, j, seed)
    return torch.cat([x, x_add]), torch.cat([y, y_add]), record


def _epoch_metrics(params: Mapping[str, Any], x_val: Any, y_val: Any) -> Any:
    """With a params ``neighbourhood`` block: the per-epoch trustworthiness / continuity callback on the
    validation pairs (docs/analysis.md "neighbourhood"), else None."""
    if not params.get("neighbourhood"):
        return None
    from .neighbourhood import from_params

    return from_params(params["neighbourhood"], x_val, y_val)


def _fraction(spec: Any, n_train: int, n_available: int) -> float:
    """The configured fraction, or for an absolute size the share of the training part it uses."""
    return float(spec.size.value) if spec.size.kind == "frac" else n_train / n_available


def subsample_choice(pool: Any, rows: Any, layers: Mapping[str, Any]) -> tuple[int, int, float]:
    """The "Similar" pair scored on a run's own training rows (params ``layers.scope: subsample``, as the released
    code does, docs/method.md §3.2): at most ``layers.n_samples`` of ``rows``, the same metric and k rule."""
    from .similarity import choose_layers, layer_scores, score_subsample

    picked = rows[score_subsample(len(rows), int(layers["n_samples"]), seed=int(layers["seed"]))]
    scores = layer_scores(*_subsample_layers(pool, picked), k=layers["k"], metric=layers["metric"], progress=False)
    i, j = choose_layers(scores, "similar")
    return int(i), int(j), float(scores[i, j])


def _subsample_layers(pool: Any, rows: Any) -> tuple[list[Any], list[Any]]:
    """Every vision and text layer of pool rows ``rows`` (a :class:`~structure_align.pool.LazyPairPool` reads only
    those rows, layer by layer; an eager ``PairPool`` indexes its tensors)."""
    return ([pool.vision(i, rows) for i in range(len(pool.vision_layer_names))],
            [pool.text(j, rows) for j in range(len(pool.text_layer_names))])


def evaluate_runs(run_dirs: Sequence[str | Path], datasets: Sequence[Mapping[str, Any]], *,
                  evaluation: Mapping[str, Any], device: str = "auto") -> None:
    """Evaluate every run of ``run_dirs`` on every dataset and write each run's ``metrics.json`` (§7).

    ``datasets`` are ``{"name", "vision", "text", "manifest", "test_split"}`` records (feature files, manifest,
    whether only the test split is evaluated); ``evaluation`` is params ``evaluation``. The feature files are read
    once for all runs of the job.
    """
    from .evaluate import evaluate_set, load_eval_set
    from .heads import load_aligner
    from .runs import RunSpec
    from .utils import resolve_device

    specs = [RunSpec.from_path(d) for d in run_dirs]
    dev = resolve_device(device)
    raw = bool(evaluation.get("csa_raw_prototypes", False))
    # every file of every run is opened (and its header checked) before any layer is read or metrics.json written
    sets = [load_eval_set(d["vision"], d["text"], d["manifest"], test_split=bool(d["test_split"])) for d in datasets]
    infos = [read_json(Path(run_dir) / "train.json", "train record") for run_dir in run_dirs]
    aligners = [load_aligner(Path(run_dir) / "heads.safetensors", device=dev) for run_dir in run_dirs]
    results: list[dict[str, Any]] = [{} for _ in run_dirs]
    for d, es in zip(datasets, sets):  # one evaluation set in memory at a time, read once for all runs
        for run_dir, spec, info, aligner, res in zip(run_dirs, specs, infos, aligners, results):
            res[d["name"]] = evaluate_set(aligner, es, int(info["vision_layer"]), int(info["text_layer"]),
                                          duplicate_gallery=bool(evaluation["duplicate_gallery"]),
                                          raw_prototypes=raw and spec.variant.head == "csa",
                                          batch_size=int(evaluation["batch_size"]), device=dev)
            log.info("%s %s: %s", run_dir, d["name"], {k: (round(v, 2) if v is not None else None)
                                                      for k, v in res[d["name"]]["metrics"].items()})
        es.release()
    for run_dir, spec, info, res in zip(run_dirs, specs, infos, results):
        run = {k: info[k] for k in ("head", "layers", "structure", "fraction", "seed", "vision_layer", "text_layer",
                                    "vision_layer_name", "text_layer_name", "n_train")}
        run.update(spec.variant.values(), vision=spec.vision, text=spec.text, size=spec.size.component,
                   lambda_at_best=info.get("lambda_at_best"))
        if "csa_fit" in info:  # the CCA fit's regime: the tables mark degenerate (d >= n) CSA fits (§4.3)
            run["csa_fit"] = info["csa_fit"]
        write_json(Path(run_dir) / "metrics.json", {"run": run, "datasets": res})

