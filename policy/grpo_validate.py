"""GRPO config checks that run before any model work: one-line UserErrors that name the key."""

from __future__ import annotations

from ..utils.errors import UserError, shown
from .config import GRPOConfig
from .prompt_filter import check_long_prompts
from .rewards import check_reward_setup
from .vllm_backend import require_vllm
from .vllm_settings import check_vllm_settings


def validate_config(cfg: GRPOConfig) -> None:
    """UserError naming the key for settings GRPO cannot run with."""
    check_reward_setup(cfg.supervision, cfg.reward_source)
    if cfg.group_size < 2:
        raise UserError(f"grpo.group_size: {cfg.group_size} leaves no group to compare; use 2 or more")
    if cfg.credit not in ("sum", "min"):
        raise UserError(f"grpo.credit: unknown {shown(cfg.credit)}; valid: min, sum")
    for key in ("steps", "prompts_per_step", "mu", "grad_accum", "generation_batch_size"):
        if getattr(cfg, key) < 1:
            raise UserError(f"grpo.{key}: must be >= 1, got {getattr(cfg, key)}")
    check_long_prompts(cfg.long_prompts)
    check_vllm_settings(cfg)
    if cfg.use_vllm:  # before any model work: a missing vllm or GPU is one line
        require_vllm()
