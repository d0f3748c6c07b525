"""GRPO advantages as pure functions of tensors and numbers: outcome, process (sum form) and min-form credit.

Conventions (every function here keeps them; docs/math.md):
- A group is the G outputs o_1..o_G sampled for one question. Normalising a list x of numbers means
  x̃ = (x − mean(x)) / (std(x) + eps) with std the SAMPLE std (Bessel-corrected, n − 1 in the denominator, as
  ``torch.std`` by default and TRL) and ``eps = 1e-4`` (keyword ``eps``). A list with fewer than 2 values, or with zero
  spread (max == min exactly), normalises to all zeros, never NaN.
- Outcome supervision (DeepSeekMath §4.1.2): Â_{i,t} = r̃_i for every token t of o_i, r normalised over the group.
- Steps: output i has K_i steps; ``step_ends[i][j]`` is the 0-based completion-token index of the token that CLOSES
  step j: its separator (the newline after it), or the EOS for the last step (``policy.rollout``), so a step's credit
  reaches the token that ends it and the policy is credited for ending steps and stopping. Ends are non-decreasing
  (two steps may end on the same token) and < num_tokens[i]. Token t belongs to the first step j with end_j >= t;
  tokens after the last step end (a completion cut off mid-step) get advantage 0. An output with zero steps gets all
  zeros and adds nothing to the group's list of step rewards.
- Process supervision, "sum" credit (§4.1.3): R = all step rewards of all G outputs flattened, normalised over R (per
  question, not per output); Â_{i,t} = Σ_{j : end_j >= t} r̃_i^j, i.e. tokens of step j get the sum over steps j..K_i.
- Min-form credit, "min" (PURE, arXiv 2504.15275): the return of step j is g_i^j = min_{k >= j} r_i^k; all g's of the
  group are normalised together; tokens of step j get g̃_i^j (tokens after the last step end get 0). Departure from
  PURE: PURE realises the min with a temperature-weighted sum that tends to it and uses its own baseline; here the
  exact min and GRPO's group normalisation of the returns.
- Mixing with a verifiable outcome reward (``mix_outcome``) adds weight · Â^outcome_i to EVERY token of o_i, including
  the tokens after the last step end: that is exactly the outcome-supervised advantage of §4.1.2, scaled, so weight
  interpolates between the two signals and the final answer tokens still receive outcome credit.

Batch layout: B = n_groups · G rows, each group's G outputs contiguous. Step tensors are (B, K) with padding on the
right (``step_mask`` a True-prefix per row; padded ``step_ends`` are conventionally -1 and are ignored).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import torch
from torch import Tensor

EPS = 1e-4
"""Added to the sample std before dividing (DeepSeekMath/TRL style), so tiny spreads do not blow up."""


def _normalise(values: Tensor, eps: float) -> Tensor:
    """(x − mean) / (sample std + eps) over a 1-D tensor; zeros if fewer than 2 values or zero spread."""
    if values.numel() < 2 or values.max() == values.min():
        return torch.zeros_like(values)
    return (values - values.mean()) / (values.std() + eps)


def outcome_advantages(rewards: Tensor, eps: float = EPS) -> Tensor:
    """Outcome-supervised advantages of one group (§4.1.2): (r − mean(r)) / (std(r) + eps), sample std. (G,) -> (G,)."""
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (G,), got shape {tuple(rewards.shape)}")
    if not rewards.is_floating_point():
        rewards = rewards.float()
    return _normalise(rewards, eps)


def _check_steps(step_rewards: list[list[float]], step_ends: list[list[int]], num_tokens: list[int]) -> None:
    if not len(step_rewards) == len(step_ends) == len(num_tokens):
        raise ValueError(
            f"{len(step_rewards)} step-reward lists, {len(step_ends)} step-end lists, {len(num_tokens)} token counts"
        )
    for index, (rewards, ends, length) in enumerate(zip(step_rewards, step_ends, num_tokens)):
        if len(rewards) != len(ends):
            raise ValueError(f"output {index}: {len(rewards)} step rewards for {len(ends)} step ends")
        if any(end < 0 or end >= length for end in ends):
            raise ValueError(f"output {index}: step ends {ends} must lie in [0, {length}) (num_tokens)")
        if any(later < earlier for earlier, later in pairwise(ends)):
            raise ValueError(f"output {index}: step ends {ends} must be non-decreasing")


def _split(flat: Tensor, step_rewards: list[list[float]]) -> list[Tensor]:
    return list(torch.split(flat, [len(rewards) for rewards in step_rewards]))


def process_advantages(
    step_rewards: list[list[float]], step_ends: list[list[int]], num_tokens: list[int], eps: float = EPS
) -> list[Tensor]:
    """Process-supervised ("sum" credit) token advantages of one group (§4.1.3); one (num_tokens[i],) tensor per output.

    r̃ = step rewards normalised over the group's flattened list R; Â_{i,t} = Σ_{j : step_ends[i][j] >= t} r̃_i^j.
    """
    _check_steps(step_rewards, step_ends, num_tokens)
    flat = torch.tensor([r for rewards in step_rewards for r in rewards], dtype=torch.float32)
    normalised = _split(_normalise(flat, eps), step_rewards)
    advantages = []
    for ends, step_adv, length in zip(step_ends, normalised, num_tokens):
        token_adv = torch.zeros(length)
        for end, value in zip(ends, step_adv):
            token_adv[: end + 1] += value  # step j's reward reaches every token at or before its last token
        advantages.append(token_adv)
    return advantages


def process_advantages_min_form(
    step_rewards: list[list[float]], step_ends: list[list[int]], num_tokens: list[int], eps: float = EPS
) -> list[Tensor]:
    """Min-form ("min" credit, PURE) token advantages of one group; one (num_tokens[i],) tensor per output.

    g_i^j = min_{k >= j} r_i^k; g normalised over all g's of the group; tokens of step j (end_{j-1} < t <= end_j) get
    g̃_i^j; tokens after the last step end get 0.
    """
    _check_steps(step_rewards, step_ends, num_tokens)
    returns = [[min(rewards[j:]) for j in range(len(rewards))] for rewards in step_rewards]
    flat = torch.tensor([g for output_returns in returns for g in output_returns], dtype=torch.float32)
    normalised = _split(_normalise(flat, eps), step_rewards)
    advantages = []
    for ends, step_adv, length in zip(step_ends, normalised, num_tokens):
        token_adv = torch.zeros(length)
        step_start = 0
        for end, value in zip(ends, step_adv):
            token_adv[step_start : end + 1] = value  # empty slice when a step ends on the previous step's token
            step_start = max(step_start, end + 1)
        advantages.append(token_adv)
    return advantages


def mix_outcome(process_adv: list[Tensor], outcome_rewards: Tensor, weight: float, eps: float = EPS) -> list[Tensor]:
    """Add weight · outcome_advantages(outcome_rewards)[i] to every token of output i (all of its tokens)."""
    if len(process_adv) != outcome_rewards.numel():
        raise ValueError(f"{len(process_adv)} outputs but {outcome_rewards.numel()} outcome rewards")
    outcome_adv = outcome_advantages(outcome_rewards, eps)  # (G,)
    return [token_adv + weight * outcome_adv[i] for i, token_adv in enumerate(process_adv)]


CREDIT: dict[str, Callable[..., list[Tensor]]] = {"sum": process_advantages, "min": process_advantages_min_form}
"""Credit-assignment variants for process rewards, by name."""


def get_credit(name: str) -> Callable[..., list[Tensor]]:
    """The per-group process-advantage function called ``name``; ValueError listing the valid names otherwise."""
    if name not in CREDIT:
        raise ValueError(f"unknown credit {name!r}; valid: {', '.join(sorted(CREDIT))}")
    return CREDIT[name]


# ---- vectorised batch versions (B = n_groups * G rows, groups contiguous) ----


def _normalise_groups(values: Tensor, mask: Tensor, eps: float) -> Tensor:
    """Row-wise masked `_normalise`: each row is one group's list. (N, M) -> (N, M), 0 at masked-out entries."""
    count = mask.sum(dim=1, keepdim=True)  # (N, 1)
    mean = torch.where(mask, values, 0.0).sum(dim=1, keepdim=True) / count.clamp(min=1)  # (N, 1)
    centred = torch.where(mask, values - mean, 0.0)  # (N, M)
    std = (centred.square().sum(dim=1, keepdim=True) / (count - 1).clamp(min=1)).sqrt()  # (N, 1) sample std
    high = torch.where(mask, values, -torch.inf).amax(dim=1, keepdim=True)  # (N, 1)
    low = torch.where(mask, values, torch.inf).amin(dim=1, keepdim=True)  # (N, 1)
    has_spread = (count >= 2) & (high > low)  # (N, 1)
    return torch.where(mask & has_spread, centred / (std + eps), 0.0)  # (N, M)


