"""A KV cache layer that grows in place, for the sampling loop.

transformers' ``DynamicLayer`` appends each new token with ``torch.cat``, which copies the whole cache at every step:
O(T²) memory traffic over T new tokens. On CPU that copy was 41% of GRPO's sampling time (bench/grpo.py's batch:
16 prompts x G = 8, 64 new tokens). ``GrowingLayer`` keeps the keys and values in a buffer with room for the whole
completion, writes each step's token into it, and hands attention a view of the filled part: the same numbers, the
same shapes, no copy. Layers of any other kind (sliding windows, quantized, ...) are left as transformers made them,
and with a transformers without cache layers nothing changes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

try:
    from transformers.cache_utils import DynamicLayer
except ImportError:  # transformers before cache layers: the loop keeps the model's own cache
    DynamicLayer = None


def grow_in_place(cache: Any, capacity: int) -> None:
    """Replace each plain ``DynamicLayer`` of ``cache`` with a ``GrowingLayer`` of ``capacity`` tokens (same contents)."""
    layers = getattr(cache, "layers", None)
    if DynamicLayer is None or layers is None:
        return
    for index, layer in enumerate(layers):
        if type(layer) is DynamicLayer and layer.is_initialized and layer.keys.numel():
            layers[index] = GrowingLayer.holding(layer.keys, layer.values, capacity)


if DynamicLayer is not None:

    class GrowingLayer(DynamicLayer):
        """A ``DynamicLayer`` whose ``keys``/``values`` are views of buffers with room for ``capacity`` tokens."""

        def __init__(self, capacity: int) -> None:
            super().__init__()
            self.capacity = capacity

        @classmethod
        def holding(cls, keys: Tensor, values: Tensor, capacity: int) -> GrowingLayer:
            layer = cls(capacity)
            layer.update(keys, values)
            return layer

        def update(self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self._buffers = (_room(key_states[:, :, :0], self.capacity), _room(value_states[:, :, :0], self.capacity))
            start = self.get_seq_length()
            end = start + key_states.shape[2]
            if end > self._buffers[0].shape[2]:  # past the capacity: twice the room (the sampling loop never is)
                self._buffers = tuple(_room(buffer[:, :, :start], 2 * end) for buffer in self._buffers)
            self._buffers[0][:, :, start:end] = key_states
            self._buffers[1][:, :, start:end] = value_states
            self.keys, self.values = self._buffers[0][:, :, :end], self._buffers[1][:, :, :end]
            return self.keys, self.values

        def batch_select_indices(self, indices: Tensor) -> None:
            end = self.get_seq_length()
            self._buffers = tuple(buffer[indices] for buffer in self._buffers)
            self.keys, self.values = self._buffers[0][:, :, :end], self._buffers[1][:, :, :end]

        def batch_repeat_interleave(self, repeats: int) -> None:
            rows = torch.arange(self._buffers[0].shape[0], device=self._buffers[0].device)
            self.batch_select_indices(rows.repeat_interleave(repeats))


def _room(states: Tensor, capacity: int) -> Tensor:
    """A (B, H, capacity, D) buffer holding ``states`` (B, H, L, D) in its first L positions."""
    buffer = states.new_empty(*states.shape[:2], max(capacity, states.shape[2]), states.shape[3])
    buffer[:, :, : states.shape[2]] = states
    return buffer
