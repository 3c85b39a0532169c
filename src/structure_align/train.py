"""Training the alignment heads on cached features (paper-spec §6), and fitting CSA through the same entry point.

The loop follows the released ``AlignmentTrainer``: AdamW over both heads, cosine LR stepped per batch, λ warm-up per
optimiser step, gradient clipping per head, validation loss (with the current λ) for early stopping, and restore of
the best weights. Everything random comes from ``cfg.seed``: same seed => identical weights and history on CPU.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .csa import CSA
from .heads import HEAD_KINDS, HeadAligner
from .losses import LambdaWarmup, alignment_loss
from .utils import resolve_device, seed_everything

log = logging.getLogger("structure_align.train")

TRAIN_HEADS: tuple[str, ...] = (*HEAD_KINDS, "csa")


def subsample_pairs(n: int, fraction: float, seed: int) -> np.ndarray:
    """Seeded subsample of ``round(fraction·n)`` (at least 2) of ``n`` training pairs, as sorted row indices (§6.3).

    ``fraction = 1`` returns every row. The released code draws ``torch.randperm`` after seeding; this uses a
    ``torch.Generator`` seeded with ``seed`` so the draw does not depend on (or disturb) the global RNG state.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"subsample_pairs: n must be an integer >= 2, got {n!r}")
    if not (isinstance(fraction, (float, int)) and 0.0 < fraction <= 1.0):
        raise ValueError(f"subsample_pairs: fraction must be in (0, 1], got {fraction!r}")
    k = max(2, round(fraction * n))
    if k >= n:
        return np.arange(n, dtype=np.int64)
    perm = torch.randperm(int(n), generator=torch.Generator().manual_seed(int(seed)))
    return np.sort(perm[:k].numpy()).astype(np.int64)