def outcome_advantages_batch(rewards: Tensor, group_size: int, eps: float = EPS) -> Tensor:
    """`outcome_advantages` for every group at once. (B,) -> (B,)."""
    if rewards.dim() != 1 or group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards of shape {tuple(rewards.shape)} do not split into groups of {group_size}")
    if not rewards.is_floating_point():
        rewards = rewards.float()
    grouped = rewards.reshape(-1, group_size)  # (n_groups, G)
    return _normalise_groups(grouped, torch.ones_like(grouped, dtype=torch.bool), eps).reshape(-1)  # (B,)


def _sum_step_values(step_rewards: Tensor, step_mask: Tensor, group_size: int, eps: float) -> Tensor:
    """Value every token of step j gets under "sum" credit: Σ_{k >= j} r̃^k. (B, K) -> (B, K)."""
    batch, max_steps = step_rewards.shape
    grouped = (-1, group_size * max_steps)
    normalised = _normalise_groups(step_rewards.reshape(grouped), step_mask.reshape(grouped), eps)  # (n_groups, G*K)
    normalised = normalised.reshape(batch, max_steps)  # (B, K), 0 at padding
    return normalised.flip(1).cumsum(1).flip(1)  # (B, K) suffix sums over steps


def _min_step_values(step_rewards: Tensor, step_mask: Tensor, group_size: int, eps: float) -> Tensor:
    """Value every token of step j gets under "min" credit: normalised min_{k >= j} r^k. (B, K) -> (B, K)."""
    batch, max_steps = step_rewards.shape
    padded = torch.where(step_mask, step_rewards, torch.inf)  # (B, K) padding never wins a min
    returns = padded.flip(1).cummin(1).values.flip(1)  # (B, K) suffix minima over steps
    grouped = (-1, group_size * max_steps)
    return _normalise_groups(returns.reshape(grouped), step_mask.reshape(grouped), eps).reshape(batch, max_steps)


