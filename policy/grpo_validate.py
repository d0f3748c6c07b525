"""GRPO config checks that run before any model work: one-line UserErrors that name the key."""

from __future__ import annotations

from ..utils.checks import check_fields
from .config import GRPOConfig
from .rewards import check_reward_setup
from .vllm_backend import require_vllm
from .vllm_settings import check_vllm_settings


def validate_config(cfg: GRPOConfig) -> None:
    """UserError naming the key for settings GRPO cannot run with."""
    check_reward_setup(cfg.supervision, cfg.reward_source)
    check_fields(cfg, "grpo.")  # each field's own check (policy/config.py), as a loaded config passed them
    check_vllm_settings(cfg)
    if cfg.use_vllm:  # before any model work: a missing vllm or GPU is one line
        require_vllm()
