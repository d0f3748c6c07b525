"""Tests for loop/round_eval.py's pure part: PRM metrics on labelled samples, worked out by hand."""

import math

from prmloop.loop.round_eval import prm_sample_metrics


def test_prm_sample_metrics_hand_computed():
    # Two problems x two samples.
    # s0: scores [0.9, 0.8], labels [T, T], correct      -> predicted first error -1, label -1 (correct, hit)
    # s1: scores [0.9, 0.2], labels [T, F], wrong        -> predicted 1, label 1 (erroneous, hit)
    # s2: scores [0.3, 0.9], labels [T, T], correct      -> predicted 0, label -1 (correct, miss)
    # s3: scores [0.7, 0.6], labels [F, F], wrong        -> predicted -1, label 0 (erroneous, miss)
    scores = [[0.9, 0.8], [0.9, 0.2], [0.3, 0.9], [0.7, 0.6]]
    labels = [[True, True], [True, False], [True, True], [False, False]]
    correct = [True, False, True, False]
    m = prm_sample_metrics(scores, labels, correct, group_size=2)
    # acc on erroneous 1/2, acc on correct 1/2 -> F1 = 0.5
    assert math.isclose(m["prm_first_error_f1"], 0.5)
    # erroneous s1 (caught), s3 (missed) -> missed-error rate 1/2; correct s0 (quiet), s2 (alarm) -> false alarms 1/2
    assert m["prm_missed_error_rate"] == 0.5 and m["prm_false_alarm_rate"] == 0.5
    # min scores 0.8, 0.2, 0.3, 0.6 -> mean 0.475; true accuracy 2/4 -> gap -0.025
    assert math.isclose(m["prm_score_mean"], 0.475)
    assert math.isclose(m["reward_hacking_gap"], -0.025)
    # BoN by min: problem 0 picks s0 (0.8 > 0.2, correct), problem 1 picks s3 (0.6 > 0.3, wrong) -> 0.5
    assert math.isclose(m["prm_bon_min"], 0.5)


def test_nan_scores_and_empty_solutions_are_left_out():
    scores = [[0.9], [math.nan], [], [0.1]]
    labels = [[True], [True], [], [False]]
    correct = [True, True, False, False]
    m = prm_sample_metrics(scores, labels, correct, group_size=2)
    # usable: s0 (correct, predicted none -> hit) and s3 (erroneous at 0, predicted 0 -> hit) -> F1 1.0
    assert m["prm_first_error_f1"] == 1.0
    assert math.isclose(m["sample_accuracy"], 0.5)
    assert math.isnan(m["prm_bon_min"])  # no problem has all of its samples usable


def test_trace_accuracy_does_not_count_right_answers_reached_through_wrong_steps():
    from prmloop.data.config import DataConfig
    from prmloop.data.schema import Problem
    from prmloop.data.tasks import get_task
    from prmloop.policy.accuracy import greedy_scores, trace_correctness

    task = get_task(DataConfig())
    # 47 + 8 - 8 = 47: the true chain is 55, 47
    problem = Problem("p", "47 + 8 - 8 = ? (left to right)", "47", ("47 + 8 = 55", "55 - 8 = 47", "Answer: 47"))
    right = "47 + 8 = 55\n55 - 8 = 47\nAnswer: 47"
    cancelled = "47 + 8 = 45\n45 - 8 = 47\nAnswer: 47"  # a forgotten carry (-10), then a forgotten borrow (+10)
    wrong = "47 + 8 = 55\n55 - 8 = 37\nAnswer: 37"
    texts = [right, cancelled, wrong]
    assert [task.is_correct(t, "47") for t in texts] == [True, True, False]
    assert trace_correctness(task, [problem] * 3, texts) == [True, False, False]
    scores = greedy_scores(task, [problem] * 3, texts)
    assert math.isclose(scores["accuracy"], 2 / 3) and math.isclose(scores["trace_accuracy"], 1 / 3)


def test_trace_gap_counts_right_answers_through_wrong_steps_as_wrong():
    # s0: right answer through a wrong second step (two slips that cancel); s1: right answer, right steps
    scores = [[0.9, 0.8], [0.4, 0.5]]
    labels = [[True, False], [True, True]]
    m = prm_sample_metrics(scores, labels, [True, True], group_size=2)
    # min scores 0.8, 0.4 -> mean 0.6; by the answer 2/2 right -> gap -0.4; by answer and steps 1/2 -> gap +0.1
    assert math.isclose(m["sample_accuracy"], 1.0) and math.isclose(m["reward_hacking_gap"], -0.4)
    assert math.isclose(m["sample_trace_accuracy"], 0.5) and math.isclose(m["reward_hacking_gap_trace"], 0.1)


def test_no_trace_gap_when_only_some_samples_are_labelled():
    # Monte Carlo labels cover a subset of the samples: the trace accuracy of all of them is unknown
    m = prm_sample_metrics([[0.9], [0.2]], [[True], None], [True, False], group_size=2)
    assert "sample_trace_accuracy" not in m and "reward_hacking_gap_trace" not in m
    assert math.isclose(m["reward_hacking_gap"], (0.9 + 0.2) / 2 - 0.5)
