"""Tests for policy/packing.py: bins, packed rows and positions, logit positions, the shared-prompt mask, unpacking."""

import torch

from prmloop.policy.packing import first_fit_decreasing, pack_completions, pack_sequences, shared_prompt_mask, unpack


def test_first_fit_decreasing_literal():
    # longest first: 5 -> row 0; 4 -> row 1 (5+4 > 6); 3 -> row 2 (8 and 7 > 6); 2 -> row 1 at 4 (4+2 = 6)
    assert first_fit_decreasing([3, 5, 2, 4], 6) == ([2, 0, 1, 1], [0, 0, 4, 0], [5, 6, 3])
    # groups: only equal groups share a row: 5 (g0) r0, 4 (g1) r1, 3 (g1) r2 (4+3 > 6), 2 (g0) r3 (5+2 > 6)
    assert first_fit_decreasing([3, 5, 2, 4], 6, [1, 0, 0, 1]) == ([2, 0, 3, 1], [0, 0, 0, 0], [5, 4, 3, 2])
    # no capacity: one row, longest first: 5 at 0, 4 at 5, 3 at 9, 2 at 12
    assert first_fit_decreasing([3, 5, 2, 4], None) == ([0, 0, 0, 0], [9, 0, 12, 5], [14])
    assert first_fit_decreasing([0, 2], 2) == ([-1, 0], [-1, 0], [2])  # an empty item takes no row


# row 0: prompt [pad, 11, 12], completion [21, 22, 23]; row 1: prompt [13, 14, 15], completion [24] + padding
PROMPT_IDS = torch.tensor([[0, 11, 12], [13, 14, 15]])
PROMPT_MASK = torch.tensor([[0, 1, 1], [1, 1, 1]]).bool()
COMPLETION_IDS = torch.tensor([[21, 22, 23], [24, 0, 0]])
COMPLETION_MASK = torch.tensor([[1, 1, 1], [1, 0, 0]]).bool()


def test_pack_sequences_one_row_literal():
    # items: row 0 = 11 12 21 22 (its last token 23 predicts nothing), row 1 = 13 14 15; the longer first
    packed = pack_sequences(PROMPT_IDS, PROMPT_MASK, COMPLETION_IDS, COMPLETION_MASK, capacity=None)
    assert packed.input_ids.tolist() == [[11, 12, 21, 22, 13, 14, 15]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 0, 1, 2]]
    assert packed.item.tolist() == [[0, 0, 0, 0, 1, 1, 1]]
    # 21 is predicted at column 1 (after 12), 22 at 2, 23 at 3; 24 at column 6 (after 15)
    assert packed.logit_rows.tolist() == [0, 0, 0, 0] and packed.logit_cols.tolist() == [1, 2, 3, 6]
    assert packed.targets.tolist() == [21, 22, 23, 24] and packed.destination.tolist() == [0, 1, 2, 3]


def test_pack_sequences_rows_of_a_capacity_literal():
    packed = pack_sequences(PROMPT_IDS, PROMPT_MASK, COMPLETION_IDS, COMPLETION_MASK, capacity=4)
    assert packed.input_ids.tolist() == [[11, 12, 21, 22], [13, 14, 15, 0]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3], [0, 1, 2, 0]]  # the tail restarts: a sequence of its own
    assert packed.item.tolist() == [[0, 0, 0, 0], [1, 1, 1, -1]]
    assert packed.logit_rows.tolist() == [0, 0, 0, 1] and packed.logit_cols.tolist() == [1, 2, 3, 2]


def test_pack_completions_literal():
    # groups 0 (rows 0, 1; prompt of 2 tokens) and 1 (row 2; 3 tokens); completions of 4, 2 and 3 tokens
    prompt_mask = torch.tensor([[0, 1, 1], [0, 1, 1], [1, 1, 1]]).bool()
    completion_ids = torch.tensor([[21, 22, 23, 24], [25, 26, 0, 0], [27, 28, 29, 0]])
    completion_mask = completion_ids > 0
    packed = pack_completions(prompt_mask, completion_ids, completion_mask, torch.tensor([0, 0, 1]), capacity=3)
    # items (each completion but its last token): [21 22 23] (g0), [25] (g0), [27 28] (g1); 3 -> R0, 2 -> R1 (its
    # own group), 1 -> R2 (R0 is full); positions continue after the prompt's tokens
    assert packed.input_ids.tolist() == [[21, 22, 23], [27, 28, 0], [25, 0, 0]]
    assert packed.position_ids.tolist() == [[2, 3, 4], [3, 4, 0], [2, 0, 1]]
    assert packed.item.tolist() == [[0, 0, 0], [2, 2, -1], [1, -1, -1]]
    assert packed.row_group.tolist() == [0, 1, 0]
    # each completion's first token comes from its group's prompt pass (column -1, row = the group)
    assert packed.logit_rows.tolist() == [0, 0, 0, 0, 0, 2, 1, 1, 1]
    assert packed.logit_cols.tolist() == [-1, 0, 1, 2, -1, 0, -1, 0, 1]
    assert packed.targets.tolist() == [21, 22, 23, 24, 25, 26, 27, 28, 29]
    assert packed.destination.tolist() == [0, 1, 2, 3, 4, 5, 8, 9, 10]
    mask = shared_prompt_mask(packed, torch.tensor([[0, 1, 1], [1, 1, 1]]).bool())
    assert mask.shape == (3, 1, 3, 6)
    # row 1 (group 1): every query sees the whole prompt; 27 itself, 28 both, the tail only itself
    assert mask[1, 0].int().tolist() == [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 1]]
    assert mask[0, 0, 0].int().tolist() == [0, 1, 1, 1, 0, 0]  # group 0's prompt has a padded first token


def test_unpack_puts_values_back_with_zeros_at_padding():
    values = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    out = unpack(values, torch.tensor([0, 4, 5]), (2, 3))
    assert out.tolist() == [[1.0, 0.0, 0.0], [0.0, 2.0, 3.0]]
    out.sum().backward()
    assert values.grad.tolist() == [1.0, 1.0, 1.0]
