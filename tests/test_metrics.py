"""Tests for prm/metrics.py: hand-computed step, ProcessBench and best-of-N numbers, plus a perfect-scorer property."""

import math
import random

import pytest

from prmloop.prm.metrics import (
    AGGREGATIONS,
    best_of_n_accuracy,
    first_error_from_labels,
    first_error_index,
    get_aggregation,
    majority_vote_accuracy,
    pass_at_n,
    processbench_metrics,
    step_metrics,
)


def test_step_metrics_hand_case():
    scores = [[0.9, 0.2, 0.6], [0.4, 0.1]]
    labels = [[True, False, False], [0.7, 0.3]]
    # predicted error (score < 0.5): [F, T, F], [T, T]
    # label error (False or soft < 0.5): [F, T, T], [F, T]
    # positive = error: TP = steps 2, 5 -> 2; FP = step 4 -> 1; FN = step 3 -> 1; TN = step 1 -> 1
    metrics = step_metrics(scores, labels)
    assert metrics["step_acc"] == pytest.approx(3 / 5)  # TP + TN = 3 of 5
    assert metrics["step_precision_error"] == pytest.approx(2 / 3)  # 2 / (2 + 1)
    assert metrics["step_recall_error"] == pytest.approx(2 / 3)  # 2 / (2 + 1)
    assert metrics["step_f1_error"] == pytest.approx(2 / 3)  # 2*2 / (2*2 + 1 + 1) = 4/6
    # positive = correct: TP = 1 (step 1), FP = 1 (step 3), FN = 1 (step 4) -> 2 / (2 + 1 + 1)
    assert metrics["step_f1_correct"] == pytest.approx(0.5)
    assert (metrics["num_steps"], metrics["num_error_steps"], metrics["num_predicted_error_steps"]) == (5, 3, 3)


def test_step_metrics_thresholds_are_inclusive_for_correct():
    # score 0.5 >= 0.5 -> predicted correct; soft label 0.5 >= 0.5 -> correct: one true negative for "error".
    metrics = step_metrics([[0.5]], [[0.5]])
    assert metrics["step_acc"] == 1.0
    assert metrics["step_f1_correct"] == 1.0


def test_step_metrics_undefined_ratios_are_nan():
    # No error steps in labels or predictions: precision/recall/F1 for "error" are 0/0.
    metrics = step_metrics([[0.9, 0.8]], [[True, 1.0]])
    assert metrics["step_acc"] == 1.0
    assert math.isnan(metrics["step_precision_error"])
    assert math.isnan(metrics["step_recall_error"])
    assert math.isnan(metrics["step_f1_error"])
    # Errors exist but none predicted: precision 0/0 is nan, recall 0/1 = 0, F1 = 0 / (0 + 0 + 1) = 0.
    metrics = step_metrics([[0.9]], [[False]])
    assert math.isnan(metrics["step_precision_error"])
    assert metrics["step_recall_error"] == 0.0
    assert metrics["step_f1_error"] == 0.0


def test_step_metrics_custom_threshold():
    # threshold 0.8: 0.7 is predicted an error, label False -> TP for error; 0.9 correct, label True -> TN.
    metrics = step_metrics([[0.9, 0.7]], [[True, False]], threshold=0.8)
    assert metrics["step_acc"] == 1.0
    assert metrics["step_f1_error"] == 1.0


def test_step_metrics_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="solution 1: 2 scores for 3 labels"):
        step_metrics([[0.1], [0.2, 0.3]], [[True], [True, True, False]])
    with pytest.raises(ValueError, match="2 score lists for 1 label lists"):
        step_metrics([[0.1], [0.2]], [[True]])
    with pytest.raises(ValueError, match="no steps"):
        step_metrics([[]], [[]])


def test_first_error_index():
    assert first_error_index([0.9, 0.5, 0.49, 0.1]) == 2  # 0.5 is not < 0.5; 0.49 is
    assert first_error_index([0.9, 0.6]) == -1
    assert first_error_index([]) == -1
    assert first_error_index([0.9, 0.6], threshold=0.95) == 0


def test_first_error_from_labels():
    assert first_error_from_labels([True, 1.0, 0.5, 0.2, True]) == 3  # 0.5 counts correct, 0.2 does not
    assert first_error_from_labels([True, False]) == 1
    assert first_error_from_labels([True, 0.9]) == -1


def test_processbench_hand_case():
    preds = [2, -1, 1, -1, 0, 3]
    labels = [2, 1, 1, -1, -1, -1]
    # erroneous (label != -1): (2,2) hit, (-1,1) miss, (1,1) hit -> 2/3
    # correct (label == -1): -1 hit, 0 miss, 3 miss -> 1/3
    # f1 = 2 * (2/3) * (1/3) / (2/3 + 1/3) = 4/9
    metrics = processbench_metrics(preds, labels)
    assert metrics["acc_erroneous"] == pytest.approx(2 / 3)
    assert metrics["acc_correct"] == pytest.approx(1 / 3)
    assert metrics["f1"] == pytest.approx(4 / 9)
    assert (metrics["num_erroneous"], metrics["num_correct"]) == (3, 3)
    assert (metrics["num_erroneous_hit"], metrics["num_correct_hit"]) == (2, 1)


