"""The loop's per-round evaluation: held-out greedy accuracy, maj@k, PRM first-error F1 and the reward-hacking gap.

One sampling pass serves several metrics: k samples per held-out problem (temperature 1) give maj@k and pass@k, and
the same samples, labelled by the exact step verifier (embedded task), measure the current PRM on the current
policy's fresh outputs: ProcessBench first-error F1, Best-of-k with min aggregation, and the reward-hacking gap =
mean PRM solution score (min over steps, PURE's aggregation) minus the true accuracy of those samples. A gap that
grows over rounds means the policy is learning to please the PRM rather than to be right.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from prmloop.data.arith import parse_question
from prmloop.data.schema import Problem
from prmloop.data.verifier import final_answer, split_solution, verify, verify_steps
from prmloop.policy.config import PolicyConfig
from prmloop.policy.sampling import generate_texts
from prmloop.prm.metrics import (
    aggregate_min,
    best_of_n_accuracy,
    first_error_from_labels,
    first_error_index,
    majority_vote_accuracy,
    pass_at_n,
    processbench_metrics,
)


def greedy_accuracy(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, problems: Sequence[Problem], policy_cfg: PolicyConfig
) -> tuple[float, list[str]]:
    """Fraction of problems answered right with greedy decoding, and the completions."""
    prompts = [policy_cfg.prompt_template.format(question=p.question) for p in problems]
    completions = generate_texts(model, tokenizer, prompts, policy_cfg.max_new_tokens)
    correct = [verify(parse_question(p.question), text).final_correct for p, text in zip(problems, completions)]
    return sum(correct) / max(1, len(problems)), completions


def sample_solutions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Problem],
    policy_cfg: PolicyConfig,
    k: int,
    seed: int,
) -> list[list[str]]:
    """k completions per problem at temperature 1 (seeded), grouped by problem."""
    prompts = [policy_cfg.prompt_template.format(question=p.question) for p in problems for _ in range(k)]
    torch.manual_seed(seed)
    texts = generate_texts(model, tokenizer, prompts, policy_cfg.max_new_tokens, temperature=1.0)
    return [texts[i * k : (i + 1) * k] for i in range(len(problems))]


def prm_sample_metrics(
    scores: list[list[float]], labels: list[list[bool]], correct: list[bool], group_size: int
) -> dict[str, float]:
    """PRM quality on labelled samples (pure): first-error F1, BoN-k (min), mean solution score and hacking gap.

    ``scores``/``labels`` are per solution (solutions of one problem adjacent, ``group_size`` each); a solution with no
    steps or a NaN score (did not fit the PRM) is left out of the PRM metrics.
    """
    usable = [i for i, s in enumerate(scores) if s and labels[i] and not any(math.isnan(x) for x in s)]
    predicted = [first_error_index(scores[i]) for i in usable]
    truth = [first_error_from_labels(labels[i]) for i in usable]
    bench = processbench_metrics(predicted, truth) if usable else {"f1": math.nan}
    solution_scores = [aggregate_min(scores[i]) for i in usable]
    mean_score = sum(solution_scores) / len(solution_scores) if solution_scores else math.nan
    accuracy = sum(correct[i] for i in usable) / len(usable) if usable else math.nan
    groups = [list(range(start, start + group_size)) for start in range(0, len(scores), group_size)]
    complete = [g for g in groups if all(i in set(usable) for i in g)]
    bon = (
        best_of_n_accuracy([[scores[i] for i in g] for g in complete], [[correct[i] for i in g] for g in complete], "min")
        if complete
        else math.nan
    )
    return {
        "prm_first_error_f1": bench["f1"],
        "prm_bon_min": bon,
        "prm_score_mean": mean_score,
        "sample_accuracy": accuracy,
        "reward_hacking_gap": mean_score - accuracy,
    }


def evaluate_round(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    scorer,
    problems: Sequence[Problem],
    policy_cfg: PolicyConfig,
    k: int,
    seed: int,
) -> tuple[dict[str, float], list[dict]]:
    """All round metrics (see the module docstring) and a few completion rows for the tracker's table.

    ``scorer`` is anything with ``score_steps(prompts, solutions)`` (a process-mode PRM) or None to skip PRM metrics.
    """
    accuracy, greedy = greedy_accuracy(model, tokenizer, problems, policy_cfg)
    grouped = sample_solutions(model, tokenizer, problems, policy_cfg, k, seed)
    parsed = [parse_question(p.question) for p in problems]
    answers = [[final_answer(text) for text in texts] for texts in grouped]
    correct = [[a is not None and int(a) == pq.answer for a in row] for row, pq in zip(answers, parsed)]
    metrics = {
        "accuracy": accuracy,
        f"maj_at_{k}": majority_vote_accuracy(answers, correct),
        f"pass_at_{k}": pass_at_n(correct),
        "num_problems": float(len(problems)),
    }
    flat_steps = [split_solution(text) for texts in grouped for text in texts]
    flat_correct = [ok for row in correct for ok in row]
    if scorer is not None:
        prompts = [policy_cfg.prompt_template.format(question=p.question) for p in problems for _ in range(k)]
        flat_labels = [verify_steps(parsed[i // k], steps) for i, steps in enumerate(flat_steps)]
        nonempty = [i for i, steps in enumerate(flat_steps) if steps]
        scored = scorer.score_steps([prompts[i] for i in nonempty], [flat_steps[i] for i in nonempty]) if nonempty else []
        scores: list[list[float]] = [[] for _ in flat_steps]
        for i, step_scores in zip(nonempty, scored):
            scores[i] = list(step_scores)
        metrics.update(prm_sample_metrics(scores, flat_labels, flat_correct, k))
    table = [
        {"prompt": p.question, "completion": text, "correct": verify(pq, text).final_correct}
        for p, pq, text in list(zip(problems, parsed, greedy))[:8]
    ]
    return metrics, table
