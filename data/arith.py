"""The embedded task: a seeded generator of multi-step arithmetic problems with reference step-by-step solutions.

A problem applies operations left to right to a running value, e.g. ``7 + 5 * 3 - 4 = ? (left to right)``. Its
reference solution has one step per operation (``7 + 5 = 12``, ``12 * 3 = 36``, ``36 - 4 = 32``) and a final answer
line (``Answer: 32``), which is a step too. The held-out split is the set of problems whose text hashes into bucket 0
of 10, so train and held-out never overlap, whatever the seeds or sizes.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from ..utils.errors import UserError
from .config import DataConfig
from .schema import Problem

SPLITS = ("train", "eval")
QUESTION_SUFFIX = " = ? (left to right)"
ANSWER_PREFIX = "Answer: "
_QUESTION_RE = re.compile(r"([0-9]{1,9})((?: [+\-*] [0-9]{1,9}){1,32}) = \? \(left to right\)")
_OPERATION_RE = re.compile(r" ([+\-*]) ([0-9]{1,9})")


@dataclass(frozen=True)
class ArithProblem:
    """The structure of one problem: a start value and a list of (operator, operand) applied left to right."""

    start: int
    operations: tuple[tuple[str, int], ...]

    @property
    def question(self) -> str:
        ops = "".join(f" {op} {operand}" for op, operand in self.operations)
        return f"{self.start}{ops}{QUESTION_SUFFIX}"

    @property
    def reference_steps(self) -> tuple[str, ...]:
        steps, value = [], self.start
        for op, operand in self.operations:
            result = apply(value, op, operand)
            steps.append(f"{value} {op} {operand} = {result}")
            value = result
        return (*steps, f"{ANSWER_PREFIX}{value}")

    @property
    def answer(self) -> int:
        value = self.start
        for op, operand in self.operations:
            value = apply(value, op, operand)
        return value


def apply(value: int, op: str, operand: int) -> int:
    """One operation of the task's grammar; only these three operators exist."""
    if op == "+":
        return value + operand
    if op == "-":
        return value - operand
    if op == "*":
        return value * operand
    raise ValueError(f"unknown operator {op!r}")


def slips(value: int, op: str, operand: int, borrow: bool = False) -> bool:
    """Whether ``value op operand`` is where the teacher may slip: an addition that carries out of the ones digit, and
    with ``borrow`` also a subtraction that borrows into it."""
    if op == "+":
        return value % 10 + operand % 10 >= 10
    return borrow and op == "-" and value % 10 < operand % 10


def slipped_result(value: int, op: str, operand: int) -> int:
    """The result with the carry or borrow forgotten: the tens digit one short after a carry (``47 + 8 -> 45``), one
    too many after a borrow (``43 - 8 -> 45``)."""
    return apply(value, op, operand) + (10 if op == "-" else -10)


def teacher_steps(problem: ArithProblem, slip_rate: float, rng: random.Random, borrow: bool = False) -> tuple[str, ...]:
    """A solution by a teacher that slips on each slip step (``slips``) with chance ``slip_rate`` and carries the
    slipped value on (later steps are right given it; the answer line states the slipped chain's value)."""
    steps, value = [], problem.start
    for op, operand in problem.operations:
        result = apply(value, op, operand)
        if slips(value, op, operand, borrow) and rng.random() < slip_rate:
            result = slipped_result(value, op, operand)
        steps.append(f"{value} {op} {operand} = {result}")
        value = result
    return (*steps, f"{ANSWER_PREFIX}{value}")


def with_teacher_slips(problems: list[Problem], slip_rate: float, seed: int, borrow: bool = False) -> list[Problem]:
    """``problems`` with reference steps rewritten by the slipping teacher (seeded; answers stay the true ones)."""
    rng = random.Random(f"{seed}-slips")
    return [Problem(p.id, p.question, p.answer, teacher_steps(parse_question(p.question), slip_rate, rng, borrow))
            for p in problems]


