"""Monte Carlo step labelling: estimate each step's correctness from policy completions of its prefix.

Math-Shepherd (arXiv 2312.08935, §3.3): for a solution's prefix s_1..s_j, sample N completions with the policy and
check each final answer; the hard estimate is 1 if any completion reaches the reference answer, the soft estimate is
the fraction that do. The label of step j is the estimate for the prefix that ends with it.

Two labellers, both batched so the policy sees as few generate calls as possible:
- ``label_exhaustive``: every prefix of every solution in ONE ``sampler.complete`` call. It departs from Math-Shepherd
  in one place: the prefix of all K steps is the whole solution, whose final answer is already written, so step K is
  labelled by checking the solution itself (1.0 or 0.0, for hard and soft alike) with no rollouts. Cost: (K - 1)·N
  rollouts per solution.
- ``label_binary_search`` (OmegaPRM's idea, arXiv 2406.06592): assume correctness is monotone along a solution
  (once a prefix cannot reach the answer, no longer prefix can, and the empty prefix can). Then a solution whose own
  final answer is right gets 1.0 on every step with no rollouts, and a wrong one has a single first bad prefix, found
  with about ceil(log2 K) probes of N completions each (hard estimate). Labels are hard: 1.0 before that step, 0.0
  from it on. The searches of all solutions run in lockstep, one ``sampler.complete`` call per round.
  Where the assumption fails (a wrong step followed by a lucky right answer, or a prefix that is not reachable
  followed by one that is) the labels differ from ``label_exhaustive``'s; tests show such a case.

The caller supplies the formatting and the answer check, so the same code serves the embedded task and hub models:
- ``format_prefix(question, steps) -> str``: the prompt text the policy continues after the given steps
  (``steps`` may be every step of the solution: that text is what ``check`` reads for the solution itself).
- ``check(text, reference) -> bool``: whether ``text`` ends in the reference answer (it must read the LAST answer).
  ``text`` is the solution as the policy wrote it: the prefix's steps and the completion, WITHOUT the bare prompt
  (``format_prefix(question, [])``), so an instruction such as "put your answer in \\boxed{}" is never read as one.
Problems and solutions are index-aligned: ``problems[i]`` is the (question, reference answer) of ``solutions[i]``;
G samples of one question repeat its problem G times. Identical prefixes are not deduplicated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

from ..data.schema import check_solution_steps

FormatPrefix = Callable[[str, list[str]], str]
Check = Callable[[str, str], bool]


class Sampler(Protocol):
    """Completes prompts with the policy: for each prompt, ``n`` continuation texts (the prompt not repeated)."""

    def complete(self, prompts: list[str], n: int) -> list[list[str]]: ...


class Labelled(NamedTuple):
    """A labeller's result; unpacks as ``labels, rollouts = label_exhaustive(...)``."""

    labels: list[list[float]]
    """One label per step of each solution, in [0, 1]."""
    rollouts: int
    """Completions sampled in total (prompts sent times n)."""


def hard_estimate(num_correct: int, n: int) -> float:
    """Math-Shepherd hard estimate: 1.0 if any of the n completions reached the reference answer, else 0.0."""
    _check_counts(num_correct, n)
    return 1.0 if num_correct > 0 else 0.0


def soft_estimate(num_correct: int, n: int) -> float:
    """Math-Shepherd soft estimate: the fraction of the n completions that reached the reference answer."""
    _check_counts(num_correct, n)
    return num_correct / n


def _check_counts(num_correct: int, n: int) -> None:
    if n < 1 or not 0 <= num_correct <= n:
        raise ValueError(f"need 0 <= num_correct <= n and n >= 1, got num_correct={num_correct}, n={n}")


ESTIMATES: dict[str, Callable[[int, int], float]] = {"hard": hard_estimate, "soft": soft_estimate}


def get_estimate(name: str) -> Callable[[int, int], float]:
    """The estimate called ``name``; ValueError listing the valid names otherwise."""
    if name not in ESTIMATES:
        raise ValueError(f"unknown estimate '{name}'; valid: {', '.join(sorted(ESTIMATES))}")
    return ESTIMATES[name]


def validate_inputs(problems: Sequence[tuple[str, str]], solutions: Sequence[list[str]], n: int) -> None:
    """Raise UserError naming the solution index for an empty solution or step; ValueError for caller mistakes."""
    if len(problems) != len(solutions):
        raise ValueError(f"{len(problems)} problems for {len(solutions)} solutions; they must be index-aligned")
    if n < 1:
        raise ValueError(f"n (completions per prefix) must be >= 1, got {n}")
    check_solution_steps(solutions)


