"""Tests for policy/advantages.py: hand-computed outcome, process and min-form advantages; batch equals per-group."""

import random

import pytest
import torch

from prmloop.policy.advantages import (
    CREDIT,
    get_credit,
    mix_outcome,
    mix_outcome_batch,
    outcome_advantages,
    outcome_advantages_batch,
    process_advantages,
    process_advantages_batch,
    process_advantages_min_form,
)


def approx(values, rel=1e-5, abs=1e-6):
    return pytest.approx(values, rel=rel, abs=abs)


# ---- outcome supervision ----


def test_outcome_hand_case_binary():
    # [1, 0, 0, 1]: mean 0.5; sample var = 4 * 0.25 / 3 = 1/3, std 0.5773503
    # adv = ±0.5 / (0.5773503 + 1e-4) = ±0.8658754
    adv = outcome_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]))
    assert adv.tolist() == approx([0.8658754, -0.8658754, -0.8658754, 0.8658754])


def test_outcome_hand_case_two_values():
    # [3, 5]: mean 4; sample std sqrt(((-1)^2 + 1^2) / 1) = 1.4142135; adv = ∓1 / 1.4143135 = ∓0.7070568
    adv = outcome_advantages(torch.tensor([3.0, 5.0]))
    assert adv.tolist() == approx([-0.7070568, 0.7070568])


def test_outcome_integer_rewards_are_accepted():
    assert outcome_advantages(torch.tensor([3, 5])).tolist() == approx([-0.7070568, 0.7070568])


def test_outcome_custom_eps():
    # [3, 5] with eps = 0: ∓1 / 1.4142136 = ∓0.7071068
    assert outcome_advantages(torch.tensor([3.0, 5.0]), eps=0.0).tolist() == approx([-0.7071068, 0.7071068])


def test_outcome_zero_spread_and_single_output_give_zeros():
    assert outcome_advantages(torch.tensor([0.7, 0.7, 0.7])).tolist() == [0.0, 0.0, 0.0]
    assert outcome_advantages(torch.tensor([1.0])).tolist() == [0.0]
    assert outcome_advantages(torch.tensor([])).tolist() == []


def test_outcome_property_sums_to_zero():
    generator = torch.Generator().manual_seed(0)
    for group_size in (2, 3, 8, 64):
        adv = outcome_advantages(torch.rand(group_size, generator=generator))
        assert float(adv.sum()) == pytest.approx(0.0, abs=1e-4)
        assert not torch.isnan(adv).any()


def test_outcome_rejects_non_vector():
    with pytest.raises(ValueError, match="1-D"):
        outcome_advantages(torch.zeros(2, 2))


# ---- process supervision, "sum" credit ----

# Output 0: 5 tokens, steps end at tokens 1 and 3, rewards [0.9, 0.6]. Output 1: 4 tokens, one step ending at 2, [0.0].
UNEVEN = ([[0.9, 0.6], [0.0]], [[1, 3], [2]], [5, 4])


def test_process_hand_case_uneven_steps():
    # R = [0.9, 0.6, 0.0]: mean 0.5; deviations 0.4, 0.1, -0.5; squares 0.16 + 0.01 + 0.25 = 0.42
    # sample var 0.42 / 2 = 0.21, std 0.4582576; divide by 0.4583576:
    # r̃ = [0.8726811, 0.2181703], [-1.0908514]
    # output 0: tokens 0-1 (step 0) get r̃0 + r̃1 = 1.0908514; tokens 2-3 (step 1) get 0.2181703; token 4 (after) 0
    # output 1: tokens 0-2 get -1.0908514; token 3 (after the last step end) 0
    adv = process_advantages(*UNEVEN)
    assert adv[0].tolist() == approx([1.0908514, 1.0908514, 0.2181703, 0.2181703, 0.0])
    assert adv[1].tolist() == approx([-1.0908514, -1.0908514, -1.0908514, 0.0])


