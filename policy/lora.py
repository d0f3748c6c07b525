"""LoRA for the GRPO policy (PEFT): adapters on a frozen base, π_ref as a copy of the adapters, merged export.

With ``policy.lora_r > 0`` only the adapters train. π_ref needs no second model: it is the base plus a frozen copy of
the adapter weights taken at the last ``reset_reference`` (DeepSeekMath resets π_ref <- π_θ each iteration). Before
any training the adapters add nothing (LoRA's B starts at zero), so π_ref is then exactly the base with adapters
disabled. For the reference forward the copy is swapped into the adapters in place and swapped back afterwards, so
no module, parameter or ``requires_grad`` flag changes (safe under DDP). Checkpoints hold the adapters, their copy
for π_ref and the optimizer state, never the frozen base; ``save_merged`` writes a plain model for export.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..utils.errors import UserError
from .config import PolicyConfig

ADAPTER_PREFIX = "lora_"


def add_lora(model: Any, cfg: PolicyConfig) -> Any:
    """``model`` wrapped in LoRA adapters (rank ``policy.lora_r``) on ``policy.lora_target_modules``; one-line errors."""
    from peft import LoraConfig, get_peft_model

    targets: str | list[str] = cfg.lora_target_modules
    if targets != "all-linear":
        targets = [name.strip() for name in cfg.lora_target_modules.split(",") if name.strip()]
        present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        missing = [name for name in targets if name not in present]
        if not targets or missing:
            raise UserError(f"policy.lora_target_modules: {cfg.lora_target_modules!r}: no module named "
                            f"{missing or targets} in {type(model).__name__}; use 'all-linear' or names such as "
                            f"{sorted(n for n in present if n.endswith('proj'))[:6] or sorted(present)[:6]}")
    config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules=targets,
                        task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, config)
    except ValueError as err:
        raise UserError(f"policy.lora_target_modules: {cfg.lora_target_modules!r}: "
                        f"{str(err).splitlines()[0][:200]}") from None


def is_lora(model: Any) -> bool:
    """Whether ``model`` is a PEFT model (its trainable weights are adapters)."""
    return hasattr(model, "peft_config")


def adapter_weights(model: Any) -> dict[str, Tensor]:
    """A detached copy of every adapter tensor, by parameter name."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if ADAPTER_PREFIX in name}


@contextmanager
def swapped_adapters(model: Any, weights: dict[str, Tensor]) -> Iterator[None]:
    """Run the body with ``weights`` in the adapters, then put the current ones back exactly."""
    params = dict(model.named_parameters())
    current = {name: params[name].detach().clone() for name in weights}
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    try:
        yield
    finally:
        with torch.no_grad():
            for name, value in current.items():
                params[name].copy_(value)


def save_adapters(model: Any, directory: Path) -> None:
    """The adapters only (PEFT's adapter_model.safetensors + adapter_config.json, which names the base model)."""
    model.save_pretrained(directory)


def load_adapters(model: Any, directory: Path) -> None:
    """Put adapters written by ``save_adapters`` into ``model`` (a PEFT model of the same shape)."""
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    set_peft_model_state_dict(model, load_peft_weights(str(directory), device="cpu"))


@torch.no_grad()
def merged_weights(model: Any) -> Iterator[tuple[str, Tensor]]:
    """(name, tensor) of every weight as a plain checkpoint of the base model has them, one at a time.

    A plain model gives its ``state_dict``. A PEFT (LoRA) model gives its base weights with each adapted layer's
    ``base_layer.weight`` plus the delta of its active adapters, under the name without ``.base_layer``, and never
    the adapters (vLLM's weight push and ``save_merged`` both read it). Only one merged tensor exists at a time, and
    the PEFT model is not changed.
    """
    if not is_lora(model):
        yield from model.state_dict().items()
        return
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    adapted = {f"{name}.base_layer.weight": module for name, module in base.named_modules()
               if isinstance(module, LoraLayer)}
    for name, value in base.state_dict().items():
        if ADAPTER_PREFIX in name:
            continue
        module = adapted.get(name)
        if module is not None and not module.merged and not module.disable_adapters:  # as the PEFT forward adds it
            delta = sum(module.get_delta_weight(adapter) for adapter in module.active_adapters)
            value = value + delta.to(value.dtype)
        yield name.replace(".base_layer.", "."), value


@torch.no_grad()
def save_merged(model: Any, tokenizer: Any, directory: Path) -> None:
    """A plain (non-PEFT) model with the adapters merged into its weights; ``model`` itself is not changed."""
    base = model.get_base_model() if is_lora(model) else model
    base.save_pretrained(directory, state_dict=dict(merged_weights(model)))
    tokenizer.save_pretrained(directory)


def enable_gradient_checkpointing(model: Any) -> None:
    """Recompute activations in the backward pass (less memory, ~30% more time). Dropout is turned off everywhere,
    because HF only checkpoints in train mode and GRPO here runs without dropout."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    config = getattr(model, "config", None)
    for key in ("attention_dropout", "attn_pdrop", "resid_pdrop", "embd_pdrop", "hidden_dropout"):
        if config is not None and isinstance(getattr(config, key, None), float):
            setattr(config, key, 0.0)
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x names it so
        model.activation_checkpointing_enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def is_checkpointing(model: Any) -> bool:
    """Whether activation (gradient) checkpointing is on for ``model``."""
    check = getattr(model, "is_activation_checkpointing", None)
    return bool(check() if callable(check) else getattr(model, "is_gradient_checkpointing", False))
