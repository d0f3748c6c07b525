"""Tests for policy/sft.py: collate masks, prompt/solution encoding, lr schedule, a short SFT run lowering the loss."""

import math

import pytest
import torch

from prmloop.data.arith import generate
from prmloop.data.config import DataConfig
from prmloop.data.prompts import Prompter
from prmloop.data.schema import Problem
from prmloop.data.task_tokenizer import build_task_tokenizer
from prmloop.data.tasks import get_task
from prmloop.policy.accuracy import complete_problems
from prmloop.policy.config import PolicyConfig, SFTConfig
from prmloop.policy.sft import collate, encode_sft_examples, evaluate_greedy, lr_at, train_sft
from prmloop.policy.tiny import build_tiny_llama
from prmloop.utils.errors import UserError

ARITH = get_task(DataConfig())


def test_collate_masks_prompt_and_padding():
    # example 0: prompt [5, 6], solution [7, 8, 1]; example 1: prompt [5], solution [9, 1], padded right with 0
    batch = collate([([5, 6, 7, 8, 1], 2), ([5, 9, 1], 1)], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 1], [5, 9, 1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, -100, 7, 8, 1], [-100, 9, 1, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]


def test_encode_sft_examples_literal():
    tokenizer = build_task_tokenizer()
    problem = Problem("p", "1 + 2 = ? (left to right)", "3", ("1 + 2 = 3", "Answer: 3"))
    prompter = Prompter(tokenizer)
    [(ids, prompt_len)] = encode_sft_examples([problem], tokenizer, prompter, ARITH, 160)
    prompt = "1 + 2 = ? (left to right)\n"
    assert prompt_len == len(prompt)
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids[:-1]) == prompt + "1 + 2 = 3\nAnswer: 3"
    assert encode_sft_examples([problem], tokenizer, prompter, ARITH, 10) == []
    no_reference = Problem("q", "1 + 2 = ? (left to right)", "3")
    assert encode_sft_examples([no_reference], tokenizer, prompter, ARITH, 160) == []


def test_sft_without_reference_solutions_is_one_clear_error():
    tokenizer = build_task_tokenizer()
    model = build_tiny_llama(PolicyConfig(hidden_size=32, num_layers=1, num_heads=2), tokenizer, seed=0)
    bare = [Problem("q", "1 + 2 = ? (left to right)", "3")]
    with pytest.raises(UserError, match="no reference solutions.*sft.steps=0"):
        train_sft(model, tokenizer, bare, bare, PolicyConfig(), SFTConfig(steps=1), ARITH)


def test_lr_schedule_literal():
    cfg = SFTConfig(steps=110, lr=1.0, warmup_steps=10)
    assert lr_at(0, cfg) == pytest.approx(0.1)  # (0 + 1) / 10
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)  # progress 0: 0.1 + 0.9 * 1
    assert lr_at(60, cfg) == pytest.approx(0.55)  # progress 0.5: 0.1 + 0.9 * 0.5
    assert lr_at(110, cfg) == pytest.approx(0.1)
    assert lr_at(500, cfg) == pytest.approx(0.1)


def test_greedy_completions_are_deterministic_and_bounded():
    tokenizer = build_task_tokenizer()
    model = build_tiny_llama(PolicyConfig(hidden_size=32, num_layers=1, num_heads=2), tokenizer, seed=0)
    problems = [Problem("a", "7 + 5 = ? (left to right)", "12"), Problem("b", "1 + 1 = ? (left to right)", "2")]
    first = complete_problems(model, tokenizer, Prompter(tokenizer), problems, max_new_tokens=6)
    assert first == complete_problems(model, tokenizer, Prompter(tokenizer), problems, max_new_tokens=6, batch_size=1)
    assert all(len(texts) == 1 and len(texts[0]) <= 6 for texts in first)  # one char per token
    assert model.training  # training mode restored


@pytest.fixture
def one_thread():
    # Tiny matrices: intra-op threading only adds overhead (and stalls badly on a loaded machine).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_short_sft_run_lowers_loss(one_thread):
    tokenizer = build_task_tokenizer()
    policy_cfg = PolicyConfig(hidden_size=32, num_layers=2, num_heads=2, max_new_tokens=24)
    data_cfg = DataConfig(n_train=200, n_eval=8)
    train = generate(data_cfg, data_cfg.n_train, "train")
    held_out = generate(data_cfg, data_cfg.n_eval, "eval")
    model = build_tiny_llama(policy_cfg, tokenizer, seed=0)
    sft_cfg = SFTConfig(steps=60, batch_size=16, lr=3e-3, warmup_steps=10, eval_every=0, eval_problems=8)
    messages = []
    history = train_sft(model, tokenizer, train, held_out, policy_cfg, sft_cfg, ARITH, log=messages.append)
    losses = [row["loss"] for row in history if "loss" in row]
    assert [row["step"] for row in history if "loss" in row] == [0, 50, 59]
    assert losses[-1] < 0.7 * losses[0]
    evals = [row for row in history if "eval_accuracy" in row]
    assert len(evals) == 1 and len(messages) == 1
    assert 0.0 <= evals[0]["eval_accuracy"] <= 1.0
    result = evaluate_greedy(model, tokenizer, Prompter(tokenizer), ARITH, held_out[:2], policy_cfg.max_new_tokens)
    assert 0.0 <= result.step_accuracy <= 1.0


def test_evaluate_greedy_counts_trace_accuracy_by_hand(monkeypatch):
    from prmloop.policy import sft

    problem = Problem("p", "47 + 8 - 8 = ? (left to right)", "47", ("47 + 8 = 55", "55 - 8 = 47", "Answer: 47"))
    texts = ["47 + 8 = 55\n55 - 8 = 47\nAnswer: 47",  # right throughout
             "47 + 8 = 45\n45 - 8 = 47\nAnswer: 47",  # the right answer through two slips that cancel
             "47 + 8 = 55\n55 - 8 = 37\nAnswer: 37"]  # wrong from step 1
    monkeypatch.setattr(sft, "complete_problems", lambda *args, **kwargs: [[text] for text in texts])
    result = sft.evaluate_greedy(None, None, None, ARITH, [problem] * 3, 32)
    assert math.isclose(result.accuracy, 2 / 3) and math.isclose(result.trace_accuracy, 1 / 3)
    assert result.first_error_counts == {0: 1, 1: 1}
    # steps right: 3 + 0 + 1 of 9 (every step after the first wrong one counts as wrong)
    assert math.isclose(result.step_accuracy, 4 / 9)
