"""Tests for prm/label.py with fake deterministic samplers: labels, rollout counts, sampler calls, validation."""

import random

import pytest

from prmloop.prm.label import (
    get_estimate,
    get_labeller,
    hard_estimate,
    label_binary_search,
    label_exhaustive,
    soft_estimate,
)
from prmloop.prm.metrics import first_error_from_labels
from prmloop.utils.errors import UserError

QUESTION = "What is 40 + 2?"
REFERENCE = "42"
PROBLEM = (QUESTION, REFERENCE)
RIGHT, WRONG = f"Answer: {REFERENCE}", "Answer: -1"


def format_prefix(question: str, steps: list[str]) -> str:
    """Question line, then one line per step; the policy continues on the next line."""
    return question + "\n" + "".join(step + "\n" for step in steps)


def check(text: str, reference: str) -> bool:
    """The last 'Answer:' line holds the reference."""
    answers = [line for line in text.split("\n") if line.startswith("Answer: ")]
    return bool(answers) and answers[-1] == f"Answer: {reference}"


def prefix_steps(prompt: str) -> list[str]:
    return prompt.split("\n")[1:-1]  # drop the question line and the trailing empty line


class ReachabilitySampler:
    """A prefix reaches the answer iff none of its steps is 'bad'; then every completion is right, else every one wrong."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def complete(self, prompts: list[str], n: int) -> list[list[str]]:
        self.calls.append(list(prompts))
        return [[WRONG if "bad" in prefix_steps(p) else RIGHT] * n for p in prompts]


class CountingSampler:
    """Returns k right completions of n, with k looked up by the prefix's number of steps."""

    def __init__(self, right_by_prefix_length: dict[int, int]):
        self.right_by_prefix_length = right_by_prefix_length
        self.calls: list[list[str]] = []

    def complete(self, prompts: list[str], n: int) -> list[list[str]]:
        self.calls.append(list(prompts))
        out = []
        for prompt in prompts:
            k = self.right_by_prefix_length[len(prefix_steps(prompt))]
            out.append([RIGHT] * k + [WRONG] * (n - k))
        return out


def test_estimates():
    assert hard_estimate(0, 4) == 0.0
    assert hard_estimate(1, 4) == 1.0
    assert hard_estimate(4, 4) == 1.0
    assert soft_estimate(3, 4) == 0.75
    assert soft_estimate(0, 4) == 0.0
    with pytest.raises(ValueError):
        soft_estimate(5, 4)
    with pytest.raises(ValueError):
        hard_estimate(0, 0)
    assert get_estimate("soft") is soft_estimate
    with pytest.raises(ValueError, match="valid: hard, soft"):
        get_estimate("mean")
    with pytest.raises(ValueError, match="valid: binary_search, exhaustive"):
        get_labeller("omega")


def test_exhaustive_soft_and_hard_one_call():
    solutions = [["a", "b", "c", RIGHT], ["x", "Answer: 5"]]
    problems = [PROBLEM, PROBLEM]
    # Right completions of n=4 per prefix length: 1 step -> 3, 2 -> 2, 3 -> 0.
    # Solution 0: prefixes 1..3 -> 3/4, 2/4, 0/4; step 4 is the solution's own answer 42 = right -> 1.0.
    # Solution 1: prefix 1 -> 3/4; step 2 is its own answer 5 != 42 -> 0.0.
    # Rollouts: (4 - 1 + 2 - 1) prefixes * 4 = 16, all prompts in one call.
    sampler = CountingSampler({1: 3, 2: 2, 3: 0})
    labels, rollouts = label_exhaustive(problems, solutions, sampler, 4, format_prefix, check, estimate="soft")
    assert labels == [[0.75, 0.5, 0.0, 1.0], [0.75, 0.0]]
    assert rollouts == 16
    assert [len(call) for call in sampler.calls] == [4]
    assert sampler.calls[0][0] == "What is 40 + 2?\na\n"  # prefix of one step

    sampler = CountingSampler({1: 3, 2: 2, 3: 0})
    labels, rollouts = label_exhaustive(problems, solutions, sampler, 4, format_prefix, check, estimate="hard")
    # hard: any right -> 1.0: 3/4 -> 1, 2/4 -> 1, 0/4 -> 0.
    assert labels == [[1.0, 1.0, 0.0, 1.0], [1.0, 0.0]]
    assert rollouts == 16


def test_exhaustive_first_error_semantics_and_free_last_step():
    solutions = [["ok", "ok", RIGHT], ["ok", "bad", "ok", "Answer: 0"], [RIGHT]]
    sampler = ReachabilitySampler()
    labels, rollouts = label_exhaustive([PROBLEM] * 3, solutions, sampler, 2, format_prefix, check)
    # Solution 1: prefix 1 reaches 42; prefixes 2 and 3 hold 'bad'; own answer 0 is wrong.
    assert labels == [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0], [1.0]]
    assert rollouts == (2 + 3 + 0) * 2  # (K - 1) prefixes per solution, n = 2
    assert len(sampler.calls) == 1


def test_exhaustive_single_step_solutions_make_no_call():
    sampler = ReachabilitySampler()
    labels, rollouts = label_exhaustive([PROBLEM] * 2, [[RIGHT], [WRONG]], sampler, 8, format_prefix, check)
    assert labels == [[1.0], [0.0]]
    assert rollouts == 0
    assert sampler.calls == []