@dataclass
class TrainConfig:
    """All knobs of one training run (paper-spec §4-§6); defaults are the released ones.

    ``head`` is ``linear`` | ``mlp`` | ``released_mlp`` | ``csa``; ``head_options`` go to :func:`build_head`.
    ``lam = 0`` gives the baselines (R_S is then not computed); ``rs_*`` are the :func:`structure_regularizer`
    options, ``rs_tau = None`` shares ``tau`` with InfoNCE as released. The cosine schedule has
    ``T_max = t_max_epochs·max(N // batch_size, 1)`` steps and ``eta_min = 0``; PyTorch's ``CosineAnnealingLR`` is
    periodic, so with more than ``2·T_max`` steps the LR rises again — kept on purpose, as released (§6.5).
    ``csa_*`` configure ``head="csa"`` (``csa_sim_dim = None`` -> ``min(d_out, d_x, d_y)``;
    ``csa_batch_size = None`` -> ``batch_size``).
    """

    head: str = "linear"
    head_options: dict[str, Any] = field(default_factory=dict)
    d_out: int = 512
    tau: float = 0.05
    lam: float = 0.0
    warmup_steps: int = 1000
    rs_levels: int = 1
    rs_weighting: str = "none"
    rs_centering: str = "mean"
    rs_center_first: bool = False
    rs_distance: str = "cosine"
    rs_divergence: str = "code"
    rs_margin: float = 0.0
    rs_tau: float | None = None
    lr: float = 1e-3
    use_lr_finder: bool = False
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 1e-4
    batch_size: int = 4096
    max_epochs: int = 1000
    patience: int = 200
    grad_clip: float = 1.0
    t_max_epochs: int = 50
    seed: int = 42
    csa_sim_dim: int | None = None
    csa_weighting: str = "none"
    csa_reg: float = 0.0
    csa_refine: bool = False
    csa_lam_rs: float = 10.0
    csa_lam_cca: float = 1e-2
    csa_tau: float = 0.2
    csa_levels: int = 1
    csa_rs_weighting: str = "inverse"
    csa_epochs: int = 10
    csa_lr: float = 5e-4
    csa_batch_size: int | None = None

    def __post_init__(self) -> None:
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        problems = []
        if self.head not in TRAIN_HEADS:
            problems.append(f"head={self.head!r} (expected one of {list(TRAIN_HEADS)})")
        for name in ("d_out", "batch_size", "t_max_epochs", "rs_levels", "csa_levels", "max_epochs", "patience"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name}={getattr(self, name)!r} (must be >= 1)")
        for name in ("warmup_steps", "csa_epochs"):
            if int(getattr(self, name)) < 0:
                problems.append(f"{name}={getattr(self, name)!r} (must be >= 0)")
        for name in ("tau", "lr", "grad_clip", "csa_tau", "csa_lr"):
            if not float(getattr(self, name)) > 0:
                problems.append(f"{name}={getattr(self, name)!r} (must be > 0)")
        for name in ("lam", "weight_decay", "rs_margin", "csa_lam_rs", "csa_lam_cca", "csa_reg"):
            if not float(getattr(self, name)) >= 0:
                problems.append(f"{name}={getattr(self, name)!r} (must be >= 0)")
        if self.rs_tau is not None and not self.rs_tau > 0:
            problems.append(f"rs_tau={self.rs_tau!r} (must be > 0 or None)")
        if not (0 <= self.betas[0] < 1 and 0 <= self.betas[1] < 1):
            problems.append(f"betas={self.betas!r} (each must be in [0, 1))")
        if problems:
            raise ValueError("TrainConfig: invalid " + "; ".join(problems))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a plain dict (e.g. params.yaml); unknown keys raise ``ValueError`` naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"TrainConfig: unknown key(s) {unknown}; allowed: {sorted(names)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out

    def rs_kwargs(self) -> dict[str, Any]:
        """Options passed to :func:`structure_regularizer` through :func:`alignment_loss`."""
        return {"levels": self.rs_levels, "tau": self.tau if self.rs_tau is None else self.rs_tau,
                "weighting": self.rs_weighting, "centering": self.rs_centering,
                "center_first": self.rs_center_first, "distance": self.rs_distance,
                "divergence": self.rs_divergence, "margin": self.rs_margin}


@dataclass
class TrainResult:
    """``aligner`` (eval mode, best weights), per-epoch ``history``, ``best_epoch`` (0-based, -1 for CSA), ``lr``."""

    aligner: nn.Module
    history: list[dict[str, Any]]
    best_epoch: int
    lr: float


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
    """InfoNCE + λ·½(R_S^img + R_S^txt) on one batch (paper-spec §5.3)."""
    return alignment_loss(x, aligner.encode_image(x), y, aligner.encode_text(y), lam=lam, tau=cfg.tau,
                          rs_kwargs=cfg.rs_kwargs())


def _clip_per_head(aligner: HeadAligner, max_norm: float) -> None:
    """Clip each head's gradient separately to ``max_norm`` (paper-spec §6.5)."""
    for head in (aligner.image_head, aligner.text_head):
        nn.utils.clip_grad_norm_([p for p in head.parameters() if p.grad is not None], max_norm)


