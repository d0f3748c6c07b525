"""Log-probs of sampled completions under a model (π_θ in the update, π_ref): ``forward_logps``.

Same layout as ``policy.rollout``: prompts left-padded (B, P), completions right-padded (B, T), position ids
``cumsum(attention_mask) - 1``, so on unchanged weights it reproduces the sampling-time ``Rollout.logp``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .rollout import cache_keyword, cache_of


def forward_logps(model: Any, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor,
                  completion_mask: Tensor, with_entropy: bool = False,
                  share_prompts: bool = True) -> tuple[Tensor, Tensor | None]:
    """Temperature-1 log-prob (B, T) of each completion token, and optionally its entropy (B, T).

    Same layout and position ids as the sampling loop, so on unchanged weights it reproduces ``Rollout.logp``. With
    ``share_prompts`` (the default), rows whose prompt equals the row before's (a GRPO group) run the prompt once:
    one forward over the distinct prompts, its KV cache copied to their rows, then one over the completions. The
    gradient reaches the weights through the copied cache, so it is the full forward's, with the prompt compute cut
    by the group size. Without repeated prompts, or with ``share_prompts`` false (gradient checkpointing, which
    drops the cache), one forward over prompt + completion.
    """
    num_tokens = completion_ids.shape[1]
    attention = torch.cat([prompt_mask, completion_mask], dim=1).long()  # (B, P + T)
    positions = (attention.cumsum(1) - 1).clamp(min=0)  # (B, P + T)
    distinct, inverse = _distinct_prompts(prompt_ids, prompt_mask) if share_prompts else (None, None)
    if distinct is None or num_tokens < 2:
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)  # (B, P + T)
        logits = model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                       logits_to_keep=num_tokens + 1).logits[:, :-1].float()  # (B, T, V) logits predicting o_t
    else:
        width = prompt_ids.shape[1]
        first = model(input_ids=prompt_ids[distinct], attention_mask=attention[distinct, :width],
                      position_ids=positions[distinct, :width], use_cache=True, logits_to_keep=1)  # (U, 1, V)
        cache = cache_of(first)
        cache.batch_select_indices(inverse)  # (U, ...) -> (B, ...): each row gets its prompt's keys and values
        rest = model(input_ids=completion_ids[:, :-1], attention_mask=attention[:, :-1], use_cache=True,
                     position_ids=positions[:, width:-1], **{cache_keyword(model): cache}).logits  # (B, T-1, V)
        logits = torch.cat([first.logits[inverse], rest], dim=1).float()  # (B, T, V) logits predicting o_t
    log_norm = logits.logsumexp(dim=-1)  # (B, T)
    logp = logits.gather(-1, completion_ids[..., None]).squeeze(-1) - log_norm  # (B, T)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            log_probs = logits - log_norm[..., None]  # (B, T, V)
            entropy = -(log_probs.exp() * log_probs).sum(-1)  # (B, T)
    return logp, entropy


def _distinct_prompts(prompt_ids: Tensor, prompt_mask: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """Rows starting a run of equal prompts (U,) and each row's run (B,), or (None, None) when no prompt repeats."""
    same = (prompt_ids[1:] == prompt_ids[:-1]).all(1) & (prompt_mask[1:] == prompt_mask[:-1]).all(1)  # (B-1,)
    if not bool(same.any()):
        return None, None
    starts = torch.cat([torch.ones(1, dtype=torch.bool, device=same.device), ~same])  # (B,)
    return starts.nonzero().squeeze(1), starts.long().cumsum(0) - 1
