"""The one schema every loader produces: problems, and solutions split into steps with per-step labels.

A ``StepwiseExample`` is a row of TRL's stepwise format ``{prompt, completions: [step, ...], labels: [...]}``; labels are
bools (hard) or floats in [0, 1] (soft, e.g. Math-Shepherd's fraction of Monte Carlo completions that reach the answer).
Soft labels are never rounded anywhere in prmloop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..utils.errors import UserError

Label = bool | float


@dataclass(frozen=True)
class Problem:
    """A question with its reference final answer (and, where known, a reference step-by-step solution)."""

    id: str
    """Stable identifier, unique within a dataset (e.g. ``arith-train-00012`` or ``gsm8k-test-7``)."""
    question: str
    """The problem text shown to the policy."""
    answer: str
    """Reference final answer as text; compare with ``data.answers.answers_match``."""
    reference_steps: tuple[str, ...] = ()
    """Reference solution steps, when the source has them."""

    def to_row(self) -> dict[str, Any]:
        return {"id": self.id, "question": self.question, "answer": self.answer, "reference_steps": list(self.reference_steps)}

    @classmethod
    def from_row(cls, row: dict[str, Any], where: str) -> Problem:
        """Build from a JSON row; ``where`` (``file:line``) prefixes any error."""
        for key in ("id", "question", "answer"):
            if not isinstance(row.get(key), str):
                raise UserError(f"{where}: key '{key}' must be a string")
        steps = row.get("reference_steps", [])
        if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
            raise UserError(f"{where}: key 'reference_steps' must be a list of strings")
        return cls(row["id"], row["question"], row["answer"], tuple(steps))


@dataclass
class StepwiseExample:
    """One solution as steps with one label per step (TRL stepwise format, plus optional metadata)."""

    prompt: str
    """The problem text (exactly what the model is conditioned on, before the first step)."""
    completions: list[str]
    """The solution's steps, in order, without separators."""
    labels: list[Label]
    """One label per step: bool, or float in [0, 1] = estimated probability the step is correct."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Free-form extras carried through conversion (problem id, reference answer, source, final_answer_correct)."""

    def validate(self, where: str) -> None:
        """Raise UserError naming ``where`` if the row breaks the schema's rules."""
        if not isinstance(self.prompt, str):
            raise UserError(f"{where}: 'prompt' must be a string")
        if not isinstance(self.completions, list) or not self.completions:
            raise UserError(f"{where}: 'completions' must be a non-empty list of steps")
        if not all(isinstance(step, str) for step in self.completions):
            raise UserError(f"{where}: every step in 'completions' must be a string")
        if any(not step.strip() for step in self.completions):
            raise UserError(f"{where}: 'completions' holds an empty step")
        if not isinstance(self.labels, list) or len(self.labels) != len(self.completions):
            count = len(self.labels) if isinstance(self.labels, list) else "no"
            raise UserError(f"{where}: {count} labels for {len(self.completions)} steps")
        for index, label in enumerate(self.labels):
            if isinstance(label, bool):
                continue
            if not isinstance(label, (int, float)) or not math.isfinite(label) or not 0.0 <= label <= 1.0:
                raise UserError(f"{where}: label {index} is {label!r}; labels must be bools or numbers in [0, 1]")

    def to_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"prompt": self.prompt, "completions": list(self.completions), "labels": list(self.labels)}
        row.update(self.meta)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any], where: str) -> StepwiseExample:
        """Build and validate from a TRL stepwise JSON row; extra keys go to ``meta``."""
        missing = [key for key in ("prompt", "completions", "labels") if key not in row]
        if missing:
            raise UserError(f"{where}: missing key '{missing[0]}'")
        meta = {key: value for key, value in row.items() if key not in ("prompt", "completions", "labels")}
        labels = row["labels"]
        if isinstance(labels, list):
            labels = [float(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in labels]
        example = cls(row["prompt"], row["completions"], labels, meta)
        example.validate(where)
        return example


def check_solution_steps(solutions: Sequence[Sequence[str]]) -> None:
    """UserError naming the solution (and step) index for a solution with no steps or an empty step."""
    for index, steps in enumerate(solutions):
        if not steps:
            raise UserError(f"solution {index}: has no steps")
        empty = next((j for j, step in enumerate(steps) if not isinstance(step, str) or not step.strip()), None)
        if empty is not None:
            raise UserError(f"solution {index}: step {empty} is empty")