def test_processbench_both_zero_and_empty_subset():
    # erroneous: predicted 0 for label 1 -> 0/1; correct: predicted 5 for -1 -> 0/1; f1 = 0 by convention.
    assert processbench_metrics([0, 5], [1, -1])["f1"] == 0.0
    # No erroneous solutions: acc_erroneous and f1 are undefined (nan), acc_correct = 1/2.
    metrics = processbench_metrics([-1, 0], [-1, -1])
    assert math.isnan(metrics["acc_erroneous"])
    assert math.isnan(metrics["f1"])
    assert metrics["acc_correct"] == 0.5


def test_processbench_rejects_bad_inputs():
    with pytest.raises(ValueError, match="2 predictions for 1 labels"):
        processbench_metrics([0, 1], [0])
    with pytest.raises(ValueError, match="solution 1"):
        processbench_metrics([0, -2], [0, 1])


def test_processbench_perfect_scorer_has_f1_one():
    rng = random.Random(0)
    step_labels = [[rng.random() > 0.2 for _ in range(rng.randint(1, 8))] for _ in range(200)]
    step_labels[0], step_labels[1] = [True, True], [True, False]  # both subsets non-empty
    scores = [[1.0 if ok else 0.0 for ok in labels] for labels in step_labels]
    preds = [first_error_index(s) for s in scores]
    metrics = processbench_metrics(preds, [first_error_from_labels(labels) for labels in step_labels])
    assert metrics["f1"] == 1.0
    assert metrics["acc_erroneous"] == metrics["acc_correct"] == 1.0


# One problem, four samples, chosen so each aggregation picks a different one:
#        steps                min   product                 mean              last
# A: [0.9, 0.9, 0.4]          0.4   0.324 (best)            0.7333            0.4
# B: [0.5, 0.5, 0.5]          0.5 (best) 0.125              0.5               0.5
# C: [0.2, 1.0, 1.0, 0.9]     0.2   0.18                    0.775 (best)      0.9
# D: [0.1, 0.1, 0.99]         0.1   0.0099                  0.3967            0.99 (best)
BON_SAMPLES = [[0.9, 0.9, 0.4], [0.5, 0.5, 0.5], [0.2, 1.0, 1.0, 0.9], [0.1, 0.1, 0.99]]


@pytest.mark.parametrize("aggregation, picked", [("min", 1), ("product", 0), ("mean", 2), ("last", 3)])
def test_best_of_n_each_aggregation(aggregation, picked):
    only_picked_correct = [[k == picked for k in range(4)]]
    assert best_of_n_accuracy([BON_SAMPLES], only_picked_correct, aggregation) == 1.0
    all_but_picked_correct = [[k != picked for k in range(4)]]
    assert best_of_n_accuracy([BON_SAMPLES], all_but_picked_correct, aggregation) == 0.0


def test_aggregation_values():
    sample = [0.9, 0.9, 0.4]
    assert AGGREGATIONS["min"](sample) == 0.4
    assert AGGREGATIONS["product"](sample) == pytest.approx(0.324)  # 0.81 * 0.4
    assert AGGREGATIONS["mean"](sample) == pytest.approx(2.2 / 3)
    assert AGGREGATIONS["last"](sample) == 0.4


def test_best_of_n_ties_go_first_and_averages_problems():
    # Problem 0: equal scores, first sample wrong -> miss. Problem 1: second sample scores higher and is right -> hit.
    scores = [[[0.7, 0.7], [0.7, 0.7]], [[0.2], [0.8]]]
    correct = [[False, True], [False, True]]
    assert best_of_n_accuracy(scores, correct, "min") == 0.5


def test_best_of_n_rejects_bad_inputs():
    with pytest.raises(ValueError, match="valid: last, mean, min, product"):
        best_of_n_accuracy([[[0.5]]], [[True]], "max")
    with pytest.raises(ValueError, match="valid: last, mean, min, product"):
        get_aggregation("median")
    with pytest.raises(ValueError, match="problem 1: 1 step-score lists for 2"):
        best_of_n_accuracy([[[0.5]], [[0.5]]], [[True], [True, False]], "min")
    with pytest.raises(ValueError, match="problem 0: sample 1 has no step scores"):
        best_of_n_accuracy([[[0.5], []]], [[True, False]], "min")


def test_majority_vote():
    answers = [
        ["3", "4", "4", None, None, None],  # None never wins; "4" (2 votes) wins, both "4"s wrong -> miss
        ["5", "6", "6", "5"],  # 2-2 tie -> "5" appeared first; sample 0 is right -> hit
        [None, None],  # no answer at all -> miss
        ["7", "8", "8"],  # "8" wins; sample 1 carries "8" and is right -> hit
    ]
    correct = [[True] + [False] * 5, [True, False, False, True], [False, False], [False, True, False]]
    assert majority_vote_accuracy(answers, correct) == 0.5  # 2 of 4


def test_majority_vote_tie_prefers_first_appearance():
    # "6" appears first in a 2-2 tie with "5"; "6" is right, "5" is wrong.
    assert majority_vote_accuracy([["6", "5", "5", "6"]], [[True, False, False, True]]) == 1.0
    with pytest.raises(ValueError, match="problem 0: 2 answer lists for 1"):
        majority_vote_accuracy([["1", "2"]], [[True]])


def test_pass_at_n():
    assert pass_at_n([[False, False], [False, True], [True, True], [False]]) == 0.5  # problems 1 and 2 of 4
    with pytest.raises(ValueError):
        pass_at_n([])
