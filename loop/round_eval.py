"""The loop's per-round evaluation: held-out greedy accuracy, maj@k, pass@k, PRM quality and the reward-hacking gap.

One sampling pass serves several metrics: k samples per held-out problem (temperature 1) give maj@k and pass@k (the
task's answer check), and the same samples measure the current PRM on the current policy's fresh outputs:
- step labels come from the task's exact verifier where it has one (the embedded task), else from Monte Carlo
  rollouts of the current policy (Math-Shepherd hard estimate, the task's answer check) on the first
  ``mc_solutions`` samples; then ProcessBench first-error F1 against those labels;
- of the labelled samples, the PRM's missed-error rate (a wrong step somewhere, every step scored right: what a
  policy can exploit) and false-alarm rate (every step right, some step scored wrong);
- Best-of-k with min aggregation, and the reward-hacking gap = mean PRM solution score (min over steps, PURE's
  aggregation) minus the true accuracy of the same samples, need only the answer check, so they use every sample.
- Where every scored sample has step labels (a task with an exact verifier), also the trace accuracy of the samples
  (answer right and no step labelled wrong) and the gap against it, which is what a PRM's score should track: on
  the answer alone, a policy that fixes two slips that cancelled would look like one gaming its PRM.
A gap that grows over rounds means the policy is learning to please the PRM rather than to be right.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from ..data.answers import normalize_answer
from ..data.prompts import Prompter
from ..data.schema import Problem
from ..data.tasks import Task
from ..policy.accuracy import complete_problems, correctness, greedy_scores
from ..policy.rollout import PolicySampler
from ..prm.label import label_exhaustive
from ..prm.metrics import (
    aggregate_min,
    best_of_n_accuracy,
    first_error_from_labels,
    first_error_index,
    majority_vote_accuracy,
    pass_at_n,
    processbench_metrics,
)
from .curriculum import difficulty
from .stages import format_prefix_for


@dataclass
class EvalSetup:
    """What a round's evaluation reads: the task, the prompts, the held-out problems and the sample budget."""

    task: Task
    prompter: Prompter
    problems: list[Problem]
    max_new_tokens: int
    k: int
    """Samples per problem (temperature 1) for maj@k, pass@k and the PRM metrics."""
    mc_rollouts: int = 8
    """Without a step verifier: completions per step prefix for the Monte Carlo labels."""
    mc_solutions: int = 32
    """Without a step verifier: how many of the samples get Monte Carlo labels (0 = no first-error F1)."""


def prm_sample_metrics(scores: list[list[float]], labels: list[list[bool] | None], correct: list[bool],
                       group_size: int) -> dict[str, float]:
    """PRM quality on samples (pure): first-error F1 (labelled samples), BoN-k (min), mean score and hacking gap.

    ``scores``/``labels``/``correct`` are per solution (solutions of one problem adjacent, ``group_size`` each); a
    solution with no steps or a NaN score (did not fit the PRM) is left out; ``labels[i]`` None = not labelled.
    """
    scored = [i for i, s in enumerate(scores) if s and not any(math.isnan(x) for x in s)]
    labelled = [i for i in scored if labels[i]]
    predicted = [first_error_index(scores[i]) for i in labelled]
    truth = [first_error_from_labels(labels[i]) for i in labelled]
    f1 = processbench_metrics(predicted, truth)["f1"] if labelled else math.nan
    flawed = [p for p, t in zip(predicted, truth) if t != -1]  # the PRM's predictions on samples with a wrong step
    sound = [p for p, t in zip(predicted, truth) if t == -1]
    solution_scores = [aggregate_min(scores[i]) for i in scored]
    mean_score = sum(solution_scores) / len(solution_scores) if solution_scores else math.nan
    accuracy = sum(correct[i] for i in scored) / len(scored) if scored else math.nan
    usable = set(scored)
    groups = [list(range(start, start + group_size)) for start in range(0, len(scores), group_size)]
    complete = [g for g in groups if all(i in usable for i in g)]
    bon = (
        best_of_n_accuracy([[scores[i] for i in g] for g in complete], [[correct[i] for i in g] for g in complete], "min")
        if complete
        else math.nan
    )
    metrics = {
        "prm_first_error_f1": f1,
        "prm_labelled_samples": float(len(labelled)),
        "prm_missed_error_rate": sum(p == -1 for p in flawed) / len(flawed) if flawed else math.nan,
        "prm_false_alarm_rate": sum(p != -1 for p in sound) / len(sound) if sound else math.nan,
        "prm_bon_min": bon,
        "prm_score_mean": mean_score,
        "sample_accuracy": accuracy,
        "reward_hacking_gap": mean_score - accuracy,
    }
    if scored and len(labelled) == len(scored):  # every scored sample labelled: the exact verifier, not MC's subset
        trace = sum(correct[i] and all(labels[i]) for i in scored) / len(scored)
        metrics.update(sample_trace_accuracy=trace, reward_hacking_gap_trace=mean_score - trace)
    return metrics


