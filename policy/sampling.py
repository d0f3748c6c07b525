"""Per-row seeded sampling: each row's seed, its uniform numbers, and the next token drawn by inverse CDF.

Every row draws its randomness from its own generator, seeded by ``row_seed(seed, step, global prompt index, sample
index)``, as one uniform number per token fed to an inverse-CDF sampler. So a prompt's samples are the same however
the prompts are split into batches or across processes (up to float rounding of the logits).
"""

from __future__ import annotations

import torch
from torch import Tensor

_MASK64 = (1 << 64) - 1


def _splitmix64(state: int) -> int:
    state = (state + 0x9E3779B97F4A7C15) & _MASK64
    state = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    state = ((state ^ (state >> 27)) * 0x94D049BB133111EB) & _MASK64
    return state ^ (state >> 31)


def row_seed(seed: int, step: int, prompt_index: int, sample_index: int) -> int:
    """A 63-bit seed for one sample, mixed from (seed, step, global prompt index, sample index) with splitmix64."""
    state = 0
    for part in (seed, step, prompt_index, sample_index):
        state = _splitmix64(state ^ (part & _MASK64))
    return state >> 1


def row_uniforms(row_seeds: list[int], num_tokens: int) -> Tensor:
    """``num_tokens`` uniform numbers in [0, 1) per row, each row from its own seeded generator. (B, N) float32."""
    generator = torch.Generator()
    rows = []
    for seed in row_seeds:
        generator.manual_seed(seed)
        rows.append(torch.rand(num_tokens, generator=generator))
    return torch.stack(rows) if rows else torch.zeros(0, num_tokens)


def inverse_cdf_sample(probs: Tensor, uniforms: Tensor, top_p: float = 1.0) -> Tensor:
    """Token drawn from each row of ``probs`` (B, V) by inverse CDF with one uniform per row (B,). -> (B,) long.

    top_p < 1 keeps the smallest set of most likely tokens whose mass reaches top_p (a token is kept when the mass
    ranked strictly before it is < top_p, so the most likely token always is) and renormalises over it.
    """
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)  # (B, V)
        mass_before = sorted_probs.cumsum(-1) - sorted_probs  # (B, V)
        sorted_probs = torch.where(mass_before < top_p, sorted_probs, 0.0)
    else:
        sorted_probs, order = probs, None
    cdf = sorted_probs.cumsum(-1)  # (B, V)
    target = uniforms.to(cdf)[:, None] * cdf[:, -1:]  # (B, 1)
    index = torch.searchsorted(cdf, target, right=True).clamp(max=probs.shape[-1] - 1)  # (B, 1) first cdf > target
    return (index if order is None else order.gather(1, index)).squeeze(1)


def sample_next(logits: Tensor, uniforms: Tensor, temperature: float, top_p: float) -> tuple[Tensor, Tensor]:
    """Next token (B,) from logits (B, V) at ``temperature``/``top_p`` (0 = greedy), and its temperature-1 log-prob."""
    logits = logits.float()
    logp_all = torch.log_softmax(logits, dim=-1)  # (B, V) π_old as the loss sees it
    if temperature == 0:
        token = logits.argmax(dim=-1)  # (B,)
    else:
        token = inverse_cdf_sample(torch.softmax(logits / temperature, dim=-1), uniforms, top_p)  # (B,)
    return token, logp_all.gather(1, token[:, None]).squeeze(1)