_STEP_VALUES: dict[str, Callable[[Tensor, Tensor, int, float], Tensor]] = {
    "sum": _sum_step_values,
    "min": _min_step_values,
}


def _check_batch(step_rewards: Tensor, step_ends: Tensor, step_mask: Tensor, num_tokens: int, group_size: int) -> None:
    if step_rewards.dim() != 2 or step_rewards.shape != step_ends.shape or step_rewards.shape != step_mask.shape:
        shapes = [tuple(t.shape) for t in (step_rewards, step_ends, step_mask)]
        raise ValueError(f"step_rewards, step_ends, step_mask must share one (B, K) shape, got {shapes}")
    if group_size < 1 or step_rewards.shape[0] % group_size:
        raise ValueError(f"batch of {step_rewards.shape[0]} outputs does not split into groups of {group_size}")
    if (step_mask[:, 1:] & ~step_mask[:, :-1]).any():
        raise ValueError("step_mask must be a True-prefix in every row (padding on the right)")
    if (step_mask & ((step_ends < 0) | (step_ends >= num_tokens))).any():
        raise ValueError(f"valid step ends must lie in [0, {num_tokens}) (num_tokens)")
    if (step_mask[:, 1:] & (step_ends[:, 1:] < step_ends[:, :-1])).any():
        raise ValueError("valid step ends must be non-decreasing within each row")


def process_advantages_batch(
    step_rewards: Tensor,
    step_ends: Tensor,
    step_mask: Tensor,
    num_tokens: int,
    group_size: int,
    credit: str = "sum",
    eps: float = EPS,
) -> Tensor:
    """`CREDIT[credit]` for every group at once. (B, K) step tensors -> (B, T) token advantages, T = num_tokens.

    Tokens after a row's last step end (and all tokens of a row with no steps) get 0.
    """
    if credit not in _STEP_VALUES:
        raise ValueError(f"unknown credit {credit!r}; valid: {', '.join(sorted(_STEP_VALUES))}")
    step_mask = step_mask.bool()
    _check_batch(step_rewards, step_ends, step_mask, num_tokens, group_size)
    if not step_rewards.is_floating_point():
        step_rewards = step_rewards.float()
    step_values = _STEP_VALUES[credit](step_rewards, step_mask, group_size, eps)  # (B, K)
    batch = step_rewards.shape[0]
    sorted_ends = torch.where(step_mask, step_ends, num_tokens).contiguous()  # (B, K) padding sorts after every token
    positions = torch.arange(num_tokens, device=step_ends.device).expand(batch, num_tokens).contiguous()  # (B, T)
    step_of_token = torch.searchsorted(sorted_ends, positions)  # (B, T) first step j with end_j >= t, else its count
    zero_column = step_values.new_zeros(batch, 1)  # (B, 1) value of "no step"
    values = torch.cat([torch.where(step_mask, step_values, 0.0), zero_column], dim=1)  # (B, K + 1)
    return values.gather(1, step_of_token)  # (B, T)


def mix_outcome_batch(
    process_adv: Tensor,
    outcome_rewards: Tensor,
    completion_mask: Tensor,
    group_size: int,
    weight: float,
    eps: float = EPS,
) -> Tensor:
    """`mix_outcome` for every group at once: (B, T) + weight · outcome adv (B,) on every completion token. (B, T)."""
    outcome_adv = outcome_advantages_batch(outcome_rewards, group_size, eps)  # (B,)
    return process_adv + weight * outcome_adv[:, None] * completion_mask.to(process_adv.dtype)  # (B, T)
