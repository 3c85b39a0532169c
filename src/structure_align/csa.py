"""Closed-form CCA, the CSA aligner and its STRUCTURE refinement (docs/method.md §4.3, §4.4).

CSA (Li, Chinchali, Topcu, ICLR 2025) as released in STRUCTURE: centre the raw features at the chosen layers, fit
unregularised linear CCA to ``sim_dim`` dimensions, and compare projections by plain cosine (the stored canonical
correlations are unused at evaluation). ``weighting="correlation"`` gives the CSA paper's correlation-weighted score
instead. :meth:`CSA.refine` is the released ``RSMixin`` post-hoc gradient refinement followed by whitening.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .io import write_safetensors

log = logging.getLogger("structure_align.csa")

CSA_WEIGHTINGS: tuple[str, ...] = ("none", "correlation")
# relative ridge of the degenerate regime (reg == 0 but a covariance is singular: d >= n, or collinear features;
# docs/method.md §4.3). With the released reg = 0 the fit is not unique there: every training correlation is 1 and the
# canonical directions are an arbitrary rotation, so rounding (e.g. the BLAS thread count) chose them. 1e-3 separates
# the training correlations enough that float64 rounding no longer moves the float32 weights (docs/method.md §4.3).
DEGENERATE_RIDGE = 1e-3
# canonical directions whose correlation is below this fraction of the largest are not determined by the data (with
# d >= n the cross-covariance has rank <= n - 1; any basis of the rest is a solution): they are dropped
_NULL_CORR = 1e-8


@contextmanager
def fixed_threads() -> Iterator[None]:
    """Run the enclosed torch CPU linear algebra on one thread, restoring the caller's count afterwards.

    A BLAS/LAPACK call splits its sums by thread, so the last bits of a float64 result depend on the thread count;
    one thread fixes the reduction order by construction, so the fit's bytes do not depend on the executor's
    ``threads`` (docs/method.md §4.3). The fit is a few matrix products and two eigendecompositions of d x d, cheap
    next to the feature extraction even single-threaded.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass
class CCAResult:
    """Output of :func:`fit_cca`: ``w_x`` [d_x, dim], ``w_y`` [d_y, dim], ``corr`` [dim] (descending), means."""

    w_x: torch.Tensor
    w_y: torch.Tensor
    corr: torch.Tensor
    mean_x: torch.Tensor
    mean_y: torch.Tensor
    ridge_x: float
    ridge_y: float
    degenerate: bool = False

    def fit_info(self, requested_dim: int) -> dict[str, Any]:
        """JSON record of the fit's regime (train.json ``csa_fit``; the tables mark degenerate fits)."""
        return {"degenerate": self.degenerate, "ridge_x": self.ridge_x, "ridge_y": self.ridge_y,
                "requested_dim": int(requested_dim), "kept_dim": int(self.w_x.shape[1])}


def _check_pair(x: torch.Tensor, y: torch.Tensor, what: str) -> None:
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"{what}: x and y must be 2-D [n, d], got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{what}: x has {x.shape[0]} rows but y has {y.shape[0]}; rows must be paired")
    if x.shape[0] < 2:
        raise ValueError(f"{what}: need at least 2 paired rows, got {x.shape[0]}")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError(f"{what}: x or y contains non-finite values")


def _inv_sqrt_psd(c: torch.Tensor, floor: float = 0.0) -> torch.Tensor:
    """Symmetric inverse square root of a PSD matrix via its eigen-decomposition (eigenvalues clamped at ``floor``)."""
    evals, evecs = torch.linalg.eigh(c)
    evals = evals.clamp_min(max(floor, torch.finfo(c.dtype).tiny))
    return (evecs * evals.rsqrt()) @ evecs.T


