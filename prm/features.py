"""The LM's own log-prob features of a step (pure tensor functions): how surprised the policy is by the step's tokens.

For the tokens t of a step: min_t log p(x_t | x_<t), mean_t log p(x_t | x_<t), and min_t (log p(x_t) − max_v log p(v)),
the margin to the argmax (0 iff every token is the model's own top choice). A wrong result is usually a
low-probability, non-argmax token; the PRM adds these, weighted, to its head's logit (``prm.logp_features``).
"""

from __future__ import annotations

import torch

LOGP_FEATURES = ("min_logp", "mean_logp", "min_margin")
"""The per-step log-prob features, in ``logp_weight`` order (see ``span_logp_features``)."""
LOGP_WEIGHT_INIT = (1.0, 0.0, 1.0)
"""Initial (a, c, d): a fresh PRM with features starts as 'a step is as good as its least likely token'."""


def token_logp_and_margin(lm_logits: torch.Tensor, next_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(next token) and its margin to the argmax, log p(next) − max_v log p(v) (<= 0, 0 iff it is an argmax),
    from LM logits (N, V) and the tokens that came next (N,); both (N,) float32."""
    logp_all = torch.log_softmax(lm_logits.float(), dim=-1)  # (N, V)
    logp = logp_all.gather(-1, next_ids[:, None]).squeeze(-1)  # (N,)
    return logp, logp - logp_all.max(dim=-1).values


def span_logp_features(
    token_logp: torch.Tensor, token_margin: torch.Tensor, rows: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor
) -> torch.Tensor:
    """(S, 3) features of S token spans: min and mean of ``token_logp`` and min of ``token_margin`` (both (B, T))
    over tokens starts[s]..ends[s] (inclusive) of row rows[s]."""
    positions = torch.arange(token_logp.shape[1], device=token_logp.device)  # (T,)
    in_span = (positions[None, :] >= starts[:, None]) & (positions[None, :] <= ends[:, None])  # (S, T)
    logp, margin = token_logp[rows], token_margin[rows]  # (S, T)
    inf = torch.tensor(torch.inf, dtype=logp.dtype, device=logp.device)
    min_logp = torch.where(in_span, logp, inf).min(dim=-1).values  # (S,)
    mean_logp = (logp * in_span).sum(dim=-1) / in_span.sum(dim=-1)  # (S,)
    min_margin = torch.where(in_span, margin, inf).min(dim=-1).values  # (S,)
    return torch.stack([min_logp, mean_logp, min_margin], dim=-1)  # (S, 3)