def test_process_steps_ending_on_the_same_token():
    # Output 0 steps end at [0, 0, 1] with rewards [1, 0, 1]; output 1 one step at 0 with reward 0.
    # R = [1, 0, 1, 0]: mean 0.5, sample var 4 * 0.25 / 3 = 1/3, std 0.5773503; r̃ = ±0.8658754
    # output 0: token 0 gets r̃0 + r̃1 + r̃2 = 0.8658754; token 1 gets r̃2 = 0.8658754; output 1 token 0: -0.8658754
    adv = process_advantages([[1.0, 0.0, 1.0], [0.0]], [[0, 0, 1], [0]], [2, 1])
    assert adv[0].tolist() == approx([0.8658754, 0.8658754])
    assert adv[1].tolist() == approx([-0.8658754])


def test_process_output_without_steps_gets_zeros_and_does_not_count():
    # R = [1, 0] only (output 1 has no steps): mean 0.5, sample std sqrt(0.5) = 0.7071068; r̃ = ±0.5/0.7072068
    # = ±0.7070068. Output 0: token 0 gets 0.7070068 - 0.7070068 = 0; token 1 gets -0.7070068.
    adv = process_advantages([[1.0, 0.0], []], [[0, 1], []], [2, 3])
    assert adv[0].tolist() == approx([0.0, -0.7070068])
    assert adv[1].tolist() == [0.0, 0.0, 0.0]


def test_process_zero_spread_and_single_step_give_zeros():
    adv = process_advantages([[0.5, 0.5], [0.5]], [[0, 2], [1]], [3, 2])
    assert [a.tolist() for a in adv] == [[0.0, 0.0, 0.0], [0.0, 0.0]]
    assert process_advantages([[0.9]], [[1]], [3])[0].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("credit", ["sum", "min"])
@pytest.mark.parametrize(
    ("step_ends", "num_tokens", "message"),
    [
        ([[2, 1]], [4], "non-decreasing"),
        ([[1, 4]], [4], r"\[0, 4\)"),
        ([[-1, 2]], [4], r"\[0, 4\)"),
        ([[1]], [4], "2 step rewards for 1 step ends"),
        ([[1, 2]], [4, 4], "1 step-reward lists, 1 step-end lists, 2 token counts"),
    ],
)
def test_process_validation(credit, step_ends, num_tokens, message):
    with pytest.raises(ValueError, match=message):
        get_credit(credit)([[0.1, 0.2]], step_ends, num_tokens)


# ---- min-form credit (PURE) ----


def test_min_form_hand_case():
    # Output 0: 6 tokens, steps end at [1, 2, 4], rewards [0.9, 0.2, 0.7] -> returns g = [0.2, 0.2, 0.7]
    # Output 1: 3 tokens, one step ending at 1, reward 0.5 -> g = [0.5]
    # all g = [0.2, 0.2, 0.7, 0.5]: mean 0.4; deviations -0.2, -0.2, 0.3, 0.1; squares sum 0.18; sample var 0.06,
    # std 0.2449490; divide by 0.2450490: g̃ = -0.8161634, -0.8161634, 1.2242451, 0.4080817
    # output 0: tokens 0-1 step 0, token 2 step 1, tokens 3-4 step 2, token 5 after the end
    adv = process_advantages_min_form([[0.9, 0.2, 0.7], [0.5]], [[1, 2, 4], [1]], [6, 3])
    assert adv[0].tolist() == approx([-0.8161634, -0.8161634, -0.8161634, 1.2242451, 1.2242451, 0.0])
    assert adv[1].tolist() == approx([0.4080817, 0.4080817, 0.0])


def test_min_form_steps_ending_on_the_same_token():
    # Output 0 rewards [0.1, 0.9] both ending at token 0 -> g = [0.1, 0.9]; token 0 belongs to step 0 -> g̃ of 0.1.
    # Output 1 reward [0.9] at token 0 -> g = [0.9]. all g = [0.1, 0.9, 0.9]: mean 1.9/3 = 0.6333333;
    # deviations -0.5333333, 0.2666667, 0.2666667; squares sum 0.2844444 + 0.0711111 * 2 = 0.4266667;
    # sample var 0.2133333, std 0.4618802; -0.5333333 / 0.4619802 = -1.1544506; 0.2666667 / 0.4619802 = 0.5772252
    adv = process_advantages_min_form([[0.1, 0.9], [0.9]], [[0, 0], [0]], [2, 1])
    assert adv[0].tolist() == approx([-1.1544506, 0.0])
    assert adv[1].tolist() == approx([0.5772252])


