"""Rank correlation between a layer pair's similarity score and its downstream result (docs/analysis.md
"layer_correlation").

The paper's argument for "Similar" is that the mutual-kNN score of a layer pair predicts how well a head trained on
that pair does downstream (a high Spearman ρ over layer pairs). With a few dozen pairs ρ itself is noisy, so it comes
with a percentile bootstrap interval over pairs: resample the pairs with replacement, recompute ρ, take the
2.5 / 97.5 % quantiles of the resampled values. Resamples in which one side is constant (ρ undefined) are dropped
and counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st


@dataclass(frozen=True)
class Correlation:
    """Spearman ``rho`` of ``n`` pairs, its bootstrap CI ``(lo, hi)``, the permutation-free two-sided p-value of
    scipy's t approximation, and how many of ``n_boot`` resamples were usable (``n_valid``)."""

    rho: float
    lo: float
    hi: float
    p_value: float
    n: int
    n_boot: int
    n_valid: int
    confidence: float = 0.95

    def format(self, digits: int = 2) -> str:
        """``0.81 [0.55, 0.93]`` (or ``n/a`` when ρ is undefined)."""
        if not math.isfinite(self.rho):
            return "n/a"
        if not math.isfinite(self.lo):
            return f"{self.rho:.{digits}f}"
        return f"{self.rho:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(_st.spearmanr(x, y).statistic)


def spearman_ci(x: Sequence[float], y: Sequence[float], *, n_boot: int = 2000, confidence: float = 0.95,
                seed: int = 0) -> Correlation:
    """Spearman ρ of paired ``x``, ``y`` with a seeded percentile bootstrap CI over the pairs.

    Needs at least 3 finite pairs; with fewer than 4 distinct resample outcomes the interval is still computed but
    wide. ρ is NaN (and the CI too) when either side is constant.
    """
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"spearman_ci: need two equal-length 1-D sequences, got shapes {a.shape} and {b.shape}")
    if a.size < 3:
        raise ValueError(f"spearman_ci: need at least 3 pairs, got {a.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("spearman_ci: non-finite value among the pairs")
    if not 0.0 < confidence < 1.0 or n_boot < 1:
        raise ValueError(f"spearman_ci: confidence in (0, 1) and n_boot >= 1 required, got {confidence}, {n_boot}")
    rho = _spearman(a, b)
    p = float(_st.spearmanr(a, b).pvalue) if math.isfinite(rho) else math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    boots = np.array([_spearman(a[i], b[i]) for i in idx])
    boots = boots[np.isfinite(boots)]
    if not math.isfinite(rho) or boots.size == 0:
        return Correlation(rho, math.nan, math.nan, p, int(a.size), n_boot, int(boots.size), confidence)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(boots, [alpha, 1.0 - alpha])
    return Correlation(rho, float(lo), float(hi), p, int(a.size), n_boot, int(boots.size), confidence)
