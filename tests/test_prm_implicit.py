"""Tests for prm/implicit_rewards.py (hand-computed), prm/implicit.py and prm/implicit_train.py: the implicit PRM reads
steps like any PRM, learns from outcome labels, saves, loads and is detected by format auto."""

import json
import math
import random

import pytest
import torch

from prmloop.data.schema import StepwiseExample
from prmloop.data.task_tokenizer import build_task_tokenizer
from prmloop.loop.config import ExperimentConfig
from prmloop.loop.jobs_prm import eval_prm_job, train_prm_job
from prmloop.policy.tiny import tiny_random_model
from prmloop.prm.config import PRMConfig
from prmloop.prm.formats import detect_format, init_implicit_model, load_reward_model
from prmloop.prm.implicit import ImplicitPRM
from prmloop.prm.implicit_rewards import outcome_ce_loss, span_sums, step_scores, step_values, token_rewards
from prmloop.prm.implicit_train import outcome_label, train_implicit
from prmloop.utils.errors import UserError
from prmloop.utils.jsonl import write_jsonl

PROMPT = "Q\n"


def toy_rows(n: int, seed: int) -> list[StepwiseExample]:
    """Steps "N ok" are right, "N no" wrong; a solution's outcome (final_answer_correct) is right iff all steps are."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.choice(["ok", "ok", "no"]) for _ in range(rng.randint(1, 3))]
        labels = [all(w == "ok" for w in words[: j + 1]) for j in range(len(words))]
        rows.append(StepwiseExample(PROMPT, [f"{rng.randint(1, 9)} {w}" for w in words], labels,
                                    {"final_answer_correct": all(labels)}))
    return rows


def batch_of(rows: list[StepwiseExample]) -> tuple[list[str], list[list[str]], list[float]]:
    return [r.prompt for r in rows], [r.completions for r in rows], [outcome_label(r) for r in rows]


def flat(rows: list[list[float]]) -> list[float]:
    return [value for row in rows for value in row]


def fresh(beta: float = 0.5, max_length: int = 64) -> ImplicitPRM:
    tokenizer = build_task_tokenizer()
    return ImplicitPRM.from_causal_lm(tiny_random_model("llama", tokenizer, seed=0), tokenizer, beta, max_length)


# ---- the math, by hand


def test_token_rewards_literal():
    # β = 0.5; log-ratios (-1.0 + 1.2, -0.5 + 1.0, -2.0 + 1.0, -0.2 + 0.2) = (0.2, 0.5, -1.0, 0.0) -> x 0.5
    rewards = token_rewards(torch.tensor([-1.0, -0.5, -2.0, -0.2]), torch.tensor([-1.2, -1.0, -1.0, -0.2]), 0.5)
    assert rewards.tolist() == pytest.approx([0.1, 0.25, -0.5, 0.0])


def test_span_sums_and_step_values_literal():
    values = torch.tensor([[0.1, 0.25, -0.5, 0.0], [1.0, 2.0, 3.0, 4.0]])  # (B=2, T=4)
    rows, starts, ends = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 2, 1, 2]), torch.tensor([1, 3, 1, 3])
    # row 0: 0.1 + 0.25 = 0.35 and -0.5 + 0.0 = -0.5; row 1: position 1 = 2.0, positions 2..3 = 3 + 4 = 7.0
    steps = span_sums(values, rows, starts, ends)
    assert steps.tolist() == pytest.approx([0.35, -0.5, 2.0, 7.0])
    # q restarts at each solution: row 0: 0.35, 0.35 - 0.5 = -0.15; row 1: 2.0, 2.0 + 7.0 = 9.0
    assert step_values(steps, rows).tolist() == pytest.approx([0.35, -0.15, 2.0, 9.0])
    assert step_values(torch.zeros(0), torch.zeros(0, dtype=torch.long)).numel() == 0


def test_step_scores_and_ce_loss_literal():
    # σ(0.35) = 1 / (1 + e^-0.35) = 1 / 1.704688 = 0.586618; σ(-0.15) = 1 / (1 + e^0.15) = 1 / 2.161834 = 0.462570
    assert step_scores(torch.tensor([0.35, -0.15])).tolist() == pytest.approx([0.586618, 0.462570], abs=1e-6)
    # y = 1 at q = -0.15: -ln σ(-0.15) = ln 2.161834 = 0.770957; y = 0 at q = ln 3: σ = 0.75, -ln 0.25 = 1.386294;
    # mean = 1.078626
    loss = outcome_ce_loss(torch.tensor([-0.15, math.log(3.0)]), torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx(1.078626, abs=1e-6)


def test_outcome_label_prefers_the_answer_check():
    assert outcome_label(StepwiseExample(PROMPT, ["a", "b"], [True, False], {"final_answer_correct": True})) == 1.0
    assert outcome_label(StepwiseExample(PROMPT, ["a", "b"], [1.0, 0.3])) == 0.3  # no answer check: last label, soft
    assert outcome_label(StepwiseExample(PROMPT, ["a", "b"], [1.0, 0.7]), "hard") == 1.0


# ---- the model


def test_fresh_model_gives_zero_rewards_and_half_scores_and_nan_past_the_window():
    prm = fresh(max_length=10)  # "Q\n" is 2 tokens; "1 ok" + separator 5 more: the first step ends at token 6
    rewards = prm.step_rewards([PROMPT, PROMPT], [["1 ok"], ["1 ok", "2 no"]])
    assert rewards[0] == [0.0] and rewards[1][0] == 0.0 and math.isnan(rewards[1][1])
    scores = prm.score_steps([PROMPT], [["1 ok"]])
    assert scores == [[0.5]]  # φ = π_ref: every log-ratio is 0, σ(0) = 0.5


def test_scores_are_sigmoid_of_running_step_rewards():
    prm = fresh()
    with torch.no_grad():
        for parameter in prm.model.parameters():  # move φ away from π_ref
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1)))
    steps = ["3 ok", "4 no", "5 ok"]
    [rewards], [scores] = prm.step_rewards([PROMPT], [steps]), prm.score_steps([PROMPT], [steps])
    running = [sum(rewards[: j + 1]) for j in range(3)]
    assert scores == pytest.approx([1 / (1 + math.exp(-q)) for q in running], abs=1e-5)
    assert len({round(r, 6) for r in rewards}) == 3  # the steps are told apart


def test_online_update_moves_phi_toward_the_labels():
    prm = fresh().configure_online(lr=3e-3, update="after")
    rows = toy_rows(16, seed=0)
    prompts, solutions, labels = batch_of(rows)
    first, stats = prm.online_step(prompts, solutions, labels)
    assert all(r == 0.0 for row in first for r in row)  # φ = π_ref before the first step
    assert stats["implicit/loss"] == pytest.approx(math.log(2), abs=1e-6) and stats["implicit/solutions"] == 16
    expected = prm.step_rewards(prompts, solutions)
    rewards, _ = prm.online_step(prompts, solutions, labels)
    assert flat(rewards) == pytest.approx(flat(expected), abs=1e-6)  # 'after': from the forward before φ's step
    assert flat(prm.step_rewards(prompts, solutions)) != pytest.approx(flat(rewards), abs=1e-6)
    losses = [prm.online_step(prompts, solutions, labels)[1]["implicit/loss"] for _ in range(8)]
    assert losses[-1] < 0.8 * stats["implicit/loss"] and losses[-1] < losses[0] and prm.updates == 10
    final = prm.score_steps(prompts, solutions)
    good = [s[-1] for s, y in zip(final, labels) if y == 1.0]
    bad = [s[-1] for s, y in zip(final, labels) if y == 0.0]
    assert min(good) > max(bad)  # the last step's score now ranks right solutions above wrong ones


def test_before_scores_with_the_updated_phi():
    rows = toy_rows(8, seed=2)
    prompts, solutions, labels = batch_of(rows)
    prm = fresh().configure_online(lr=3e-3, update="before")
    rewards, _ = prm.online_step(prompts, solutions, labels)
    assert flat(rewards) == pytest.approx(flat(prm.step_rewards(prompts, solutions)), abs=1e-6)  # read after the step
    assert any(r != 0.0 for row in rewards for r in row)
    with pytest.raises(UserError, match="grpo.implicit_update"):
        fresh().configure_online(lr=1e-3, update="during")


def test_save_load_detect_and_resume_online_state(tmp_path):
    prm = fresh().configure_online(lr=3e-3, update="after")
    rows = toy_rows(8, seed=3)
    prm.online_step([r.prompt for r in rows], [r.completions for r in rows], [outcome_label(r) for r in rows])
    saved = prm.save_pretrained(tmp_path / "implicit")
    assert detect_format(saved) == "implicit"
    assert json.loads((saved / "implicit_prm.json").read_text())["beta"] == 0.5
    loaded = load_reward_model(saved, PRMConfig())  # prm.format auto
    assert isinstance(loaded, ImplicitPRM) and loaded.max_length == 160 and loaded.beta == 0.5
    steps = [["2 ok", "3 no"]]
    assert flat(loaded.score_steps([PROMPT], steps)) == pytest.approx(flat(prm.score_steps([PROMPT], steps)), abs=1e-6)
    resumed = fresh().configure_online(lr=3e-3, update="after")
    resumed.load_online(saved)
    assert resumed.updates == 1 and resumed.optimizer is not None
    expected = flat(prm.step_rewards([PROMPT], steps))
    assert flat(resumed.step_rewards([PROMPT], steps)) == pytest.approx(expected, abs=1e-6)


def test_init_refuses_a_classifier_prm_and_continues_an_implicit_one(tmp_path):
    saved = fresh().save_pretrained(tmp_path / "implicit")
    model, how = init_implicit_model(saved, PRMConfig())
    assert isinstance(model, ImplicitPRM) and how.startswith("continued implicit PRM")
    from prmloop.prm.model import StepRewardModel

    tokenizer = build_task_tokenizer()
    StepRewardModel.from_model(tiny_random_model("llama", tokenizer, seed=0), tokenizer).save_pretrained(tmp_path / "p")
    with pytest.raises(UserError, match="an implicit PRM starts from a causal LM"):
        init_implicit_model(tmp_path / "p", PRMConfig())


def test_offline_training_from_outcome_labels_learns_and_validates():
    cfg = PRMConfig(mode="implicit", epochs=3, batch_size=8, lr=3e-3, val_fraction=0.0, eval_batch_size=16)
    summary = train_implicit(fresh(), toy_rows(48, seed=4), cfg, val_examples=toy_rows(24, seed=5),
                             log=lambda line: None)
    first, last = summary["history"][0]["train_loss"], summary["history"][-1]["train_loss"]
    assert last < first and summary["n_train"] == 48 and summary["n_left_out"] == 0
    assert {"val_step_acc", "val_first_error_f1", "val_step_f1_error"} <= set(summary)


def test_prm_train_and_eval_jobs_in_implicit_mode(tmp_path):
    policy = tmp_path / "policy"
    tokenizer = build_task_tokenizer()
    tiny_random_model("llama", tokenizer, seed=0).save_pretrained(policy)
    tokenizer.save_pretrained(policy)
    data = tmp_path / "labels.jsonl"
    write_jsonl(data, (row.to_row() for row in toy_rows(32, seed=6)))
    cfg = ExperimentConfig()
    cfg.prm.mode, cfg.prm.epochs, cfg.prm.batch_size, cfg.prm.lr = "implicit", 1, 16, 1e-3
    cfg.tracking.mode = "disabled"
    summary = train_prm_job(cfg, str(data), str(tmp_path / "rm"), str(policy), None)
    assert summary["init"].startswith("fresh implicit PRM") and detect_format(tmp_path / "rm") == "implicit"
    assert (tmp_path / "rm" / "prm_metrics.json").is_file() and (tmp_path / "rm" / "reference").is_dir()
    metrics = eval_prm_job(ExperimentConfig(), str(tmp_path / "rm"), str(data), "trl_stepwise")
    assert metrics["n_examples"] == 32 and "first_error_f1" in metrics