def _count_correct(
    probes: list[tuple[int, int]],
    problems: Sequence[tuple[str, str]],
    solutions: Sequence[list[str]],
    sampler: Sampler,
    n: int,
    format_prefix: FormatPrefix,
    check: Check,
) -> list[int]:
    """For each probe (solution index, prefix length j), how many of n completions of s_1..s_j reach the answer.

    One ``sampler.complete`` call for all probes; none when there are no probes.
    """
    if not probes:
        return []
    prompts = [format_prefix(problems[i][0], solutions[i][:j]) for i, j in probes]
    completions = sampler.complete(prompts, n)
    if len(completions) != len(prompts):
        raise ValueError(f"sampler returned {len(completions)} completion lists for {len(prompts)} prompts")
    counts = []
    for (i, j), prompt, texts in zip(probes, prompts, completions):
        if len(texts) != n:
            raise ValueError(f"sampler returned {len(texts)} completions, not {n}, for solution {i} prefix {j}")
        written = _solution_part(prompt, problems[i][0], format_prefix)
        counts.append(sum(bool(check(written + text, problems[i][1])) for text in texts))
    return counts


def _solution_part(prefix: str, question: str, format_prefix: FormatPrefix) -> str:
    """The steps part of a prefix text: what follows the bare prompt ``format_prefix(question, [])``."""
    bare = format_prefix(question, [])
    if not prefix.startswith(bare):
        raise ValueError("format_prefix(question, steps) must start with format_prefix(question, [])")
    return prefix[len(bare) :]


def _solution_is_correct(
    question: str, reference: str, steps: list[str], format_prefix: FormatPrefix, check: Check
) -> bool:
    return bool(check(_solution_part(format_prefix(question, steps), question, format_prefix), reference))


def label_exhaustive(
    problems: Sequence[tuple[str, str]],
    solutions: Sequence[list[str]],
    sampler: Sampler,
    n: int,
    format_prefix: FormatPrefix,
    check: Check,
    estimate: str = "soft",
) -> Labelled:
    """Math-Shepherd labels for every step: estimate(prefix s_1..s_j) from n completions, for j = 1..K-1.

    Step K gets the solution's own final-answer correctness (1.0/0.0) without sampling. One sampler call for the
    whole batch (none if every solution has a single step). Rollouts = sum over solutions of (K_i - 1)·n.
    """
    estimate_fn = get_estimate(estimate)
    validate_inputs(problems, solutions, n)
    labels = [[0.0] * len(steps) for steps in solutions]
    probes: list[tuple[int, int]] = []
    for i, steps in enumerate(solutions):
        question, reference = problems[i]
        labels[i][-1] = 1.0 if _solution_is_correct(question, reference, steps, format_prefix, check) else 0.0
        probes.extend((i, j) for j in range(1, len(steps)))
    counts = _count_correct(probes, problems, solutions, sampler, n, format_prefix, check)
    for (i, j), num_correct in zip(probes, counts):
        labels[i][j - 1] = estimate_fn(num_correct, n)
    return Labelled(labels, len(probes) * n)


def label_binary_search(
    problems: Sequence[tuple[str, str]],
    solutions: Sequence[list[str]],
    sampler: Sampler,
    n: int,
    format_prefix: FormatPrefix,
    check: Check,
) -> Labelled:
    """Hard first-error labels by binary search over prefixes, under the monotonicity assumption (module docstring).

    Per wrong solution the search keeps (lo, hi): the prefix of lo steps can reach the answer (lo = 0 by assumption),
    the prefix of hi steps cannot (hi = K: the solution's own answer is wrong). Each round probes mid = (lo + hi) // 2
    with n completions; any correct -> lo = mid, else hi = mid; it stops at hi = lo + 1, so step hi (1-based) is the
    first wrong step. A solution of K steps takes ceil(log2 K) probes; the batch takes as many sampler calls as its
    longest wrong solution needs. Rollouts = probes·n; right solutions cost nothing.
    """
    validate_inputs(problems, solutions, n)
    labels: list[list[float]] = [[1.0] * len(steps) for steps in solutions]
    bounds: dict[int, list[int]] = {}
    for i, steps in enumerate(solutions):
        question, reference = problems[i]
        if not _solution_is_correct(question, reference, steps, format_prefix, check):
            bounds[i] = [0, len(steps)]
    rollouts = 0
    while probes := [(i, (lo + hi) // 2) for i, (lo, hi) in bounds.items() if hi - lo > 1]:
        counts = _count_correct(probes, problems, solutions, sampler, n, format_prefix, check)
        rollouts += len(probes) * n
        for (i, mid), num_correct in zip(probes, counts):
            bounds[i][0 if num_correct > 0 else 1] = mid
    for i, (_, hi) in bounds.items():
        first_wrong = hi - 1  # 0-based index of step hi
        labels[i] = [1.0] * first_wrong + [0.0] * (len(solutions[i]) - first_wrong)
    return Labelled(labels, rollouts)


LABELLERS = {"exhaustive": label_exhaustive, "binary_search": label_binary_search}
"""Labellers by name; both take (problems, solutions, sampler, n, format_prefix, check)."""


def get_labeller(name: str) -> Callable[..., Labelled]:
    """The labeller called ``name``; ValueError listing the valid names otherwise."""
    if name not in LABELLERS:
        raise ValueError(f"unknown labeller '{name}'; valid: {', '.join(sorted(LABELLERS))}")
    return LABELLERS[name]
