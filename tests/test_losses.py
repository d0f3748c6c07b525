"""Tests for policy/losses.py: hand-computed GRPO loss, k3 KL, clip stats, padding invariance and gradient paths."""

import math

import pytest
import torch

from prmloop.policy.losses import grpo_loss, kl_k3, masked_mean

LOG = math.log


def approx(value, abs=1e-6):
    return pytest.approx(value, abs=abs)


def test_kl_k3_hand_value():
    # π_θ = 0.5, π_ref = 0.25: ratio π_ref/π_θ = 0.5 -> 0.5 - log 0.5 - 1 = 0.5 + 0.6931472 - 1 = 0.1931472
    kl = kl_k3(torch.tensor([LOG(0.5)]), torch.tensor([LOG(0.25)]))
    assert kl.item() == approx(0.1931472)
    # π_θ = 0.25, π_ref = 0.5: ratio 2 -> 2 - log 2 - 1 = 0.3068528
    assert kl_k3(torch.tensor(LOG(0.25)), torch.tensor(LOG(0.5))).item() == approx(0.3068528)


def test_kl_k3_zero_when_equal_and_never_negative():
    logp = torch.linspace(-20.0, 0.0, 41)
    assert kl_k3(logp, logp).abs().max().item() == 0.0
    ref = logp.flip(0)
    assert (kl_k3(logp, ref) >= 0).all()


def test_masked_mean():
    values = torch.tensor([[1.0, 2.0, 100.0], [4.0, 6.0, 8.0], [float("nan"), 5.0, 5.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0]])
    # all valid: 1 + 2 + 4 + 6 + 8 = 21 over 5 tokens = 4.2 (masked nan and 100 ignored)
    assert masked_mean(values, mask).item() == approx(4.2)
    # per row: 3/2 = 1.5, 18/3 = 6, no valid entries -> 0
    assert masked_mean(values, mask, dim=1).tolist() == [1.5, 6.0, 0.0]
    assert masked_mean(values, mask.bool(), dim=0).tolist() == [2.5, 4.0, 8.0]


def _two_output_batch():
    """Output 0 = tokens A, B; output 1 = token C then one padding token. Working in test_grpo_loss_hand_case."""
    logp = torch.tensor([[LOG(0.5), LOG(0.3)], [LOG(0.2), 0.0]], requires_grad=True)
    old_logp = torch.tensor([[LOG(0.4), LOG(0.5)], [LOG(0.2), 0.0]])
    ref_logp = torch.tensor([[LOG(0.25), LOG(0.3)], [LOG(0.2), 0.0]])
    advantages = torch.tensor([[1.0, -1.0], [0.5, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    return logp, old_logp, ref_logp, advantages, mask


def test_grpo_loss_hand_case():
    # ε = 0.2, β = 0.1.
    # A: ρ = 0.5/0.4 = 1.25, Â = 1: ρÂ = 1.25, clip(ρ)Â = 1.2, min = 1.2 (high-clipped);
    #    KL: π_ref/π_θ = 0.25/0.5 -> 0.1931472; loss_A = -1.2 + 0.1 * 0.1931472 = -1.1806853
    # B: ρ = 0.3/0.5 = 0.6, Â = -1: ρÂ = -0.6, clip(ρ)Â = -0.8, min = -0.8 (low-clipped); KL 0; loss_B = 0.8
    # C: ρ = 1, Â = 0.5: min = 0.5; KL 0; loss_C = -0.5
    # "grpo": output 0 mean (-1.1806853 + 0.8) / 2 = -0.1903426; output 1 = -0.5; mean over outputs -0.3451713
    # (a flat token mean would be (-1.1806853 + 0.8 - 0.5) / 3 = -0.2935618, so this also pins the aggregation)
    loss, stats = grpo_loss(*_two_output_batch(), clip_eps=0.2, beta=0.1)
    assert loss.item() == approx(-0.3451713)
    assert stats["kl"].item() == approx(0.1931472 / 3)  # 0.0643824, mean over the 3 valid tokens
    assert stats["clip_ratio/low_mean"].item() == approx(1 / 3)  # token B
    assert stats["clip_ratio/high_mean"].item() == approx(1 / 3)  # token A
    assert stats["clip_ratio/region_mean"].item() == approx(2 / 3)
    assert all(value.dim() == 0 and not value.requires_grad for value in stats.values())


def test_grpo_loss_gradient_hand_case():
    # d loss / d logp per token, with weights 1/|o_i| * 1/G = 1/4 for A, B and 1/2 for C:
    # A: clipped (ρ > 1 + ε, Â > 0) -> policy term has no gradient; KL term β * d/dlogp [e^{ref-logp} - (ref-logp) - 1]
    #    = 0.1 * (1 - 0.5) = 0.05; times 1/4 -> 0.0125
    # B: clipped (ρ < 1 - ε, Â < 0) -> 0; KL gradient 1 - 1 = 0 -> 0
    # C: unclipped, d(-ρÂ)/dlogp = -ρÂ = -0.5; times 1/2 -> -0.25.   Padding -> 0.
    logp, *rest = _two_output_batch()
    loss, _ = grpo_loss(logp, *rest, clip_eps=0.2, beta=0.1)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0125, 0.0], [-0.25, 0.0]]))


