"""Padding-free layouts of a micro-batch (``grpo.padding_free``): which token goes where in the packed rows, and back.

The input is the rollout layout of ``policy.rollout``: prompts LEFT-padded (b, P), completions RIGHT-padded (b, T),
each prompt's real tokens at positions 0..p-1 and its completion's at p..p+t-1 (``cumsum(mask) - 1``). Packing puts
several sequences end to end in one row, first-fit decreasing into rows of ``capacity`` tokens (None: one row), with
positions restarting at 0 for each; only a row's tail is filler (``item`` -1), so the model runs on the real tokens
plus at most one tail per row. Two layouts:
- ``pack_sequences``: each item is prompt + completion (minus its last token, whose logits nothing reads). transformers
  keeps attention within each item from the restarting positions alone (no attention mask, no cache).
- ``pack_completions``: each item is a completion (minus its last token) whose group's prompt ran once before into a
  KV cache; the items of one row share a group, so the row takes that prompt's cache. The attention mask
  (``shared_prompt_mask``) lets each item see the prompt and its own earlier tokens.
Either way ``Packed.logit_rows``/``logit_cols`` say where the logits that predict each real completion token sit, and
``unpack`` returns per-token values to the (b, T) layout, 0 at padding, so the loss (``policy.losses``) is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Packed:
    """Packed rows of a micro-batch and where each completion token's predicting logits are."""

    input_ids: Tensor
    """(R, C) long: the packed tokens; filler at each row's tail."""
    position_ids: Tensor
    """(R, C) long: each token's position in its own sequence (restarting at 0 per item, and for the tail)."""
    item: Tensor
    """(R, C) long: which micro-batch row each token comes from; -1 for the tail."""
    row_group: Tensor
    """(R,) long: the group (distinct prompt) of each packed row (``pack_completions``; -1 in ``pack_sequences``)."""
    logit_rows: Tensor
    """(N,) long: packed row of the logits predicting each real completion token (N of them, row-major order); where
    ``logit_cols`` is -1, the distinct prompt whose pass predicts it instead (``pack_completions``: token 0)."""
    logit_cols: Tensor
    """(N,) long: column of those logits in the packed row, or -1 (above)."""
    targets: Tensor
    """(N,) long: the completion token each of those logits predicts."""
    destination: Tensor
    """(N,) long: flat index ``i * T + t`` of that token in the (b, T) layout."""
    visible: Tensor | None = None
    """(R, C, C) bool: which key each query may attend (``policy.prefix_tree``); None: the item says."""

    def to(self, device: torch.device) -> Packed:
        return Packed(*(None if value is None else value.to(device) for value in vars(self).values()))


def first_fit_decreasing(lengths: list[int], capacity: int | None, groups: list[int] | None = None,
                         ) -> tuple[list[int], list[int], list[int]]:
    """Bin each item of length > 0 into a row: longest first, into the first row with room (and, given ``groups``,
    holding the same group); ``capacity`` None: no limit. Returns each item's row and offset (-1 for items of length
    0) and each row's used width."""
    rows, offsets = [-1] * len(lengths), [-1] * len(lengths)
    used: list[int] = []
    open_rows: dict[int, list[int]] = {}  # group -> its rows that may still take an item
    smallest = min((length for length in lengths if length > 0), default=0)
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):  # stable: equal lengths keep their order
        length, group = lengths[index], -1 if groups is None else groups[index]
        if length <= 0:
            continue
        candidates = open_rows.setdefault(group, [])
        row = next((r for r in candidates if capacity is None or used[r] + length <= capacity), None)
        if row is None:
            used.append(0)
            row = len(used) - 1
            candidates.append(row)
        rows[index], offsets[index] = row, used[row]
        used[row] += length
        if capacity is not None and used[row] + smallest > capacity:  # full: no item fits any more
            candidates.remove(row)
    return rows, offsets, used


