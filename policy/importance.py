"""Truncated importance sampling for a sampler that is not the trainer (vLLM): pure functions of (B, T) tensors.

A vLLM engine samples with its own (bf16) kernels, so the distribution the tokens came from, π_engine, differs from
the training model's π_old on the same weights. With ``grpo.vllm_old_logps: recompute`` the trainer recomputes
log π_old itself (so ρ = π_θ/π_old is exactly 1 at the first inner update) and, with ``grpo.vllm_is_cap`` C > 0,
weights each token's clipped surrogate by w_t = min(π_old(o_t)/π_engine(o_t), C) (truncated importance sampling,
TIS). This follows TRL's GRPOTrainer (``vllm_importance_sampling_correction`` with mode ``token_truncate`` and
``vllm_importance_sampling_cap`` / ``vllm_importance_sampling_clip_max``: the ratio is exp(old − sampling) per token,
clamped from above, and multiplies the per-token policy loss before the KL term is added), after Yao et al. 2025,
"Your Efficient RL Framework Secretly Brings You Off-Policy RL Training". Padding gets weight 1 and is masked anyway.
"""

from __future__ import annotations

import torch
from torch import Tensor


def truncated_is_weights(old_logp: Tensor, sampler_logp: Tensor, mask: Tensor, cap: float) -> Tensor:
    """(B, T) weights min(exp(old_logp − sampler_logp), cap) at valid tokens, 1 at padding; no gradient."""
    log_ratio = torch.where(mask.bool(), old_logp.detach() - sampler_logp.detach(), 0.0)  # (B, T)
    return torch.exp(log_ratio).clamp(max=cap)  # (B, T)


def sampler_mismatch_stats(old_logp: Tensor, sampler_logp: Tensor, mask: Tensor,
                           weights: Tensor | None) -> dict[str, float]:
    """TRL's names: mean and max of |old_logp − sampler_logp| over valid tokens, and min/mean/max of the weights."""
    mask = mask.bool()
    delta = (old_logp.detach() - sampler_logp.detach()).abs()[mask]  # (N,)
    stats = {"sampling/sampling_logp_difference/mean": delta.mean().item() if delta.numel() else 0.0,
             "sampling/sampling_logp_difference/max": delta.max().item() if delta.numel() else 0.0}
    if weights is not None:
        valid = weights[mask]  # (N,)
        for name, reduce in (("min", torch.min), ("mean", torch.mean), ("max", torch.max)):
            stats[f"sampling/importance_sampling_ratio/{name}"] = reduce(valid).item() if valid.numel() else 1.0
    return stats
