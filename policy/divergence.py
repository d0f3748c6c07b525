"""Catching a diverged optimizer step: how far it moved the weights, and undoing it from a pre-step copy.

A step diverged when it leaves any trainable weight NaN/inf, or moves the weights by more than ``max_change`` of their
norm (‖θ_new − θ_old‖ / ‖θ_old‖; with no copy kept, |‖θ_new‖ − ‖θ_old‖| / ‖θ_old‖, a lower bound). The copy holds
only what a step changes: the trainable weights and their optimizer state, on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, MutableMapping
from typing import Any

import torch
from torch import Tensor

NON_FINITE = "an update that made the weights NaN/inf"
TOO_LARGE = "an update that moved the weights by more than grpo.max_weight_change (lower grpo.lr)"


def verdict(norm_before: float, change: float, max_change: float) -> str | None:
    """Why a step with weight norm ``norm_before`` and change norm ``change`` diverged, or None when it is kept.

    ``max_change`` 0 checks only for NaN/inf. A step from all-zero weights is measured against 1 instead of 0.
    """
    if not (math.isfinite(norm_before) and math.isfinite(change)):
        return NON_FINITE
    if max_change and change > max_change * (norm_before if norm_before > 0 else 1.0):
        return TOO_LARGE
    return None


@torch.no_grad()
def norm(tensors: Iterable[Tensor]) -> float:
    """The L2 norm of all ``tensors`` together, in float64 (NaN when any element is NaN/inf); one device sync."""
    squares = [tensor.detach().double().pow(2).sum() for tensor in tensors]  # each on its tensor's device
    if not squares:
        return 0.0
    total = torch.stack([square.to(squares[0].device) for square in squares]).sum().item()
    return math.sqrt(total) if math.isfinite(total) else float("nan")


def _to_cpu(value: Any) -> Any:
    return value.detach().to("cpu", copy=True) if isinstance(value, Tensor) else value


@torch.no_grad()
def snapshot(params: list[Tensor], state: MutableMapping[Any, dict[str, Any]]) -> list[tuple[Tensor, dict | None]]:
    """A CPU copy of each parameter and its optimizer state (None where the optimizer has none yet)."""
    return [(_to_cpu(p), {k: _to_cpu(v) for k, v in state[p].items()} if state.get(p) else None) for p in params]


@torch.no_grad()
def restore(params: list[Tensor], state: MutableMapping[Any, dict[str, Any]],
            saved: list[tuple[Tensor, dict | None]]) -> None:
    """Put back what ``snapshot`` copied, in place (the optimizer keeps its parameter objects)."""
    for param, (weights, saved_state) in zip(params, saved, strict=True):
        param.copy_(weights)
        if saved_state is None:
            state.pop(param, None)
            continue
        for key, value in saved_state.items():
            current = state[param].get(key)
            if isinstance(current, Tensor) and isinstance(value, Tensor):
                current.copy_(value)
            else:
                state[param][key] = value


def change_norm(params: list[Tensor], saved: list[tuple[Tensor, dict | None]]) -> float:
    """‖θ_new − θ_old‖ over ``params`` against the weights in ``saved``."""
    return norm(p.detach().cpu().double() - weights.double() for p, (weights, _) in zip(params, saved, strict=True))
