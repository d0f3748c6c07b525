"""Training prompts that do not fit policy.max_length - policy.max_new_tokens: drop, left-truncate or refuse them."""

from __future__ import annotations

from typing import Any, TypeVar

from ..utils.errors import UserError

T = TypeVar("T")
LONG_PROMPTS = ("drop", "truncate", "error")
"""``grpo.long_prompts`` names."""


def prompt_budget(policy_cfg: Any) -> int:
    """Most prompt tokens that leave room for a full completion: policy.max_length - policy.max_new_tokens."""
    return policy_cfg.max_length - policy_cfg.max_new_tokens


def too_long(lengths: list[int], budget: int) -> list[int]:
    """Indices of the lengths above ``budget``."""
    return [index for index, length in enumerate(lengths) if length > budget]


def left_truncate(ids: list[int], budget: int) -> list[int]:
    """The last ``budget`` tokens of ``ids`` (a prompt's end, next to the completion, matters most)."""
    return ids[len(ids) - budget:] if len(ids) > budget else ids


def keep_fitting(items: list[T], lengths: list[int], policy_cfg: Any) -> tuple[list[T], str | None]:
    """(the items whose prompt length fits ``prompt_budget``, the one line that counts the others or None when none
    was dropped); a UserError naming ``grpo.long_prompts`` when none fits."""
    budget = prompt_budget(policy_cfg)
    dropped = set(too_long(lengths, budget))
    if not dropped:
        return items, None
    limits = (f"policy.max_length={policy_cfg.max_length} - policy.max_new_tokens={policy_cfg.max_new_tokens} = "
              f"{budget} prompt tokens")
    if len(dropped) == len(items):
        raise UserError(f"grpo.long_prompts: all {len(items)} training questions have prompts longer than {limits}; "
                        "raise policy.max_length or set grpo.long_prompts=truncate")
    kept = [item for index, item in enumerate(items) if index not in dropped]
    return kept, f"grpo: dropped {len(dropped)} of {len(items)} training questions whose prompt is longer than {limits}"
