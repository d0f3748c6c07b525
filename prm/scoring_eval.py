"""Evaluate a StepRewardModel: step classification and ProcessBench first-error metrics, and Best-of-N reranking.

The numbers come from the pure functions of ``prm/metrics.py``; this module only scores solutions and lines the scores
up with labels. Conventions:
- Steps the model could not score (cut off by its max_length, NaN scores) are left out, with their labels, and counted
  in ``n_dropped_steps``; first errors are then read on the scored prefix. A solution with no scored step is skipped
  (``n_skipped_examples``).
- Outcome-mode models (ORMs) give one score per solution: it is compared with the final step's label, and no
  first-error metrics are reported (an ORM does not locate errors).
- Best-of-N: a sample without steps, or with nothing scored, ranks as if every step scored 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from ..data.loaders import load
from ..data.schema import StepwiseExample
from ..utils.errors import UserError
from .metrics import (
    AGGREGATIONS,
    best_of_n_accuracy,
    first_error_from_labels,
    first_error_index,
    majority_vote_accuracy,
    pass_at_n,
    processbench_metrics,
    scored_prefix,
    step_metrics,
)
from .model import StepRewardModel


def evaluate_steps(
    model: StepRewardModel, examples: list[StepwiseExample], threshold: float = 0.5, batch_size: int = 64
) -> dict:
    """Step acc/precision/recall/F1 against the labels, and (process mode) ProcessBench first-error metrics
    prefixed ``first_error_`` (``first_error_f1`` is ProcessBench's F1 of the two subset accuracies)."""
    for index, example in enumerate(examples):
        example.validate(f"example {index}")
    scores = model.score_steps([e.prompt for e in examples], [e.completions for e in examples], batch_size)
    kept_scores, kept_labels, dropped = [], [], 0
    for example, solution_scores in zip(examples, scores):
        labels = example.labels if model.mode == "process" else example.labels[-1:]
        prefix_scores, prefix_labels = scored_prefix(solution_scores, labels)
        dropped += len(labels) - len(prefix_scores)
        if prefix_scores:
            kept_scores.append(prefix_scores)
            kept_labels.append(prefix_labels)
    if not kept_scores:
        raise UserError(f"prm evaluation: none of {len(examples)} solutions has a step within max_length {model.max_length}")
    metrics = step_metrics(kept_scores, kept_labels, threshold)
    if model.mode == "process":
        predicted = [first_error_index(s, threshold) for s in kept_scores]
        actual = [first_error_from_labels(labels) for labels in kept_labels]
        metrics.update({f"first_error_{k}": v for k, v in processbench_metrics(predicted, actual).items()})
    metrics.update({"n_examples": len(kept_scores), "n_skipped_examples": len(examples) - len(kept_scores),
                    "n_dropped_steps": dropped})
    return metrics


def _scorable(steps: list[str]) -> bool:
    return bool(steps) and all(isinstance(step, str) and step.strip() for step in steps)


def group_scores(
    model: StepRewardModel, prompts: list[str], groups_of_solutions: list[list[list[str]]], batch_size: int = 64
) -> list[list[list[float]]]:
    """Step scores of every sample of every problem in one batched pass, NaNs dropped, unscorable samples -> [0.0]."""
    if len(prompts) != len(groups_of_solutions):
        raise ValueError(f"{len(prompts)} prompts for {len(groups_of_solutions)} groups of solutions")
    flat = [(p, k) for p, group in enumerate(groups_of_solutions) for k, steps in enumerate(group) if _scorable(steps)]
    scores = model.score_steps([prompts[p] for p, _ in flat], [groups_of_solutions[p][k] for p, k in flat], batch_size)
    grouped = [[[0.0] for _ in group] for group in groups_of_solutions]
    for (p, k), solution_scores in zip(flat, scores):
        finite = [score for score in solution_scores if not math.isnan(score)]
        grouped[p][k] = finite or [0.0]
    return grouped


def best_of_n(
    model: StepRewardModel,
    prompts: list[str],
    groups_of_solutions: list[list[list[str]]],
    correct: list[list[bool]],
    answers: list[list[str | None]],
    batch_size: int = 64,
) -> dict:
    """Best-of-N accuracy for each aggregation (``bon_min``, ``bon_product``, ``bon_last``, ``bon_mean``) beside
    majority vote (``maj``) and ``pass`` (any sample right) over the same samples; ``n`` = largest group size."""
    grouped = group_scores(model, prompts, groups_of_solutions, batch_size)
    result = {f"bon_{name}": best_of_n_accuracy(grouped, correct, name) for name in AGGREGATIONS}
    result.update({
        "maj": majority_vote_accuracy(answers, correct),
        "pass": pass_at_n(correct),
        "n": max(len(group) for group in groups_of_solutions),
        "num_problems": len(prompts),
    })
    return result


def apply_prompt(examples: list[StepwiseExample], prompt_of: Callable[[str], str]) -> list[StepwiseExample]:
    """Copies whose prompt is ``prompt_of(stored problem text)`` (e.g. a ``data.prompts.Prompter``)."""
    return [StepwiseExample(prompt_of(e.prompt), e.completions, e.labels, e.meta) for e in examples]


def evaluate_file(
    model: StepRewardModel,
    path: str | Path,
    format: str = "processbench",
    split: str = "train",
    prompt_of: Callable[[str], str] | None = None,
    threshold: float = 0.5,
    batch_size: int = 64,
    skip_bad: bool = False,
) -> dict:
    """``evaluate_steps`` on a labelled file (ProcessBench, TRL stepwise, Math-Shepherd, PRM800K) read by
    ``data.loaders.load``; the stored problem text goes through ``prompt_of`` first, as the policy saw it (None: the
    stored text is the prompt, as in prmloop's own stepwise files)."""
    items, n_rows_skipped = load(format, path, split, skip_bad=skip_bad)
    if any(not isinstance(item, StepwiseExample) for item in items):
        raise UserError(f"{path}: format {format!r} holds problems without step labels; nothing to evaluate a PRM on")
    if not items:
        raise UserError(f"{path}: no labelled solutions to evaluate")
    metrics = evaluate_steps(model, items if prompt_of is None else apply_prompt(items, prompt_of), threshold, batch_size)
    metrics["n_rows_skipped"] = n_rows_skipped
    return metrics
