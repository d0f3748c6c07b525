"""LoRA adapters through PEFT, for the PRM and the policy alike: the one wrapper and the one merge.

``add_lora`` wraps a model in adapters (rank r, scale alpha / r, LoRA's B starts at zero, no dropout) on the named
linear layers; the caller passes the config key its errors name. ``merged_weights`` is the one merge: each adapted
layer's base weight plus the delta of its active adapters, as a plain checkpoint names it. It reads the weights and
changes nothing (the policy's export and vLLM weight push); ``merge_lora`` writes the same sums into the base layers
and drops the adapters (a PRM before it is saved).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from .errors import UserError

ADAPTER_PREFIX = "lora_"
"""Parameter names of adapter weights contain it (``lora_A``, ``lora_B``)."""


def add_lora(model: Any, rank: int, alpha: float, target_modules: str = "all-linear", key: str = "lora_r",
             task_type: str | None = None) -> Any:
    """``model`` wrapped in LoRA adapters of rank ``rank`` on ``target_modules`` ("all-linear", or comma-separated
    module names such as "q_proj,v_proj"); only the adapters train in it. ``task_type`` is PEFT's ("CAUSAL_LM" for a
    policy that generates). A missing peft or a module the model lacks is a one-line UserError naming ``key``."""
    try:
        from peft import LoraConfig, get_peft_model  # optional: peft loads only when LoRA is asked for
    except ImportError:
        raise UserError(f"{key}: LoRA needs the 'peft' package (pip install peft)") from None
    targets: str | list[str] = target_modules
    if targets != "all-linear":
        targets = [name.strip() for name in target_modules.split(",") if name.strip()]
        present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        missing = [name for name in targets if name not in present]
        if not targets or missing:
            raise UserError(f"{key}: {target_modules!r}: no module named {missing or targets} in "
                            f"{type(model).__name__}; use 'all-linear' or names such as "
                            f"{sorted(n for n in present if n.endswith('proj'))[:6] or sorted(present)[:6]}")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets, task_type=task_type)
    try:
        return get_peft_model(model, config)
    except ValueError as err:
        raise UserError(f"{key}: {target_modules!r}: {str(err).splitlines()[0][:200]}") from None


def is_lora(model: Any) -> bool:
    """Whether ``model`` is a PEFT model (its trainable weights are adapters)."""
    return hasattr(model, "peft_config")


def _lora_layers(model: Any) -> dict[str, Any]:
    """``{"<name>.base_layer.weight": layer}`` of every adapted layer of a PEFT model's base model."""
    from peft.tuners.lora import LoraLayer  # optional: as in add_lora

    return {f"{name}.base_layer.weight": module for name, module in model.get_base_model().named_modules()
            if isinstance(module, LoraLayer)}


def _adapter_delta(layer: Any) -> Tensor | None:
    """What a LoRA layer's active adapters add to its base weight, as its forward adds it (None: merged or disabled)."""
    if layer.merged or layer.disable_adapters:
        return None
    return sum(layer.get_delta_weight(adapter) for adapter in layer.active_adapters)


@torch.no_grad()
def merged_weights(model: Any) -> Iterator[tuple[str, Tensor]]:
    """(name, tensor) of every weight as a plain checkpoint of the base model has them, one at a time.

    A plain model gives its ``state_dict``. A PEFT (LoRA) model gives its base weights with each adapted layer's
    ``base_layer.weight`` plus the delta of its active adapters, under the name without ``.base_layer``, and never
    the adapters. Only one merged tensor exists at a time, and the PEFT model is not changed.
    """
    if not is_lora(model):
        yield from model.state_dict().items()
        return
    adapted = _lora_layers(model)
    for name, value in model.get_base_model().state_dict().items():
        if ADAPTER_PREFIX in name:
            continue
        delta = _adapter_delta(adapted[name]) if name in adapted else None
        if delta is not None:
            value = value + delta.to(value.dtype)
        yield name.replace(".base_layer.", "."), value


@torch.no_grad()
def merge_lora(model: Any) -> Any:
    """The plain model under ``model`` with the adapters merged into its weights (the sums of ``merged_weights``,
    written in place, adapters dropped); a plain model comes back as it is. The PEFT wrapper is spent: use the result."""
    if not is_lora(model):
        return model
    for layer in _lora_layers(model).values():
        delta = _adapter_delta(layer)
        if delta is not None:
            weight = layer.get_base_layer().weight
            weight += delta.to(weight.dtype)
    return model.unload()
