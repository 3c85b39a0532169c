"""Training the alignment heads on cached features (docs/method.md §6), and fitting CSA through the same entry point.

The loop follows the released ``AlignmentTrainer``: AdamW over both heads, cosine LR stepped per batch, λ warm-up per
optimiser step, gradient clipping per head, a validation loss for early stopping, and restore of the best weights.
The selection rule is configurable (:class:`TrainConfig` ``select_on`` / ``select_after_warmup``): the released one
selects on the total loss with the current λ_t, which at small N restores checkpoints where λ is still ramping up.
Everything random comes from ``cfg.seed``: same seed => identical weights and history on CPU.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .csa import CSA
from .heads import HeadAligner
from .losses import LambdaWarmup, alignment_loss
from .trainconfig import TrainConfig
from .utils import resolve_device, seed_everything

log = logging.getLogger("structure_align.train")

EpochMetrics = Callable[[nn.Module], dict[str, float]]


@dataclass
class TrainResult:
    """``aligner`` (eval mode, best weights), per-epoch ``history``, ``best_epoch`` (0-based, -1 for CSA), ``lr``,
    ``lambda_at_best`` (λ_t of the restored epoch's last step; the full λ for CSA + R_S, 0 without R_S) and
    ``warmup_steps`` (length of the λ ramp this run used); ``csa_fit`` is the CCA fit's regime for CSA
    (:meth:`structure_align.csa.CCAResult.fit_info`), None for the heads."""

    aligner: nn.Module
    history: list[dict[str, Any]]
    best_epoch: int
    lr: float
    lambda_at_best: float = 0.0
    warmup_steps: int = 0
    csa_fit: dict[str, Any] | None = None


def _check_features(x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor | None,
                    y_val: torch.Tensor | None) -> None:
    """Fail before any work on mismatched shapes or non-finite values, naming the offending array."""
    arrays = {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val}
    for name, t in arrays.items():
        if t is None:
            continue
        if t.ndim != 2:
            raise ValueError(f"train_heads: {name} must be 2-D [n, d], got shape {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise ValueError(f"train_heads: {name} contains non-finite values")
    if x_train.shape[0] != y_train.shape[0]:
        raise ValueError(f"train_heads: x_train has {x_train.shape[0]} rows, y_train {y_train.shape[0]}")
    if x_train.shape[0] < 2:
        raise ValueError(f"train_heads: need at least 2 training pairs, got {x_train.shape[0]}")
    if (x_val is None) != (y_val is None):
        raise ValueError("train_heads: pass both x_val and y_val, or neither")
    if x_val is not None:
        if x_val.shape[0] != y_val.shape[0]:
            raise ValueError(f"train_heads: x_val has {x_val.shape[0]} rows, y_val {y_val.shape[0]}")
        if x_val.shape[1] != x_train.shape[1] or y_val.shape[1] != y_train.shape[1]:
            raise ValueError(f"train_heads: validation widths ({x_val.shape[1]}, {y_val.shape[1]}) differ from "
                             f"training widths ({x_train.shape[1]}, {y_train.shape[1]})")


def _as_tensor(t: torch.Tensor | np.ndarray | None, device: torch.device) -> torch.Tensor | None:
    return None if t is None else torch.as_tensor(t).detach().to(device, torch.float32)


def _batch_loss(aligner: HeadAligner, x: torch.Tensor, y: torch.Tensor, lam: float,
                cfg: TrainConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """InfoNCE + λ·½(R_S^img + R_S^txt) on one batch (docs/method.md §5.3)."""
    return alignment_loss(x, aligner.encode_image(x), y, aligner.encode_text(y), rs_lambda=lam,
                          temperature=cfg.temperature, rs_kwargs=cfg.rs_kwargs())


def _clip_per_head(aligner: HeadAligner, max_norm: float) -> None:
    """Clip each head's gradient separately to ``max_norm`` (docs/method.md §6.5)."""
    for head in (aligner.image_head, aligner.text_head):
        nn.utils.clip_grad_norm_([p for p in head.parameters() if p.grad is not None], max_norm)


def _make_optimizer(aligner: HeadAligner, cfg: TrainConfig, lr: float) -> torch.optim.AdamW:
    # one parameter group for both heads, weight decay on every parameter, as released (§6.5)
    return torch.optim.AdamW(aligner.parameters(), lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def _lr_from_curve(lrs: np.ndarray, losses: np.ndarray, smoothing: float) -> float | None:
    """Steepest-descent LR of a finder curve (docs/method.md §6.5), before the /5 and the floor; None if undefined."""
    smooth = np.empty_like(losses)
    for i, value in enumerate(losses):
        smooth[i] = value if i == 0 else smoothing * smooth[i - 1] + (1.0 - smoothing) * value
    if len(smooth) < 3:
        return None
    grads = np.gradient(smooth, np.log10(lrs))
    stop = min(int(np.argmin(smooth)), len(smooth) - 1) - 1
    if stop < 1:
        return None
    steepest = 1 + int(np.argmin(grads[1:stop + 1]))
    return float(lrs[steepest])


def lr_find(aligner: HeadAligner, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, *, start_lr: float = 1e-7,
            end_lr: float = 10.0, num_iters: int = 100, subset: int = 5000, smoothing: float = 0.05,
            diverge: float = 5.0, seed: int | None = None) -> float:
    """LR range test of docs/method.md §6.5; returns ``max(lr_steepest / 5, 1e-6)`` and restores the head weights.

    The LR grows geometrically from ``start_lr`` to ``end_lr`` over ``num_iters`` AdamW steps on random batches of
    ``min(batch_size, S)`` rows from a random subset of ``S = min(N, subset)`` pairs, with the full λ (released
    quirk: the finder runs before any warm-up step). It stops early when the loss is non-finite or exceeds
    ``diverge`` × the best loss. Losses are smoothed as released (``s_i = smoothing·s_{i-1} + (1-smoothing)·l_i``);
    the steepest point is the argmin of ds/dlog10(lr) over indices 1 .. min(argmin s, len-1) - 1. When that range
    is empty, ``cfg.lr`` is returned (the released code would take ``lrs[max(0, argmin - 1)] / 5`` there, in effect
    its floor, docs/method.md §11). ``x``, ``y`` must already be on the heads' device.
    """
    if num_iters < 3 or not 0 < start_lr < end_lr:
        raise ValueError(f"lr_find: need num_iters >= 3 and 0 < start_lr < end_lr, got {num_iters}, {start_lr}, "
                         f"{end_lr}")
    gen = torch.Generator().manual_seed(cfg.seed if seed is None else seed)
    n = x.shape[0]
    pool = torch.randperm(n, generator=gen)[:min(n, subset)]
    bsz = min(cfg.batch_size, pool.numel())
    saved = copy.deepcopy(aligner.state_dict())
    opt = _make_optimizer(aligner, cfg, start_lr)
    factor = (end_lr / start_lr) ** (1.0 / num_iters)
    lrs: list[float] = []
    losses: list[float] = []
    best = math.inf
    was_training = aligner.training
    aligner.train()
    try:
        for it in range(num_iters):
            lr = start_lr * factor ** it
            for group in opt.param_groups:
                group["lr"] = lr
            rows = pool[torch.randperm(pool.numel(), generator=gen)[:bsz]].to(x.device)
            loss, _ = _batch_loss(aligner, x[rows], y[rows], cfg.rs_lambda, cfg)
            value = float(loss.detach())
            if not math.isfinite(value) or value > diverge * best:
                break
            lrs.append(lr)
            losses.append(value)
            best = min(best, value)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            _clip_per_head(aligner, cfg.grad_clip)
            opt.step()
    finally:
        aligner.load_state_dict(saved)
        aligner.train(was_training)
    steep = _lr_from_curve(np.asarray(lrs), np.asarray(losses), smoothing)
    if steep is None:
        log.warning("lr_find: no steepest point in a curve of %d points; falling back to cfg.lr=%g", len(lrs), cfg.lr)
        return float(cfg.lr)
    found = max(steep / 5.0, 1e-6)
    log.info("lr_find: steepest lr %.3g -> lr %.3g (%d points)", steep, found, len(lrs))
    return found


@torch.no_grad()
def _mean_loss(aligner: HeadAligner, x: torch.Tensor, y: torch.Tensor, lam: float,
               cfg: TrainConfig) -> tuple[float, dict[str, float]]:
    """Mean over sequential batches of the loss with the given λ (validation, §6.6); eval mode (no dropout).

    Batches are weighted by their rows, as the released ``MeanMetric.update(loss, weight=batch size)`` (§11)."""
    aligner.eval()
    totals, parts, sizes = [], [], []
    for start in range(0, x.shape[0], cfg.batch_size):
        xb, yb = x[start:start + cfg.batch_size], y[start:start + cfg.batch_size]
        if xb.shape[0] < 2:
            continue  # InfoNCE and R_S need at least one negative / two rows
        loss, p = _batch_loss(aligner, xb, yb, lam, cfg)
        totals.append(float(loss))
        parts.append(p)
        sizes.append(int(xb.shape[0]))
    aligner.train()
    if not totals:
        raise ValueError("train_heads: the validation set needs at least 2 rows")
    if len(set(sizes)) == 1:  # equal batches: the plain mean (the same number, computed as before)
        return float(np.mean(totals)), _mean_parts(parts)
    return float(np.average(totals, weights=sizes)), _mean_parts(parts, sizes)


def _mean_parts(parts: list[dict[str, float]], weights: list[int] | None = None) -> dict[str, float | None]:
    """Mean of the clip / rs parts over batches (weighted by ``weights`` when given); ``rs`` is None when it was
    never computed (λ = 0)."""
    if weights is None:
        rs = [p["rs"] for p in parts if "rs" in p]
        return {"clip": float(np.mean([p["clip"] for p in parts])), "rs": float(np.mean(rs)) if rs else None}
    rs_w = [(p["rs"], w) for p, w in zip(parts, weights) if "rs" in p]
    return {"clip": float(np.average([p["clip"] for p in parts], weights=weights)),
            "rs": float(np.average([r for r, _ in rs_w], weights=[w for _, w in rs_w])) if rs_w else None}


def _train_csa(x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, device: torch.device,
               progress: bool) -> TrainResult:
    """``head="csa"``: fit CCA (§4.3) and, when ``rs_lambda > 0``, refine with R_S (§4.4); same result shape."""
    sim_dim = cfg.csa_sim_dim if cfg.csa_sim_dim is not None else min(cfg.dim, x.shape[1], y.shape[1])
    csa = CSA.fit(x, y, sim_dim, weighting=cfg.csa_weighting, reg=cfg.csa_reg).to(device)
    history: list[dict[str, Any]] = []
    refine = cfg.rs_lambda > 0
    if refine:
        rs = cfg.rs_kwargs()
        losses = csa.refine(x, y, rs_lambda=cfg.rs_lambda, lambda_cca=cfg.csa_lambda_cca, tau=rs.pop("tau"),
                            levels=rs.pop("levels"), weighting=rs.pop("weighting"), epochs=cfg.csa_epochs,
                            lr=cfg.csa_lr, batch_size=cfg.csa_batch_size or cfg.batch_size, seed=cfg.seed,
                            device=device, progress=progress, rs_options=_non_default_rs(rs),
                            whiten_after=cfg.csa_whiten)
        history = [{"epoch": i, "train_loss": v, "lr": cfg.csa_lr} for i, v in enumerate(losses)]
    return TrainResult(aligner=csa.eval(), history=history, best_epoch=-1, lr=cfg.csa_lr if refine else 0.0,
                       lambda_at_best=float(cfg.rs_lambda), csa_fit=csa.fit_info)


def _non_default_rs(rs: dict[str, Any]) -> dict[str, Any]:
    """R_S options that differ from :func:`structure_regularizer`'s defaults (the released refinement passes none)."""
    defaults = {"centering": "mean", "center_first": False, "distance": "cosine", "divergence": "code", "margin": 0.0}
    return {k: v for k, v in rs.items() if defaults.get(k, object()) != v}


def _monitored(row: dict[str, Any], select_on: str) -> float:
    """The value model selection minimises: validation (else training) total loss or InfoNCE alone (§6.6)."""
    split = "val" if row["val_loss"] is not None else "train"
    return row[f"{split}_loss"] if select_on == "total" else row[f"{split}_clip"]


def _check_budget(cfg: TrainConfig, warmup_steps: int, steps_per_epoch: int) -> None:
    """With ``select_after_warmup`` the run must outlast the ramp, else no epoch could be selected."""
    if cfg.select_after_warmup and warmup_steps > 0 and warmup_steps >= cfg.epochs * steps_per_epoch:
        raise ValueError(f"train_heads: the lambda warm-up ({warmup_steps} steps) is not shorter than the run "
                         f"({cfg.epochs} epochs x {steps_per_epoch} steps); with select_after_warmup no epoch "
                         f"would be eligible: shorten the warm-up or raise epochs")


def train_heads(x_train: torch.Tensor | np.ndarray, y_train: torch.Tensor | np.ndarray,
                x_val: torch.Tensor | np.ndarray | None, y_val: torch.Tensor | np.ndarray | None, cfg: TrainConfig,
                *, device: str | torch.device = "cpu", progress: bool = True,
                epoch_metrics: EpochMetrics | None = None) -> TrainResult:
    """Train the two heads with InfoNCE + λ_t·R_S (docs/method.md §5.3, §6), or fit CSA when the head is ``csa``.

    Per epoch: a seeded reshuffle (the last partial batch is kept; a single leftover row is skipped because the
    losses need two rows), per batch λ_t = ``LambdaWarmup(rs_lambda, warmup).value(t)`` with t the number of
    previous optimiser steps, AdamW step after per-head gradient clipping, cosine LR step. Then the validation
    loss (with the λ of the last training step, as released) is recorded and the selection value
    (``cfg.select_on``) decides early stopping (``patience`` eligible epochs without improvement) and which epoch's
    weights are restored. Without validation data the training loss is used. ``epoch_metrics(aligner)`` (optional)
    adds values to each epoch's history row (e.g. neighbourhood preservation on the validation set). History rows:
    ``epoch``, ``train_loss``, ``train_clip``, ``train_rs``, ``val_loss``, ``val_clip``, ``val_rs``, ``lambda``
    (λ of the epoch's last step), ``lr`` (LR of that step), ``eligible``.
    """
    dev = resolve_device(device)
    xt, yt = _as_tensor(x_train, dev), _as_tensor(y_train, dev)
    xv, yv = _as_tensor(x_val, dev), _as_tensor(y_val, dev)
    _check_features(xt, yt, xv, yv)
    if cfg.is_csa:
        return _train_csa(xt, yt, cfg, dev, progress)

    n = xt.shape[0]
    steps_per_epoch = sum(1 for start in range(0, n, cfg.batch_size) if min(cfg.batch_size, n - start) >= 2)
    warmup_steps = cfg.warmup_steps(steps_per_epoch)
    _check_budget(cfg, warmup_steps, steps_per_epoch)
    seed_everything(cfg.seed)  # head initialisation and dropout draw from the global RNG
    aligner = HeadAligner.build(cfg.head, xt.shape[1], yt.shape[1], cfg.dim, **cfg.head_options).to(dev)
    aligner.train()
    lr = lr_find(aligner, xt, yt, cfg) if cfg.lr_finder else float(cfg.lr)
    opt = _make_optimizer(aligner, cfg, lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.t_max_epochs * max(n // cfg.batch_size, 1),
                                                       eta_min=0.0)
    warmup = LambdaWarmup(float(cfg.rs_lambda), warmup_steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    step = 0
    best_loss, best_epoch, best_state, waited = math.inf, -1, copy.deepcopy(aligner.state_dict()), 0
    history: list[dict[str, Any]] = []
    bar = tqdm(range(cfg.epochs), desc=f"train {cfg.head}", disable=not progress)
    for epoch in bar:
        row = _train_epoch(aligner, opt, sched, warmup, xt, yt, cfg, gen, step)
        step = row.pop("step")
        row["epoch"] = epoch
        if xv is not None:
            val_loss, val_parts = _mean_loss(aligner, xv, yv, row["lambda"], cfg)
            row.update(val_loss=val_loss, val_clip=val_parts["clip"], val_rs=val_parts["rs"])
        else:
            row.update(val_loss=None, val_clip=None, val_rs=None)
        # eligible once the epoch's last step used the full lambda; the same step rule for lambda = 0 arms
        row["eligible"] = not cfg.select_after_warmup or warmup_steps == 0 or row.pop("last_step") >= warmup_steps
        row.pop("last_step", None)
        if epoch_metrics is not None:
            row.update(epoch_metrics(aligner))
            aligner.train()
        history.append(row)
        monitored = _monitored(row, cfg.select_on)
        if not math.isfinite(monitored):
            raise FloatingPointError(f"train_heads: non-finite loss {monitored} at epoch {epoch} (lr={lr:g}); "
                                     "lower the learning rate")
        if not row["eligible"]:
            continue
        if monitored < best_loss:
            best_loss, best_epoch, waited = monitored, epoch, 0
            best_state = copy.deepcopy(aligner.state_dict())
        else:
            waited += 1
        bar.set_postfix(train=f"{row['train_loss']:.4f}", sel=f"{monitored:.4f}", best=best_epoch)
        if waited >= cfg.patience:
            log.info("early stopping at epoch %d (best epoch %d, %s loss %.6f)", epoch, best_epoch, cfg.select_on,
                     best_loss)
            break
    aligner.load_state_dict(best_state)
    aligner.eval()
    lam_best = float(history[best_epoch]["lambda"]) if best_epoch >= 0 else 0.0
    log.info("trained %s heads: %d epochs, best epoch %d (%s loss %.6f, lambda %.3g), lr %.3g", cfg.head,
             len(history), best_epoch, cfg.select_on, best_loss, lam_best, lr)
    return TrainResult(aligner=aligner, history=history, best_epoch=best_epoch, lr=lr, lambda_at_best=lam_best,
                       warmup_steps=warmup_steps)


def _train_epoch(aligner: HeadAligner, opt: torch.optim.Optimizer, sched: Any, warmup: LambdaWarmup,
                 xt: torch.Tensor, yt: torch.Tensor, cfg: TrainConfig, gen: torch.Generator,
                 step: int) -> dict[str, Any]:
    """One pass over the shuffled training pairs; returns the epoch's history row (plus ``step``/``last_step``)."""
    n = xt.shape[0]
    perm = torch.randperm(n, generator=gen).to(xt.device)
    totals, parts = [], []
    lam, step_lr, last_step = warmup.value(step), opt.param_groups[0]["lr"], step
    for start in range(0, n, cfg.batch_size):
        rows = perm[start:start + cfg.batch_size]
        if rows.numel() < 2:
            continue
        lam, step_lr, last_step = warmup.value(step), opt.param_groups[0]["lr"], step
        loss, p = _batch_loss(aligner, xt[rows], yt[rows], lam, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        _clip_per_head(aligner, cfg.grad_clip)
        opt.step()
        sched.step()
        step += 1
        totals.append(p["total"])
        parts.append(p)
    train_parts = _mean_parts(parts)
    return {"train_loss": float(np.mean(totals)), "train_clip": train_parts["clip"], "train_rs": train_parts["rs"],
            "lambda": lam, "lr": step_lr, "step": step, "last_step": last_step}
