"""Paired statistics (docs/method.md §8): known paired examples give the known CI; data-utility interpolation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from structure_align.stats import data_utility, min_detectable_effect, paired_difference, seeds_needed


def test_known_paired_example() -> None:
    # differences 1, 2, 3, 4, 5: mean 3, sd sqrt(2.5), t_{0.975, 4} = 2.7764451
    a = [10.0, 10.0, 10.0, 10.0, 10.0]
    b = [11.0, 12.0, 13.0, 14.0, 15.0]
    d = paired_difference(a, b)
    half = 2.7764451052 * math.sqrt(2.5) / math.sqrt(5)
    assert d.mean == pytest.approx(3.0) and d.n == 5
    assert (d.lo, d.hi) == pytest.approx((3.0 - half, 3.0 + half), rel=1e-7)
    assert d.p_value == pytest.approx(0.013236, abs=5e-6)  # t = 3 / (sqrt(2.5) / sqrt(5)) = 4.243, df 4
    assert d.verdict() == "supported" and d.format() == "+3.00 [+1.04, +4.96]"


def test_pairing_matters() -> None:
    # large between-seed spread, constant within-seed gain: unpaired bands overlap, the paired CI is tight
    a = np.array([10.0, 30.0, 50.0, 70.0])
    d = paired_difference(a, a + 1.0)
    assert d.mean == pytest.approx(1.0) and d.lo == pytest.approx(1.0) and d.hi == pytest.approx(1.0)
    assert d.verdict() == "supported"


def test_verdicts() -> None:
    assert paired_difference([1, 2, 3], [0.5, 1.4, 2.6]).verdict() == "not supported"
    assert paired_difference([1, 2, 3], [1.5, 1.8, 3.1]).verdict() == "inconclusive"
    single = paired_difference([1.0], [2.0])
    assert single.verdict() == "inconclusive" and math.isnan(single.lo) and single.format() == "+1.00"


def test_paired_difference_errors() -> None:
    with pytest.raises(ValueError, match="equal-length"):
        paired_difference([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="non-finite"):
        paired_difference([1, float("nan")], [1, 2])


def test_data_utility_interpolates_on_log_n() -> None:
    n = [10, 100, 1000]
    base = [20.0, 30.0, 40.0]
    new = [30.0, 50.0, 60.0]  # reaches 40 halfway (in log N) between 10 and 100: N = sqrt(10 * 100)
    needed, factor = data_utility(n, base, n, new)
    assert needed == pytest.approx(math.sqrt(1000)) and factor == pytest.approx(1000 / math.sqrt(1000))
    assert all(math.isnan(v) for v in data_utility(n, base, n, [1.0, 2.0, 3.0]))  # never reached
    assert data_utility(n, base, n, [45.0, 50.0, 60.0]) == (10.0, 100.0)  # reached at the smallest size


def test_min_detectable_effect_known_values() -> None:
    # t-approximation (t_{0.975, n-1} + t_{0.80, n-1}) * sd / sqrt(n) with textbook t quantiles:
    # df 4: 2.7764 + 0.9410; df 9: 2.2622 + 0.8834 (t tables, independent of scipy)
    assert min_detectable_effect(1.0, 5) == pytest.approx((2.7764 + 0.9410) / math.sqrt(5), abs=2e-4)
    assert min_detectable_effect(2.0, 10) == pytest.approx((2.2622 + 0.8834) * 2.0 / math.sqrt(10), abs=2e-4)
    assert math.isnan(min_detectable_effect(1.0, 1)) and min_detectable_effect(0.0, 5) == 0.0
    # larger SD -> larger MDE, more seeds -> smaller MDE
    assert min_detectable_effect(2.0, 5) == pytest.approx(2 * min_detectable_effect(1.0, 5))
    assert min_detectable_effect(1.0, 20) < min_detectable_effect(1.0, 10) < min_detectable_effect(1.0, 5)
    with pytest.raises(ValueError, match="alpha and power"):
        min_detectable_effect(1.0, 5, power=1.0)


def test_seeds_needed_inverts_the_mde() -> None:
    # sd 1, effect 1: df 9 gives 0.9947 <= 1 (t 2.2622 + 0.8834 over sqrt 10), df 8 gives 1.0602 > 1
    assert seeds_needed(1.0, 1.0) == 10
    assert min_detectable_effect(1.0, 9) > 1.0 >= min_detectable_effect(1.0, 10)
    # paired SD 2.34 points (C2 of the default), 1-point effect: 45 seeds
    n = seeds_needed(2.34, 1.0)
    assert min_detectable_effect(2.34, int(n)) <= 1.0 < min_detectable_effect(2.34, int(n) - 1) and n == 45
    assert seeds_needed(0.0, 1.0) == 2 and math.isnan(seeds_needed(math.nan, 1.0))
    assert math.isnan(seeds_needed(1.0, 0.0))  # no finite number of seeds sees a zero effect


def test_underpowered_verdict() -> None:
    # differences -1, 0, +2: CI straddles 0, sd 1.53, MDE with 3 pairs ~ 5.4 points
    d = paired_difference([0.0, 0.0, 0.0], [-1.0, 0.0, 2.0])
    assert d.mde() == pytest.approx((4.3027 + 1.0607) * d.std / math.sqrt(3), abs=1e-3)
    assert d.verdict() == "inconclusive"
    assert d.verdict(reference_effect=1.0) == "underpowered"  # could not have seen 1 point
    assert d.verdict(reference_effect=-10.0) == "inconclusive"  # a 10-point effect it would have seen
    assert paired_difference([1, 2, 3], [2, 3, 4.1]).verdict(reference_effect=0.1) == "supported"
    assert paired_difference([1.0], [2.0]).verdict(reference_effect=1.0) == "underpowered"  # one seed: no power
