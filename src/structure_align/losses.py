"""Training losses: symmetric InfoNCE, the λ warm-up and the STRUCTURE objective (docs/method.md §5.1, §5.3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .regularizer import safe_normalize, structure_regularizer

_RS_KEYS = frozenset({"levels", "tau", "weighting", "centering", "center_first", "distance", "divergence", "margin",
                      "eps", "gamma"})


def clip_loss(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """Symmetric InfoNCE (docs/method.md §5.1): ½[CE(â b̂ᵀ/τ, I) + CE(b̂ âᵀ/τ, I)] with in-batch negatives.

    ``a`` and ``b`` are row-aligned pairs [B, d]; they are L2-normalised here (a no-op when the heads already did
    it), and the loss is computed in float32 so that half-precision logits at τ = 0.05 do not overflow.
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"clip_loss needs two [B, d] tensors of the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    a_n = safe_normalize(a.to(torch.float32) if a.dtype != torch.float64 else a)
    b_n = safe_normalize(b.to(torch.float32) if b.dtype != torch.float64 else b)
    logits = (a_n * (1.0 / temperature)) @ b_n.T
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


@dataclass(frozen=True)
class LambdaWarmup:
    """Linear warm-up of the R_S weight over optimiser steps (docs/method.md §5.3): λ_t = λ·min(1, t/warmup_steps).

    ``rs_lambda`` is λ (params ``structure.lambda``).

    ``step`` counts the optimiser steps taken *before* the current batch, starting at 0, so the very first batch is
    trained with λ = 0, as in the released ``CLIPLoss.step()``. ``warmup_steps = 0`` disables the warm-up.
    """

    rs_lambda: float
    warmup_steps: int

    def __post_init__(self) -> None:
        if not self.rs_lambda >= 0:
            raise ValueError(f"LambdaWarmup: rs_lambda must be >= 0, got {self.rs_lambda!r}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"LambdaWarmup: warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")

    def value(self, step: int) -> float:
        """λ at optimiser step ``step`` (0-based count of previous steps)."""
        if step < 0:
            raise ValueError(f"LambdaWarmup.value: step must be >= 0, got {step!r}")
        if self.warmup_steps == 0:
            return float(self.rs_lambda)
        return float(self.rs_lambda) * min(1.0, step / self.warmup_steps)


def alignment_loss(x_img: torch.Tensor, a_img: torch.Tensor, x_txt: torch.Tensor, a_txt: torch.Tensor, *,
                   rs_lambda: float, temperature: float = 0.05,
                   rs_kwargs: dict[str, Any] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Total STRUCTURE objective (docs/method.md §5.3): L_CLIP(a_img, a_txt) + λ·½[R_S(x_img, a_img) + R_S(x_txt, a_txt)].

    Args:
        x_img, x_txt: frozen features of the selected layers, [B, d_img] and [B, d_txt].
        a_img, a_txt: head outputs, [B, d].
        rs_lambda: current R_S weight λ_t (e.g. ``LambdaWarmup.value(step)``); with 0, R_S is not computed at all.
        temperature: InfoNCE temperature; R_S uses the same τ (as the released code) unless ``rs_kwargs`` sets
            ``tau``.
        rs_kwargs: extra keyword arguments of :func:`structure_regularizer` (levels, weighting, ...).

    Returns:
        ``(total, parts)``: the differentiable total loss and detached floats ``parts["clip"]``,
        ``parts["rs_lambda"]``, ``parts["total"]`` and, only when ``rs_lambda > 0``, ``parts["rs_img"]``, ``parts["rs_txt"]`` and
        ``parts["rs"]`` (their mean, without λ).
    """
    rs_kwargs = dict(rs_kwargs or {})
    unknown = sorted(set(rs_kwargs) - _RS_KEYS)
    if unknown:
        raise ValueError(f"alignment_loss: unknown rs_kwargs {unknown}; allowed: {sorted(_RS_KEYS)}")
    if not rs_lambda >= 0:
        raise ValueError(f"alignment_loss: rs_lambda must be >= 0, got {rs_lambda!r}")
    if x_img.shape[0] != a_img.shape[0] or x_txt.shape[0] != a_txt.shape[0]:
        raise ValueError(f"alignment_loss: row counts differ: x_img {tuple(x_img.shape)}, a_img "
                         f"{tuple(a_img.shape)}, x_txt {tuple(x_txt.shape)}, a_txt {tuple(a_txt.shape)}")
    rs_kwargs.setdefault("tau", temperature)

    contrastive = clip_loss(a_img, a_txt, temperature)
    parts: dict[str, float] = {"clip": float(contrastive.detach()), "rs_lambda": float(rs_lambda)}
    total = contrastive
    if rs_lambda > 0:
        rs_img = structure_regularizer(x_img, a_img, **rs_kwargs)
        rs_txt = structure_regularizer(x_txt, a_txt, **rs_kwargs)
        rs = 0.5 * (rs_img + rs_txt)
        total = contrastive + rs_lambda * rs
        parts.update(rs_img=float(rs_img.detach()), rs_txt=float(rs_txt.detach()), rs=float(rs.detach()))
    parts["total"] = float(total.detach())
    return total, parts
