"""policy/prefix_tree.py: the trie of a group's completions and the packed layout, by hand."""

import pytest
import torch

from prmloop.policy.prefix_tree import GroupTrees, pack_trees, tree_nodes

EOS = 9


def test_tree_nodes_by_hand():
    completions = [[1, 2, 3, EOS], [1, 2, 4], [7], [1, 5]]
    lengths = [3, 2, 0, 1]  # input tokens: all but the last
    nodes, tokens, depths = tree_nodes(completions, lengths, [0, 1, 2, 3])
    assert nodes == [[0, 1, 2], [0, 1], [], [0]]  # row 1's two inputs and row 3's one are row 0's nodes
    assert tokens == [1, 2, 3] and depths == [0, 1, 2]
    nodes, tokens, depths = tree_nodes([[1, 2, 3], [1, 6, 3]], [2, 2], [1, 0])  # row 1 first: its nodes first
    assert nodes == [[0, 1], [0, 2]] and tokens == [1, 6, 2] and depths == [0, 1, 1]


def test_pack_trees_by_hand():
    # group 0: prompt [5, 6] (one pad), completions [1 2 3 EOS], [1 2 4], [7]; group 1: prompt [8], completion [1 EOS]
    prompt_ids = torch.tensor([[0, 5, 6]] * 3 + [[0, 0, 8]])
    prompt_mask = prompt_ids > 0
    completion_ids = torch.tensor([[1, 2, 3, EOS], [1, 2, 4, 0], [7, 0, 0, 0], [1, EOS, 0, 0]])
    completion_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0]]).bool()
    trees = GroupTrees(prompt_ids, prompt_mask, completion_ids, completion_mask, torch.tensor([0, 0, 0, 1]))
    assert trees.num_tokens() == (2 + 3) + (1 + 1)
    packed = pack_trees(trees, completion_ids, completion_mask)
    # items: [5 6 | 1 2 3] (5 tokens) and [8 | 1] (2): capacity 5, so one row each, the second with a 3-token tail
    assert packed.input_ids.tolist() == [[5, 6, 1, 2, 3], [8, 1, 0, 0, 0]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 4], [0, 1, 0, 0, 0]]
    assert packed.item.tolist() == [[0, 0, 0, 0, 0], [1, 1, -1, -1, -1]]
    assert packed.visible[0].int().tolist() == [[1, 0, 0, 0, 0],  # prompt, causal
                                                [1, 1, 0, 0, 0],
                                                [1, 1, 1, 0, 0],  # node "1": the prompt and itself
                                                [1, 1, 1, 1, 0],  # node "1 2"
                                                [1, 1, 1, 1, 1]]  # node "1 2 3"
    assert packed.visible[1].int().tolist() == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0],
                                                [0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]]  # tail: itself
    # each completion token, row-major, read from the logits of the node before it (token 0: the prompt's last)
    assert packed.logit_rows.tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    assert packed.logit_cols.tolist() == [1, 2, 3, 4, 1, 2, 3, 1, 0, 1]
    assert packed.targets.tolist() == [1, 2, 3, EOS, 1, 2, 4, 7, 1, EOS]
    assert packed.destination.tolist() == [0, 1, 2, 3, 4, 5, 6, 8, 12, 13]


def test_group_trees_stop_at_a_limit():
    prompt_ids, prompt_mask = torch.tensor([[5, 6]] * 4), torch.ones(4, 2, dtype=torch.bool)
    completion_ids = torch.tensor([[1, 2, 3, EOS], [1, 2, 4, EOS], [7, 8, EOS, 0], [7, 9, EOS, 0]])
    completion_mask = completion_ids > 0
    groups = torch.tensor([0, 0, 1, 1])
    whole = GroupTrees(prompt_ids, prompt_mask, completion_ids, completion_mask, groups)
    assert whole.complete and whole.num_tokens() == (2 + 4) + (2 + 3)  # 1 2 3 / 4 and 7 8 / 9
    assert GroupTrees(prompt_ids, prompt_mask, completion_ids, completion_mask, groups, limit=11).complete
    cut = GroupTrees(prompt_ids, prompt_mask, completion_ids, completion_mask, groups, limit=10)
    assert not cut.complete and cut.num_tokens() == 6  # the second group's tree was not kept
    with pytest.raises(ValueError, match="limit"):
        pack_trees(cut, completion_ids, completion_mask)