def _ridged_cov(z: torch.Tensor, reg: float, side: str) -> tuple[torch.Tensor, float]:
    """Covariance of centred ``z`` plus a ridge ``reg·(tr C / d)·I`` relative to its mean eigenvalue.

    With ``reg == 0`` and a singular covariance (d >= n or collinear columns) the :data:`DEGENERATE_RIDGE` is used
    and logged: the inverse square root would not exist otherwise, and the fit would not be unique.
    """
    n, d = z.shape
    cov = z.T @ z / n
    scale = float(torch.trace(cov)) / d
    if scale <= 0:
        raise ValueError(f"fit_cca: the {side} features are constant (zero variance)")
    ridge = reg
    if reg == 0:
        evals = torch.linalg.eigvalsh(cov)
        if d >= n or float(evals[0]) <= 1e-10 * float(evals[-1]):
            ridge = DEGENERATE_RIDGE
            log.warning("fit_cca: %s covariance is singular (n=%d, d=%d); using a relative ridge of %g", side, n, d,
                        ridge)
    return cov + ridge * scale * torch.eye(d, dtype=z.dtype, device=z.device), ridge


def fit_cca(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, dim: int, reg: float = 0.0) -> CCAResult:
    """Closed-form linear CCA (docs/method.md §4.3) in float64 on one thread (:func:`fixed_threads`).

    Centre both sides, whiten each with the inverse square root of its (ridged) covariance, take the SVD of the
    whitened cross-covariance ``Cxx^-1/2 Cxy Cyy^-1/2 = U S Vᵀ`` and return ``w_x = Cxx^-1/2 U[:, :k]``,
    ``w_y = Cyy^-1/2 V[:, :k]`` and the canonical correlations ``S[:k]``. The projected (centred) training data
    then have identity covariance (exactly so for ``reg = 0`` on a full-rank covariance) and
    ``mean_i zx[i, k] zy[i, k] = corr[k]``. Each pair of columns is signed so that the largest entry of ``U[:, k]``
    is positive (the SVD fixes it only up to a joint sign flip).

    ``reg`` is a relative ridge: ``C + reg·(tr C / d)·I``. The degenerate regime (a singular covariance with
    ``reg == 0``: d >= n or collinear features, ``degenerate=True``) uses :data:`DEGENERATE_RIDGE`. ``k = dim``
    unless fewer canonical directions carry correlation (at most n - 1 when d >= n): the rest are not determined
    by the data and are dropped, so ``k`` may be smaller than ``dim``.
    """
    xt = torch.as_tensor(x).detach().to("cpu", torch.float64)
    yt = torch.as_tensor(y).detach().to("cpu", torch.float64)
    _check_pair(xt, yt, "fit_cca")
    if reg < 0:
        raise ValueError(f"fit_cca: reg must be >= 0, got {reg}")
    if not 1 <= dim <= min(xt.shape[1], yt.shape[1]):
        raise ValueError(f"fit_cca: dim={dim} must lie in [1, min(d_x, d_y)] = [1, {min(xt.shape[1], yt.shape[1])}]")
    with fixed_threads():
        n = xt.shape[0]
        mean_x, mean_y = xt.mean(0), yt.mean(0)
        xc, yc = xt - mean_x, yt - mean_y
        cxx, ridge_x = _ridged_cov(xc, reg, "x")
        cyy, ridge_y = _ridged_cov(yc, reg, "y")
        kx, ky = _inv_sqrt_psd(cxx), _inv_sqrt_psd(cyy)
        u, s, vh = torch.linalg.svd(kx @ (xc.T @ yc / n) @ ky, full_matrices=False)
        k = min(dim, int((s > _NULL_CORR * s[0]).sum()))
        if k == 0:
            raise ValueError("fit_cca: x and y are uncorrelated on the training pairs (no canonical direction)")
        if k < dim:
            log.warning("fit_cca: only %d of the %d requested canonical directions carry correlation (n=%d); the "
                        "rest are not determined by the data and are dropped", k, dim, n)
        u, v = u[:, :k], vh.T[:, :k]
        sign = torch.sign(u.gather(0, u.abs().argmax(0, keepdim=True)))
        w_x, w_y = kx @ (u * sign), ky @ (v * sign)
    degenerate = reg == 0 and (ridge_x > 0 or ridge_y > 0)
    return CCAResult(w_x=w_x.float(), w_y=w_y.float(), corr=s[:k].float(), mean_x=mean_x.float(),
                     mean_y=mean_y.float(), ridge_x=ridge_x, ridge_y=ridge_y, degenerate=degenerate)