def _step_labels(model, tokenizer, setup: EvalSetup, problems: list[Problem], steps: list[list[str]],
                 seed: int) -> list[list[bool] | None]:
    """Exact labels for every sample with steps, or hard MC labels for the first ``mc_solutions`` of them."""
    task = setup.task
    if task.has_verifier:
        return [task.verify_steps(p, s) if s else None for p, s in zip(problems, steps)]
    chosen = [i for i, s in enumerate(steps) if s]
    chosen = sorted(random.Random(seed).sample(chosen, min(setup.mc_solutions, len(chosen))))
    labels: list[list[bool] | None] = [None] * len(steps)
    if not chosen:
        return labels
    sampler = PolicySampler(model, tokenizer, setup.max_new_tokens, temperature=1.0, seed=seed)
    estimates, _ = label_exhaustive([(problems[i].question, problems[i].answer) for i in chosen],
                                    [steps[i] for i in chosen], sampler, setup.mc_rollouts,
                                    format_prefix_for(setup.prompter, task), task.is_correct, "hard")
    for i, row in zip(chosen, estimates):
        labels[i] = [value >= 0.5 for value in row]
    return labels


def evaluate_round(model, tokenizer, scorer, setup: EvalSetup, seed: int,
                   band: set[int] | None = None) -> tuple[dict[str, float], list[dict]]:
    """All round metrics (see the module docstring) and a few completion rows for the tracker's table.

    ``scorer`` is anything with ``score_steps(prompts, solutions)`` (a process-mode PRM) or None to skip PRM metrics.
    ``band`` (a curriculum round's difficulty levels, loop/curriculum.py): the greedy and PRM metrics are also
    computed on the held-out problems of that band alone, as ``band_*`` (the PRM on the solutions it judged this round).
    """
    task, problems, k = setup.task, setup.problems, setup.k
    greedy = [texts[0] for texts in complete_problems(model, tokenizer, setup.prompter, problems, setup.max_new_tokens)]
    grouped = complete_problems(model, tokenizer, setup.prompter, problems, setup.max_new_tokens, k, 1.0, seed)
    correct = correctness(task, problems, grouped)
    answers = [[_vote_key(task.final_answer(text)) for text in texts] for texts in grouped]
    metrics = {
        **greedy_scores(task, problems, greedy),
        f"maj_at_{k}": majority_vote_accuracy(answers, correct),
        f"pass_at_{k}": pass_at_n(correct),
        "num_problems": float(len(problems)),
    }
    in_band = [i for i, p in enumerate(problems) if band is not None and difficulty(p) in band]
    if in_band:
        band_scores = greedy_scores(task, [problems[i] for i in in_band], [greedy[i] for i in in_band])
        metrics.update({f"band_{key}": value for key, value in band_scores.items()})
        metrics["band_num_problems"] = float(len(in_band))
    if scorer is not None:
        flat_problems = [p for p in problems for _ in range(k)]
        flat_steps = [task.split(text) for texts in grouped for text in texts]
        prompts = [prompt for prompt in map(setup.prompter, (p.question for p in problems)) for _ in range(k)]
        nonempty = [i for i, steps in enumerate(flat_steps) if steps]
        scored = scorer.score_steps([prompts[i] for i in nonempty], [flat_steps[i] for i in nonempty]) if nonempty else []
        scores: list[list[float]] = [[] for _ in flat_steps]
        for i, step_scores in zip(nonempty, scored):
            scores[i] = list(step_scores)
        labels = _step_labels(model, tokenizer, setup, flat_problems, flat_steps, seed + 1)
        flat_correct = [ok for row in correct for ok in row]
        metrics.update(prm_sample_metrics(scores, labels, flat_correct, k))
        if in_band:  # every sample of each band problem, so the groups of k stay whole
            rows = [i * k + j for i in in_band for j in range(k)]
            band_metrics = prm_sample_metrics([scores[r] for r in rows], [labels[r] for r in rows],
                                              [flat_correct[r] for r in rows], k)
            metrics.update({f"band_{key}": value for key, value in band_metrics.items()})
    table = [{"prompt": p.question, "completion": text, "correct": task.is_correct(text, p.answer)}
             for p, text in list(zip(problems, greedy))[:8]]  # greedy_scores judged them all; the table shows 8
    return metrics, table


def _vote_key(answer: str | None) -> str | None:
    """The form answers are voted in (``data.answers.normalize_answer``), so '45' and '45.0 ' share a vote."""
    return None if answer is None else normalize_answer(answer)
