"""π_old and π_ref log-probs for a GRPO update: no-grad forwards in the update's micro-batches (``policy.grpo``).

π_ref is the frozen reference model, or under LoRA the policy with the reference copy of the adapters swapped in
(``policy.lora``). π_old recomputed by the training model replaces a vLLM engine's sampling log-probs
(``grpo.vllm_old_logps: recompute``), with TRL's truncated importance weights when ``grpo.vllm_is_cap`` C > 0
(``policy.importance``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor

from .importance import sampler_mismatch_stats, truncated_is_weights
from .logps import forward_logps
from .lora import swapped_adapters
from .rollout import Rollout


def micro_batches(num_rows: int, grad_accum: int) -> list[slice]:
    """``grad_accum`` contiguous, near-equal row slices of ``num_rows`` (empty ones left out)."""
    bounds = torch.linspace(0, num_rows, grad_accum + 1).round().long().tolist()
    return [slice(a, b) for a, b in pairwise(bounds) if b > a]


@torch.no_grad()
def logps_without_grad(model: Any, rollout: Rollout, batches: list[slice],
                       autocast: Callable[[], AbstractContextManager], context: Any = None,
                       share_prompts: bool = True, padding_free: bool = False) -> Tensor:
    """(B, T) log-probs of the rollout's completions under ``model``, one forward per slice of ``batches``."""
    parts = []
    with autocast(), context or nullcontext():
        for rows in batches:
            logp, _ = forward_logps(model, rollout.prompt_ids[rows], rollout.prompt_mask[rows],
                                    rollout.completion_ids[rows], rollout.completion_mask[rows],
                                    share_prompts=share_prompts, padding_free=padding_free)
            parts.append(logp)
    return torch.cat(parts)  # (B, T)


def reference_logps(policy: Any, reference: Any, reference_adapters: dict[str, Tensor] | None, rollout: Rollout,
                    batches: list[slice], autocast: Callable[[], AbstractContextManager],
                    padding_free: bool = False) -> Tensor | None:
    """(B, T) π_ref log-probs: of ``reference``, or of ``policy`` with ``reference_adapters``; None with neither (β 0)."""
    if reference is not None:
        return logps_without_grad(reference, rollout, batches, autocast, padding_free=padding_free)
    if reference_adapters is None:
        return None
    return logps_without_grad(policy, rollout, batches, autocast, swapped_adapters(policy, reference_adapters),
                              padding_free=padding_free)


def recomputed_old_logps(policy: Any, rollout: Rollout, batches: list[slice],
                         autocast: Callable[[], AbstractContextManager], is_cap: float,
                         share_prompts: bool, padding_free: bool = False,
                         ) -> tuple[Rollout, Tensor | None, dict[str, float]]:
    """The rollout with the training model's own log-probs as π_old, the truncated importance weights (``is_cap`` > 0;
    else None) and the engine/trainer mismatch stats."""
    mask = rollout.completion_mask  # (B, T)
    recomputed = logps_without_grad(policy, rollout, batches, autocast, share_prompts=share_prompts,
                                    padding_free=padding_free)  # (B, T)
    recomputed = torch.where(mask, recomputed, 0.0)  # (B, T), 0 at padding as in Rollout.logp
    weights = truncated_is_weights(recomputed, rollout.logp, mask, is_cap) if is_cap else None  # (B, T) or None
    stats = sampler_mismatch_stats(recomputed, rollout.logp, mask, weights)
    return dataclasses.replace(rollout, logp=recomputed), weights, stats
