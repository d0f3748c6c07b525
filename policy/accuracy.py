"""Held-out evaluation of a policy: completions of problems (greedy or sampled) judged by the task's answer check.

This is the one accuracy function: SFT's evaluation, the `grpo` job's before/after accuracy and the loop's per-round
metrics all call it, and all generate through ``policy.rollout.PolicySampler`` (the one generation path). On a task with
an exact step verifier the loop also measures trace accuracy: the share of solutions whose final answer is right *and*
whose every step is right. The two differ where wrong steps cancel (two slips of the embedded task's teacher, -10 then
+10, give the right answer), which an outcome reward pays for and a process reward does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..data.prompts import Prompter
from ..data.schema import Problem
from ..data.tasks import Task
from .rollout import PolicySampler


def complete_problems(model: Any, tokenizer: Any, prompter: Prompter, problems: Sequence[Problem],
                      max_new_tokens: int, k: int = 1, temperature: float = 0.0, seed: int = 0,
                      batch_size: int = 256) -> list[list[str]]:
    """k completions per problem (temperature 0 = greedy; sampled ones seeded by ``seed``), grouped by problem."""
    sampler = PolicySampler(model, tokenizer, max_new_tokens, temperature, 1.0, batch_size, seed)
    return sampler.complete([prompter(p.question) for p in problems], k)


def correctness(task: Task, problems: Sequence[Problem], completions: Sequence[Sequence[str]]) -> list[list[bool]]:
    """The task's answer check on every completion, grouped like ``completions``."""
    return [[task.is_correct(text, p.answer) for text in texts] for p, texts in zip(problems, completions)]


def trace_correctness(task: Task, problems: Sequence[Problem], texts: Sequence[str]) -> list[bool]:
    """Per completion: the answer check passes and the exact step verifier finds no wrong step (needs a verifier)."""
    return [task.is_correct(text, p.answer) and all(task.verify_steps(p, task.split(text)))
            for p, text in zip(problems, texts)]


def greedy_metrics(model: Any, tokenizer: Any, prompter: Prompter, task: Task, problems: Sequence[Problem],
                   max_new_tokens: int) -> dict[str, float]:
    """Greedy held-out ``accuracy``, plus ``trace_accuracy`` where the task has an exact step verifier."""
    texts = [row[0] for row in complete_problems(model, tokenizer, prompter, problems, max_new_tokens)]
    return greedy_scores(task, problems, texts)


def greedy_scores(task: Task, problems: Sequence[Problem], texts: Sequence[str]) -> dict[str, float]:
    """``greedy_metrics`` of given greedy completions (one per problem)."""
    right = [row[0] for row in correctness(task, problems, [[text] for text in texts])]
    metrics = {"accuracy": sum(right) / max(1, len(right))}
    if task.has_verifier:
        metrics["trace_accuracy"] = sum(trace_correctness(task, problems, texts)) / max(1, len(texts))
    return metrics


def heldout_accuracy(model: Any, tokenizer: Any, prompter: Prompter, task: Task, problems: Sequence[Problem],
                     max_new_tokens: int, temperature: float = 0.0, samples: int = 1, seed: int = 0) -> float:
    """Fraction of completions that pass the task's answer check: greedy, or ``samples`` sampled per problem."""
    grouped = complete_problems(model, tokenizer, prompter, problems, max_new_tokens, samples, temperature, seed)
    right = [ok for row in correctness(task, problems, grouped) for ok in row]
    return sum(right) / max(1, len(right))
