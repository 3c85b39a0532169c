"""Paired statistics (docs/method.md §8): known paired examples give the known CI; data-utility interpolation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from structure_align.stats import data_utility, paired_difference


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
