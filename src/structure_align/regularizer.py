"""The STRUCTURE regulariser R_S (docs/method.md §5.2).

R_S compares the multi-scale neighbourhood structure of a frozen feature space X with that of its aligned embedding
A: both are L2-normalised and centred, turned into temperature-scaled similarity matrices, row-softmaxed into random
walk transition matrices P (from X) and Q (from A), and the l-step walks P^l, Q^l are compared level by level with a
Jensen-Shannon-type divergence.

Two implementation choices matter for speed and are checked against the literal definition in the tests and in
``benchmarks/bench_method.py``:

* the powers are built incrementally (P^l = P^(l-1) P), so each level costs one matrix product per side instead of a
  fresh ``torch.matrix_power``;
* the divergence of one level is a custom autograd function whose backward pass is the closed-form derivative with
  respect to Q, so autograd does not keep the half a dozen B x B intermediates of the elementwise formula.

A log-softmax shortcut for level 1 is deliberately *not* used: the definition puts ``eps`` inside the logarithms,
log(P + eps), which caps the log of a vanishing probability at log(eps) ~ -27.6, whereas log-softmax would return the
exact (much more negative) value and change the loss whenever some Q entries underflow -- common at tau = 0.05.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

CENTERINGS: tuple[str, ...] = ("none", "mean", "standard")
DISTANCES: tuple[str, ...] = ("cosine", "rbf", "spearman")
DIVERGENCES: tuple[str, ...] = ("code", "js")
WEIGHTINGS: tuple[str, ...] = ("none", "inverse")

_UNIT_NORM_ATOL = 1e-6


def safe_normalize(z: torch.Tensor, atol: float = _UNIT_NORM_ATOL) -> torch.Tensor:
    """L2-normalise the rows of ``z`` unless every row already has unit norm within ``atol`` (docs/method.md §5.2 step 1).

    Skipping the division when the head output is already on the sphere keeps the released code's behaviour (its
    ``safe_normalize``) and avoids a redundant B x d pass in the common case.
    """
    norms = torch.linalg.vector_norm(z, dim=-1, keepdim=True)
    if bool(((norms - 1.0).abs() <= atol).all()):
        return z
    return z / norms.clamp_min(1e-12)


def center(z: torch.Tensor, centering: str, eps: float = 1e-12) -> torch.Tensor:
    """Centre the columns of ``z`` over the batch (docs/method.md §5.2 step 1).

    ``"mean"`` subtracts the batch mean, ``"standard"`` also divides by the unbiased per-dimension std, ``"none"``
    returns ``z``. A dimension that is constant over the batch has std 0; it is divided by ``eps`` instead (its
    centred values are exactly 0, so it stays 0 rather than becoming NaN as a plain division would).
    """
    if centering == "none":
        return z
    centred = z - z.mean(dim=0, keepdim=True)
    if centering == "mean":
        return centred
    if centering == "standard":
        return centred / z.std(dim=0, keepdim=True).clamp_min(eps)
    raise ValueError(f"centering={centering!r} is not one of {CENTERINGS}")


def preprocess(z: torch.Tensor, centering: str, center_first: bool) -> torch.Tensor:
    """Normalise then centre (default) or centre then normalise (``center_first``), docs/method.md §5.2 step 1.

    Vectors are not re-normalised after centring, as in the released code.
    """
    if center_first:
        return safe_normalize(center(z, centering))
    return center(safe_normalize(z), centering)


def similarity(z: torch.Tensor, distance: str, tau: float, gamma: float) -> torch.Tensor:
    """The B x B similarity matrix of docs/method.md §5.2 step 2, diagonal kept.

    ``"cosine"``: z z^T / tau; ``"rbf"``: exp(-gamma ||z_i - z_j||^2) (no tau); ``"spearman"``: each row replaced
    by the ranks of its coordinates, L2-normalised, then dot / tau. Ranks are piecewise constant, so the spearman
    variant passes no gradient.
    """
    if distance == "cosine":
        return (z * (1.0 / tau)) @ z.T
    if distance == "rbf":
        sq = (z * z).sum(dim=1)
        # Gram form of the squared distance; rounding can make it slightly negative near the diagonal
        d2 = (sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)).clamp_min(0.0)
        return torch.exp(-gamma * d2)
    if distance == "spearman":
        ranks = z.argsort(dim=-1).argsort(dim=-1).to(z.dtype)
        ranks = F.normalize(ranks, p=2, dim=-1)
        return (ranks * (1.0 / tau)) @ ranks.T
    raise ValueError(f"distance={distance!r} is not one of {DISTANCES}")


class _LevelDivergence(torch.autograd.Function):
    """Shared backward of the per-level divergences: forward stores d/dQ, so backward is a single scaling."""

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        (grad_q,) = ctx.saved_tensors
        return None, grad_q * grad_out, None


class _CodeDivergence(_LevelDivergence):
    """½[KL(M+ε ‖ Q+ε) + KL(M+ε ‖ P+ε)] with M = (P+Q)/2, summed over columns, mean over rows (§5.2 step 5).

    This is what the released code computes with ``F.kl_div(log(Q+ε), M+ε, reduction="batchmean")``; the gradient
    with respect to Q is formed in the forward pass (one B x B tensor) so backward is a single scaling.
    """

    @staticmethod
    def forward(ctx, p: torch.Tensor, q: torch.Tensor, eps: float) -> torch.Tensor:  # type: ignore[override]
        n_rows = p.shape[0]
        me = torch.add(p, q).mul_(0.5).add_(eps)  # M + eps
        log_m = torch.log(me)
        qe = q + eps
        log_q = torch.log(qe)
        log_p = torch.add(p, eps).log_()
        # t = 2 log(M+ε) - log(Q+ε) - log(P+ε): both KL terms share the weight (M+ε)
        t = log_m.mul_(2.0).sub_(log_q).sub_(log_p)
        del log_q
        value = torch.mul(me, t, out=log_p).sum() / (2.0 * n_rows)
        if ctx.needs_input_grad[1]:
            # d/dQ = (1/2B) [½ t + 1 - (M+ε)/(Q+ε)]
            grad_q = t.mul_(0.5).add_(1.0).sub_(me.div_(qe)).mul_(1.0 / (2.0 * n_rows))
            ctx.save_for_backward(grad_q)
        return value


class _JSDivergence(_LevelDivergence):
    """Textbook Jensen-Shannon ½[KL(P‖M) + KL(Q‖M)], ε inside the logs only, batchmean (§5.2, §11 item 1)."""

    @staticmethod
    def forward(ctx, p: torch.Tensor, q: torch.Tensor, eps: float) -> torch.Tensor:  # type: ignore[override]
        n_rows = p.shape[0]
        m = torch.add(p, q).mul_(0.5)
        me = m + eps
        log_m = torch.log(me)
        qe = q + eps
        log_q = torch.log(qe)
        log_p = torch.add(p, eps).log_()
        value = (torch.sub(log_p, log_m, out=log_p).mul_(p).sum()
                 + torch.sub(log_q, log_m).mul_(q).sum()) / (2.0 * n_rows)
        if ctx.needs_input_grad[1]:
            # d/dQ = (1/2B) [log(Q+ε) - log(M+ε) + Q/(Q+ε) - M/(M+ε)]
            grad_q = log_q.sub_(log_m).add_(q / qe).sub_(m.div_(me)).mul_(1.0 / (2.0 * n_rows))
            ctx.save_for_backward(grad_q)
        return value


_DIVERGENCE_FNS = {"code": _CodeDivergence, "js": _JSDivergence}


def level_divergence(p: torch.Tensor, q: torch.Tensor, *, divergence: str = "code",
                     eps: float = 1e-12) -> torch.Tensor:
    """D(P, Q) of one level between two row-stochastic [B, B] matrices (docs/method.md §5.2 step 5).

    ``"code"``: ½[KL(M+ε‖Q+ε) + KL(M+ε‖P+ε)] (released code; not bounded by ln 2); ``"js"``: ½[KL(P‖M) + KL(Q‖M)]
    with ε inside the logs (≤ ln 2). Both average over rows. Gradients flow into ``q`` only (P is the frozen side).
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence={divergence!r} is not one of {DIVERGENCES}")
    if p.ndim != 2 or p.shape != q.shape:
        raise ValueError(f"p and q must be two matrices of the same shape, got {tuple(p.shape)} and {tuple(q.shape)}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0 (zero probabilities would give log 0), got {eps!r}")
    return _DIVERGENCE_FNS[divergence].apply(p.detach(), q, eps)


