"""GRPO loss as pure functions of tensors: clipped surrogate (DeepSeekMath Eq. 3), k3 KL (Eq. 4), masked means.

Conventions:
- All per-token tensors are (B, T): B completions (groups contiguous), T completion tokens, right-padded. ``logp`` is
  log π_θ(o_t | q, o_<t) of the sampled token; ``old_logp`` the same under π_old (the sampling policy, constant);
  ``ref_logp`` under π_ref (constant). ``mask`` is bool or 0/1 float; nonzero marks a real completion token.
- Padding never changes the loss, its gradient or the stats, whatever values the padded positions hold (inf and nan
  included): log-ratios, log-probs and advantages are set to 0 there before any arithmetic.
- Only ``logp`` carries gradient: ``old_logp``, ``ref_logp`` and ``advantages`` are detached here.
- Aggregation "grpo" (Eq. 3's 1/G Σ_i 1/|o_i| Σ_t): masked token mean per output, then mean over the outputs that
  have at least one valid token; with none, the loss is 0 (still attached to the graph, so backward() works).
- Clip statistics follow TRL: a token is low-clipped when ρ < 1 − ε and Â < 0, high-clipped when ρ > 1 + ε and Â > 0
  (exactly where the clip removes the gradient), region-clipped when either; each reported as a fraction of valid
  tokens over the whole batch.
"""

from __future__ import annotations

import torch
from torch import Tensor


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``values`` where ``mask`` is nonzero (over all entries, or along ``dim``); 0 where nothing is valid."""
    mask = mask.bool()
    total = torch.where(mask, values, 0.0)
    if dim is None:
        return total.sum() / mask.sum().clamp(min=1)
    return total.sum(dim) / mask.sum(dim).clamp(min=1)


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token KL estimate (Eq. 4, Schulman's k3): π_ref/π_θ − log(π_ref/π_θ) − 1, in log space; always >= 0."""
    log_ratio = ref_logp - logp  # log(π_ref/π_θ)
    return torch.exp(log_ratio) - log_ratio - 1


def _clip_stats(ratio: Tensor, advantages: Tensor, mask: Tensor, clip_eps: float) -> dict[str, Tensor]:
    is_low_clipped = (ratio < 1 - clip_eps) & (advantages < 0)  # (B, T)
    is_high_clipped = (ratio > 1 + clip_eps) & (advantages > 0)  # (B, T)
    return {
        "clip_ratio/low_mean": masked_mean(is_low_clipped.float(), mask),
        "clip_ratio/high_mean": masked_mean(is_high_clipped.float(), mask),
        "clip_ratio/region_mean": masked_mean((is_low_clipped | is_high_clipped).float(), mask),
    }


def grpo_loss(
    logp: Tensor,
    old_logp: Tensor,
    ref_logp: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    clip_eps: float,
    beta: float,
    sampling_weight: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """GRPO loss −J_GRPO (Eq. 3) with "grpo" aggregation, and detached scalar stats.

    Per token: ρ = π_θ/π_old; loss_t = −min(ρÂ, clip(ρ, 1−ε, 1+ε)Â) + β·KL_k3(π_θ ‖ π_ref). ``advantages`` is (B, T)
    or broadcastable to it (e.g. (B, 1) for outcome supervision). ``ref_logp`` may be None when ``beta == 0``.
    Stats: ``clip_ratio/low_mean``, ``clip_ratio/high_mean``, ``clip_ratio/region_mean`` and, when ``ref_logp`` is
    given, ``kl`` (masked token mean over the batch). ``sampling_weight`` (B, T), optional and constant: each token's
    clipped surrogate is multiplied by it before the KL term is added (truncated importance sampling for a sampler
    that is not π_old, ``policy.importance``; TRL applies its vLLM correction the same way).
    """
    if ref_logp is None and beta != 0:
        raise ValueError(f"ref_logp is required when beta != 0 (beta={beta})")
    mask = mask.bool()
    advantages = torch.where(mask, advantages.detach().expand_as(logp), 0.0)  # (B, T), 0 at padding
    log_ratio = torch.where(mask, logp - old_logp.detach(), 0.0)  # (B, T) log ρ, 0 at padding

    # Eq. 3: min(ρ Â, clip(ρ, 1 − ε, 1 + ε) Â) − β D_KL[π_θ ‖ π_ref]
    ratio = torch.exp(log_ratio)  # (B, T)
    unclipped = ratio * advantages  # (B, T)
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages  # (B, T)
    objective = torch.minimum(unclipped, clipped)  # (B, T)
    if sampling_weight is not None:
        objective = objective * torch.where(mask, sampling_weight.detach(), 0.0)  # (B, T)
    stats = _clip_stats(ratio.detach(), advantages, mask, clip_eps)
    if ref_logp is not None:
        # Both log-probs zeroed at padding, so garbage there can neither leak into the KL nor its gradient.
        kl = kl_k3(torch.where(mask, logp, 0.0), torch.where(mask, ref_logp.detach(), 0.0))  # (B, T)
        objective = objective - beta * kl
        stats["kl"] = masked_mean(kl.detach(), mask)
    per_token_loss = -objective  # (B, T)

    # "grpo" aggregation: 1/|o_i| Σ_t per output, then 1/G Σ_i over outputs with at least one valid token.
    per_output_loss = masked_mean(per_token_loss, mask, dim=1)  # (B,)
    loss = masked_mean(per_output_loss, mask.any(dim=1))  # ()
    return loss, stats
