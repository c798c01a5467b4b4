"""Fidelity statistics against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from search_space.analysis import kendall_tau, mean_ci, spearman_rho, top_k_agreement, within_noise


def test_mean_ci_is_the_t_interval() -> None:
    ci = mean_ci([1.0, 2.0, 3.0])
    # s = 1, t(0.975, 2) = 4.302653, half = 4.302653 / sqrt(3)
    assert ci.mean == 2.0 and ci.n == 3
    assert ci.half_width == pytest.approx(2.484138, abs=1e-6)
    assert (ci.low, ci.high) == pytest.approx((2.0 - 2.484138, 2.0 + 2.484138), abs=1e-6)
    assert mean_ci([0.5, 0.5]).half_width == 0.0


def test_mean_ci_of_one_seed_and_of_none() -> None:
    one = mean_ci([0.7, math.nan])  # a failed seed is left out
    assert one.mean == 0.7 and one.n == 1 and math.isnan(one.half_width)
    assert math.isnan(mean_ci([]).mean)


def test_kendall_and_spearman_of_one_swapped_pair() -> None:
    search, validation = [1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]
    assert kendall_tau(search, validation) == pytest.approx((5 - 1) / 6)  # 5 concordant, 1 discordant
    assert spearman_rho(search, validation) == pytest.approx(1 - 6 * 2 / (4 * (16 - 1)))  # sum d^2 = 2
    assert kendall_tau(search, search[::-1]) == pytest.approx(-1.0)


def test_rank_statistics_leave_out_nan_and_need_two_designs() -> None:
    assert kendall_tau([1.0, 2.0, math.nan], [1.0, 2.0, 5.0]) == pytest.approx(1.0)
    assert math.isnan(kendall_tau([1.0], [2.0]))
    assert math.isnan(spearman_rho([1.0, 1.0], [1.0, 2.0]))  # a constant ranking says nothing
    with pytest.raises(ValueError, match="different lengths"):
        kendall_tau([1.0, 2.0], [1.0])


def test_top_k_agreement() -> None:
    search, validation = [0.9, 0.8, 0.7, 0.6], [0.6, 0.9, 0.8, 0.7]
    assert top_k_agreement(search, validation, 2) == 0.5  # {0, 1} and {1, 2}
    assert top_k_agreement(search, validation, 3) == pytest.approx(2 / 3)  # {0, 1, 2} and {1, 2, 3}
    assert top_k_agreement(search, validation, 2, maximize=False) == 0.5  # {2, 3} and {0, 3}
    assert top_k_agreement(search, validation, 10) == 1.0  # k capped at the 4 designs


def test_within_noise_is_welchs_t_test() -> None:
    pairs = within_noise({"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0], "c": [1.5, 2.5, 3.5]})
    assert [(p.a, p.b) for p in pairs] == [("a", "b"), ("a", "c"), ("b", "c")]
    ab, ac, _ = pairs
    # variances 1 and 1: t = -3 / sqrt(2/3) = -3.6742, Welch df = (2/3)^2 / (2 * (1/3)^2 / 2) = 4
    assert ab.difference == -3.0
    assert ab.p_value == pytest.approx(2 * stats.t.sf(3 / math.sqrt(2 / 3), 4))
    assert ab.within_noise is False and ab.p_value < 0.05
    assert ac.p_value == pytest.approx(2 * stats.t.sf(0.5 / math.sqrt(2 / 3), 4))  # 0.57
    assert ac.within_noise is True


def test_within_noise_needs_two_seeds_and_handles_no_spread() -> None:
    pairs = within_noise({"a": [0.5], "b": [0.5, 0.6], "c": [0.5, 0.5], "d": [0.5, 0.5]})
    by = {(p.a, p.b): p for p in pairs}
    assert by[("a", "b")].within_noise is None and math.isnan(by[("a", "b")].p_value)
    assert by[("c", "d")].within_noise is True and by[("c", "d")].p_value == 1.0