def _check_options(x: torch.Tensor, a: torch.Tensor, levels: int, tau: float, weighting: str, centering: str,
                   distance: str, divergence: str, margin: float, eps: float, gamma: float) -> None:
    """Reject bad inputs with an error naming the argument and value, before any B x B work."""
    if not isinstance(x, torch.Tensor) or not isinstance(a, torch.Tensor):
        raise TypeError(f"x and a must be torch.Tensor, got {type(x).__name__} and {type(a).__name__}")
    if x.ndim != 2 or a.ndim != 2:
        raise ValueError(f"x and a must be 2-D [B, d], got x.shape={tuple(x.shape)}, a.shape={tuple(a.shape)}")
    if x.shape[0] != a.shape[0]:
        raise ValueError(f"x and a must have the same number of rows, got {x.shape[0]} and {a.shape[0]}")
    if x.shape[0] < 1:
        raise ValueError("R_S needs a batch of at least 1 row, got B=0")
    if x.device != a.device:
        raise ValueError(f"x and a must be on the same device, got {x.device} and {a.device}")
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
        raise ValueError(f"levels must be an integer >= 1, got {levels!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting={weighting!r} is not one of {WEIGHTINGS}")
    if centering not in CENTERINGS:
        raise ValueError(f"centering={centering!r} is not one of {CENTERINGS}")
    if distance not in DISTANCES:
        raise ValueError(f"distance={distance!r} is not one of {DISTANCES}")
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence={divergence!r} is not one of {DIVERGENCES}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau!r}")
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma!r}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0 (zero probabilities would give log 0), got {eps!r}")
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin!r}")