def _make_optimizer(aligner: HeadAligner, cfg: TrainConfig, lr: float) -> torch.optim.AdamW:
    # one parameter group for both heads, weight decay on every parameter, as released (§6.5)
    return torch.optim.AdamW(aligner.parameters(), lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def _lr_from_curve(lrs: np.ndarray, losses: np.ndarray, smoothing: float) -> float | None:
    """Steepest-descent LR of a finder curve (paper-spec §6.5), before the /5 and the floor; None if undefined."""
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
    """LR range test of paper-spec §6.5; returns ``max(lr_steepest / 5, 1e-6)`` and restores the head weights.

    The LR grows geometrically from ``start_lr`` to ``end_lr`` over ``num_iters`` AdamW steps on random batches of
    ``min(batch_size, S)`` rows from a random subset of ``S = min(N, subset)`` pairs, with the full λ (released
    quirk: the finder runs before any warm-up step). It stops early when the loss is non-finite or exceeds
    ``diverge`` × the best loss. Losses are smoothed as released (``s_i = smoothing·s_{i-1} + (1-smoothing)·l_i``);
    the steepest point is the argmin of ds/dlog10(lr) over indices 1 .. min(argmin s, len-1) - 1. When that range
    is empty, ``cfg.lr`` is returned (the released fallback). ``x``, ``y`` must already be on the heads' device.
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
            loss, _ = _batch_loss(aligner, x[rows], y[rows], cfg.lam, cfg)
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
    """Mean over sequential batches of the loss with the given λ (validation, §6.6); eval mode (no dropout)."""
    aligner.eval()
    totals, parts = [], []
    for start in range(0, x.shape[0], cfg.batch_size):
        xb, yb = x[start:start + cfg.batch_size], y[start:start + cfg.batch_size]
        if xb.shape[0] < 2:
            continue  # InfoNCE and R_S need at least one negative / two rows
        loss, p = _batch_loss(aligner, xb, yb, lam, cfg)
        totals.append(float(loss))
        parts.append(p)
    aligner.train()
    if not totals:
        raise ValueError("train_heads: the validation set needs at least 2 rows")
    return float(np.mean(totals)), _mean_parts(parts)


def _mean_parts(parts: list[dict[str, float]]) -> dict[str, float | None]:
    """Mean of the clip / rs parts over batches; ``rs`` is None when it was never computed (λ = 0)."""
    rs = [p["rs"] for p in parts if "rs" in p]
    return {"clip": float(np.mean([p["clip"] for p in parts])), "rs": float(np.mean(rs)) if rs else None}


def _train_csa(x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, device: torch.device,
               progress: bool) -> TrainResult:
    """``head="csa"``: fit CCA (§4.3) and optionally refine with R_S (§4.4); same result shape as the head loop."""
    sim_dim = cfg.csa_sim_dim if cfg.csa_sim_dim is not None else min(cfg.d_out, x.shape[1], y.shape[1])
    csa = CSA.fit(x, y, sim_dim, weighting=cfg.csa_weighting, reg=cfg.csa_reg).to(device)
    history: list[dict[str, Any]] = []
    if cfg.csa_refine:
        losses = csa.refine(x, y, lam_rs=cfg.csa_lam_rs, lam_cca=cfg.csa_lam_cca, tau=cfg.csa_tau,
                            levels=cfg.csa_levels, weighting=cfg.csa_rs_weighting, epochs=cfg.csa_epochs,
                            lr=cfg.csa_lr, batch_size=cfg.csa_batch_size or cfg.batch_size, seed=cfg.seed,
                            device=device, progress=progress)
        history = [{"epoch": i, "train_loss": v, "lr": cfg.csa_lr} for i, v in enumerate(losses)]
    return TrainResult(aligner=csa.eval(), history=history, best_epoch=-1,
                       lr=cfg.csa_lr if cfg.csa_refine else 0.0)


def train_heads(x_train: torch.Tensor | np.ndarray, y_train: torch.Tensor | np.ndarray,
                x_val: torch.Tensor | np.ndarray | None, y_val: torch.Tensor | np.ndarray | None, cfg: TrainConfig,
                *, device: str | torch.device = "cpu", progress: bool = True) -> TrainResult:
    """Train the two heads with InfoNCE + λ_t·R_S (paper-spec §5.3, §6), or fit CSA when ``cfg.head == "csa"``.

    Per epoch: a seeded reshuffle (the last partial batch is kept; a single leftover row is skipped because the
    losses need two rows), per batch λ_t = ``LambdaWarmup(lam, warmup_steps).value(t)`` with t the number of
    previous optimiser steps, AdamW step after per-head gradient clipping, cosine LR step. Then the validation
    loss with the λ of the last training step (released quirk 2) decides early stopping (``patience`` epochs
    without improvement) and which epoch's weights are restored at the end. Without validation data the epoch's
    mean training loss is used instead. History rows: ``epoch``, ``train_loss``, ``train_clip``, ``train_rs``,
    ``val_loss``, ``val_clip``, ``val_rs``, ``lambda`` (λ of the epoch's last step), ``lr`` (LR of that step).
    """
    dev = resolve_device(device)
    xt, yt = _as_tensor(x_train, dev), _as_tensor(y_train, dev)
    xv, yv = _as_tensor(x_val, dev), _as_tensor(y_val, dev)
    _check_features(xt, yt, xv, yv)
    if cfg.head == "csa":
        return _train_csa(xt, yt, cfg, dev, progress)

    seed_everything(cfg.seed)  # head initialisation and dropout draw from the global RNG
    aligner = HeadAligner.build(cfg.head, xt.shape[1], yt.shape[1], cfg.d_out, **cfg.head_options).to(dev)
    aligner.train()
    lr = lr_find(aligner, xt, yt, cfg) if cfg.use_lr_finder else float(cfg.lr)
    opt = _make_optimizer(aligner, cfg, lr)
    n = xt.shape[0]
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.t_max_epochs * max(n // cfg.batch_size, 1),
                                                       eta_min=0.0)
    warmup = LambdaWarmup(float(cfg.lam), int(cfg.warmup_steps))
    gen = torch.Generator().manual_seed(cfg.seed)
    step = 0
    best_loss, best_epoch, best_state, waited = math.inf, -1, copy.deepcopy(aligner.state_dict()), 0
    history: list[dict[str, Any]] = []
    bar = tqdm(range(cfg.max_epochs), desc=f"train {cfg.head}", disable=not progress)
    for epoch in bar:
        perm = torch.randperm(n, generator=gen).to(dev)
        totals, parts = [], []
        lam = warmup.value(step)
        step_lr = opt.param_groups[0]["lr"]
        for start in range(0, n, cfg.batch_size):
            rows = perm[start:start + cfg.batch_size]
            if rows.numel() < 2:
                continue
            lam = warmup.value(step)
            step_lr = opt.param_groups[0]["lr"]
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
        row: dict[str, Any] = {"epoch": epoch, "train_loss": float(np.mean(totals)),
                               "train_clip": train_parts["clip"], "train_rs": train_parts["rs"],
                               "lambda": lam, "lr": step_lr}
        if xv is not None:
            val_loss, val_parts = _mean_loss(aligner, xv, yv, lam, cfg)
            row.update(val_loss=val_loss, val_clip=val_parts["clip"], val_rs=val_parts["rs"])
        else:
            row.update(val_loss=None, val_clip=None, val_rs=None)
        history.append(row)
        monitored = row["val_loss"] if xv is not None else row["train_loss"]
        if not math.isfinite(monitored):
            raise FloatingPointError(f"train_heads: non-finite loss {monitored} at epoch {epoch} (lr={lr:g}); "
                                     "lower the learning rate")
        if monitored < best_loss:
            best_loss, best_epoch, waited = monitored, epoch, 0
            best_state = copy.deepcopy(aligner.state_dict())
        else:
            waited += 1
        bar.set_postfix(train=f"{row['train_loss']:.4f}", val=f"{monitored:.4f}", best=best_epoch)
        if waited >= cfg.patience:
            log.info("early stopping at epoch %d (best epoch %d, loss %.6f)", epoch, best_epoch, best_loss)
            break
    aligner.load_state_dict(best_state)
    aligner.eval()
    log.info("trained %s heads: %d epochs, best epoch %d (loss %.6f), lr %.3g", cfg.head, len(history), best_epoch,
             best_loss, lr)
    return TrainResult(aligner=aligner, history=history, best_epoch=best_epoch, lr=lr)
