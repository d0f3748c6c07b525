"""PRM evaluation metrics as pure functions of lists and numbers: step classification, ProcessBench, best-of-N.

Conventions (every function here keeps them):
- A step counts as predicted correct iff its score >= ``threshold`` (default 0.5); ``first_error_index`` is the first
  step with score < threshold. Labels are bools or soft floats in [0, 1]; a soft label counts as correct iff it is
  >= 0.5. That thresholding is for evaluation only: soft labels are never rounded in stored data.
- A ratio whose denominator is zero (precision with no predicted positives, an accuracy over an empty subset, an F1
  with nothing to find and nothing predicted) is ``nan``, never a silent 0 or 1; the counts come back beside it so a
  reader can tell why. F1 is computed as 2TP / (2TP + FP + FN), so it is 0 (not nan) when there was something to find
  and nothing was found.
- Mismatched lengths raise ValueError naming the solution or problem index at fault.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

from ..data.schema import Label

LABEL_THRESHOLD = 0.5
"""Soft labels >= this count as 'step is correct' when evaluating (Math-Shepherd soft labels are fractions)."""


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def _label_is_correct(label: Label) -> bool:
    return bool(label) if isinstance(label, bool) else label >= LABEL_THRESHOLD


def _f1(tp: int, fp: int, fn: int) -> float:
    return _ratio(2 * tp, 2 * tp + fp + fn)


def scored_prefix(scores: list[float], labels: list[Label]) -> tuple[list[float], list[Label]]:
    """The leading steps that have a (non-NaN) score, with their labels."""
    kept = next((index for index, score in enumerate(scores) if math.isnan(score)), len(scores))
    return scores[:kept], labels[:kept]


def step_metrics(scores: list[list[float]], labels: list[list[Label]], threshold: float = 0.5) -> dict[str, float]:
    """Step-level classification metrics over all steps of all solutions.

    Two views of the same confusion matrix: positive = "step is correct" (``step_f1_correct``) and positive = "step is
    wrong" (``step_f1_error``, ``step_precision_error``, ``step_recall_error``), the one that matters for catching
    errors. ``step_acc`` is the fraction of steps whose predicted class matches the label. Also returns ``num_steps``,
    ``num_error_steps`` (by label) and ``num_predicted_error_steps``.
    """
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} score lists for {len(labels)} label lists")
    tp_error = fp_error = fn_error = tn_error = 0
    for index, (solution_scores, solution_labels) in enumerate(zip(scores, labels)):
        if len(solution_scores) != len(solution_labels):
            raise ValueError(f"solution {index}: {len(solution_scores)} scores for {len(solution_labels)} labels")
        for score, label in zip(solution_scores, solution_labels):
            predicted_error = score < threshold
            is_error = not _label_is_correct(label)
            tp_error += predicted_error and is_error
            fp_error += predicted_error and not is_error
            fn_error += is_error and not predicted_error
            tn_error += not predicted_error and not is_error
    num_steps = tp_error + fp_error + fn_error + tn_error
    if num_steps == 0:
        raise ValueError("no steps to evaluate")
    return {
        "step_acc": (tp_error + tn_error) / num_steps,
        # Positive = correct: true positives are tn_error, false positives fn_error, false negatives fp_error.
        "step_f1_correct": _f1(tn_error, fn_error, fp_error),
        "step_f1_error": _f1(tp_error, fp_error, fn_error),
        "step_precision_error": _ratio(tp_error, tp_error + fp_error),
        "step_recall_error": _ratio(tp_error, tp_error + fn_error),
        "num_steps": num_steps,
        "num_error_steps": tp_error + fn_error,
        "num_predicted_error_steps": tp_error + fp_error,
    }


def first_error_index(scores: Sequence[float], threshold: float = 0.5) -> int:
    """Index of the first step with score < threshold (the scorer's predicted first error), or -1 if none."""
    return next((index for index, score in enumerate(scores) if score < threshold), -1)


def first_error_from_labels(labels: Sequence[Label]) -> int:
    """Index of the first step labelled wrong (False, or soft label < 0.5), or -1 if every step is correct."""
    return next((index for index, label in enumerate(labels) if not _label_is_correct(label)), -1)


def processbench_metrics(pred_first_errors: list[int], label_first_errors: list[int]) -> dict[str, float]:
    """ProcessBench (arXiv 2412.06559): first-error identification accuracy on two subsets and their harmonic mean.

    ``acc_erroneous``: over solutions whose label first error is not -1, the fraction predicted at exactly that step.
    ``acc_correct``: over solutions with label -1 (no wrong step), the fraction predicted -1.
    ``f1`` = 2·a·b / (a + b); 0 if both are 0. If a subset is empty its accuracy is nan and so is ``f1``: a harmonic
    mean of one number would read as a score the benchmark did not measure. Counts: ``num_erroneous``,
    ``num_correct``, ``num_erroneous_hit``, ``num_correct_hit``.
    """
    if len(pred_first_errors) != len(label_first_errors):
        raise ValueError(f"{len(pred_first_errors)} predictions for {len(label_first_errors)} labels")
    for index, (predicted, label) in enumerate(zip(pred_first_errors, label_first_errors)):
        if predicted < -1 or label < -1:
            raise ValueError(f"solution {index}: first-error indices must be >= -1, got {predicted} and {label}")
    erroneous = [(p, lab) for p, lab in zip(pred_first_errors, label_first_errors) if lab != -1]
    correct = [p for p, lab in zip(pred_first_errors, label_first_errors) if lab == -1]
    erroneous_hit = sum(p == lab for p, lab in erroneous)
    correct_hit = sum(p == -1 for p in correct)
    acc_erroneous = _ratio(erroneous_hit, len(erroneous))
    acc_correct = _ratio(correct_hit, len(correct))
    if math.isnan(acc_erroneous) or math.isnan(acc_correct):
        f1 = math.nan
    elif acc_erroneous + acc_correct == 0:
        f1 = 0.0
    else:
        f1 = 2 * acc_erroneous * acc_correct / (acc_erroneous + acc_correct)
    return {
        "acc_erroneous": acc_erroneous,
        "acc_correct": acc_correct,
        "f1": f1,
        "num_erroneous": len(erroneous),
        "num_correct": len(correct),
        "num_erroneous_hit": erroneous_hit,
        "num_correct_hit": correct_hit,
    }


# Best-of-N aggregations: one solution's step scores -> one number (Math-Shepherd §3.4 ranks by min; Lightman et al. 2023 by product).
def aggregate_min(step_scores: Sequence[float]) -> float:
    """The weakest step: a solution is as good as its worst step."""
    return min(step_scores)


def aggregate_product(step_scores: Sequence[float]) -> float:
    """Probability every step is correct, treating step scores as independent."""
    return math.prod(step_scores)


def aggregate_last(step_scores: Sequence[float]) -> float:
    """The final step's score, used like an outcome reward."""
    return step_scores[-1]


def aggregate_mean(step_scores: Sequence[float]) -> float:
    """Average step score."""
    return sum(step_scores) / len(step_scores)


AGGREGATIONS: dict[str, Callable[[Sequence[float]], float]] = {
    "min": aggregate_min,
    "product": aggregate_product,
    "last": aggregate_last,
    "mean": aggregate_mean,
}


def get_aggregation(name: str) -> Callable[[Sequence[float]], float]:
    """The aggregation called ``name``; ValueError listing the valid names otherwise."""
    if name not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation '{name}'; valid: {', '.join(sorted(AGGREGATIONS))}")
    return AGGREGATIONS[name]


def _check_problem_lengths(name: str, per_problem: Sequence[Sequence], correct_per_problem: list[list[bool]]) -> None:
    if len(per_problem) != len(correct_per_problem):
        raise ValueError(f"{len(per_problem)} problems of {name} for {len(correct_per_problem)} of correctness")
    if not per_problem:
        raise ValueError("no problems to evaluate")
    for index, (samples, correct) in enumerate(zip(per_problem, correct_per_problem)):
        if len(samples) != len(correct):
            raise ValueError(f"problem {index}: {len(samples)} {name} for {len(correct)} correctness flags")
        if not samples:
            raise ValueError(f"problem {index}: no samples")


def best_of_n_accuracy(
    step_scores_per_problem: list[list[list[float]]], correct_per_problem: list[list[bool]], aggregation: str
) -> float:
    """Fraction of problems where the sample with the highest aggregated score is correct (ties -> first sample)."""
    aggregate = get_aggregation(aggregation)
    _check_problem_lengths("step-score lists", step_scores_per_problem, correct_per_problem)
    hits = 0
    for index, (samples, correct) in enumerate(zip(step_scores_per_problem, correct_per_problem)):
        empty = next((k for k, steps in enumerate(samples) if not steps), None)
        if empty is not None:
            raise ValueError(f"problem {index}: sample {empty} has no step scores")
        values = [aggregate(steps) for steps in samples]
        best = values.index(max(values))  # list.index returns the first maximum: ties go to the earliest sample
        hits += bool(correct[best])
    return hits / len(step_scores_per_problem)


def majority_vote_accuracy(answers_per_problem: list[list[str | None]], correct_per_problem: list[list[bool]]) -> float:
    """Self-consistency: fraction of problems whose most common answer is a correct one.

    Answers compare as exact strings (the caller normalises them). None (no answer extracted) never wins; a problem
    with only None answers counts as wrong. Ties go to the answer that appears first. The problem is correct if any
    sample carrying the winning answer is marked correct.
    """
    _check_problem_lengths("answer lists", answers_per_problem, correct_per_problem)
    hits = 0
    for answers, correct in zip(answers_per_problem, correct_per_problem):
        votes = Counter(answer for answer in answers if answer is not None)
        if not votes:
            continue
        # A Counter iterates in first-appearance order and max() keeps the first maximum: ties go to the earliest.
        winner = max(votes, key=votes.__getitem__)
        hits += any(ok for answer, ok in zip(answers, correct) if answer == winner)
    return hits / len(answers_per_problem)


def pass_at_n(correct_per_problem: list[list[bool]]) -> float:
    """Fraction of problems with at least one correct sample (the ceiling for any reranker over these samples)."""
    if not correct_per_problem:
        raise ValueError("no problems to evaluate")
    return sum(any(correct) for correct in correct_per_problem) / len(correct_per_problem)


def weighted_vote(answers: Sequence[str | None], values: Sequence[float]) -> str | None:
    """Weighted Best-of-N's pick (search-and-learn, after Li et al. 2023): the answer whose samples' scores sum
    highest. None (no answer extracted) never wins; ties go to the answer that appears first; None if no answer."""
    if len(answers) != len(values):
        raise ValueError(f"{len(answers)} answers for {len(values)} scores")
    totals: dict[str, float] = {}
    for answer, value in zip(answers, values):
        if answer is not None:
            totals[answer] = totals.get(answer, 0.0) + value
    # A dict iterates in first-appearance order and max() keeps the first maximum: ties go to the earliest answer.
    return max(totals, key=totals.__getitem__) if totals else None


def weighted_best_of_n_accuracy(
    step_scores_per_problem: list[list[list[float]]],
    answers_per_problem: list[list[str | None]],
    correct_per_problem: list[list[bool]],
    aggregation: str,
) -> float:
    """Fraction of problems whose ``weighted_vote`` answer (each sample weighted by its aggregated PRM score) is a
    correct one: right if any sample carrying the winning answer is marked correct, as in majority voting."""
    aggregate = get_aggregation(aggregation)
    _check_problem_lengths("step-score lists", step_scores_per_problem, correct_per_problem)
    _check_problem_lengths("answer lists", answers_per_problem, correct_per_problem)
    hits = 0
    for index, (samples, answers, correct) in enumerate(
            zip(step_scores_per_problem, answers_per_problem, correct_per_problem)):
        empty = next((k for k, steps in enumerate(samples) if not steps), None)
        if empty is not None:
            raise ValueError(f"problem {index}: sample {empty} has no step scores")
        winner = weighted_vote(answers, [aggregate(steps) for steps in samples])
        hits += winner is not None and any(ok for answer, ok in zip(answers, correct) if answer == winner)
    return hits / len(step_scores_per_problem)
