"""Small causal LMs built from a transformers config, for the offline default and for tests; saved with save_pretrained."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from ..data.task_tokenizer import build_task_tokenizer
from .config import PolicyConfig


def build_tiny_llama(cfg: PolicyConfig, tokenizer: PreTrainedTokenizerFast, seed: int) -> PreTrainedModel:
    """A randomly initialised Llama-architecture LM sized by ``cfg`` (the embedded default policy)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=4 * cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_length,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def init_policy(cfg: PolicyConfig, out_dir: str | Path, seed: int) -> Path:
    """Write the embedded tokenizer and a fresh tiny LM to ``out_dir`` (loadable with the Auto classes)."""
    out_dir = Path(out_dir)
    tokenizer = build_task_tokenizer()
    model = build_tiny_llama(cfg, tokenizer, seed)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def tiny_random_model(arch: str, tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> PreTrainedModel:
    """A very small random 'llama' or 'qwen2' model for tests of the general (hub-model) code path."""
    torch.manual_seed(seed)
    common = dict(  # noqa: C408 - keyword form reads like the config it feeds
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**common))
    if arch == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common))
    raise ValueError(f"unknown tiny architecture {arch!r}; choose 'llama' or 'qwen2'")
