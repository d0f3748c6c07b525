"""DataConfig: the embedded arithmetic task's knobs and dataset sizes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DataConfig:
    task: str = "arith"
    """Which task supplies problems: 'arith' (embedded, offline) or a loader format such as 'gsm8k'."""
    source: str = ""
    """For a loader format: a hub dataset name or a local JSON/JSONL/parquet path (unused for 'arith')."""
    seed: int = 0
    """Seed of the problem generator; the same seed gives byte-identical problems."""
    n_train: int = 4000
    """Number of training problems."""
    n_eval: int = 200
    """Number of held-out problems (never overlapping the training ones)."""
    min_steps: int = 2
    """Fewest operations in an arithmetic problem (each operation is one solution step)."""
    max_steps: int = 3
    """Most operations in an arithmetic problem."""
    start_max: int = 20
    """The starting number is drawn from 1..start_max."""
    operand_max: int = 20
    """Operands of + and - are drawn from 1..operand_max."""
    mul_max: int = 5
    """Operands of * are drawn from 2..mul_max."""
    value_max: int = 199
    """Running values stay within 0..value_max (operations that would leave it are redrawn)."""
    operators: str = "+-*"
    """Operators the generator may use, as one string of characters from '+-*'."""
