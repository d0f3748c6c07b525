"""Sampling slots: the G samples of a prompt run as one sequence until they draw different tokens.

A slot is one sequence the sampling loop's model batch runs. Rows (samples) whose tokens so far are the same share a
slot: the same prompt and tokens give the same next-token logits, so the model runs them once and each row draws its
own token from them with its own uniform number. When a slot's rows draw different tokens it forks: the first token
(the smallest id) keeps the slot, each other gets a new slot after the last, holding a copy of the slot's keys and
values. A slot that no row continues is dead (fed padding, its outputs unread) until a quarter of the slots are dead
or the cache has no room, when only the live ones are kept. The shipped policy's 8 samples of a prompt stay one
sequence for long stretches: bench/grpo.py's batch runs 41% as many decode rows as samples.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def next_slots(slot: Tensor, token: Tensor, num_slots: int, capacity: int, pad_id: int,
               ) -> tuple[Tensor | None, Tensor, Tensor]:
    """Slots once each continuing row (in slot ``slot`` (a,)) takes its new ``token`` (a,), of ``num_slots`` now and
    at most ``capacity``. Returns each new slot's old slot (S',) or None when no slot forks or moves, the token each
    new slot is fed (S',) (``pad_id`` for a dead one), and each row's new slot (a,)."""
    pairs, row_child = torch.unique(torch.stack([slot, token], dim=1), dim=0, return_inverse=True)  # (c, 2), (a,)
    parent, child_token = pairs[:, 0], pairs[:, 1]  # sorted by slot, then token
    first = torch.ones_like(parent, dtype=torch.bool)
    first[1:] = parent[1:] != parent[:-1]  # the first child of each slot keeps it
    forks = int((~first).sum())
    total = num_slots + forks
    if (total - len(parent)) * 4 >= total or total > capacity:  # compact: the live slots only, in order
        return parent, child_token, row_child
    new_slot = torch.empty_like(parent)
    new_slot[first] = parent[first]
    new_slot[~first] = num_slots + torch.arange(forks, device=parent.device)
    feed = torch.full((total,), pad_id, dtype=token.dtype, device=token.device)
    feed[new_slot] = child_token
    parents = torch.cat([torch.arange(num_slots, device=parent.device), parent[~first]]) if forks else None
    return parents, feed, new_slot[row_child]


def can_reslot(cache: Any) -> bool:
    """Whether every layer of ``cache`` can fork and compact slots (``reslot``): prmloop's growing and prefix-sharing
    layers can; transformers' own only select rows, so with them every row keeps its own slot."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(hasattr(layer, "reslot") for layer in layers)


def reslot(cache: Any, parents: Tensor, forking: bool) -> None:
    """Every layer of ``cache`` to the slots ``parents`` (S',): new slot j holds old slot parents[j]'s contents.
    ``forking`` (``can_reslot(cache)``): in place; else transformers' row selection (only compactions reach it)."""
    if not forking:
        cache.batch_select_indices(parents)
        return
    for layer in cache.layers:
        layer.reslot(parents)


def reslot_buffers(buffers: tuple[Tensor, ...], rows: int, length: int, parents: Tensor) -> None:
    """Buffers (R, H, N, D) whose first ``rows`` rows hold ``length`` tokens: rows to ``parents`` in place. When the
    old rows stay where they are (forks only), only the forked rows are copied."""
    kept = len(parents) >= rows and bool((parents[:rows] == torch.arange(rows, device=parents.device)).all())
    start = rows if kept else 0
    for buffer in buffers:
        buffer[start : len(parents), :, :length] = buffer[parents[start:], :, :length]