def transition_matrix(z: torch.Tensor, *, tau: float, centering: str, center_first: bool, distance: str,
                      gamma: float) -> torch.Tensor:
    """Row-stochastic random-walk matrix softmax(S) of one space (docs/method.md §5.2 steps 1-3)."""
    return torch.softmax(similarity(preprocess(z, centering, center_first), distance, tau, gamma), dim=1)


def structure_regularizer(x: torch.Tensor, a: torch.Tensor, *, levels: int = 1, tau: float = 0.05,
                          weighting: str = "none", centering: str = "mean", center_first: bool = False,
                          distance: str = "cosine", divergence: str = "code", margin: float = 0.0,
                          eps: float = 1e-12, gamma: float = 1.0) -> torch.Tensor:
    """R_S(x, a) = (1/L) Σ_l w_l · max(D(P^l, Q^l) - margin, 0), docs/method.md §5.2.

    Args:
        x: frozen features of the selected layer, [B, d_in]; detached (R_S passes no gradient into x).
        a: aligned embeddings (head outputs), [B, d_out]; gradients flow into ``a``.
        levels: number of random-walk hops L.
        tau: temperature of the cosine/spearman similarities (shared with InfoNCE in the released code).
        weighting: ``"none"`` (w_l = 1) or ``"inverse"`` (w_l = 1/l).
        centering: ``"mean"``, ``"standard"`` (mean and unbiased std) or ``"none"``.
        center_first: centre raw features and then normalise, instead of normalise then centre.
        distance: ``"cosine"``, ``"rbf"`` (exp(-gamma d^2), no tau) or ``"spearman"`` (ranks, no gradient).
        divergence: ``"code"`` (released ½[KL(M‖Q)+KL(M‖P)]) or ``"js"`` (textbook ½[KL(P‖M)+KL(Q‖M)]).
        margin: per-level hinge, D_l <- max(D_l - margin, 0).
        eps: added inside the logarithms (and, for ``"code"``, to M as in ``F.kl_div``'s target).
        gamma: RBF bandwidth.

    Returns:
        A scalar tensor, computed in float32 (half/bfloat16 inputs are upcast, as the released code disables autocast
        here); float64 inputs are kept in float64, which the tests use for tight reference comparisons.
    """
    _check_options(x, a, levels, tau, weighting, centering, distance, divergence, margin, eps, gamma)
    div_fn = _DIVERGENCE_FNS[divergence]
    work_dtype = torch.float64 if torch.float64 in (x.dtype, a.dtype) else torch.float32
    if x.shape[0] == 1:
        # a single point has no neighbourhood structure (P = Q = [[1]] -> D = 0); a trailing batch of one row must not
        # crash training, and "standard" centering would otherwise divide 0 by an undefined std
        return a.to(work_dtype).sum() * 0.0
    opts = {"tau": tau, "centering": centering, "center_first": center_first, "distance": distance, "gamma": gamma}
    with torch.autocast(device_type=a.device.type, enabled=False):
        with torch.no_grad():
            p = transition_matrix(x.detach().to(work_dtype), **opts)
        q = transition_matrix(a.to(work_dtype), **opts)
        p_l, q_l = p, q
        total = q.new_zeros(())
        for level in range(1, int(levels) + 1):
            if level > 1:
                # incremental powers: one product per side and level instead of a fresh matrix_power
                with torch.no_grad():
                    p_l = p_l @ p
                q_l = q_l @ q
            d_l = torch.clamp_min(div_fn.apply(p_l, q_l, eps) - margin, 0.0)
            weight = 1.0 if weighting == "none" else 1.0 / level
            total = total + weight * d_l
    return total / int(levels)
