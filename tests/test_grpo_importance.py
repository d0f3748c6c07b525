"""Tests for policy/importance.py (truncated importance sampling for a vLLM sampler) and the ``sampling_weight`` of
policy/losses.py's grpo_loss, with hand-computed values. The trainer wiring: tests/test_vllm_backend.py."""

import math

import pytest
import torch

from prmloop.policy.importance import sampler_mismatch_stats, truncated_is_weights
from prmloop.policy.losses import grpo_loss

OLD = torch.tensor([[-1.0, -2.0, -0.5], [-2.0, -1.0, -1.0]])  # π_old, recomputed by the trainer
ENGINE = torch.tensor([[-1.0, -2.5, 0.5], [-1.0, -1.0, -1.0]])  # the engine's sampling log-probs
MASK = torch.tensor([[True, True, False], [True, True, True]])


def test_truncated_is_weights_literal():
    # log(π_old/π_engine) = [[0, 0.5, pad], [-1, 0, 0]] -> exp = [[1, 1.648721, 1 (pad)], [0.367879, 1, 1]]
    # cap 1.5 truncates only 1.648721; ratios below 1 stay (TRL's token_truncate clamps from above only)
    weights = truncated_is_weights(OLD, ENGINE, MASK, cap=1.5)
    assert weights.tolist() == [[1.0, 1.5, 1.0], [pytest.approx(0.367879, abs=1e-6), 1.0, 1.0]]
    assert truncated_is_weights(OLD, ENGINE, MASK, cap=2.0)[0, 1].item() == pytest.approx(1.648721, abs=1e-6)


def test_truncated_is_weights_ignore_padding_garbage_and_carry_no_gradient():
    old = torch.tensor([[-1.0, math.nan]], requires_grad=True)
    weights = truncated_is_weights(old, torch.tensor([[-1.5, math.inf]]), torch.tensor([[True, False]]), cap=3.0)
    assert weights.tolist() == [[pytest.approx(math.exp(0.5)), 1.0]] and not weights.requires_grad


def test_sampler_mismatch_stats_literal():
    # valid |old - engine| = 0, 0.5, 1, 0, 0 -> mean 0.3, max 1; weights (cap 1.5) 1, 1.5, 0.367879, 1, 1
    stats = sampler_mismatch_stats(OLD, ENGINE, MASK, truncated_is_weights(OLD, ENGINE, MASK, cap=1.5))
    assert stats == {
        "sampling/sampling_logp_difference/mean": pytest.approx(0.3),
        "sampling/sampling_logp_difference/max": pytest.approx(1.0),
        "sampling/importance_sampling_ratio/min": pytest.approx(0.367879, abs=1e-6),
        "sampling/importance_sampling_ratio/mean": pytest.approx((1 + 1.5 + 0.367879 + 1 + 1) / 5, abs=1e-6),
        "sampling/importance_sampling_ratio/max": pytest.approx(1.5),
    }
    assert set(sampler_mismatch_stats(OLD, ENGINE, MASK, None)) == {"sampling/sampling_logp_difference/mean",
                                                                    "sampling/sampling_logp_difference/max"}


def test_grpo_loss_weights_the_surrogate_but_not_the_kl():
    # one output, two tokens, ρ = 1 (logp = old), Â = [1, -2], weights [0.5, 1.5], ε = 0.2
    # surrogate per token: ρÂ = [1, -2] -> weighted [0.5, -3]
    logp = torch.tensor([[-1.0, -0.5]], requires_grad=True)
    old, mask, adv = logp.detach().clone(), torch.tensor([[True, True]]), torch.tensor([[1.0, -2.0]])
    weight = torch.tensor([[0.5, 1.5]], requires_grad=True)
    # β = 0: loss = -(0.5 - 3) / 2 = 1.25 (unweighted: -(1 - 2) / 2 = 0.5)
    assert grpo_loss(logp, old, None, adv, mask, 0.2, 0.0)[0].item() == pytest.approx(0.5)
    assert grpo_loss(logp, old, None, adv, mask, 0.2, 0.0, weight)[0].item() == pytest.approx(1.25)
    # β = 0.1, π_ref = 2 π_θ at token 0: k3 = 2 - ln 2 - 1 = 0.306853, unweighted:
    # loss = -((0.5 - 0.1 * 0.306853) + (-3)) / 2 = 1.265343
    ref = logp.detach() + torch.tensor([[math.log(2.0), 0.0]])
    loss, _ = grpo_loss(logp, old, ref, adv, mask, 0.2, 0.1, weight)
    assert loss.item() == pytest.approx(1.265343, abs=1e-6)
    loss.backward()
    assert weight.grad is None and logp.grad is not None  # the weights are constants
