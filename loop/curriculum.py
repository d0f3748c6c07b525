"""A difficulty curriculum for the loop: round r draws its RL and labelling problems from a harder band than r - 1.

``loop.curriculum: steps`` orders the training problems by the length of their reference solution (its number of
steps: on the embedded task one per operation plus the answer line) and gives each round a contiguous band of those
lengths, easiest first. It is the regime in which a reward model trained once can go stale: the first PRM learns
from the warm start's solutions to the first band's problems, and later rounds ask it to judge longer solutions it
never saw labelled, while the iteratively retrained PRM sees each band's own samples. Held-out accuracy is still
measured on every held-out problem; the PRM's F1 is also reported on the current band's held-out problems
(``band_*`` metrics, loop/round_eval.py).
"""

from __future__ import annotations

from ..data.schema import Problem
from ..utils.errors import UserError

CURRICULA = ("none", "steps")
"""Values of loop.curriculum."""


def difficulty(problem: Problem) -> int:
    """A problem's difficulty: the number of steps of its reference solution."""
    return len(problem.reference_steps)


def level_bands(levels: list[int], rounds: int) -> list[list[int]]:
    """The difficulty levels of each round (pure): the sorted distinct ``levels`` cut into ``rounds`` contiguous,
    near-equal groups, easiest first; with fewer levels than rounds, each level serves consecutive rounds.

    Example: levels [5, 6, 7], 3 rounds -> [[5], [6], [7]]; 2 rounds -> [[5], [6, 7]]; 6 rounds -> [[5], [5], [6],
    [6], [7], [7]].
    """
    distinct = sorted(set(levels))
    if not distinct or rounds < 1:
        return []
    count = len(distinct)
    if count < rounds:
        return [[distinct[r * count // rounds]] for r in range(rounds)]
    return [distinct[r * count // rounds : (r + 1) * count // rounds] for r in range(rounds)]


def round_pools(problems: list[Problem], rounds: int, curriculum: str) -> list[list[Problem]]:
    """The training problems each round (1..rounds, index 0 = round 1) draws from, in their given order.

    'none': every round draws from all of them. 'steps': round r from the problems whose difficulty is in band r
    (``level_bands``); a UserError when they all have one difficulty (no curriculum can be built).
    """
    if curriculum not in CURRICULA:
        raise UserError(f"loop.curriculum: {curriculum!r} is not one of {', '.join(CURRICULA)}")
    if curriculum == "none":
        return [problems] * rounds
    levels = [difficulty(p) for p in problems]
    if len(set(levels)) < 2:
        raise UserError(f"loop.curriculum: 'steps' orders problems by the steps of their reference solutions, but all "
                        f"{len(problems)} training problems have {levels[0] if levels else 0}; widen data.min_steps.."
                        "data.max_steps, or give the dataset reference solutions, or set loop.curriculum: none")
    bands = level_bands(levels, rounds)
    return [[p for p, level in zip(problems, levels) if level in band] for band in bands]


def band_of(pools: list[list[Problem]], round_index: int) -> set[int]:
    """The difficulty levels of round ``round_index``'s pool (round 0, before any RL, is round 1's)."""
    pool = pools[max(round_index, 1) - 1]
    return {difficulty(p) for p in pool}
