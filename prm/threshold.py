"""A PRM's decision threshold, tuned on validation data and folded into its head (``prm.tune_threshold``).

The threshold that maximises ProcessBench's first-error F1 on the validation solutions becomes the new 0.5: its logit
is subtracted through the head's 'good' bias, so a saved PRM needs no extra setting.
"""

from __future__ import annotations

import itertools
import math

import torch

from ..data.schema import Label, StepwiseExample
from ..utils.errors import UserError
from .metrics import first_error_from_labels, first_error_index, processbench_metrics, scored_prefix
from .model import StepRewardModel


def threshold_candidates(scores: list[list[float]]) -> list[float]:
    """0.5 and the midpoints between consecutive distinct scores: every threshold that changes a prediction.

    Example: [[0.2, 0.9], [0.4]] -> [0.3, 0.5, 0.65]."""
    values = sorted({score for solution in scores for score in solution})
    return sorted({0.5, *((low + high) / 2 for low, high in itertools.pairwise(values))})


def best_first_error_threshold(scores: list[list[float]], labels: list[list[Label]]) -> tuple[float, float]:
    """(threshold, first-error F1) maximising ProcessBench's first-error F1 of ``scores`` against ``labels``; ties go to
    the threshold nearest 0.5 in logit space (the least change). Scores must be NaN-free (a scored prefix).

    Example: scores [[0.9, 0.4]] (label first error 1) and [[0.45]] (no error): at 0.5 the second is a false alarm
    (F1 0); any t in (0.4, 0.45] gets both right (F1 1); the candidate is the midpoint 0.425."""
    actual = [first_error_from_labels(solution) for solution in labels]
    best = (-math.inf, 0.0, 0.5)
    for threshold in threshold_candidates(scores):
        f1 = processbench_metrics([first_error_index(s, threshold) for s in scores], actual)["f1"]
        f1 = -1.0 if math.isnan(f1) else f1
        key = (f1, -abs(_logit(threshold)))
        if key > best[:2]:
            best = (*key, threshold)
    return best[2], best[0]


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


@torch.no_grad()
def fold_threshold(model: StepRewardModel, threshold: float) -> float:
    """Shift the logit by −logit(threshold) (through the head's 'good' bias): σ(z) >= t iff σ(z − logit t) >= 0.5;
    returns the shift."""
    if model.head.bias is None:
        raise UserError("prm.tune_threshold: this PRM's head has no bias to fold a threshold into")
    shift = -_logit(threshold)
    model.head.bias[model.positive_index if model.head.out_features == 2 else 0] += shift
    return shift


def tune_threshold(model: StepRewardModel, examples: list[StepwiseExample], batch_size: int) -> dict:
    """Pick the first-error-F1-best threshold on ``examples`` and fold it into ``model``'s bias."""
    scores = model.score_steps([e.prompt for e in examples], [e.completions for e in examples], batch_size)
    pairs = [scored_prefix(s, e.labels) for s, e in zip(scores, examples)]
    pairs = [(s, lab) for s, lab in pairs if s]
    threshold, f1 = best_first_error_threshold([s for s, _ in pairs], [lab for _, lab in pairs])
    return {"tuned_threshold": threshold, "tuned_val_first_error_f1": f1, "bias_shift": fold_threshold(model, threshold)}
