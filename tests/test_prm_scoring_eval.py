"""Tests for prm/scoring_eval.py (hand-computed metrics through a fake scorer) and loop/jobs_prm's label and eval jobs."""

import math

import pytest
import torch

from prmloop.data.arith import generate
from prmloop.data.config import DataConfig
from prmloop.data.schema import StepwiseExample
from prmloop.data.task_tokenizer import build_task_tokenizer
from prmloop.loop.config import ExperimentConfig
from prmloop.loop.jobs_prm import eval_prm_job, label_job, load_stepwise
from prmloop.policy.config import PolicyConfig
from prmloop.policy.tiny import init_policy, tiny_random_model
from prmloop.prm.config import PRMConfig
from prmloop.prm.model import StepRewardModel
from prmloop.prm.scoring_eval import best_of_n, evaluate_file, evaluate_steps
from prmloop.utils.errors import UserError
from prmloop.utils.jsonl import write_jsonl
from tests.fixtures_formats import PROCESSBENCH_ROWS

NAN = math.nan


class FakeScorer:
    """Scores each step by looking its text up in ``table``; records the prompts of each call."""

    def __init__(self, table: dict[str, float], mode: str = "process"):
        self.table, self.mode, self.max_length, self.calls = table, mode, 99, []

    def score_steps(self, prompts, solutions, batch_size=64):
        self.calls.append(list(prompts))
        scores = [[self.table[step] for step in steps] for steps in solutions]
        return scores if self.mode == "process" else [s[-1:] for s in scores]


EXAMPLES = [
    StepwiseExample("P\n", ["a1", "a2", "a3"], [True, False, False]),
    StepwiseExample("P\n", ["b1", "b2"], [1.0, 0.75]),
    StepwiseExample("P\n", ["c1", "c2", "c3"], [True, True, False]),
]
TABLE = {"a1": 0.9, "a2": 0.2, "a3": 0.1, "b1": 0.8, "b2": 0.4, "c1": 0.7, "c2": 0.6, "c3": NAN}


def test_evaluate_steps_hand_computed():
    metrics = evaluate_steps(FakeScorer(TABLE), EXAMPLES, threshold=0.5)
    # c3 has no score (cut off): dropped with its label. Steps: a1..a3, b1, b2, c1, c2 = 7.
    # Predicted errors a2, a3, b2; label errors a2, a3 -> TP 2, FP 1 (b2), FN 0, TN 4.
    assert metrics["step_acc"] == pytest.approx(6 / 7)
    assert metrics["step_precision_error"] == pytest.approx(2 / 3) and metrics["step_recall_error"] == 1.0
    assert metrics["step_f1_error"] == pytest.approx(0.8)  # 2·2 / (2·2 + 1 + 0)
    # First errors: A predicted 1 = label 1 (hit); B predicted 1, label -1 (miss); C predicted -1 = label -1 (hit).
    # acc_erroneous 1/1, acc_correct 1/2, f1 = 2·1·0.5 / 1.5 = 0.666667.
    assert metrics["first_error_acc_erroneous"] == 1.0 and metrics["first_error_acc_correct"] == 0.5
    assert metrics["first_error_f1"] == pytest.approx(2 / 3)
    assert (metrics["n_examples"], metrics["n_skipped_examples"], metrics["n_dropped_steps"]) == (3, 0, 1)


def test_evaluate_steps_outcome_mode_uses_the_final_label_only():
    metrics = evaluate_steps(FakeScorer(TABLE, mode="outcome"), EXAMPLES)
    # A: score 0.1 vs label False (right); B: 0.4 vs 0.75 (wrong); C: NaN -> skipped. acc = 1/2, no first errors.
    assert metrics["step_acc"] == 0.5 and metrics["n_skipped_examples"] == 1
    assert not any(key.startswith("first_error") for key in metrics)


def test_best_of_n_hand_computed():
    table = {"p0a": 0.9, "p0b": 0.2, "p1a": 0.6, "p1b": 0.7, "p2a": 0.95, "p2b": 0.3,
             "q1a": 0.5, "q1b": 0.9, "q2a": 0.45, "q2b": 0.99}
    groups = [[["p0a", "p0b"], ["p1a", "p1b"], ["p2a", "p2b"]], [[], ["q1a", "q1b"], ["q2a", "q2b"]]]
    correct = [[False, True, False], [True, False, True]]
    answers = [["5", "7", "5"], ["3", "4", "3"]]
    scorer = FakeScorer(table)
    result = best_of_n(scorer, ["P0\n", "P1\n"], groups, correct, answers)
    # Problem 0: min 0.2 / 0.6 / 0.3, product 0.18 / 0.42 / 0.285, last 0.2 / 0.7 / 0.3, mean 0.55 / 0.65 / 0.625:
    #   every aggregation picks sample 1 (right); majority '5' is wrong.
    # Problem 1: sample 0 has no steps -> [0.0]; min 0 / 0.5 / 0.45 and product 0 / 0.45 / 0.4455 pick sample 1
    #   (wrong); last 0 / 0.9 / 0.99 and mean 0 / 0.7 / 0.72 pick sample 2 (right); majority '3' is right.
    assert result == {"bon_min": 0.5, "bon_product": 0.5, "bon_last": 1.0, "bon_mean": 1.0, "maj": 0.5, "pass": 1.0,
                      "n": 3, "num_problems": 2}
    assert len(scorer.calls) == 1 and len(scorer.calls[0]) == 5  # one batched call, the empty sample not sent


