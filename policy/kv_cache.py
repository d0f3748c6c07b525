"""A KV cache layer that grows in place, for the sampling loop.

transformers' ``DynamicLayer`` appends each new token with ``torch.cat``, which copies the whole cache at every step:
O(T²) memory traffic over T new tokens. On CPU that copy was 41% of GRPO's sampling time (bench/grpo.py's batch:
16 prompts x G = 8, 64 new tokens). ``GrowingLayer`` keeps the keys and values in a buffer with room for the whole
completion, writes each step's token into it, and hands attention a view of the filled part: the same numbers, the
same shapes, no copy. It also has room for more rows than it starts with, so that the sampling loop's slots can fork
(``reslot``, ``policy.slots``). Layers of any other kind (sliding windows, quantized, ...) are left as transformers
made them, and with a transformers without cache layers nothing changes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .slots import reslot_buffers

try:
    from transformers.cache_utils import DynamicLayer
except ImportError:  # transformers before cache layers: the loop keeps the model's own cache
    DynamicLayer = None


def grow_in_place(cache: Any, capacity: int, rows: int = 0) -> None:
    """Replace each plain ``DynamicLayer`` of ``cache`` with a ``GrowingLayer`` of ``capacity`` tokens and room for
    ``rows`` rows (at least those it holds; same contents)."""
    layers = getattr(cache, "layers", None)
    if DynamicLayer is None or layers is None:
        return
    for index, layer in enumerate(layers):
        if is_plain(layer):
            layers[index] = GrowingLayer.holding(layer.keys, layer.values, capacity, rows)


def is_plain(layer: Any) -> bool:
    """Whether ``layer`` is transformers' plain (no sliding window, not quantized) ``DynamicLayer``, filled."""
    return DynamicLayer is not None and type(layer) is DynamicLayer and layer.is_initialized and bool(layer.keys.numel())


if DynamicLayer is not None:

    class GrowingLayer(DynamicLayer):
        """A ``DynamicLayer`` whose ``keys``/``values`` are views of the first ``rows`` rows of buffers with room for
        ``capacity`` tokens."""

        def __init__(self, capacity: int) -> None:
            super().__init__()
            self.capacity, self.rows, self.room = capacity, 0, 0

        @classmethod
        def holding(cls, keys: Tensor, values: Tensor, capacity: int, rows: int = 0) -> GrowingLayer:
            layer = cls(capacity)
            layer.room = max(rows, keys.shape[0])
            layer.update(keys, values)
            return layer

        def update(self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self.rows, self.room = key_states.shape[0], max(self.room, key_states.shape[0])
                self._buffers = tuple(_room(states[:, :, :0], self.capacity, self.room)
                                      for states in (key_states, value_states))
            start = self.get_seq_length()
            end = start + key_states.shape[2]
            if end > self._buffers[0].shape[2]:  # past the capacity: twice the room (the sampling loop never is)
                self._buffers = tuple(_room(buffer[:, :, :start], 2 * end, buffer.shape[0]) for buffer in self._buffers)
            self._buffers[0][: self.rows, :, start:end] = key_states
            self._buffers[1][: self.rows, :, start:end] = value_states
            self._view(end)
            return self.keys, self.values

        def _view(self, end: int) -> None:
            self.keys, self.values = (buffer[: self.rows, :, :end] for buffer in self._buffers)

        def batch_select_indices(self, indices: Tensor) -> None:
            end = self.get_seq_length()
            self._buffers = tuple(buffer[indices] for buffer in self._buffers)
            self.rows = self.room = len(indices)
            self._view(end)

        def batch_repeat_interleave(self, repeats: int) -> None:
            rows = torch.arange(self.rows, device=self._buffers[0].device)
            self.batch_select_indices(rows.repeat_interleave(repeats))

        def reslot(self, parents: Tensor) -> None:
            """Row j to hold row parents[j] (``policy.slots``); within the room, in place."""
            end = self.get_seq_length()
            if len(parents) > self.room:
                self.batch_select_indices(parents)
                return
            reslot_buffers(self._buffers, self.rows, end, parents)
            self.rows = len(parents)
            self._view(end)


def _room(states: Tensor, capacity: int, rows: int) -> Tensor:
    """A (rows, H, capacity, D) buffer holding ``states`` (B, H, L, D) in its first B rows and L positions."""
    buffer = states.new_empty(max(rows, states.shape[0]), states.shape[1], max(capacity, states.shape[2]),
                              states.shape[3])
    buffer[: states.shape[0], :, : states.shape[2]] = states
    return buffer