def parse_question(question: str) -> ArithProblem:
    """Read a question back into its structure; anything outside the task's grammar raises UserError."""
    match = _QUESTION_RE.fullmatch(question.strip())
    if match is None:
        raise UserError(f"not an arithmetic task question: {question[:60]!r}")
    operations = tuple((op, int(operand)) for op, operand in _OPERATION_RE.findall(match.group(2)))
    return ArithProblem(int(match.group(1)), operations)


def split_of(question: str) -> str:
    """'eval' for the held-out bucket (stable hash of the question text), else 'train'."""
    bucket = int.from_bytes(hashlib.sha256(question.encode()).digest()[:4], "big") % 10
    return "eval" if bucket == 0 else "train"


def sample_problem(rng: random.Random, cfg: DataConfig) -> ArithProblem:
    """Draw one problem; operations that would leave 0..value_max are redrawn (bounded tries, then '+ 1')."""
    value = rng.randint(1, cfg.start_max)
    start, operations = value, []
    for _ in range(rng.randint(cfg.min_steps, cfg.max_steps)):
        for _attempt in range(50):
            op = rng.choice(cfg.operators)
            operand = rng.randint(2, cfg.mul_max) if op == "*" else rng.randint(1, cfg.operand_max)
            if 0 <= apply(value, op, operand) <= cfg.value_max:
                break
        else:
            op, operand = "+", 1
        operations.append((op, operand))
        value = apply(value, op, operand)
    return ArithProblem(start, tuple(operations))


def check_config(cfg: DataConfig) -> None:
    """Reject knob values the generator cannot honour, naming the key."""
    if not cfg.operators or set(cfg.operators) - set("+-*"):
        raise UserError(f"data.operators: {cfg.operators!r} must be a non-empty string of '+', '-', '*'")
    if not 1 <= cfg.min_steps <= cfg.max_steps <= 32:
        raise UserError(f"data.min_steps/max_steps: need 1 <= min_steps <= max_steps <= 32, got {cfg.min_steps}, {cfg.max_steps}")
    for key in ("start_max", "operand_max", "value_max"):
        if getattr(cfg, key) < 1:
            raise UserError(f"data.{key}: must be >= 1")
    if cfg.mul_max < 2:
        raise UserError("data.mul_max: must be >= 2")
    if not 0 <= cfg.sft_min_steps <= cfg.max_steps:
        raise UserError(f"data.sft_min_steps: need 0 <= sft_min_steps <= max_steps, got {cfg.sft_min_steps}")
    if not 0.0 <= cfg.slip_rate <= 1.0:
        raise UserError(f"data.slip_rate: must be within 0..1, got {cfg.slip_rate}")
    if cfg.slip_borrow and not cfg.slip_rate:
        raise UserError("data.slip_borrow: needs data.slip_rate > 0 (the chance of each slip)")
    if cfg.start_max > cfg.value_max:
        raise UserError("data.start_max: must not exceed data.value_max")


def generate(cfg: DataConfig, n: int, split: str, seed: int | None = None) -> list[Problem]:
    """``n`` distinct problems of ``split`` ('train' or 'eval'), deterministic in (cfg, n, split, seed)."""
    check_config(cfg)
    if split not in SPLITS:
        raise UserError(f"split must be one of {SPLITS}, got {split!r}")
    rng = random.Random(f"{cfg.seed if seed is None else seed}-{split}")
    seen: set[str] = set()
    problems: list[Problem] = []
    max_draws = 200 * n + 1000
    for _ in range(max_draws):
        if len(problems) == n:
            break
        arith = sample_problem(rng, cfg)
        question = arith.question
        if question in seen or split_of(question) != split:
            continue
        seen.add(question)
        problems.append(Problem(f"arith-{split}-{len(problems):05d}", question, str(arith.answer), arith.reference_steps))
    if len(problems) < n:
        raise UserError(f"data: only {len(problems)} distinct {split} problems exist for these knobs; lower n or widen ranges")
    return problems