def test_evaluate_file_reads_processbench_with_the_prompt_template(tmp_path):
    path = tmp_path / "pb.jsonl"
    write_jsonl(path, PROCESSBENCH_ROWS)
    steps = [step for row in PROCESSBENCH_ROWS for step in row["steps"]]
    scorer = FakeScorer(dict(zip(steps, [0.9, 0.1, 0.1, 0.9, 0.9])))
    metrics = evaluate_file(scorer, path, "processbench", prompt_of=lambda question: f"Q: {question}\n")
    # Row 0: predicted first error 1 = label 1; row 1: predicted -1 = label -1.
    assert metrics["first_error_f1"] == 1.0 and metrics["step_acc"] == 1.0 and metrics["n_rows_skipped"] == 0
    assert scorer.calls[0] == [f"Q: {row['problem']}\n" for row in PROCESSBENCH_ROWS]
    write_jsonl(tmp_path / "gsm.jsonl", [{"question": "1 + 1?", "answer": "#### 2"}])
    with pytest.raises(UserError, match="holds problems without step labels"):
        evaluate_file(scorer, tmp_path / "gsm.jsonl", "gsm8k")


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    return init_policy(PolicyConfig(hidden_size=32, num_layers=1, num_heads=2), tmp_path_factory.mktemp("policy"), 0)


def small_cfg() -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.policy.max_new_tokens = 24
    cfg.prm = PRMConfig(max_length=96)
    return cfg


@pytest.mark.parametrize("method", ["exact", "exhaustive", "binary"])
def test_label_job_writes_loadable_stepwise_rows(tmp_path, tiny_policy, method):
    problems = generate(DataConfig(), 3, "train")
    write_jsonl(tmp_path / "problems.jsonl", [p.to_row() for p in problems])
    summary = label_job(small_cfg(), str(tiny_policy), str(tmp_path / "problems.jsonl"), str(tmp_path / "l.jsonl"),
                        n=2, method=method, samples_per_problem=2)
    assert summary["n_samples"] == 6 and summary["n_labelled"] + summary["n_skipped_empty"] == 6
    assert summary["n_labelled"] >= 3  # the random policy still writes lines, so most samples have steps
    examples = load_stepwise(tmp_path / "l.jsonl")
    assert len(examples) == summary["n_labelled"]
    for example in examples:
        assert example.prompt.endswith("(left to right)\n") and example.meta["label_method"] == method
        assert len(example.labels) == len(example.completions)
    if method == "exhaustive":  # (K - 1) prefixes of n = 2 completions each
        assert summary["rollouts"] == sum(2 * (len(e.completions) - 1) for e in examples)
    with pytest.raises(UserError, match="--method: 'omega'"):
        label_job(small_cfg(), str(tiny_policy), str(tmp_path / "problems.jsonl"), str(tmp_path / "x.jsonl"), 2, "omega", 1)


def test_eval_job_scores_a_saved_prm_on_a_stepwise_file(tmp_path):
    tokenizer = build_task_tokenizer()
    model = StepRewardModel.from_model(tiny_random_model("llama", tokenizer), tokenizer, "process", 96)
    with torch.no_grad():  # a silent head: every logit is 0
        model.head.bias.zero_()
    model.save_pretrained(tmp_path / "prm")
    rows = [StepwiseExample("1 + 2 = ? (left to right)\n", ["1 + 2 = 3", "Answer: 3"], [True, True]).to_row(),
            StepwiseExample("1 + 2 = ? (left to right)\n", ["1 + 2 = 4", "Answer: 4"], [False, False]).to_row()]
    write_jsonl(tmp_path / "data.jsonl", rows)
    metrics = eval_prm_job(small_cfg(), str(tmp_path / "prm"), str(tmp_path / "data.jsonl"), "trl_stepwise")
    # Silent head: every score is 0.5 >= threshold, so every step is predicted correct: 2 of 4 right.
    assert metrics["step_acc"] == 0.5 and metrics["first_error_acc_correct"] == 1.0
    assert metrics["first_error_acc_erroneous"] == 0.0 and metrics["num_steps"] == 4
    with pytest.raises(UserError, match="nope: no such directory"):
        eval_prm_job(small_cfg(), str(tmp_path / "nope"), str(tmp_path / "data.jsonl"), "trl_stepwise")
