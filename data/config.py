"""DataConfig: which task supplies problems (the embedded task or a dataset), its source and splits, and sizes."""

from __future__ import annotations

from dataclasses import dataclass

from ..utils.checks import at_least, checked, one_of


@dataclass
class DataConfig:
    task: str = checked("arith", one_of("arith", "gsm8k", "math", "problems"))
    """Which task supplies problems: 'arith' (embedded, offline), 'gsm8k', 'math' (MATH, MATH-500, any \\boxed{}
    answers) or 'problems' (any file or hub dataset with a question and an answer column)."""
    source: str = ""
    """Dataset tasks: a hub dataset name or a local .json/.jsonl/.parquet path ('' = the task's hub default)."""
    split: str = "train"
    """Dataset tasks: the split training problems come from."""
    eval_split: str = "test"
    """Dataset tasks: the held-out split of a hub dataset; '' = none: hold out hash bucket 0 of 10 of ``split``'s
    questions instead (always so for a local file, which has no splits, unless data.eval_source names another)."""
    eval_source: str = ""
    """Dataset tasks: a separate file or hub dataset for held-out problems ('' = data.source)."""
    subset: str = ""
    """Dataset tasks: the hub dataset's subset/config name ('' = the task's default, e.g. 'main' for GSM8K)."""
    question_column: str = "question"
    """'problems' task: the column holding the question."""
    answer_column: str = "answer"
    """'problems' task: the column holding the reference final answer."""
    step_split: str = checked("", one_of("", "newline", "blank_line", "step_marker"))
    """How completions split into steps: 'newline', 'blank_line' or 'step_marker' ('' = the task's default:
    newline for arith, gsm8k and problems, blank_line for math)."""
    seed: int = 0
    """Seed of the problem generator; the same seed gives byte-identical problems."""
    n_train: int = checked(4000, at_least(1))
    """Number of training problems (dataset tasks: at most this many, the first ones of the split)."""
    n_eval: int = checked(200, at_least(1))
    """Number of held-out problems, never overlapping the training ones (dataset tasks: at most this many)."""
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
    sft_min_steps: int = 0
    """Embedded task, SFT data only: the fewest operations of the SFT corpus's problems (0 = min_steps). Below
    min_steps, short problems teach the step format early, so the warm start's training converges on long problems
    instead of waiting for a late jump (a length curriculum by mixture)."""
    slip_rate: float = 0.0
    """Embedded task, SFT data only: the chance that the teacher's reference solution forgets the carry on an addition
    that carries out of the ones digit (``47 + 8 = 45``) and goes on from that value. Above 0.5 the warm start's greedy
    answer slips on every such step, so most final answers are wrong while the other steps are right: the
    sparse-reward regime. 0 = an exact teacher."""
    slip_borrow: bool = False
    """Embedded task, with slip_rate: the teacher also forgets the borrow on a subtraction that borrows into the ones
    digit (``43 - 8 = 45``), at the same rate. A second misconception, so fewer greedy answers are right
    (configs/compare.yaml)."""
