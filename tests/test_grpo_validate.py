"""Tests for policy/grpo_validate.py: GRPO settings that cannot run end in one line naming the key, before any
model work; a reward source without a reward model is refused when the trainer is built."""

import pytest
from test_grpo import ARITH, one_thread  # noqa: F401 - one_thread is an autouse fixture

from prmloop.data.task_tokenizer import build_task_tokenizer
from prmloop.policy.config import GRPOConfig, PolicyConfig
from prmloop.policy.grpo import GRPOTrainer, validate_config
from prmloop.policy.tiny import tiny_random_model
from prmloop.utils.errors import UserError


def test_validate_config_errors_name_the_key():
    with pytest.raises(UserError, match="grpo.group_size"):
        validate_config(GRPOConfig(group_size=1))
    with pytest.raises(UserError, match="grpo.credit"):
        validate_config(GRPOConfig(credit="max"))
    with pytest.raises(UserError, match="grpo.reward_source"):
        validate_config(GRPOConfig(supervision="process", reward_source="rule"))
    with pytest.raises(UserError, match="grpo.mu"):
        validate_config(GRPOConfig(mu=0))
    tokenizer = build_task_tokenizer()
    with pytest.raises(UserError, match="needs a reward model"):
        GRPOTrainer(tiny_random_model("llama", tokenizer), tokenizer,
                    GRPOConfig(supervision="outcome", reward_source="orm"), PolicyConfig(), ARITH, scorer=None)
