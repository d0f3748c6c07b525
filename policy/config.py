"""PolicyConfig and SFTConfig: which policy model to use and how the supervised warm start trains it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PolicyConfig:
    model: str = "tiny"
    """'tiny' builds the embedded small Llama-architecture LM; anything else is a hub name or local directory."""
    dtype: str = "float32"
    """Weights dtype when loading: 'float32', 'bfloat16' or 'float16'."""
    hidden_size: int = 128
    """Tiny model: width of the residual stream."""
    num_layers: int = 4
    """Tiny model: number of transformer blocks."""
    num_heads: int = 4
    """Tiny model: attention heads per block."""
    max_length: int = 160
    """Longest prompt + completion in tokens (the tiny model's position limit; a truncation bound for hub models)."""
    max_new_tokens: int = 64
    """Most tokens generated for one completion."""
    prompt_template: str = "{question}\n"
    """How a question becomes the prompt; '{question}' is replaced. Steps follow, one per line."""


@dataclass
class SFTConfig:
    steps: int = 900
    """Optimizer steps of the supervised warm start."""
    batch_size: int = 32
    """Solutions per optimizer step."""
    lr: float = 3e-3
    """Peak learning rate (linear warm-up, then cosine decay to 10%)."""
    warmup_steps: int = 100
    """Steps of linear learning-rate warm-up."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    eval_every: int = 0
    """Evaluate held-out greedy accuracy every this many steps (and at the end); 0 = only at the end."""
    eval_problems: int = 200
    """Held-out problems used by each evaluation (at most data.n_eval)."""
    seed: int = 0
    """Seed for model initialisation and batch order."""
