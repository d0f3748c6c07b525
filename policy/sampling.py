"""Batched text generation from a causal LM (greedy or sampled), with a KV cache, left padding and EOS stopping."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@torch.no_grad()
def generate_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
) -> list[str]:
    """One completion per prompt (decoded, special tokens dropped); temperature 0 means greedy."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    completions: list[str] = []
    sampling = temperature > 0
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True, padding_side="left")
        batch = {key: value.to(device) for key, value in batch.items() if key in ("input_ids", "attention_mask")}
        output = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=sampling,
            temperature=temperature if sampling else None,
            top_p=top_p if sampling else None,
            top_k=None,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )  # (B, P + N)
        new_tokens = output[:, batch["input_ids"].shape[1] :]  # (B, N)
        completions.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    model.train(was_training)
    return completions
