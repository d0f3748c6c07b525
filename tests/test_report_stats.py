"""Tests for loop/report_stats.py: the statistics over seeds with hand-computed values."""

import importlib.util
import math

import pytest

from prmloop.loop.report_stats import mean_ci, seed_curve, steps_to_reach, t_quantile_975


def test_mean_ci_hand_values():
    # [1, 2, 3]: mean 2, sample std 1, t_{0.975,2} = 4.3027 -> half width 4.3027 / sqrt(3) = 2.4841
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0) and half == pytest.approx(2.4841, abs=1e-4)
    # [0.5, 0.6]: mean 0.55, sample std 0.070711, t_{0.975,1} = 12.7062 -> 12.7062 * 0.070711 / sqrt(2) = 0.63531
    assert mean_ci([0.5, 0.6]) == pytest.approx((0.55, 0.63531), abs=1e-4)
    mean, half = mean_ci([0.7])
    assert mean == 0.7 and math.isnan(half)  # one seed: no CI
    assert all(math.isnan(v) for v in mean_ci([]))


def test_t_quantile():
    assert t_quantile_975(2) == pytest.approx(4.3027, abs=1e-4)
    assert t_quantile_975(30) == pytest.approx(2.0423, abs=1e-4)
    if importlib.util.find_spec("scipy") is None:
        assert t_quantile_975(31) == 1.96  # the table's normal approximation beyond df 30
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_steps_to_reach_and_seed_curve():
    assert steps_to_reach([0, 10, 20], [0.2, 0.5, 0.6], 0.5) == 10  # >= counts, 0.5 reaches 0.5
    assert steps_to_reach([0, 10, 20], [0.2, 0.5, 0.6], 0.61) is None
    # seed 1 lacks step 20, so only steps 0 and 10 are averaged: (0.2 + 0.4) / 2 = 0.3, (0.4 + 0.6) / 2 = 0.5
    curve = seed_curve([{0: 0.2, 10: 0.4}, {0: 0.4, 10: 0.6, 20: 0.9}])
    assert curve == [(0, pytest.approx(0.3), 0.2, 0.4), (10, pytest.approx(0.5), 0.4, 0.6)]
