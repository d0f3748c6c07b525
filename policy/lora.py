"""LoRA for the GRPO policy: π_ref as a copy of the adapters, adapter checkpoints, merged export, checkpointing.

With ``policy.lora_r > 0`` only the adapters train (``utils.lora.add_lora`` wraps the policy; the merge is
``utils.lora.merged_weights``). π_ref needs no second model: it is the base plus a frozen copy of
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

from ..utils.lora import ADAPTER_PREFIX, is_lora, merged_weights


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
