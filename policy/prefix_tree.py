"""Prefix-tree packing of a micro-batch: a token that the samples of a prompt share is run once.

The G samples of a prompt often agree on their first tokens, and a low-entropy policy's agree for long stretches (the
shipped policy's 8 samples of a prompt: 37-41% as many distinct prefixes as tokens, bench/grpo.py's batch). A
token's hidden states depend only on the prompt and the tokens before it, so every sample with the same prefix has the
same ones there: ``pack_trees`` lays each group (prompt + its completions) as one item, the prompt and then the
group's completions as a prefix tree (trie) in order of first appearance, each tree node attending to the prompt and
to its ancestors (``Packed.visible``). The log-prob of completion token t of row i reads the logits of the node of its
tokens 0..t-1 (token 0: of the prompt's last token), so rows that share a node share its logits and gradients flow
back through it from every row: the same log-probs, losses and gradients as the padded forward, on fewer tokens.

Items are packed first-fit decreasing into rows of ``capacity`` tokens (a group's tree never splits), positions as
the rollout's: the prompt's real tokens 0..p-1, a node at depth t (completion token t) p + t.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .packing import Packed, first_fit_decreasing


def tree_nodes(completion_ids: list[list[int]], lengths: list[int], rows: list[int]) -> tuple[list[list[int]], list[int],
                                                                                             list[int]]:
    """The trie of the completions ``rows`` of one group: each row's node per input token (its first ``lengths[i]``
    tokens), numbered in order of first appearance; and each node's token and depth."""
    children: dict[tuple[int, int], int] = {}
    tokens: list[int] = []
    depths: list[int] = []
    nodes = []
    for row in rows:
        parent, path = -1, []
        for depth, token in enumerate(completion_ids[row][: lengths[row]]):
            node = children.get((parent, token))
            if node is None:
                node = children[(parent, token)] = len(tokens)
                tokens.append(token)
                depths.append(depth)
            path.append(node)
            parent = node
        nodes.append(path)
    return nodes, tokens, depths


class GroupTrees:
    """The tries of a micro-batch's groups: ``members[k]`` the rows of the k-th group (in order of first appearance),
    ``nodes[k]`` each member's node per input token, ``tokens[k]``/``depths[k]`` each node's token and depth, and
    ``prompts[k]`` the group's prompt (real tokens). Given ``limit``, building stops once the items would hold more
    than ``limit`` tokens (``complete`` False): a caller that only wants small trees need not build large ones."""

    def __init__(self, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor, completion_mask: Tensor,
                 groups: Tensor, limit: int | None = None) -> None:
        inputs = (completion_mask.bool().sum(1) - 1).clamp(min=0).tolist()  # input tokens per row
        ids = completion_ids.tolist()
        members: dict[int, list[int]] = {}
        for row, group in enumerate(groups.tolist()):
            members.setdefault(group, []).append(row)
        self.groups = list(members)
        self.members = [members[group] for group in self.groups]
        self.prompts = [prompt_ids[rows[0]][prompt_mask[rows[0]].bool()].tolist() for rows in self.members]
        self.nodes, self.tokens, self.depths = [], [], []
        self.complete, held = True, 0
        for prompt, rows in zip(self.prompts, self.members):
            nodes, tokens, depths = tree_nodes(ids, inputs, rows)
            held += len(prompt) + len(tokens)
            if limit is not None and held > limit:
                self.complete = False
                break
            self.nodes.append(nodes)
            self.tokens.append(tokens)
            self.depths.append(depths)

    def num_tokens(self) -> int:
        """Tokens the packed items hold: each group's prompt once and its tree's nodes (of the groups built)."""
        return sum(len(prompt) + len(tokens) for prompt, tokens in zip(self.prompts, self.tokens))


def pack_trees(trees: GroupTrees, completion_ids: Tensor, completion_mask: Tensor, capacity: int | None = None,
               ) -> Packed:
    """Each group's prompt and the trie of its rows' completion tokens but the last (``trees``) as one item, packed
    into rows of ``capacity`` tokens (None: the longest item). ``Packed.visible`` (R, C, C) says which key each query
    may attend; ``item`` holds the group."""
    if not trees.complete:
        raise ValueError("pack_trees: the trees were built only up to a limit")
    device, (batch, num_tokens) = completion_ids.device, completion_ids.shape
    order, prompts, members = trees.groups, trees.prompts, trees.members
    lengths = [len(prompt) + len(tokens) for prompt, tokens in zip(prompts, trees.tokens)]
    rows, offsets, widths = first_fit_decreasing(lengths, capacity or max(lengths, default=0))
    width = max(widths, default=0)
    input_ids = torch.zeros(len(widths), width, dtype=torch.long)  # (R, C)
    position_ids = torch.zeros_like(input_ids)
    item = torch.full_like(input_ids, -1)
    node_column = torch.full((batch, num_tokens), -1, dtype=torch.long)  # (b, T) column of row i's input token t
    last_prompt = torch.zeros(batch, dtype=torch.long)  # (b,) column of the row's prompt's last token
    row_of = torch.zeros(batch, dtype=torch.long)  # (b,)
    pairs = []  # (row, query column, key column) that may attend, per item
    for k, (group, prompt, nodes, tokens, depths) in enumerate(zip(order, prompts, trees.nodes, trees.tokens,
                                                                     trees.depths)):
        row, start, p = rows[k], offsets[k], len(prompt)
        if not p:
            raise ValueError("pack_trees: a prompt without tokens (its first completion token has no logits)")
        columns = slice(start, start + lengths[k])
        input_ids[row, columns] = torch.tensor(prompt + tokens, dtype=torch.long)
        position_ids[row, columns] = torch.tensor(list(range(p)) + [p + depth for depth in depths], dtype=torch.long)
        item[row, columns] = group
        prompt_cols = torch.arange(start, start + p)
        node_cols = torch.arange(start + p, start + lengths[k])
        causal = prompt_cols[:, None] >= prompt_cols[None, :]
        query, key = causal.nonzero(as_tuple=True)
        pairs.append((row, prompt_cols[query], prompt_cols[key]))
        pairs.append((row, node_cols.repeat_interleave(p), prompt_cols.repeat(len(node_cols))))
        for member, path in zip(members[k], nodes):
            row_of[member], last_prompt[member] = row, start + p - 1
            if path:
                node_column[member, : len(path)] = start + p + torch.tensor(path)
    visible = torch.zeros(len(widths), width, width, dtype=torch.bool)  # (R, C, C)
    for row, query, key in pairs:
        visible[row, query, key] = True
    i, t = (node_column >= 0).nonzero(as_tuple=True)  # a node sees its ancestors: the row's nodes up to it
    s_le_t = torch.arange(num_tokens)[None, :] <= t[:, None]  # (n, T)
    ancestor_rows, ancestor_t = (s_le_t & (node_column[i] >= 0)).nonzero(as_tuple=True)
    visible[row_of[i[ancestor_rows]], node_column[i[ancestor_rows], t[ancestor_rows]],
            node_column[i[ancestor_rows], ancestor_t]] = True
    tail = item < 0
    visible |= torch.diag_embed(tail)  # a tail token sees itself (its output is never read)
    i, t = completion_mask.bool().cpu().nonzero(as_tuple=True)  # the completion tokens to predict, row-major
    columns = torch.where(t == 0, last_prompt[i], node_column[i, (t - 1).clamp(min=0)])
    return Packed(input_ids, position_ids, item, torch.full((len(widths),), -1, dtype=torch.long), row_of[i], columns,
                  completion_ids.cpu()[i, t], i * num_tokens + t, visible).to(device)