def test_min_form_zero_spread_gives_zeros():
    # rewards [0.3, 0.8] and [0.3] -> g = [0.3, 0.8], [0.3]: spread; [0.8, 0.3] and [0.3] -> g all 0.3: none
    adv = process_advantages_min_form([[0.8, 0.3], [0.3]], [[0, 1], [0]], [2, 1])
    assert [a.tolist() for a in adv] == [[0.0, 0.0], [0.0]]


# ---- mixing with the outcome reward, credit registry ----


def test_mix_outcome_hand_case():
    # process advantages from test_process_output_without_steps...: [0, -0.7070068], [0, 0, 0]
    # outcome rewards [1, 0]: mean 0.5, sample std 0.7071068 -> outcome adv ±0.7070068; weight 0.5 -> ±0.3535034
    # added to every token of each output, including the tokens after the last step end.
    process_adv = [torch.tensor([0.0, -0.7070068]), torch.zeros(3)]
    mixed = mix_outcome(process_adv, torch.tensor([1.0, 0.0]), weight=0.5)
    assert mixed[0].tolist() == approx([0.3535034, -0.3535034])
    assert mixed[1].tolist() == approx([-0.3535034, -0.3535034, -0.3535034])


def test_mix_outcome_rejects_count_mismatch():
    with pytest.raises(ValueError, match="2 outputs but 3 outcome rewards"):
        mix_outcome([torch.zeros(1), torch.zeros(2)], torch.tensor([1.0, 0.0, 1.0]), weight=1.0)


def test_mix_outcome_batch_matches_per_group():
    process_adv = torch.tensor([[0.0, -0.7070068, 0.0], [0.0, 0.0, 0.0]])  # (B=2, T=3); output 0 has 2 tokens
    completion_mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    mixed = mix_outcome_batch(process_adv, torch.tensor([1.0, 0.0]), completion_mask, group_size=2, weight=0.5)
    assert mixed.tolist() == [approx([0.3535034, -0.3535034, 0.0]), approx([-0.3535034] * 3)]


def test_credit_registry():
    assert get_credit("sum") is process_advantages
    assert get_credit("min") is process_advantages_min_form
    assert set(CREDIT) == {"sum", "min"}
    with pytest.raises(ValueError, match="unknown credit 'gamma'; valid: min, sum"):
        get_credit("gamma")


# ---- vectorised batch versions ----


def _random_batch(rng: random.Random, n_groups: int, group_size: int, max_steps: int, num_tokens: int):
    """Per-output lists plus the padded (B, K) tensors of the same batch; rewards on a coarse grid so ties happen."""
    rewards, ends, lengths = [], [], []
    for output in range(n_groups * group_size):
        length = rng.randint(1, num_tokens)
        steps = 0 if output % 5 == 3 else rng.randint(0, max_steps)
        ends.append(sorted(rng.randrange(length) for _ in range(steps)))
        rewards.append([rng.choice([0.0, 0.25, 0.5, 1.0]) + rng.random() * (output % 2) for _ in range(steps)])
        lengths.append(length)
    batch = n_groups * group_size
    step_rewards = torch.zeros(batch, max_steps)
    step_ends = torch.full((batch, max_steps), -1, dtype=torch.long)
    step_mask = torch.zeros(batch, max_steps, dtype=torch.bool)
    for row, (output_rewards, output_ends) in enumerate(zip(rewards, ends)):
        steps = len(output_rewards)
        step_rewards[row, :steps] = torch.tensor(output_rewards)
        step_ends[row, :steps] = torch.tensor(output_ends, dtype=torch.long)
        step_mask[row, :steps] = True
    return (rewards, ends, lengths), (step_rewards, step_ends, step_mask)


