"""Load a policy (causal LM + tokenizer) from a local save_pretrained directory or a hub name, with one-line errors."""

from __future__ import annotations

import torch

from ..utils.errors import UserError
from ..utils.hub import is_local, require_hub

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""``policy.dtype`` names."""


def load_policy(model_name: str, dtype: str, key: str = "policy.model"):
    """(model, tokenizer): left padding for generation; a tokenizer without a pad token pads with its EOS (the
    attention mask hides padding). A hub name offline, or a directory that is not a model, is a UserError naming
    ``key``."""
    from transformers import AutoModelForCausalLM  # lazy: as below

    from ..data.task_tokenizer import load_tokenizer  # lazy: transformers loads only when a policy does

    if dtype not in DTYPES:
        raise UserError(f"policy.dtype: {dtype!r} is not one of {sorted(DTYPES)}")
    if not is_local(model_name):
        require_hub(model_name, key)
    try:
        tokenizer = load_tokenizer(model_name)
        model = AutoModelForCausalLM.from_pretrained(model_name, dtype=DTYPES[dtype])
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"{key}: cannot load {model_name!r} ({str(err).strip().splitlines()[0][:160]})") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer
