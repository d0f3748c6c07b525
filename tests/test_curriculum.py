"""Tests for loop/curriculum.py: difficulty bands by hand, the pools each round draws from, and the refusals."""

import pytest

from prmloop.data.schema import Problem
from prmloop.loop.curriculum import band_of, level_bands, round_pools
from prmloop.utils.errors import UserError


def _problem(index: int, steps: int) -> Problem:
    return Problem(f"p{index}", f"question {index}", "1", tuple(f"step {j}" for j in range(steps)))


def test_level_bands_by_hand():
    assert level_bands([5, 6, 7], 3) == [[5], [6], [7]]
    assert level_bands([7, 5, 6, 5], 2) == [[5], [6, 7]]  # 3 levels, 2 rounds: cut at 3 * 1 // 2 = 1
    assert level_bands([5, 6, 7], 6) == [[5], [5], [6], [6], [7], [7]]  # level r * 3 // 6 for r = 0..5
    assert level_bands([2, 3, 4, 5], 3) == [[2], [3], [4, 5]]  # cuts at 4 * 1 // 3 = 1 and 4 * 2 // 3 = 2
    assert level_bands([], 3) == []


def test_bands_cover_every_level_once_when_there_are_enough():
    levels = list(range(1, 12))
    for rounds in range(1, 12):
        bands = level_bands(levels, rounds)
        assert len(bands) == rounds and sorted(level for band in bands for level in band) == levels


def test_round_pools_draw_harder_problems_each_round():
    problems = [_problem(i, steps) for i, steps in enumerate([6, 5, 7, 5, 6, 7, 5])]
    pools = round_pools(problems, 3, "steps")
    assert [[p.id for p in pool] for pool in pools] == [["p1", "p3", "p6"], ["p0", "p4"], ["p2", "p5"]]
    assert band_of(pools, 0) == {5} and band_of(pools, 1) == {5} and band_of(pools, 3) == {7}  # round 0 = round 1's
    assert round_pools(problems, 3, "none") == [problems] * 3


def test_a_curriculum_over_problems_of_one_length_is_refused_in_one_line():
    with pytest.raises(UserError, match=r"^loop.curriculum: 'steps' .* all 3 training problems have 4;"):
        round_pools([_problem(i, 4) for i in range(3)], 2, "steps")
    with pytest.raises(UserError, match=r"^loop.curriculum: 'length' is not one of none, steps$"):
        round_pools([_problem(0, 4)], 2, "length")