def test_grpo_loss_negative_advantage_above_clip_keeps_gradient():
    # ρ = 1.25, Â = -1: min(-1.25, -1.2) = -1.25 is the unclipped term -> loss 1.25, gradient -ρÂ = 1.25, not counted
    # as clipped in TRL's stats (the clip is not what is binding).
    logp = torch.tensor([[LOG(0.5)]], requires_grad=True)
    loss, stats = grpo_loss(logp, torch.tensor([[LOG(0.4)]]), None, torch.tensor([[-1.0]]), torch.ones(1, 1), 0.2, 0.0)
    loss.backward()
    assert loss.item() == approx(1.25)
    assert logp.grad.item() == approx(1.25)
    assert stats["clip_ratio/region_mean"].item() == 0.0


def test_grpo_loss_padding_does_not_change_anything():
    logp, old_logp, ref_logp, advantages, mask = _two_output_batch()
    loss, stats = grpo_loss(logp, old_logp, ref_logp, advantages, mask, clip_eps=0.2, beta=0.1)
    loss.backward()
    # Two more padded columns and a fully padded third output, with garbage (huge, -inf, nan) in every padded slot.
    garbage = torch.tensor([[50.0, -torch.inf], [-1e4, torch.nan]])

    def widen(values, pad):
        return torch.cat([torch.cat([values, pad], dim=1), torch.full((1, 4), 7.0)], dim=0)  # (3, 4)

    wide_logp = widen(logp.detach(), garbage).requires_grad_()
    wide_mask = torch.cat([torch.cat([mask, torch.zeros(2, 2)], dim=1), torch.zeros(1, 4)], dim=0)
    wide_args = (widen(old_logp, -garbage), widen(ref_logp, garbage), widen(advantages, garbage), wide_mask)
    wide_loss, wide_stats = grpo_loss(wide_logp, *wide_args, clip_eps=0.2, beta=0.1)
    wide_loss.backward()
    assert wide_loss.item() == approx(loss.item())
    assert {key: value.item() for key, value in wide_stats.items()} == pytest.approx(
        {key: value.item() for key, value in stats.items()}
    )
    torch.testing.assert_close(wide_logp.grad[:2, :2], logp.grad)
    assert wide_logp.grad[:, 2:].abs().sum() == 0 and wide_logp.grad[2].abs().sum() == 0


def test_grpo_loss_beta_zero_without_reference():
    # Same batch, β = 0: output 0 (-1.2 + 0.8) / 2 = -0.2; output 1 -0.5; mean -0.35. No reference -> no "kl" stat.
    logp, old_logp, _, advantages, mask = _two_output_batch()
    loss, stats = grpo_loss(logp, old_logp, None, advantages, mask, clip_eps=0.2, beta=0.0)
    assert loss.item() == approx(-0.35)
    assert "kl" not in stats
    assert stats["clip_ratio/region_mean"].item() == approx(2 / 3)
    with pytest.raises(ValueError, match="ref_logp is required when beta != 0"):
        grpo_loss(logp, old_logp, None, advantages, mask, clip_eps=0.2, beta=0.04)


def test_grpo_loss_gradient_flows_only_through_logp():
    logp, old_logp, ref_logp, advantages, mask = _two_output_batch()
    for tensor in (old_logp, ref_logp, advantages):
        tensor.requires_grad_()
    loss, _ = grpo_loss(logp, old_logp, ref_logp, advantages, mask, clip_eps=0.2, beta=0.1)
    loss.backward()
    assert logp.grad is not None
    assert old_logp.grad is None and ref_logp.grad is None and advantages.grad is None


def test_grpo_loss_on_policy_outcome_advantages_broadcast():
    # μ = 1 (old = θ): ρ = 1 everywhere, nothing clipped; Â (B, 1) broadcasts over tokens.
    # Output 0 (2 tokens) Â = 0.8, output 1 (1 token) Â = -0.8: loss = (-0.8 + 0.8) / 2 = 0.
    # Gradient: -Â / |o_i| / G -> output 0 tokens -0.8 / 2 / 2 = -0.2 each; output 1 token 0.8 / 1 / 2 = 0.4.
    logp = torch.tensor([[LOG(0.3), LOG(0.6)], [LOG(0.9), 0.0]], requires_grad=True)
    mask = torch.tensor([[True, True], [True, False]])
    loss, stats = grpo_loss(logp, logp.detach(), None, torch.tensor([[0.8], [-0.8]]), mask, clip_eps=0.2, beta=0.0)
    loss.backward()
    assert loss.item() == approx(0.0)
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.2, -0.2], [0.4, 0.0]]))
    assert stats["clip_ratio/region_mean"].item() == 0.0


def test_grpo_loss_with_no_valid_token_is_zero_and_differentiable():
    logp = torch.randn(2, 3, requires_grad=True)
    loss, stats = grpo_loss(logp, logp.detach(), logp.detach(), torch.ones(2, 3), torch.zeros(2, 3), 0.2, 0.04)
    loss.backward()
    assert loss.item() == 0.0 and loss.requires_grad
    assert logp.grad.abs().sum() == 0
    assert stats["kl"].item() == 0.0 and stats["clip_ratio/region_mean"].item() == 0.0
