"""Tests for loop/hacking.py (S4, PURE's measure): round means of RL rows and the verdicts, by hand."""

import pytest

from prmloop.loop.hacking import _verdict, round_means


def test_round_means_by_hand():
    # 4 steps per round: steps 1-4 are round 1, 5-8 round 2
    assert round_means([{1: 0.2, 2: 0.4, 4: 0.6, 5: 1.0}], 4) == [{1: pytest.approx(0.4), 2: 1.0}]


def test_verdicts():
    hacked = {"heldout_score": (0.2, 0.05), "true_accuracy": (-0.1, 0.05), "gap": (0.3, 0.1)}
    assert _verdict(hacked).startswith("**hacking**")
    overrated = {"heldout_score": (0.2, 0.05), "true_accuracy": (0.05, 0.1), "gap": (0.15, 0.1)}
    assert _verdict(overrated).startswith("overrated, not hacked")
    within_noise = {"heldout_score": (0.2, 0.3), "true_accuracy": (-0.1, 0.2), "gap": (0.3, 0.5)}
    assert _verdict(within_noise).startswith("no hacking")
    assert _verdict({"heldout_score": (float("nan"), float("nan")), "true_accuracy": (0.1, 0.1),
                     "gap": (0.1, 0.1)}).startswith("not measured")
