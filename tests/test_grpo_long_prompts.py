"""Tests for policy/prompt_filter.py and grpo.long_prompts: over-long training prompts are dropped (counted in one
line), left-truncated, or refused, instead of stopping a run at whichever step draws one."""

import logging

import pytest
from test_grpo import PROBLEMS, make_trainer, one_thread  # noqa: F401 - one_thread is an autouse fixture

from prmloop.data.schema import Problem
from prmloop.loop.config import load_config
from prmloop.policy.config import GRPOConfig, PolicyConfig
from prmloop.policy.grpo import validate_config
from prmloop.policy.prompt_filter import keep_fitting, left_truncate, prompt_budget, too_long
from prmloop.policy.rollout import encode_prompts
from prmloop.utils.errors import UserError

# The embedded task's prompts are 30..36 tokens; a budget of 46 - 10 = 36 keeps them all and drops LONG (42 tokens).
FITS = PolicyConfig(max_length=46, max_new_tokens=10)
LONG = [Problem(f"too-long-{i}", "1 + 2 + 3 + 4 + 5 + 6 = ? (left to right)", "21") for i in range(2)]


def test_pure_pieces_literal():
    assert prompt_budget(PolicyConfig(max_length=46, max_new_tokens=10)) == 36
    assert too_long([3, 5, 4, 6], budget=4) == [1, 3]
    assert left_truncate([1, 2, 3, 4, 5], 3) == [3, 4, 5] and left_truncate([1, 2], 3) == [1, 2]
    assert keep_fitting(["a", "b", "c"], [2, 9, 3], FITS) == (["a", "b", "c"], None)
    kept, line = keep_fitting(["a", "b", "c"], [2, 40, 3], FITS)
    assert kept == ["a", "c"] and line == ("grpo: dropped 1 of 3 training questions whose prompt is longer than "
                                           "policy.max_length=46 - policy.max_new_tokens=10 = 36 prompt tokens")
    with pytest.raises(UserError, match=r"^grpo\.long_prompts: all 2 training questions have prompts longer than "):
        keep_fitting(["a", "b"], [40, 37], FITS)


def test_config_key_loads_and_is_checked():
    assert load_config(None, []).grpo.long_prompts == "drop"
    assert load_config(None, ["grpo.long_prompts=truncate"]).grpo.long_prompts == "truncate"
    with pytest.raises(UserError, match=r"^grpo\.long_prompts = 'cut': must be one of drop, truncate, error$"):
        validate_config(GRPOConfig(long_prompts="cut"))


def drawn_problems(trainer) -> list[str]:
    """Record the ids of the questions every train_step gets."""
    seen, step = [], trainer.train_step

    def recording(problems, index):
        seen.extend(p.id for p in problems)
        return step(problems, index)

    trainer.train_step = recording
    return seen


def test_drop_counts_them_in_one_line_and_never_draws_them(caplog):
    trainer = make_trainer(policy_cfg=FITS, prompts_per_step=6)
    seen = drawn_problems(trainer)
    with caplog.at_level(logging.WARNING, logger="prmloop.policy.grpo"):
        history = trainer.train(LONG + PROBLEMS, steps=3)  # 18 positions: every kept question is drawn at least once
    assert len(history) == 3 and set(seen) == {p.id for p in PROBLEMS}
    assert [r.getMessage() for r in caplog.records] == [
        ("grpo: dropped 2 of 18 training questions whose prompt is longer than policy.max_length=46 - "
         "policy.max_new_tokens=10 = 36 prompt tokens")]


def test_drop_in_a_step_a_caller_drew_trains_on_the_rest(caplog):
    # loop/orchestrator.py draws its own batches and calls train_step: the long question is dropped from that batch
    trainer = make_trainer(policy_cfg=FITS)
    sampled, sample = [], trainer._sample
    trainer._sample = lambda prompt_ids, step, first: sampled.append(len(prompt_ids)) or sample(prompt_ids, step, first)
    with caplog.at_level(logging.WARNING, logger="prmloop.policy.grpo"):
        metrics = trainer.train_step([PROBLEMS[0], LONG[0], PROBLEMS[1]], step=0)
    assert sampled == [2] and metrics["skipped_updates"] == 0 and metrics["completions/mean_length"] > 0
    assert [r.getMessage() for r in caplog.records] == [
        ("grpo: dropped 1 of 3 training questions whose prompt is longer than policy.max_length=46 - "
         "policy.max_new_tokens=10 = 36 prompt tokens")]


def test_drop_with_nothing_left_is_one_line():
    trainer = make_trainer(policy_cfg=FITS)
    with pytest.raises(UserError) as caught:
        trainer.train(LONG, steps=1)
    assert str(caught.value) == ("grpo.long_prompts: all 2 training questions have prompts longer than "
                                 "policy.max_length=46 - policy.max_new_tokens=10 = 36 prompt tokens; raise "
                                 "policy.max_length or set grpo.long_prompts=truncate")


def test_truncate_keeps_the_end_of_the_prompt():
    trainer = make_trainer(policy_cfg=FITS, long_prompts="truncate")
    prompts_seen, sample = [], trainer._sample

    def recording(prompt_ids, step, first_index):
        prompts_seen.extend(prompt_ids)
        return sample(prompt_ids, step, first_index)

    trainer._sample = recording
    metrics = trainer.train_step([LONG[0], PROBLEMS[0]], step=0)
    full = encode_prompts(trainer.tokenizer, [trainer.prompter(p.question) for p in (LONG[0], PROBLEMS[0])])
    assert len(full[0]) == 42 and prompts_seen == [full[0][-36:], full[1]]  # only the long one is cut, from the left
    assert metrics["skipped_updates"] == 0


def test_error_stops_at_the_step_that_draws_one():
    trainer = make_trainer(policy_cfg=FITS, long_prompts="error", prompts_per_step=2)
    with pytest.raises(UserError, match=r"^problem too-long-0: prompt has 42 tokens; .*grpo\.long_prompts=drop or "):
        trainer.train([LONG[0], PROBLEMS[0]], steps=1)
