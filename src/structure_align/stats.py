"""Paired statistics for claims about variants (docs/method.md §8): the per-seed difference and its 95 % CI.

Two variants trained with the same seed see the same training subsample, validation split and initialisation
stream, so their results are paired: the claim "B improves over A" is judged on the per-seed differences
d_s = B_s - A_s, not on two overlapping mean ± std bands. The interval is Student's t on the mean difference
(the number of seeds is small, so the normal approximation would be too narrow); with one seed there is no interval.

Power (docs/method.md §10 "Power"): :func:`min_detectable_effect` is the smallest true mean difference a two-sided
paired t-test at level alpha detects with the given power, for the observed SD of the differences and the number of
pairs; :func:`seeds_needed` inverts it for a stated effect. An inconclusive comparison whose MDE exceeds the effect
it is meant to see is ``underpowered``: too few seeds to tell "no effect" from "an effect of that size".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

VERDICTS = ("supported", "not supported", "inconclusive", "underpowered")
ALPHA = 0.05  # two-sided level of the CI and of the power calculation
POWER = 0.80  # 1 - beta of the power calculation
_MAX_SEEDS = 100_000  # seeds_needed gives up beyond this many pairs (returned as NaN)


@dataclass(frozen=True)
class PairedDifference:
    """Mean of the per-seed differences ``b - a``, its two-sided ``confidence`` CI ``(lo, hi)``, the sample std of
    the differences, the number of pairs ``n`` and the two-sided paired t-test p-value (NaN for ``n < 2``)."""

    mean: float
    lo: float
    hi: float
    std: float
    n: int
    p_value: float
    confidence: float = 0.95

    def verdict(self, min_effect: float = 0.0, reference_effect: float | None = None) -> str:
        """``supported`` when the whole CI lies above ``min_effect``, ``not supported`` when it lies at or below
        0 (no improvement, or a significant loss), ``inconclusive`` otherwise (the CI straddles 0) or for n < 2.

        With ``reference_effect`` (the effect the comparison should be able to see, in the metric's units), an
        inconclusive result whose :meth:`mde` is above ``|reference_effect|`` (or that has no MDE: n < 2) reads
        ``underpowered`` instead.
        """
        if self.n < 2 or not math.isfinite(self.lo):
            return "inconclusive" if reference_effect is None else "underpowered"
        if self.lo > min_effect:
            return "supported"
        if self.hi <= 0.0:
            return "not supported"
        if reference_effect is not None and self.mde() > abs(reference_effect):
            return "underpowered"
        return "inconclusive"

    def mde(self, alpha: float = ALPHA, power: float = POWER) -> float:
        """Minimal detectable effect of this comparison (:func:`min_detectable_effect`; NaN for n < 2)."""
        return min_detectable_effect(self.std, self.n, alpha, power)

    def seeds_needed(self, effect: float, alpha: float = ALPHA, power: float = POWER) -> float:
        """Pairs needed to detect ``effect`` at this comparison's SD (:func:`seeds_needed`)."""
        return seeds_needed(self.std, effect, alpha, power)

    def format(self, digits: int = 2) -> str:
        """``+1.23 [+0.40, +2.06]`` (or ``+1.23`` without an interval)."""
        if not math.isfinite(self.lo):
            return f"{self.mean:+.{digits}f}"
        return f"{self.mean:+.{digits}f} [{self.lo:+.{digits}f}, {self.hi:+.{digits}f}]"


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedDifference:
    """Paired difference ``b - a`` over matched seeds with a Student-t confidence interval.

    ``a[i]`` and ``b[i]`` must come from the same seed; non-finite values are an error (a metric that could not be
    computed must not silently drop a pair).
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or x.size == 0:
        raise ValueError(f"paired_difference: need two equal-length non-empty 1-D sequences, got shapes "
                         f"{x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("paired_difference: non-finite value among the paired results")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"paired_difference: confidence must be in (0, 1), got {confidence!r}")
    d = y - x
    n = int(d.size)
    mean = float(d.mean())
    if n < 2:
        return PairedDifference(mean, math.nan, math.nan, math.nan, n, math.nan, confidence)
    std = float(d.std(ddof=1))
    half = float(_st.t.ppf(0.5 + confidence / 2.0, df=n - 1)) * std / math.sqrt(n)
    if std == 0.0:
        p = 0.0 if mean != 0.0 else 1.0
    else:
        p = float(2.0 * _st.t.sf(abs(mean) / (std / math.sqrt(n)), df=n - 1))
    return PairedDifference(mean, mean - half, mean + half, std, n, p, confidence)


def _check_power_args(alpha: float, power: float) -> None:
    if not 0.0 < alpha < 1.0 or not 0.0 < power < 1.0:
        raise ValueError(f"power calculation: alpha and power must be in (0, 1), got {alpha!r}, {power!r}")


def min_detectable_effect(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimal detectable effect (MDE) of a two-sided paired t-test with ``n`` pairs, differences of SD ``sd``.

    The standard t-approximation ``(t_{1-alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n)`` (docs/method.md §10
    "Power"), not the exact noncentral-t solution: it is the effect whose expected t statistic exceeds the
    critical value by the ``power`` quantile of the (central) t distribution. It is slightly smaller than the exact
    noncentral-t MDE at very few pairs (n = 3: 5 %, n = 5: 1.2 %, n = 10: 0.1 %, computed with scipy.stats.nct).
    NaN for ``n < 2`` or a non-finite ``sd``; 0 for ``sd = 0``.
    """
    _check_power_args(alpha, power)
    if n < 2 or not math.isfinite(sd):
        return math.nan
    df = n - 1
    return float((_st.t.ppf(1.0 - alpha / 2.0, df) + _st.t.ppf(power, df)) * abs(sd) / math.sqrt(n))


def seeds_needed(sd: float, effect: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest number of pairs (seeds) ``n >= 2`` whose :func:`min_detectable_effect` is at most ``|effect|``.

    NaN when ``sd`` is not finite (fewer than two pairs observed) or more than 100,000 pairs would be needed
    (e.g. ``effect = 0``); 2 when ``sd = 0``.
    """
    _check_power_args(alpha, power)
    if not math.isfinite(sd) or not math.isfinite(effect):
        return math.nan
    ns = np.arange(2, _MAX_SEEDS + 1)
    mdes = (_st.t.ppf(1.0 - alpha / 2.0, ns - 1) + _st.t.ppf(power, ns - 1)) * abs(sd) / np.sqrt(ns)
    ok = np.flatnonzero(mdes <= abs(effect))
    return float(ns[ok[0]]) if ok.size else math.nan


def data_utility(n_base: Sequence[float], base: Sequence[float], n_new: Sequence[float],
                 new: Sequence[float]) -> tuple[float, float]:
    """How many times fewer pairs the new variant needs to match the baseline at the baseline's largest N.

    The target is the baseline's score at its largest N; the new curve (mean over seeds, sorted by N) is
    interpolated linearly in log N to the first N where it reaches the target. Returns ``(n_needed, factor)`` with
    ``factor = N_max / n_needed``; ``(nan, nan)`` when the new curve never reaches the target within its sizes.
    If the new variant's smallest size already reaches it, ``n_needed`` is that smallest size (a lower bound on
    the factor: the curve is not extrapolated).
    """
    nb, sb = np.asarray(n_base, dtype=float), np.asarray(base, dtype=float)
    nn, sn = np.asarray(n_new, dtype=float), np.asarray(new, dtype=float)
    if nb.size == 0 or nn.size == 0 or nb.shape != sb.shape or nn.shape != sn.shape:
        raise ValueError("data_utility: need non-empty, equal-length sizes and scores for both curves")
    if (nb <= 0).any() or (nn <= 0).any():
        raise ValueError("data_utility: training sizes must be positive")
    order = np.argsort(nn)
    nn, sn = nn[order], sn[order]
    n_max = float(nb.max())
    target = float(sb[np.argmax(nb)])
    hits = np.nonzero(sn >= target)[0]
    if hits.size == 0:
        return math.nan, math.nan
    k = int(hits[0])
    if k == 0:
        needed = float(nn[0])
    else:
        lx0, lx1 = math.log(nn[k - 1]), math.log(nn[k])
        y0, y1 = float(sn[k - 1]), float(sn[k])
        t = (target - y0) / (y1 - y0) if y1 != y0 else 1.0
        needed = math.exp(lx0 + t * (lx1 - lx0))
    return needed, n_max / needed