def test_binary_search_concrete_counts_versus_exhaustive():
    right = ["ok"] * 7 + [RIGHT]  # K = 8, own answer right
    wrong = ["ok", "ok", "bad", "ok", "ok", "ok", "ok", "Answer: 7"]  # K = 8, first wrong step is index 2
    problems, solutions, n = [PROBLEM] * 2, [right, wrong], 4

    exhaustive_sampler = ReachabilitySampler()
    exhaustive = label_exhaustive(problems, solutions, exhaustive_sampler, n, format_prefix, check, estimate="hard")
    assert exhaustive.rollouts == 2 * 7 * 4  # 7 sampled prefixes per solution, n = 4 -> 56
    assert len(exhaustive_sampler.calls) == 1

    search_sampler = ReachabilitySampler()
    search = label_binary_search(problems, solutions, search_sampler, n, format_prefix, check)
    # right: all 1.0, no probes. wrong: (lo, hi) = (0, 8) -> probe 4 (has 'bad') -> (0, 4) -> probe 2 (reaches) ->
    # (2, 4) -> probe 3 (has 'bad') -> (2, 3): step 3 (index 2) is the first wrong. 3 probes * 4 = 12 rollouts.
    assert search.labels == [[1.0] * 8, [1.0, 1.0] + [0.0] * 6]
    assert search.labels == exhaustive.labels
    assert search.rollouts == 12
    assert [[len(prefix_steps(p)) for p in call] for call in search_sampler.calls] == [[4], [2], [3]]


def test_binary_search_error_at_last_step_and_single_step():
    solutions = [["ok"] * 4 + ["Answer: 0"], [WRONG]]
    sampler = ReachabilitySampler()
    labels, rollouts = label_binary_search([PROBLEM] * 2, solutions, sampler, 3, format_prefix, check)
    # K = 5: (0, 5) -> probe 2 ok -> (2, 5) -> probe 3 ok -> (3, 5) -> probe 4 ok -> (4, 5): step 5 wrong.
    # K = 1: (0, 1) is already adjacent: no probes, the single step is wrong.
    assert labels == [[1.0, 1.0, 1.0, 1.0, 0.0], [0.0]]
    assert rollouts == 3 * 3  # ceil(log2 5) = 3 probes, n = 3
    assert len(sampler.calls) == 3


def test_binary_search_runs_in_lockstep():
    # K = 8 needs 3 rounds, K = 2 needs 1: round 1 probes both, rounds 2 and 3 only the long one.
    solutions = [["ok"] * 7 + ["Answer: 0"], ["bad", "Answer: 0"]]
    sampler = ReachabilitySampler()
    labels, rollouts = label_binary_search([PROBLEM] * 2, solutions, sampler, 2, format_prefix, check)
    assert [len(call) for call in sampler.calls] == [2, 1, 1]
    assert rollouts == 4 * 2
    assert labels == [[1.0] * 7 + [0.0], [0.0, 0.0]]


def test_binary_search_agrees_with_exhaustive_on_random_monotone_solutions():
    rng = random.Random(1234)
    solutions = []
    for _ in range(300):
        body = ["bad" if rng.random() < 0.15 else "ok" for _ in range(rng.randint(0, 11))]
        # Monotone: a solution with a bad step ends wrong; a clean one ends right or (its last step wrong) wrong.
        last = "Answer: 0" if "bad" in body or rng.random() < 0.3 else RIGHT
        solutions.append(body + [last])
    problems = [PROBLEM] * len(solutions)
    exhaustive = label_exhaustive(problems, solutions, ReachabilitySampler(), 2, format_prefix, check, "hard")
    search_sampler = ReachabilitySampler()
    search = label_binary_search(problems, solutions, search_sampler, 2, format_prefix, check)
    for index, (a, b) in enumerate(zip(exhaustive.labels, search.labels)):
        assert first_error_from_labels(a) == first_error_from_labels(b), index
    assert search.labels == exhaustive.labels  # monotone fake: the full label lists agree too
    assert search.rollouts < exhaustive.rollouts / 2
    assert len(search_sampler.calls) <= 4  # ceil(log2 12) = 4 rounds for the longest solution


def test_binary_search_trusts_a_right_final_answer():
    # Monotonicity caveat: a wrong step followed by a lucky right answer. Exhaustive sees the error; the search
    # labels the whole solution right because its own answer is right, and samples nothing.
    solutions = [["ok", "bad", RIGHT]]
    exhaustive = label_exhaustive([PROBLEM], solutions, ReachabilitySampler(), 2, format_prefix, check, "hard")
    search = label_binary_search([PROBLEM], solutions, ReachabilitySampler(), 2, format_prefix, check)
    assert exhaustive.labels == [[1.0, 0.0, 1.0]]
    assert search.labels == [[1.0, 1.0, 1.0]]
    assert search.rollouts == 0


@pytest.mark.parametrize("labeller", [label_exhaustive, label_binary_search])
def test_validation(labeller):
    sampler = ReachabilitySampler()
    with pytest.raises(UserError, match="solution 1: has no steps"):
        labeller([PROBLEM] * 2, [["ok", RIGHT], []], sampler, 2, format_prefix, check)
    with pytest.raises(UserError, match="solution 0: step 1 is empty"):
        labeller([PROBLEM], [["ok", "  ", WRONG]], sampler, 2, format_prefix, check)
    with pytest.raises(ValueError, match="1 problems for 2 solutions"):
        labeller([PROBLEM], [[RIGHT], [RIGHT]], sampler, 2, format_prefix, check)
    with pytest.raises(ValueError, match="n .* must be >= 1"):
        labeller([PROBLEM], [[RIGHT]], sampler, 0, format_prefix, check)
    assert sampler.calls == []


def test_sampler_returning_wrong_shape_is_rejected():
    class ShortSampler:
        def complete(self, prompts, n):
            return [[RIGHT] * (n - 1) for _ in prompts]

    with pytest.raises(ValueError, match="returned 1 completions, not 2, for solution 0 prefix 1"):
        label_exhaustive([PROBLEM], [["ok", RIGHT]], ShortSampler(), 2, format_prefix, check)
