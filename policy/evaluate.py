"""Held-out evaluation of a policy: completions of problems (greedy or sampled) judged by the task's answer check.

This is the one accuracy function: SFT's evaluation, the `grpo` job's before/after accuracy and the loop's per-round
metrics all call it, and all generate through ``policy.rollout.PolicySampler`` (the one generation path).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prmloop.data.prompts import Prompter
from prmloop.data.schema import Problem
from prmloop.data.tasks import Task
from prmloop.policy.rollout import PolicySampler


def complete_problems(model: Any, tokenizer: Any, prompter: Prompter, problems: Sequence[Problem],
                      max_new_tokens: int, k: int = 1, temperature: float = 0.0, seed: int = 0,
                      batch_size: int = 256) -> list[list[str]]:
    """k completions per problem (temperature 0 = greedy; sampled ones seeded by ``seed``), grouped by problem."""
    sampler = PolicySampler(model, tokenizer, max_new_tokens, temperature, 1.0, batch_size, seed)
    return sampler.complete([prompter(p.question) for p in problems], k)


def correctness(task: Task, problems: Sequence[Problem], completions: Sequence[Sequence[str]]) -> list[list[bool]]:
    """The task's answer check on every completion, grouped like ``completions``."""
    return [[task.is_correct(text, p.answer) for text in texts] for p, texts in zip(problems, completions)]


def heldout_accuracy(model: Any, tokenizer: Any, prompter: Prompter, task: Task, problems: Sequence[Problem],
                     max_new_tokens: int, temperature: float = 0.0, samples: int = 1, seed: int = 0) -> float:
    """Fraction of completions that pass the task's answer check: greedy, or ``samples`` sampled per problem."""
    grouped = complete_problems(model, tokenizer, prompter, problems, max_new_tokens, samples, temperature, seed)
    right = [ok for row in correctness(task, problems, grouped) for ok in row]
    return sum(right) / max(1, len(right))
