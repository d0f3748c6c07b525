"""Exact step verifier for the embedded task: ground-truth per-step labels with first-error semantics.

It reads ANY candidate text (model output included) with the task's own grammar only, never evaluating it. Steps are
the non-empty lines. Step j is correct iff it is the valid next derivation from the problem and the steps before it:
an operation step ``a op b = c`` must use the current value as ``a``, the problem's next operation as ``op b`` and the
right result ``c``; the answer step ``Answer: N`` must come after all operations with N equal to the final value.
Every step after the first wrong one is wrong. The final answer is judged on its own (the last ``Answer:`` line), so a
solution can reach the right answer through a wrong step: its step labels then show the error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .arith import ArithProblem, apply

_STEP_RE = re.compile(r"([0-9]{1,9}) ([+\-*]) ([0-9]{1,9}) = (-?[0-9]{1,12})")
_ANSWER_RE = re.compile(r"Answer: (-?[0-9]{1,12})")
MAX_TEXT_CHARS = 10_000
"""Longer candidate texts are judged only on their first MAX_TEXT_CHARS characters (bounded work per call)."""


@dataclass(frozen=True)
class Verdict:
    steps: list[str]
    """The candidate's steps (non-empty lines, stripped)."""
    step_labels: list[bool]
    """Ground truth per step, first-error semantics."""
    final_correct: bool
    """Whether the last ``Answer:`` line holds the reference answer."""

    @property
    def first_error(self) -> int:
        """Index of the first wrong step, or -1 if every step is right."""
        return next((index for index, ok in enumerate(self.step_labels) if not ok), -1)


def split_solution(text: str) -> list[str]:
    """The task's step split: one step per non-empty line."""
    return [line.strip() for line in text[:MAX_TEXT_CHARS].split("\n") if line.strip()]


def final_answer(text: str) -> str | None:
    """The number on the last ``Answer:`` line, or None."""
    answers = [m.group(1) for line in split_solution(text) if (m := _ANSWER_RE.fullmatch(line))]
    return str(int(answers[-1])) if answers else None


def verify_steps(problem: ArithProblem, steps: list[str]) -> list[bool]:
    """First-error labels for already-split steps."""
    labels: list[bool] = []
    value, next_op, done = problem.start, 0, False
    for step in steps:
        ok = not done and (not labels or labels[-1])
        if ok and next_op < len(problem.operations):
            match = _STEP_RE.fullmatch(step)
            op, operand = problem.operations[next_op]
            ok = (
                match is not None
                and int(match.group(1)) == value
                and match.group(2) == op
                and int(match.group(3)) == operand
                and int(match.group(4)) == apply(value, op, operand)
            )
            if ok:
                value, next_op = apply(value, op, operand), next_op + 1
        elif ok:
            match = _ANSWER_RE.fullmatch(step)
            ok = match is not None and int(match.group(1)) == value
            done = True
        labels.append(ok)
    return labels


def verify(problem: ArithProblem, text: str) -> Verdict:
    """Judge a candidate solution text against the problem (see the module docstring for the rules)."""
    steps = split_solution(text)
    answer = final_answer(text)
    return Verdict(steps, verify_steps(problem, steps), answer is not None and int(answer) == problem.answer)
