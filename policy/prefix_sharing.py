"""Prefix-sharing attention for the sampling loop: each prompt's keys and values are read once per group, not per row.

The G samples of a prompt share its keys and values. A plain KV cache holds a copy per row, and every one-token decode
step reads all B copies; on CPU that attention was 44% of GRPO's sampling time (bench/grpo.py's batch: 16 prompts x
G = 8, prompts of 30-35 tokens, 64 new tokens). ``PrefixSharingLayer`` keeps each distinct prompt's keys/values once
(U, Hkv, P, D) and each row's own completion keys/values (B, Hkv, N, D). ``decode_attention`` scores every row's query
against its prompt (the rows of one prompt as the queries of one matrix product) and against its own completion, and
normalises the two together: the softmax over the concatenation, so the same attention as the plain cache's.

It runs only where it is the same computation: transformers' attention-function registry, plain (non-sliding) cache
layers, one query token, no soft-capping or attention sinks, a sliding window (if any) wider than prompt + completion.
``sharing_attention`` switches a model's attention to ``prefix_sharing_attention`` for the decode steps; that function
refuses (``PrefixSharingUnsupported``) whatever it cannot compute exactly, and the caller checks after the first decode
step that every layer's attention came through it with this cache's keys (``served_every_layer``). Where either
fails, the sampling loop samples the batch with the plain cache instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from .kv_cache import is_plain
from .slots import reslot_buffers

try:
    from transformers import AttentionInterface
    from transformers.cache_utils import DynamicLayer
except ImportError:  # a transformers without cache layers or an attention registry: the plain cache serves
    AttentionInterface = DynamicLayer = None

NAME = "prmloop_prefix_sharing"
"""The attention implementation's name in transformers' registry while the decode steps run."""


class PrefixSharingUnsupported(RuntimeError):
    """This model's attention cannot be served by prefix sharing (the sampling loop then uses the plain cache)."""


def slots(group: Tensor) -> Tensor:
    """Each row's index among the rows of its prompt, in row order: ``group`` (b,) -> (b,) long."""
    order = torch.sort(group, stable=True).indices  # rows of one prompt contiguous, in row order
    sorted_group = group[order]
    first = torch.searchsorted(sorted_group, sorted_group)  # (b,) first sorted position of each row's prompt
    slot = torch.empty_like(group)
    slot[order] = torch.arange(len(group), device=group.device) - first
    return slot


