"""Rewards for GRPO: the final-answer check, the step-scorer interface, and one reward function per source.

Which rewards a run gets is set by (supervision, reward_source):
- outcome + rule: r_i = 1.0 if the final answer matches the reference else 0.0;
- outcome + orm / prm: r_i = the scorer's score of the LAST step of o_i (an ORM returns only that one);
- process + prm: one reward per step, the scorer's probability that the step is correct;
- process + implicit: one reward per step, an implicit PRM's sum of β·log π_φ/π_ref over the step's tokens (PRIME);
  the same call updates φ on the batch's rule rewards (``OnlineStepScorer.online_step``) and its stats are logged;
- process + rule / orm: no step rewards exist -> UserError. outcome + implicit is refused too: its one reward would be
  β·log π_φ(o)/π_ref(o), an ORM's; the 'orm' source is that comparison.
A completion with no steps (empty, or nothing but whitespace) is never sent to a scorer: it gets outcome reward 0.0
and an empty list of step rewards (so zero process advantage). The rule reward is always computed too (it is the
training accuracy metric and the optional outcome mix). Non-finite rewards are returned as they are; the trainer
detects them and skips the update.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from ..data.schema import Problem
from ..utils.errors import UserError


class StepScorer(Protocol):
    """Scores solutions step by step (``prm.model.StepRewardModel`` implements it).

    Process mode: one probability per step (NaN for steps that did not fit the scorer's length limit).
    Outcome (ORM) mode: a one-element list, the score of the whole solution.
    """

    def score_steps(self, prompts: list[str], solutions: list[list[str]]) -> list[list[float]]: ...


@runtime_checkable
class OnlineStepScorer(StepScorer, Protocol):
    """A scorer that learns from each batch it rewards (``prm.implicit.ImplicitPRM``, PRIME's online implicit PRM);
    a GRPO checkpoint saves it and a resume restores it, so a resumed run continues the same reward model."""

    def online_step(self, prompts: list[str], solutions: list[list[str]],
                    labels: list[float]) -> tuple[list[list[float]], dict[str, float]]:
        """Step rewards of the solutions (NaN past its window) and one update on their outcome labels; its stats."""
        ...

    def save_pretrained(self, out_dir: str | Path) -> Any: ...

    def load_online(self, path: str | Path) -> None: ...


AnswerCheck = Callable[[str, str], bool]
"""(completion text, reference answer) -> right? The task's one check (``data.tasks.Task.is_correct``)."""


@dataclass
class Rewards:
    """Rewards of B completions (rows in rollout order)."""

    rule: Tensor
    """(B,) 1.0/0.0 final-answer check; always computed."""
    outcome: Tensor | None
    """(B,) one reward per completion (outcome supervision), else None."""
    steps: list[list[float]] | None
    """One reward per step of each completion (process supervision), else None; only the steps that fit the PRM."""
    steps_beyond_window: int = 0
    """Process supervision: steps that did not fit the PRM's window and got no reward."""
    scorer_stats: dict[str, float] = field(default_factory=dict)
    """What the reward model reports of itself this step (an online implicit PRM: loss, accuracy), logged as is."""

    def is_finite(self) -> bool:
        """False if any outcome or step reward is NaN or infinite."""
        finite = bool(torch.isfinite(self.rule).all())
        if self.outcome is not None:
            finite = finite and bool(torch.isfinite(self.outcome).all())
        if self.steps is not None:
            finite = finite and all(torch.isfinite(torch.tensor(row, dtype=torch.float64)).all() for row in self.steps)
        return finite

    def step_tensor(self, most_steps: int) -> Tensor:
        """Step rewards as (B, K) float32, right-padded with 0 (use with the rollout's step mask)."""
        assert self.steps is not None, "no step rewards under outcome supervision"
        table = torch.zeros(len(self.steps), most_steps)
        for row, rewards in enumerate(self.steps):
            table[row, : len(rewards)] = torch.tensor(rewards, dtype=torch.float32)
        return table


def rule_rewards(problems: list[Problem], texts: list[str], check: AnswerCheck) -> Tensor:
    """(B,) 1.0 where the task's answer check holds, else 0.0."""
    return torch.tensor([float(check(text, p.answer)) for p, text in zip(problems, texts)], dtype=torch.float32)


def _scored(prompts: list[str], steps: list[list[str]], scorer: StepScorer | None, source: str) -> list[list[float]]:
    """Scores of every completion that has steps (one scorer call); [] for the others."""
    if scorer is None:
        raise UserError(f"grpo.reward_source: '{source}' needs a reward model (none was given; pass a PRM/ORM dir)")
    rows = [i for i, row_steps in enumerate(steps) if row_steps]
    scores = scorer.score_steps([prompts[i] for i in rows], [steps[i] for i in rows]) if rows else []
    return _placed(scores, rows, len(steps))


def _placed(scores: list[list[float]], rows: list[int], num_rows: int) -> list[list[float]]:
    """Score lists of the completions ``rows`` put at their rows of ``num_rows``; [] for the others."""
    if len(scores) != len(rows):
        raise ValueError(f"scorer returned {len(scores)} score lists for {len(rows)} solutions")
    result: list[list[float]] = [[] for _ in range(num_rows)]
    for i, row_scores in zip(rows, scores):
        result[i] = [float(s) for s in row_scores]
    return result


def outcome_from_rule(rule: Tensor, prompts: list[str], steps: list[list[str]], scorer: StepScorer | None) -> Tensor:
    """Outcome reward = the answer check's 1.0 / 0.0."""
    return rule.clone()


def _last_step_scores(prompts: list[str], steps: list[list[str]], scorer: StepScorer | None, source: str) -> Tensor:
    """(B,) the scorer's score of each completion's last step; 0.0 for a completion without steps."""
    scores = _scored(prompts, steps, scorer, source)
    return torch.tensor([row[-1] if row else 0.0 for row in scores], dtype=torch.float32)


def outcome_from_orm(rule: Tensor, prompts: list[str], steps: list[list[str]], scorer: StepScorer | None) -> Tensor:
    """Outcome reward = the ORM's score of the whole solution (its last step)."""
    return _last_step_scores(prompts, steps, scorer, "orm")


def outcome_from_prm(rule: Tensor, prompts: list[str], steps: list[list[str]], scorer: StepScorer | None) -> Tensor:
    """Outcome reward = the PRM's score of the last step."""
    return _last_step_scores(prompts, steps, scorer, "prm")


def _cut_at_window(scores: list[list[float]], steps: list[list[str]]) -> list[list[float]]:
    """Each completion's step rewards up to its first NaN (a step past the reward model's window)."""
    for i, (row_scores, row_steps) in enumerate(zip(scores, steps)):
        if len(row_scores) != len(row_steps):
            raise ValueError(f"completion {i}: {len(row_scores)} step scores for {len(row_steps)} steps "
                             "(process supervision needs a process-mode PRM, not an ORM)")
    return [row[: next((j for j, x in enumerate(row) if math.isnan(x)), len(row))] for row in scores]


def process_from_prm(rule: Tensor, prompts: list[str], steps: list[list[str]],
                     scorer: StepScorer | None) -> tuple[list[list[float]], dict[str, float]]:
    """Step rewards = the PRM's per-step probabilities; [] for a completion without steps.

    Steps beyond the PRM's window (scored NaN) are cut off: a completion is rewarded for the steps that fit, so its
    list can be shorter than its steps (``Rewards.steps_beyond_window`` counts the cut ones; their tokens get no
    process advantage)."""
    return _cut_at_window(_scored(prompts, steps, scorer, "prm"), steps), {}


def process_from_implicit(rule: Tensor, prompts: list[str], steps: list[list[str]],
                          scorer: StepScorer | None) -> tuple[list[list[float]], dict[str, float]]:
    """Step rewards = an implicit PRM's per-step sums of β·log π_φ/π_ref, with φ updated in the same call on the
    completions' rule rewards as outcome labels (PRIME); [] for a completion without steps (it is not trained on)."""
    check_scorer("implicit", scorer)
    rows = [i for i, row_steps in enumerate(steps) if row_steps]
    scores, stats = scorer.online_step([prompts[i] for i in rows], [steps[i] for i in rows],
                                       [float(rule[i]) for i in rows]) if rows else ([], {})
    return _cut_at_window(_placed(scores, rows, len(steps)), steps), stats


OUTCOME_SOURCES: dict[str, Callable[..., Tensor]] = {
    "rule": outcome_from_rule,
    "orm": outcome_from_orm,
    "prm": outcome_from_prm,
}
"""Outcome-reward sources by name: (rule rewards, prompts, steps, scorer) -> (B,)."""
PROCESS_SOURCES: dict[str, Callable[..., tuple[list[list[float]], dict[str, float]]]] = {
    "prm": process_from_prm,
    "implicit": process_from_implicit,
}
"""Step-reward sources by name: (rule rewards, prompts, steps, scorer) -> (one list of step rewards per completion,
the scorer's stats)."""
SUPERVISIONS = ("outcome", "process")


def check_reward_setup(supervision: str, reward_source: str) -> None:
    """UserError (one line naming the config key) for an unknown or impossible supervision/source pair."""
    if supervision not in SUPERVISIONS:
        raise UserError(f"grpo.supervision: unknown {supervision!r}; valid: {', '.join(SUPERVISIONS)}")
    sources = OUTCOME_SOURCES if supervision == "outcome" else PROCESS_SOURCES
    if reward_source not in sources:
        raise UserError(f"grpo.reward_source: {reward_source!r} cannot give {supervision} rewards; "
                        f"valid with supervision '{supervision}': {', '.join(sorted(sources))}")


def check_scorer(reward_source: str, scorer: StepScorer | None) -> None:
    """UserError when ``reward_source`` needs a reward model and ``scorer`` is none, or not the kind it needs."""
    if reward_source != "rule" and scorer is None:
        raise UserError(f"grpo.reward_source: '{reward_source}' needs a reward model; none was given")
    if reward_source == "implicit" and not isinstance(scorer, OnlineStepScorer):
        raise UserError(f"grpo.reward_source: 'implicit' needs an implicit PRM that learns online "
                        f"(prm.implicit.ImplicitPRM), not a {type(scorer).__name__}")


def compute_rewards(problems: list[Problem], prompts: list[str], texts: list[str], steps: list[list[str]],
                    supervision: str, reward_source: str, check: AnswerCheck,
                    scorer: StepScorer | None = None) -> Rewards:
    """Rewards of B completions; row i answers ``problems[i]`` (prompt ``prompts[i]``, text, steps); ``check`` is the
    task's answer check."""
    check_reward_setup(supervision, reward_source)
    if not len(problems) == len(prompts) == len(texts) == len(steps):
        raise ValueError(f"{len(problems)} problems, {len(prompts)} prompts, {len(texts)} texts, {len(steps)} step lists")
    rule = rule_rewards(problems, texts, check)
    if supervision == "outcome":
        return Rewards(rule, OUTCOME_SOURCES[reward_source](rule, prompts, steps, scorer), None)
    step_rewards, stats = PROCESS_SOURCES[reward_source](rule, prompts, steps, scorer)
    beyond = sum(len(row_steps) - len(row) for row_steps, row in zip(steps, step_rewards))
    return Rewards(rule, None, step_rewards, beyond, stats)