def _empty(num_rows: int, width: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Packed ids (filler 0), positions and items (-1: tail) of ``num_rows`` rows of ``width`` tokens."""
    input_ids = torch.zeros(num_rows, width, dtype=torch.long, device=device)  # (R, C)
    return input_ids, torch.zeros_like(input_ids), torch.full_like(input_ids, -1)


def _tail_positions(item: Tensor, position_ids: Tensor) -> Tensor:
    """Positions 0, 1, ... over each row's tail, so the tail is a sequence of its own to the attention."""
    tail = item < 0  # (R, C)
    tail_start = tail.float().argmax(1, keepdim=True)  # (R, 1) first tail column (0 if none, unused then)
    columns = torch.arange(item.shape[1], device=item.device)[None, :]  # (1, C)
    return torch.where(tail, columns - tail_start, position_ids)  # (R, C)


def pack_sequences(prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor, completion_mask: Tensor,
                   capacity: int | None) -> Packed:
    """Each row i as one item, its real prompt then completion tokens but the last, packed into rows of ``capacity``
    tokens (None: all in one row). Rows with no completion token are left out."""
    prompt_mask, completion_mask = prompt_mask.bool(), completion_mask.bool()
    device, num_tokens = completion_ids.device, completion_ids.shape[1]
    prompt_len, completion_len = prompt_mask.sum(1), completion_mask.sum(1)  # (b,)
    lengths = torch.where(completion_len > 0, prompt_len + completion_len - 1, 0)  # (b,)
    rows, offsets, widths = first_fit_decreasing(lengths.tolist(), capacity)
    input_ids, position_ids, item = _empty(len(widths), max(widths, default=0), device)
    row_of, offset_of = torch.tensor(rows, device=device), torch.tensor(offsets, device=device)  # (b,)
    inputs = torch.cat([prompt_ids, completion_ids[:, :-1]], dim=1)  # (b, P + T - 1)
    positions = torch.cat([prompt_mask.long().cumsum(1) - 1,  # (b, P + T - 1): prompt 0..p-1, completion p..
                           prompt_len[:, None] + torch.arange(num_tokens - 1, device=device)[None, :]], dim=1)
    placed = torch.cat([prompt_mask, completion_mask[:, 1:]], dim=1) & (completion_len > 0)[:, None]  # (b, P + T - 1)
    source, column = placed.nonzero(as_tuple=True)
    target = (row_of[source], offset_of[source] + positions[source, column])
    input_ids[target], position_ids[target], item[target] = inputs[source, column], positions[source, column], source
    i, t = completion_mask.nonzero(as_tuple=True)  # the completion tokens to predict, row-major
    return Packed(input_ids, _tail_positions(item, position_ids), item, torch.full_like(input_ids[:, 0], -1),
                  row_of[i], offset_of[i] + prompt_len[i] - 1 + t, completion_ids[i, t], i * num_tokens + t)


def pack_completions(prompt_mask: Tensor, completion_ids: Tensor, completion_mask: Tensor, groups: Tensor,
                     capacity: int) -> Packed:
    """Each row i's completion tokens but the last as one item, packed with others of its group (``groups`` (b,), the
    distinct prompt of each row) into rows of ``capacity`` tokens; positions continue after the prompt's p tokens.
    The first completion token's logits come from the prompt pass (``logit_rows`` then holds the group)."""
    completion_mask = completion_mask.bool()
    device, num_tokens = completion_ids.device, completion_ids.shape[1]
    prompt_len, completion_len = prompt_mask.bool().sum(1), completion_mask.sum(1)  # (b,)
    rows, offsets, widths = first_fit_decreasing((completion_len - 1).clamp(min=0).tolist(), capacity, groups.tolist())
    input_ids, position_ids, item = _empty(len(widths), max(widths, default=0), device)
    row_of, offset_of = torch.tensor(rows, device=device), torch.tensor(offsets, device=device)  # (b,)
    row_group = torch.zeros(len(widths), dtype=torch.long, device=device)  # (R,)
    row_group[row_of[row_of >= 0]] = groups[row_of >= 0]
    source, t = completion_mask[:, 1:].nonzero(as_tuple=True)  # token t is an input when token t + 1 exists
    target = (row_of[source], offset_of[source] + t)
    input_ids[target], position_ids[target], item[target] = completion_ids[source, t], prompt_len[source] + t, source
    i, t = completion_mask.nonzero(as_tuple=True)
    first = t == 0
    return Packed(input_ids, _tail_positions(item, position_ids), item, row_group,
                  torch.where(first, groups[i], row_of[i]), torch.where(first, -1, offset_of[i] + t - 1),
                  completion_ids[i, t], i * num_tokens + t)


def shared_prompt_mask(packed: Packed, prompt_mask: Tensor) -> Tensor:
    """(R, 1, C, P + C) bool, True where a query may attend a key: the real tokens of its row's prompt (``prompt_mask``
    (U, P) of the distinct prompts), and the earlier tokens of its own item (a tail token: of the tail)."""
    item = packed.item  # (R, C)
    columns = torch.arange(item.shape[1], device=item.device)
    causal = columns[None, :] <= columns[:, None]  # (C, C) key <= query
    own = (item[:, :, None] == item[:, None, :]) & causal[None]  # (R, C, C)
    prompt = prompt_mask.bool()[packed.row_group][:, None, :].expand(-1, item.shape[1], -1)  # (R, C, P)
    return torch.cat([prompt, own], dim=2)[:, None]  # (R, 1, C, P + C)


def unpack(values: Tensor, destination: Tensor, shape: tuple[int, int]) -> Tensor:
    """Per-token ``values`` (N,) back to the (b, T) layout, 0 at padding (differentiable in ``values``)."""
    flat = values.new_zeros(shape[0] * shape[1])  # (b * T,)
    return flat.index_put((destination,), values).view(shape)  # (b, T)