def grid_layout(group: Tensor, slot: Tensor) -> tuple[int, bool]:
    """The rows-per-prompt width of ``decode_attention``'s grid, and whether the rows already are that grid (each
    prompt's rows contiguous, all prompts with as many rows)."""
    rows, width = len(group), int(slot.max()) + 1 if len(group) else 1
    dense = rows % width == 0 and bool((group == torch.arange(rows, device=group.device) // width).all())
    return width, dense


def decode_attention(query: Tensor, prompt_keys: Tensor, prompt_values: Tensor, prompt_mask: Tensor, group: Tensor,
                     slot: Tensor, keys: Tensor, values: Tensor, scaling: float,
                     layout: tuple[int, bool] | None = None) -> Tensor:
    """One query token per row attending to its prompt's keys (shared by the rows of that prompt) and to its own.

    query (b, H, 1, D); prompt_keys/prompt_values (U, Hkv, P, D); prompt_mask (U, P) bool (False: left padding);
    group (b,) each row's prompt; slot (b,) its index among that prompt's rows (``slots``); keys/values (b, Hkv, t, D)
    the row's own (completion) keys; ``layout`` ``grid_layout(group, slot)``, if the caller holds it. Query head h
    reads key head h // (H / Hkv), as transformers' ``repeat_kv``.
    -> (b, H, 1, D): softmax(q·[K_prompt; K_own] · scaling) [V_prompt; V_own], the softmax in float32 as eager attention.
    """
    rows, heads, _, dim = query.shape
    units, kv_heads, prompt_len, _ = prompt_keys.shape
    rep = heads // kv_heads
    width, dense = grid_layout(group, slot) if layout is None else layout
    dense = dense and rows == units * width
    q = query.reshape(rows, kv_heads, rep, dim)  # (b, Hkv, rep, D)
    own = torch.matmul(q, keys.transpose(-1, -2)) * scaling  # (b, Hkv, rep, t)

    def to_grid(x: Tensor) -> Tensor:  # (b, Hkv, rep, X) -> (U, Hkv, width * rep, X): each prompt's rows together
        if dense:
            grid = x.reshape(units, width, kv_heads, rep, x.shape[-1])
        else:
            grid = x.new_zeros(units, width, kv_heads, rep, x.shape[-1])
            grid[group, slot] = x
        return grid.permute(0, 2, 1, 3, 4).reshape(units, kv_heads, width * rep, x.shape[-1])

    def from_grid(x: Tensor) -> Tensor:  # the inverse of to_grid
        grid = x.reshape(units, kv_heads, width, rep, x.shape[-1]).permute(0, 2, 1, 3, 4)
        return grid.reshape(rows, kv_heads, rep, x.shape[-1]) if dense else grid[group, slot]

    shared = from_grid(torch.matmul(to_grid(q), prompt_keys.transpose(-1, -2))) * scaling  # (b, Hkv, rep, P)
    shared = shared.masked_fill(~prompt_mask[group][:, None, None, :], float("-inf"))
    probs = torch.softmax(torch.cat([shared, own], dim=-1), dim=-1, dtype=torch.float32).to(query.dtype)
    shared_probs, own_probs = probs.split([prompt_len, keys.shape[2]], dim=-1)
    out = torch.matmul(own_probs, values) + from_grid(torch.matmul(to_grid(shared_probs), prompt_values))
    return out.reshape(rows, heads, 1, dim)


if DynamicLayer is not None:

    class PrefixSharingLayer(DynamicLayer):
        """A cache layer holding each distinct prompt's keys/values once and each row's completion keys/values.

        ``update`` stores a decode step's keys/values in the row's own buffer and returns views of the row's own
        keys/values so far, tagged with this layer, which ``prefix_sharing_attention`` reads the prompt part from.
        """

        def __init__(self, prompt_keys: Tensor, prompt_values: Tensor, prompt_mask: Tensor, group: Tensor,
                     capacity: int, rows: int = 0) -> None:
            super().__init__()
            self.prompt_keys, self.prompt_values, self.prompt_mask = prompt_keys, prompt_values, prompt_mask
            self.group, self.slot = group, slots(group)
            self.layout = grid_layout(group, self.slot)
            self.rows, self.room, (_, kv_heads, _, dim) = len(group), max(rows, len(group)), prompt_keys.shape
            self._buffers = tuple(prompt_keys.new_empty(self.room, kv_heads, capacity, dim) for _ in range(2))
            self.length, self.calls = 0, 0
            self.is_initialized, self.device, self.dtype = True, prompt_keys.device, prompt_keys.dtype
            self._view()

        def _view(self) -> None:
            self.keys, self.values = (buffer[: self.rows, :, : self.length] for buffer in self._buffers)

        def update(self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
            start, end = self.length, self.length + key_states.shape[2]
            if end > self._buffers[0].shape[2]:  # past the capacity: twice the room (the sampling loop never is)
                self._buffers = tuple(_grown(buffer[:, :, :start], 2 * end) for buffer in self._buffers)
            self._buffers[0][: self.rows, :, start:end] = key_states
            self._buffers[1][: self.rows, :, start:end] = value_states
            self.length = end
            self._view()
            self.keys.prmloop_prefix = self.values.prmloop_prefix = self
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.prompt_keys.shape[2] + self.length

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return self.get_seq_length() + query_length, 0

        def batch_select_indices(self, indices: Tensor) -> None:
            self._buffers = tuple(buffer[indices] for buffer in self._buffers)
            self.rows = self.room = len(indices)
            self._regroup(self.group[indices])

        def reslot(self, parents: Tensor) -> None:
            """Row j to hold row parents[j] (``policy.slots``); within the room, in place."""
            if len(parents) > self.room:
                self.batch_select_indices(parents)
                return
            reslot_buffers(self._buffers, self.rows, self.length, parents)
            self.rows = len(parents)
            self._regroup(self.group[parents])

        def _regroup(self, group: Tensor) -> None:
            self.group, self.slot = group, slots(group)
            self.layout = grid_layout(group, self.slot)
            self._view()

        def crop(self, tokens_to_remove: int) -> None:
            raise PrefixSharingUnsupported("a prefix-sharing cache cannot be cropped")

        def batch_repeat_interleave(self, repeats: int) -> None:
            raise PrefixSharingUnsupported("a prefix-sharing cache cannot be repeated")


def _grown(states: Tensor, capacity: int) -> Tensor:
    buffer = states.new_empty(*states.shape[:2], capacity, states.shape[3])
    buffer[:, :, : states.shape[2]] = states
    return buffer


def applicable(cache: Any) -> bool:
    """True when every layer of ``cache`` (after the prefill) is a plain, filled ``DynamicLayer``."""
    layers = getattr(cache, "layers", None)
    return AttentionInterface is not None and bool(layers) and all(is_plain(layer) for layer in layers)


def share_prefixes(cache: Any, prompt_mask: Tensor, group: Tensor, capacity: int, rows: int = 0) -> None:
    """Turn ``cache``, filled by one forward of U distinct prompts (``prompt_mask`` (U, P)), into prefix-sharing layers
    for the rows ``group`` (b,) (row i samples prompt group[i]), each with room for ``capacity`` new tokens and
    ``rows`` rows (``reslot``)."""
    for index, layer in enumerate(cache.layers):
        cache.layers[index] = PrefixSharingLayer(layer.keys, layer.values, prompt_mask, group, capacity, rows)


def served_every_layer(cache: Any) -> bool:
    """Whether every layer's attention of the last decode step went through ``prefix_sharing_attention``."""
    served = all(getattr(layer, "calls", 0) == 1 for layer in cache.layers)
    for layer in cache.layers:
        layer.calls = 0
    return served


def prefix_sharing_attention(module: Any, query: Tensor, key: Tensor, value: Tensor, attention_mask: Any,
                             dropout: float = 0.0, scaling: float | None = None, **kwargs: Any) -> tuple[Tensor, None]:
    """transformers' attention-function signature over a ``PrefixSharingLayer``'s keys; -> ((b, 1, H, D), None).
    The 2D/4D ``attention_mask`` is not read: the layer holds the prompts' padding, and a row's own tokens are all
    visible to it."""
    layer = getattr(key, "prmloop_prefix", None)
    window = kwargs.get("sliding_window")
    if (layer is None or getattr(value, "prmloop_prefix", None) is not layer or query.shape[2] != 1 or dropout
            or kwargs.get("softcap") or kwargs.get("s_aux") is not None
            or (window is not None and layer.get_seq_length() > window)):
        raise PrefixSharingUnsupported(f"{type(module).__name__} attention cannot share prompt keys")
    layer.calls += 1
    out = decode_attention(query, layer.prompt_keys, layer.prompt_values, layer.prompt_mask, layer.group,
                           layer.slot, key, value, query.shape[-1] ** -0.5 if scaling is None else scaling, layer.layout)
    return out.transpose(1, 2), None


if AttentionInterface is not None:
    AttentionInterface.register(NAME, prefix_sharing_attention)


@contextmanager
def sharing_attention(model: Any) -> Iterator[None]:
    """Every config of ``model`` (and of the modules it wraps) set to prefix-sharing attention while inside."""
    configs = {id(config): config for module in model.modules()
               if hasattr(config := getattr(module, "config", None), "_attn_implementation")}
    before = [(config, config._attn_implementation) for config in configs.values()]
    try:
        for config, _ in before:
            config._attn_implementation = NAME
        yield
    finally:
        for config, implementation in before:
            config._attn_implementation = implementation