def whiten(w: torch.Tensor, xc: torch.Tensor) -> torch.Tensor:
    """Whitening after refinement (docs/method.md §4.4): ``W ← W C^-1/2`` with ``C = Wᵀ XᵀX W / n`` on centred ``xc``."""
    w64, x64 = w.detach().double(), xc.detach().double()
    with fixed_threads():
        z = x64 @ w64
        return (w64 @ _inv_sqrt_psd(z.T @ z / x64.shape[0], floor=1e-12)).to(w.dtype)


class CSA(nn.Module):
    """CCA/CSA aligner (docs/method.md §4.3, §4.4): ``encode(x) = norm((x - mean) W [· sqrt(corr)])``.

    ``weighting="none"`` is the released evaluation (plain cosine after projection). ``weighting="correlation"``
    scales canonical dimension k by sqrt(corr_k) on both sides, so the inner product of two projections is the CSA
    paper's correlation-weighted sum ``sum_k corr_k zx_k zy_k`` (then normalised like every aligner's output).
    """

    def __init__(self, w_x: torch.Tensor, w_y: torch.Tensor, mean_x: torch.Tensor, mean_y: torch.Tensor,
                 corr: torch.Tensor, *, weighting: str = "none", refined: bool = False) -> None:
        super().__init__()
        if weighting not in CSA_WEIGHTINGS:
            raise ValueError(f"CSA: weighting must be one of {list(CSA_WEIGHTINGS)}, got {weighting!r}")
        if w_x.shape[1] != w_y.shape[1] or corr.shape != (w_x.shape[1],):
            raise ValueError(f"CSA: inconsistent shapes w_x {tuple(w_x.shape)}, w_y {tuple(w_y.shape)}, "
                             f"corr {tuple(corr.shape)}")
        if mean_x.shape != (w_x.shape[0],) or mean_y.shape != (w_y.shape[0],):
            raise ValueError(f"CSA: means {tuple(mean_x.shape)}, {tuple(mean_y.shape)} do not match "
                             f"w_x {tuple(w_x.shape)}, w_y {tuple(w_y.shape)}")
        self.weighting = weighting
        self.refined = refined
        # the regime of the closed-form fit (CCAResult.fit_info), set by fit(); not part of the saved file
        self.fit_info: dict[str, Any] | None = None
        self.register_buffer("w_x", w_x.detach().float().clone())
        self.register_buffer("w_y", w_y.detach().float().clone())
        self.register_buffer("mean_x", mean_x.detach().float().clone())
        self.register_buffer("mean_y", mean_y.detach().float().clone())
        self.register_buffer("corr", corr.detach().float().clone())

    @property
    def sim_dim(self) -> int:
        """Number of canonical dimensions kept."""
        return int(self.w_x.shape[1])

    @classmethod
    def fit(cls, x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, sim_dim: int = 512, *,
            weighting: str = "none", reg: float = 0.0) -> CSA:
        """Fit on raw paired training features at the chosen layers (docs/method.md §4.3, released: reg = 0)."""
        res = fit_cca(x, y, sim_dim, reg=reg)
        log.info("CSA fit: n=%d, sim_dim=%d (kept %d), top canonical correlations %s", len(x), sim_dim,
                 res.w_x.shape[1], [round(v, 4) for v in res.corr[:5].tolist()])
        csa = cls(res.w_x, res.w_y, res.mean_x, res.mean_y, res.corr, weighting=weighting)
        csa.fit_info = res.fit_info(sim_dim)
        return csa

    def _scale(self) -> torch.Tensor | None:
        return self.corr.clamp_min(0).sqrt() if self.weighting == "correlation" else None

    def _encode(self, z: torch.Tensor, mean: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        p = (z.to(w.device, torch.float32) - mean) @ w
        scale = self._scale()
        return F.normalize(p if scale is None else p * scale, dim=-1)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings [B, sim_dim]."""
        return self._encode(torch.as_tensor(x), self.mean_x, self.w_x)

    def encode_text(self, y: torch.Tensor) -> torch.Tensor:
        """L2-normalised text embeddings [B, sim_dim]."""
        return self._encode(torch.as_tensor(y), self.mean_y, self.w_y)

    def refine_loss(self, xb: torch.Tensor, yb: torch.Tensor, w_x: torch.Tensor, w_y: torch.Tensor, *,
                    rs_lambda: float, lambda_cca: float, rs_kwargs: dict[str, Any]) -> torch.Tensor:
        """Refinement objective on a centred batch (docs/method.md §4.4).

        ``rs_lambda·½[R_S(Xb, norm(Xb Wx)) + R_S(Yb, norm(Yb Wy))] − lambda_cca·Σ_{i,k} Zx[i,k] Zy[i,k] / sim_dim``.
        """
        from .regularizer import structure_regularizer

        zx, zy = F.normalize(xb @ w_x, dim=-1), F.normalize(yb @ w_y, dim=-1)
        rs = 0.5 * (structure_regularizer(xb, zx, **rs_kwargs) + structure_regularizer(yb, zy, **rs_kwargs))
        return rs_lambda * rs - lambda_cca * (zx * zy).sum() / w_x.shape[1]

    def refine(self, x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, *, rs_lambda: float = 10.0,
               lambda_cca: float = 1e-2, tau: float = 0.2, levels: int = 1, weighting: str = "inverse",
               epochs: int = 10, lr: float = 5e-4, batch_size: int = 4096, seed: int = 0,
               device: str | torch.device = "cpu", progress: bool = True,
               rs_options: dict[str, Any] | None = None, whiten_after: bool = False) -> list[float]:
        """CSA + R_S: Adam on (W_x, W_y) from the CCA solution (docs/method.md §4.4, released ``RSMixin``).

        ``x``, ``y`` are the raw training features the CSA was fitted on (centred here with the stored means).
        Each epoch draws a seeded permutation and keeps the last partial batch. ``rs_options`` adds further
        :func:`structure_regularizer` options (centering, distance, ...). The released code means to whiten each W on
        the training set afterwards, but its loop (``for W in ...: W @= ...``) only rebinds the loop variable, so the
        refined W are kept unwhitened; ``whiten_after=True`` applies the intended whitening instead. ``corr`` is then
        recomputed as the per-dimension correlation ``|mean_i zx_ik zy_ik|`` of the final projections (the refined
        dimensions are no longer canonical). Returns the mean loss per epoch.
        """
        dev = torch.device(device) if not isinstance(device, torch.device) else device
        xt = torch.as_tensor(x).detach().to(dev, torch.float32)
        yt = torch.as_tensor(y).detach().to(dev, torch.float32)
        _check_pair(xt, yt, "CSA.refine")
        if xt.shape[1] != self.w_x.shape[0] or yt.shape[1] != self.w_y.shape[0]:
            raise ValueError(f"CSA.refine: feature widths ({xt.shape[1]}, {yt.shape[1]}) do not match the fitted "
                             f"CSA ({self.w_x.shape[0]}, {self.w_y.shape[0]})")
        if epochs < 0 or batch_size < 2 or lr <= 0:
            raise ValueError(f"CSA.refine: need epochs >= 0, batch_size >= 2, lr > 0; got {epochs}, {batch_size}, "
                             f"{lr}")
        xc, yc = xt - self.mean_x.to(dev), yt - self.mean_y.to(dev)
        w_x = nn.Parameter(self.w_x.detach().to(dev).clone())
        w_y = nn.Parameter(self.w_y.detach().to(dev).clone())
        opt = torch.optim.Adam([w_x, w_y], lr=lr)
        rs_kwargs = {"levels": levels, "tau": tau, "weighting": weighting, **(rs_options or {})}
        # the float32 reductions of R_S, Adam and the final correlations also split by thread on the CPU
        with fixed_threads():
            history = self._refine_epochs(xc, yc, w_x, w_y, opt, epochs=epochs, batch_size=batch_size, seed=seed,
                                          progress=progress, rs_lambda=rs_lambda, lambda_cca=lambda_cca,
                                          rs_kwargs=rs_kwargs)
            with torch.no_grad():
                wx, wy = (whiten(w_x, xc), whiten(w_y, yc)) if whiten_after else (w_x.detach(), w_y.detach())
                corr = ((xc @ wx) * (yc @ wy)).mean(0).abs()
                order = torch.argsort(corr, descending=True)
                self.w_x.copy_(wx[:, order].to(self.w_x.device))
                self.w_y.copy_(wy[:, order].to(self.w_y.device))
                self.corr.copy_(corr[order].to(self.corr.device))
        self.refined = True
        return history

    def _refine_epochs(self, xc: torch.Tensor, yc: torch.Tensor, w_x: nn.Parameter, w_y: nn.Parameter,
                       opt: torch.optim.Optimizer, *, epochs: int, batch_size: int, seed: int, progress: bool,
                       rs_lambda: float, lambda_cca: float, rs_kwargs: dict[str, Any]) -> list[float]:
        """The Adam epochs of :meth:`refine` (seeded permutation, last partial batch kept); mean loss per epoch."""
        gen = torch.Generator().manual_seed(seed)
        n = xc.shape[0]
        history: list[float] = []
        for epoch in tqdm(range(epochs), desc="CSA refine", disable=not progress):
            perm = torch.randperm(n, generator=gen).to(xc.device)
            losses = []
            for start in range(0, n, batch_size):
                b = perm[start:start + batch_size]
                if b.numel() < 2:
                    continue  # R_S needs at least two rows; a single leftover row carries no structure
                loss = self.refine_loss(xc[b], yc[b], w_x, w_y, rs_lambda=rs_lambda, lambda_cca=lambda_cca,
                                        rs_kwargs=rs_kwargs)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
            history.append(float(np.mean(losses)))
            log.info("CSA refine epoch %d: loss %.6f", epoch, history[-1])
        return history

    def save(self, path: str | os.PathLike) -> None:
        """Write buffers as safetensors with ``aligner="csa"`` and the options as metadata (atomic)."""
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        meta = {"format_version": "1", "aligner": "csa",
                "options": json.dumps({"weighting": self.weighting, "refined": self.refined,
                                       "sim_dim": self.sim_dim})}
        write_safetensors(path, {k: v.numpy() for k, v in tensors.items()}, meta)  # byte-stable
        log.info("saved CSA aligner to %s", path)

    @classmethod
    def from_saved(cls, tensors: dict[str, torch.Tensor], meta: dict[str, str], source: str = "<memory>") -> CSA:
        """Rebuild from the tensors and metadata written by :meth:`save` (used by ``load_aligner``)."""
        needed = {"w_x", "w_y", "mean_x", "mean_y", "corr"}
        missing = needed - set(tensors)
        if missing:
            raise ValueError(f"CSA file {source!r}: tensor(s) {sorted(missing)} missing")
        if "options" not in meta:
            raise ValueError(f"CSA file {source!r}: metadata key 'options' is missing")
        opts = json.loads(meta["options"])
        return cls(tensors["w_x"], tensors["w_y"], tensors["mean_x"], tensors["mean_y"], tensors["corr"],
                   weighting=opts.get("weighting", "none"), refined=bool(opts.get("refined", False)))
