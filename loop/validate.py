"""Every config value checked before any work starts: each field's own range or choice, then the combinations.

A field's range or choice is written beside it (``checked(default, at_least(1))``, utils/checks.py) in its package's
config dataclass; ``validate`` walks them all, then checks what no single field can: values that must agree. It raises
one UserError naming the key, the value (at most ~200 characters) and what is allowed, and runs inside
``load_config``, so a bad value never costs an SFT run, a labelling pass or a half-written --out.
"""

from __future__ import annotations

from typing import Any

from ..policy.vllm_settings import check_vllm_settings
from ..utils.checks import failed_check
from ..utils.errors import UserError, shown
from .arms import arm_from_config, parse_arm


def validate(cfg: Any, where: str = "config") -> None:
    """UserError (``where: key = value: must be ...``) for the first value out of its range or its choices, or a
    combination that cannot run."""
    failed = failed_check(cfg)
    if failed:
        key, value, check = failed
        raise UserError(f"{where}: {key} = {shown(value)}: must be {check.allowed}")
    if cfg.policy.hidden_size % cfg.policy.num_heads:
        raise UserError(f"{where}: policy.num_heads = {cfg.policy.num_heads}: must divide policy.hidden_size "
                        f"({cfg.policy.hidden_size})")
    if cfg.policy.max_new_tokens >= cfg.policy.max_length:
        raise UserError(f"{where}: policy.max_new_tokens = {cfg.policy.max_new_tokens}: must be below "
                        f"policy.max_length ({cfg.policy.max_length}), which also holds the prompt")
    if cfg.prm.mixed_precision != cfg.grpo.mixed_precision:  # accelerate keeps one setting per process: the loop's
        # PRM training and GRPO share it, and a second one is a ValueError deep inside accelerate
        raise UserError(f"{where}: prm.mixed_precision = {cfg.prm.mixed_precision} and grpo.mixed_precision = "
                        f"{cfg.grpo.mixed_precision}: must agree (accelerate keeps one precision per process)")
    check_vllm_settings(cfg.grpo)  # the vLLM settings no single field can check, at load, for every command
    arm_from_config(cfg)
    for spec in cfg.compare.arms:
        if parse_arm(spec).mix and not cfg.grpo.outcome_mix:
            raise UserError(f"{where}: compare.arms: {spec!r} mixes in the answer check's advantage with weight "
                            "grpo.outcome_mix, which is 0; set it (e.g. 0.5)")
