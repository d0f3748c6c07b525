"""Every config value checked before any work starts, in one place: ranges, choices, and combinations.

``validate(cfg)`` raises one UserError naming the key, the value (at most ~200 characters) and what is allowed. It
runs inside ``load_config``, so a bad value never costs an SFT run, a labelling pass or a half-written --out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..policy.prompt_filter import check_long_prompts
from ..policy.vllm_settings import check_vllm_settings
from ..utils.errors import UserError, shown

Check = tuple[Callable[[Any], bool], str]


def _at_least(low: float) -> Check:
    return (lambda v: math.isfinite(v) and v >= low), f"a finite number >= {low:g}"


def _above(low: float) -> Check:
    return (lambda v: math.isfinite(v) and v > low), f"a finite number > {low:g}"


def _between(low: float, high: float, open_low: bool = False) -> Check:
    def ok(v: float) -> bool:
        return math.isfinite(v) and (v > low if open_low else v >= low) and v <= high

    return ok, f"a number in {'(' if open_low else '['}{low:g}, {high:g}]"


def _one_of(*choices: Any) -> Check:
    return (lambda v: v in choices), "one of " + ", ".join(repr(c) if c == "" else str(c) for c in choices)


POSITIVE, NON_NEGATIVE, FRACTION = _at_least(1), _at_least(0), _between(0, 1)
PRECISIONS = _one_of("no", "bf16", "fp16")
RULES: dict[str, Check] = {
    "data.task": _one_of("arith", "gsm8k", "math", "problems"),
    "data.step_split": _one_of("", "newline", "blank_line", "step_marker"),
    "data.n_train": POSITIVE, "data.n_eval": POSITIVE,
    "policy.dtype": _one_of("float32", "bfloat16", "float16"),
    "policy.hidden_size": POSITIVE, "policy.num_layers": POSITIVE, "policy.num_heads": POSITIVE,
    "policy.max_length": POSITIVE, "policy.max_new_tokens": POSITIVE,
    "sft.steps": NON_NEGATIVE, "sft.batch_size": POSITIVE, "sft.lr": _above(0), "sft.warmup_steps": NON_NEGATIVE,
    "sft.weight_decay": NON_NEGATIVE, "sft.eval_every": NON_NEGATIVE, "sft.eval_problems": POSITIVE,
    "prm.format": _one_of("auto", "prmloop", "token_classification", "math_shepherd"),
    "prm.mode": _one_of("process", "outcome"), "prm.label_type": _one_of("soft", "hard"),
    "prm.supervise": _one_of("through_first_error", "all"), "prm.epochs": POSITIVE, "prm.batch_size": POSITIVE,
    "prm.lr": NON_NEGATIVE, "prm.head_lr": _above(0), "prm.lora_r": NON_NEGATIVE, "prm.lora_alpha": POSITIVE,
    "prm.lm_loss_weight": NON_NEGATIVE, "prm.weight_decay": NON_NEGATIVE, "prm.warmup_ratio": FRACTION,
    "prm.max_length": POSITIVE, "prm.replay_fraction": FRACTION, "prm.val_fraction": _between(0, 0.9),
    "prm.threshold": _between(0, 1, open_low=True), "prm.mixed_precision": PRECISIONS, "prm.eval_batch_size": POSITIVE,
    "prm.positive_index": _one_of(0, 1),
    "policy.lora_r": NON_NEGATIVE, "policy.lora_alpha": POSITIVE,
    "grpo.steps": POSITIVE, "grpo.prompts_per_step": POSITIVE, "grpo.group_size": _at_least(2), "grpo.lr": _above(0),
    "grpo.weight_decay": NON_NEGATIVE, "grpo.beta": NON_NEGATIVE, "grpo.clip_eps": _above(0), "grpo.mu": POSITIVE,
    "grpo.temperature": _above(0), "grpo.top_p": _between(0, 1, open_low=True),
    "grpo.supervision": _one_of("process", "outcome"), "grpo.reward_source": _one_of("prm", "orm", "rule"),
    "grpo.credit": _one_of("sum", "min"), "grpo.outcome_mix": NON_NEGATIVE, "grpo.grad_accum": POSITIVE,
    "grpo.generation_batch_size": POSITIVE, "grpo.max_grad_norm": _above(0), "grpo.max_weight_change": NON_NEGATIVE,
    "grpo.max_skips_in_a_row": NON_NEGATIVE, "grpo.mixed_precision": PRECISIONS,
    "grpo.checkpoint_every": NON_NEGATIVE,
    "grpo.vllm_gpu_memory_utilization": _between(0, 1, open_low=True),
    "loop.rounds": POSITIVE, "loop.rl_steps_per_round": POSITIVE, "loop.rm_update": _one_of("iterative", "fixed"),
    "loop.labeller": _one_of("auto", "exact", "mc", "mc_binary"), "loop.mc_rollouts": POSITIVE,
    "loop.label_problems": POSITIVE, "loop.init_label_problems": POSITIVE, "loop.samples_per_problem": POSITIVE,
    "loop.eval_problems": POSITIVE, "loop.eval_k": POSITIVE, "loop.eval_mc_solutions": NON_NEGATIVE, "loop.eval_every": NON_NEGATIVE,
    "tracking.mode": _one_of("offline", "online", "disabled"),
    "compare.seeds": POSITIVE,
}
"""Dotted key -> (test, what is allowed)."""


def _get(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def validate(cfg: Any, where: str = "config") -> None:
    """UserError (``where: key = value: must be ...``) for the first value out of its range or its choices, or a
    combination that cannot run."""
    for key, (ok, allowed) in RULES.items():
        value = _get(cfg, key)
        if not ok(value):
            raise UserError(f"{where}: {key} = {shown(value)}: must be {allowed}")
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
    check_long_prompts(cfg.grpo.long_prompts)  # the policy package's own checks, at load, for every command
    check_vllm_settings(cfg.grpo)
    from .arms import arm_from_config, parse_arm

    arm_from_config(cfg)
    for spec in cfg.compare.arms:
        if parse_arm(spec).mix and not cfg.grpo.outcome_mix:
            raise UserError(f"{where}: compare.arms: {spec!r} mixes in the answer check's advantage with weight "
                            "grpo.outcome_mix, which is 0; set it (e.g. 0.5)")
