"""Implicit process rewards as pure functions: token rewards, step rewards, step values and scores, the CE loss.

An implicit PRM (Yuan et al. 2024, "Free Process Rewards without Process Labels", arXiv 2412.01981) is a causal LM
π_φ trained as an outcome reward model whose reward is a log-likelihood ratio to a frozen reference π_ref:
    r_φ(y) = β log π_φ(y) / π_ref(y) = Σ_t r_φ(y_t),   r_φ(y_t) = β log π_φ(y_t | y_<t) / π_ref(y_t | y_<t)
(PRIME, Cui et al. 2025, arXiv 2502.01456). Its running sum q_t = Σ_{i ≤ t} r_φ(y_i) is a Q value
(Yuan et al., Proposition: q_t = β log E_{π_ref}[exp(r_φ(y)/β) | y_≤t]), so prefixes get values from outcome labels.

prmloop reads it at steps (a step spans its own tokens and the separator that closes it, ``prm.encoding``):
- step reward of step j: Σ of its tokens' r_φ(y_t) = q_{end(j)} − q_{end(j−1)} (what GRPO's process advantages get,
  like an explicit PRM's step probabilities);
- step value q_j = q_{end(j)}, the running sum through step j's separator, and step score σ(q_j) (what evaluation,
  Best-of-N and search read: the probability-like value the CE loss trains σ(q_K) to be for the whole solution);
- the loss (PRIME's ``loss_type: ce``, ``compute_ce_dpo_loss_rm`` in its verl code):
  L_CE = −[y log σ(q_K) + (1 − y) log(1 − σ(q_K))], y the outcome label.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def token_rewards(logp: Tensor, ref_logp: Tensor, beta: float) -> Tensor:
    """r_φ(y_t) = β·(log π_φ(y_t | y_<t) − log π_ref(y_t | y_<t)), elementwise (any shape, e.g. (B, T))."""
    return beta * (logp - ref_logp)


def span_sums(values: Tensor, rows: Tensor, starts: Tensor, ends: Tensor) -> Tensor:
    """(S,) Σ of ``values`` (B, T) over positions starts[s]..ends[s] (both included) of row rows[s]."""
    running = values.cumsum(dim=1)  # (B, T)
    before = torch.where(starts > 0, running[rows, (starts - 1).clamp(min=0)], torch.zeros_like(running[rows, ends]))
    return running[rows, ends] - before  # (S,)


def step_values(step_rewards: Tensor, rows: Tensor) -> Tensor:
    """(S,) q_j: the running sum of each solution's step rewards through step j; the steps of one solution are
    adjacent and in order in ``step_rewards``/``rows`` (S,)."""
    if rows.numel() == 0:
        return step_rewards.clone()
    starts = torch.ones_like(rows, dtype=torch.bool)  # (S,) first step of each solution
    starts[1:] = rows[1:] != rows[:-1]
    total = step_rewards.cumsum(dim=0)  # (S,)
    offset = (total - step_rewards)[starts]  # (N,) sum of every earlier solution's steps
    return total - offset[starts.long().cumsum(dim=0) - 1]


def step_scores(values: Tensor) -> Tensor:
    """σ(q_j): a step value read as the probability that the solution through that step ends right."""
    return torch.sigmoid(values)


def outcome_ce_loss(outcome_values: Tensor, labels: Tensor) -> Tensor:
    """PRIME's L_CE, mean over N solutions: outcome values q_K (N,) against outcome labels y in [0, 1] (N,)."""
    return F.binary_cross_entropy_with_logits(outcome_values.float(), labels.float())
