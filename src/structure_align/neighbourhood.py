"""Neighbourhood preservation of the aligned embeddings: trustworthiness and continuity (docs/analysis.md
"neighbourhood", docs/method.md §5).

R_S is meant to keep each modality's neighbourhood structure while the heads align the two spaces. Two rank-based
scores measure it between the frozen features X (the reference) and their projection E = head(X):

- trustworthiness T(k) (scikit-learn's ``trustworthiness(X, E, n_neighbors=k)``): penalises points that are among
  the k nearest neighbours in E but not in X (false neighbours introduced by the projection), weighted by their
  rank in X; 1 = no intrusions;
- continuity C(k) = trustworthiness with the roles swapped (``trustworthiness(E, X, k)``): penalises true
  neighbours in X that the projection pushed out of the k nearest in E.

Both are computed on L2-normalised rows with Euclidean distances, i.e. on cosine similarity, the geometry the
InfoNCE loss and R_S use. scikit-learn requires ``k < n / 2``; :func:`scaled_k` caps k at ``ceil(n / 2) - 1`` so
that a validation set smaller than ``2k`` still gets a value (the released code logs k = 100 and 1000 on far larger
sets; the cap is recorded next to every value).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch


def scaled_k(k: int, n: int) -> int:
    """``k`` capped to the largest neighbourhood scikit-learn accepts for ``n`` points (``k < n / 2``)."""
    if isinstance(k, bool) or int(k) < 1:
        raise ValueError(f"neighbourhood: k must be a positive integer, got {k!r}")
    if n < 4:
        raise ValueError(f"neighbourhood: need at least 4 points, got {n}")
    return min(int(k), math.ceil(n / 2) - 1)


def _unit_rows(x: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    a = torch.as_tensor(x).detach().to(torch.float64).cpu().numpy()
    if a.ndim != 2:
        raise ValueError(f"neighbourhood: {name} must be 2-D [n, d], got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"neighbourhood: {name} contains non-finite values")
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.maximum(norms, 1e-12)


def trustworthiness(reference: torch.Tensor | np.ndarray, embedded: torch.Tensor | np.ndarray, k: int) -> float:
    """T(k) of ``embedded`` against ``reference`` (rows paired), on cosine geometry; ``k`` is used as given
    (call :func:`scaled_k` first for small sets)."""
    from sklearn.manifold import trustworthiness as _sk_trust

    x, e = _unit_rows(reference, "reference"), _unit_rows(embedded, "embedded")
    if x.shape[0] != e.shape[0]:
        raise ValueError(f"neighbourhood: reference has {x.shape[0]} rows, embedded {e.shape[0]}")
    return float(_sk_trust(x, e, n_neighbors=int(k)))


def continuity(reference: torch.Tensor | np.ndarray, embedded: torch.Tensor | np.ndarray, k: int) -> float:
    """C(k): trustworthiness with the roles of ``reference`` and ``embedded`` swapped."""
    return trustworthiness(embedded, reference, k)


def neighbourhood_scores(reference: torch.Tensor | np.ndarray, embedded: torch.Tensor | np.ndarray,
                         ks: Sequence[int], prefix: str = "") -> dict[str, float]:
    """``{prefix}trust_k{k}``, ``{prefix}cont_k{k}`` and ``{prefix}k{k}_used`` (the capped k) for every ``k``."""
    n = int(torch.as_tensor(reference).shape[0])
    out: dict[str, float] = {}
    for k in ks:
        used = scaled_k(int(k), n)
        out[f"{prefix}trust_k{k}"] = trustworthiness(reference, embedded, used)
        out[f"{prefix}cont_k{k}"] = continuity(reference, embedded, used)
        out[f"{prefix}k{k}_used"] = float(used)
    return out


def epoch_metrics(x_val: torch.Tensor, y_val: torch.Tensor, ks: Sequence[int]) -> Callable[[torch.nn.Module],
                                                                                         dict[str, float]]:
    """A ``train_heads(epoch_metrics=...)`` callback: T and C of both heads on the validation pairs after each
    epoch (keys ``image_trust_k10``, ``text_cont_k100``, ...; docs/analysis.md "neighbourhood")."""
    ks = [int(k) for k in ks]

    @torch.no_grad()
    def metrics(aligner: torch.nn.Module) -> dict[str, float]:
        was_training = aligner.training
        aligner.eval()
        device = next(aligner.parameters()).device
        img = aligner.encode_image(x_val.to(device)).cpu()
        txt = aligner.encode_text(y_val.to(device)).cpu()
        aligner.train(was_training)
        return {**neighbourhood_scores(x_val.cpu(), img, ks, "image_"),
                **neighbourhood_scores(y_val.cpu(), txt, ks, "text_")}

    return metrics


def from_params(block: Mapping[str, object] | None, x_val: torch.Tensor,
                y_val: torch.Tensor) -> Callable[[torch.nn.Module], dict[str, float]] | None:
    """The callback for a train step's ``neighbourhood`` params block (``{"k": [10, 100]}``), or None."""
    if not block:
        return None
    return epoch_metrics(x_val, y_val, list(block["k"]))  # type: ignore[arg-type]
