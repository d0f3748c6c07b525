"""policy/slots.py: which slot each sampled row runs in, by hand; the cache layers fork and compact slots in place; the
sampling loop runs the shipped policy's agreeing samples once and still gives every row its own draw."""

import torch
from test_kv_cache import _policy
from test_rollout import one_thread  # noqa: F401 - autouse: one torch thread

from prmloop.policy.kv_cache import GrowingLayer
from prmloop.policy.prefix_sharing import PrefixSharingLayer
from prmloop.policy.rollout import HFBackend, encode_prompts, sample_rollout
from prmloop.policy.slots import next_slots, reslot_buffers

PAD = 0


def test_a_slot_whose_rows_draw_different_tokens_forks_after_the_last():
    # slots 0 (rows 0-2), 1 (row 3), 2 (row 4), 3 (no row continues: dead); rows 0, 1 draw 5 and row 2 draws 7
    parents, feed, row_slot = next_slots(torch.tensor([0, 0, 0, 1, 2]), torch.tensor([5, 5, 7, 3, 4]), 4, 10, PAD)
    assert parents.tolist() == [0, 1, 2, 3, 0]  # slot 4: a copy of slot 0
    assert feed.tolist() == [5, 3, 4, PAD, 7]
    assert row_slot.tolist() == [0, 0, 4, 1, 2]


def test_slots_stay_put_when_nothing_forks():
    parents, feed, row_slot = next_slots(torch.tensor([0, 1]), torch.tensor([3, 3]), 2, 10, PAD)
    assert parents is None and feed.tolist() == [3, 3] and row_slot.tolist() == [0, 1]


def test_slots_compact_when_a_quarter_are_dead_or_there_is_no_room():
    parents, feed, row_slot = next_slots(torch.tensor([0, 2]), torch.tensor([1, 1]), 4, 10, PAD)  # 2 of 4 dead
    assert parents.tolist() == [0, 2] and feed.tolist() == [1, 1] and row_slot.tolist() == [0, 1]
    # 1 of 3 + 2 forks = 5 slots, 2 dead: not a quarter, but only 4 fit
    parents, feed, row_slot = next_slots(torch.tensor([0, 0, 0]), torch.tensor([1, 2, 3]), 3, 4, PAD)
    assert parents.tolist() == [0, 0, 0] and feed.tolist() == [1, 2, 3] and row_slot.tolist() == [0, 1, 2]


def test_reslot_buffers_copies_forks_only_or_compacts_in_place():
    buffer = torch.arange(4.0)[:, None, None, None].expand(4, 1, 3, 1).clone()  # row r holds r at every position
    buffer[:, :, 2] = -1.0  # beyond the filled length
    reslot_buffers((buffer,), 3, 2, torch.tensor([0, 1, 2, 1]))  # fork: row 3 a copy of row 1
    assert buffer[:, 0, :, 0].tolist() == [[0, 0, -1], [1, 1, -1], [2, 2, -1], [1, 1, -1]]
    reslot_buffers((buffer,), 4, 2, torch.tensor([2, 0]))  # compact: rows 2 and 0 to the front
    assert buffer[:2, 0, :2, 0].tolist() == [[2, 2], [0, 0]]


def test_the_layers_fork_and_compact_their_rows():
    torch.manual_seed(0)
    keys, values = torch.randn(2, 1, 3, 4), torch.randn(2, 1, 3, 4)
    growing = GrowingLayer.holding(keys, values, capacity=8, rows=4)
    growing.reslot(torch.tensor([0, 1, 0]))
    assert torch.equal(growing.keys, keys[[0, 1, 0]]) and growing.get_seq_length() == 3
    new = torch.randn(3, 1, 1, 4)
    growing.update(new, new)
    growing.reslot(torch.tensor([2, 1]))
    assert torch.equal(growing.keys, torch.cat([keys[[0, 1]], new[[2, 1]]], dim=2))
    sharing = PrefixSharingLayer(keys, values, torch.ones(2, 3, dtype=torch.bool), torch.tensor([0, 1]), capacity=8,
                                 rows=4)
    sharing.update(new[:2], new[:2])
    sharing.reslot(torch.tensor([0, 1, 1]))
    assert sharing.group.tolist() == [0, 1, 1] and sharing.slot.tolist() == [0, 0, 1]
    assert torch.equal(sharing.keys, new[[0, 1, 1]]) and sharing.get_seq_length() == 3 + 1


def test_the_shipped_policys_agreeing_samples_run_once():
    model, tokenizer, texts = _policy("shipped")
    decode_rows = []
    hook = model.get_input_embeddings().register_forward_hook(
        lambda _m, args, _o: decode_rows.append(args[0].shape[0]) if args[0].shape[1] == 1 else None)
    backend = HFBackend(model, tokenizer, max_new_tokens=64, temperature=1.0, batch_size=16)
    rollout = sample_rollout(backend, tokenizer, encode_prompts(tokenizer, texts), group_size=8, seed=3, step=1)
    hook.remove()
    row_steps = int(rollout.completion_mask.sum()) - 16  # tokens fed back: every token but each row's first
    assert sum(decode_rows) < 0.75 * row_steps  # the samples of a prompt ran as one sequence for a while
    assert len({tuple(row) for row in rollout.completion_ids.tolist()}) > 2  # yet they did not all draw alike