@pytest.mark.parametrize("credit", ["sum", "min"])
@pytest.mark.parametrize("seed", range(5))
def test_batch_matches_per_group_reference(credit, seed):
    rng = random.Random(seed)
    n_groups, group_size, max_steps, num_tokens = 4, 3, 5, 9
    (rewards, ends, lengths), tensors = _random_batch(rng, n_groups, group_size, max_steps, num_tokens)
    batch_adv = process_advantages_batch(*tensors, num_tokens=num_tokens, group_size=group_size, credit=credit)
    assert batch_adv.shape == (n_groups * group_size, num_tokens)
    for group in range(n_groups):
        rows = slice(group * group_size, (group + 1) * group_size)
        reference = get_credit(credit)(rewards[rows], ends[rows], lengths[rows])
        for row, token_adv in zip(range(rows.start, rows.stop), reference):
            length = len(token_adv)
            torch.testing.assert_close(batch_adv[row, :length], token_adv, rtol=1e-5, atol=1e-5)
            assert batch_adv[row, length:].abs().sum() == 0  # beyond the completion: after the last step end


def test_batch_zero_spread_group_and_no_steps():
    # group 0: rewards all 0.5 -> zeros; group 1: output 1 has no steps, output 0 one step -> R has 1 value -> zeros
    step_rewards = torch.tensor([[0.5, 0.5], [0.5, 0.0], [0.7, 0.0], [0.0, 0.0]])
    step_ends = torch.tensor([[0, 1], [1, -1], [2, -1], [-1, -1]])
    step_mask = torch.tensor([[True, True], [True, False], [True, False], [False, False]])
    for credit in CREDIT:
        adv = process_advantages_batch(step_rewards, step_ends, step_mask, num_tokens=3, group_size=2, credit=credit)
        assert adv.tolist() == [[0.0] * 3] * 4


def test_batch_hand_case_matches_literals():
    # UNEVEN group padded to T = 5, K = 2: same literals as test_process_hand_case_uneven_steps
    step_rewards = torch.tensor([[0.9, 0.6], [0.0, 0.0]])
    step_ends = torch.tensor([[1, 3], [2, -1]])
    step_mask = torch.tensor([[True, True], [True, False]])
    adv = process_advantages_batch(step_rewards, step_ends, step_mask, num_tokens=5, group_size=2)
    assert adv[0].tolist() == approx([1.0908514, 1.0908514, 0.2181703, 0.2181703, 0.0])
    assert adv[1].tolist() == approx([-1.0908514, -1.0908514, -1.0908514, 0.0, 0.0])


@pytest.mark.parametrize(
    ("step_ends", "step_mask", "group_size", "credit", "message"),
    [
        ([[1, 0]], [[True, True]], 1, "sum", "non-decreasing"),
        ([[1, 4]], [[True, True]], 1, "sum", r"\[0, 4\)"),
        ([[1, 2]], [[False, True]], 1, "sum", "True-prefix"),
        ([[1, 2]], [[True, True]], 2, "sum", "groups of 2"),
        ([[1, 2]], [[True, True]], 1, "gamma", "unknown credit 'gamma'; valid: min, sum"),
    ],
)
def test_batch_validation(step_ends, step_mask, group_size, credit, message):
    with pytest.raises(ValueError, match=message):
        process_advantages_batch(
            torch.zeros(1, 2), torch.tensor(step_ends), torch.tensor(step_mask), 4, group_size, credit=credit
        )


def test_outcome_batch_matches_per_group():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 3.0, 5.0, 5.0, 5.0, 0.2, 0.9, 0.4, 0.4])
    adv = outcome_advantages_batch(rewards, group_size=4)
    # group 0 as test_outcome_hand_case_binary; group 1: [3, 5, 5, 5] mean 4.5, sample var (2.25 + 3 * 0.25) / 3 = 1,
    # std 1 -> adv -1.5 / 1.0001 = -1.4998500, 0.5 / 1.0001 = 0.4999500
    assert adv[:8].tolist() == approx(
        [0.8658754, -0.8658754, -0.8658754, 0.8658754, -1.49985, 0.49995, 0.49995, 0.49995]
    )
    torch.testing.assert_close(adv[8:], outcome_advantages(rewards[8:]))
    assert outcome_advantages_batch(torch.tensor([0.3, 0.3, 1.0]), group_size=1).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="groups of 4"):
        outcome_advantages_batch(torch.zeros(6), group_size=4)
