"""Tasks: the one place that knows a dataset. Everything above ``data/`` talks to a ``Task``, never to a dataset.

A task gives: train and held-out problems; the step split of a completion (and the separator that joins steps);
THE answer check (``is_correct``: ``data.answers.extract_answer`` + ``answers_match``, used by the GRPO rule reward,
Monte Carlo labels, ORM labels and every evaluation); reference solutions for SFT where the dataset has them; and an
exact step verifier only where one exists (the embedded arithmetic task).

Tasks by name (``data.task``):
- ``arith``: the embedded generator (``data.arith``) and its exact verifier (``data.verifier``).
- ``gsm8k``: GSM8K rows ``{question, answer}``; reference steps are the rationale's lines without ``<<...>>``
  calculator notes, plus a final step ``The answer is N.``; default source ``openai/gsm8k`` (subset ``main``).
- ``math``: MATH / MATH-500 rows ``{problem, solution[, answer]}``; the answer is ``answer`` or the solution's last
  ``\\boxed{}``; reference steps are the solution's paragraphs; default source ``HuggingFaceH4/MATH-500``.
- ``problems``: any file or hub dataset with a question and an answer column (``data.question_column``,
  ``data.answer_column``); no reference solutions.
Held-out problems come from ``data.eval_source`` (a second file or dataset) if given, else from a hub dataset's
``data.eval_split``; otherwise (a local file has no splits, or ``data.eval_split: ''``) from hash bucket 0 of 10 of
the training questions (the same rule as the embedded task), so train and held-out never overlap.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from ..utils.errors import UserError
from ..utils.hub import is_local
from . import arith
from .answers import answers_match, extract_answer
from .config import DataConfig
from .formats import BadRow
from .loaders import iter_rows, load
from .schema import Problem
from .steps import split_steps
from .verifier import verify_steps

STEP_SEPARATORS = {"newline": "\n", "blank_line": "\n\n", "step_marker": "\n"}
"""Step split mode -> the separator that joins steps into a completion that splits back into the same steps."""


@dataclass(frozen=True)
class Task:
    """One task's problems and rules (see the module docstring)."""

    name: str
    """The task name (``data.task``)."""
    cfg: DataConfig
    """Where its problems come from and how many."""
    step_split: str
    """Step split mode of completions (a key of STEP_SEPARATORS)."""
    load_split: Callable[[DataConfig, str], list[Problem]]
    """(cfg, split name) -> every problem of that split, in the source's order."""
    verifier: Callable[[Problem, list[str]], list[bool]] | None = None
    """Exact first-error step labels, where the task has them."""

    # ---- problems

    def problems(self) -> tuple[list[Problem], list[Problem]]:
        """(train problems, held-out problems): at most data.n_train / data.n_eval, never overlapping."""
        if self.cfg.n_train < 1 or self.cfg.n_eval < 1:
            raise UserError(f"data.n_train/n_eval: must be >= 1, got {self.cfg.n_train} and {self.cfg.n_eval}")
        if self.name == "arith":  # generated: its own disjoint splits, exactly n of each
            return self.load_split(self.cfg, "train"), self.load_split(self.cfg, "eval")
        rows = self.load_split(self.cfg, self.cfg.split)
        if self.cfg.eval_source:
            eval_cfg = dataclasses.replace(self.cfg, source=self.cfg.eval_source)
            train, held_out = rows, self.load_split(eval_cfg, self.cfg.eval_split or self.cfg.split)
        elif self.cfg.eval_split and not is_local(self.cfg.source):
            train, held_out = rows, self.load_split(self.cfg, self.cfg.eval_split)
        else:
            train = [p for p in rows if arith.split_of(p.question) == "train"]
            held_out = [p for p in rows if arith.split_of(p.question) == "eval"]
        if not train or not held_out:
            raise UserError(f"data.source: {self.cfg.source or self.name!r} gave {len(train)} training and "
                            f"{len(held_out)} held-out problems; both are needed")
        return train[: self.cfg.n_train], held_out[: self.cfg.n_eval]

    def sft_problems(self, train: list[Problem]) -> list[Problem]:
        """The problems SFT trains on: ``train``, or on the embedded task the training split drawn with
        data.sft_min_steps operations and up, with the slipping teacher's solutions where data.slip_rate > 0."""
        if self.cfg.sft_min_steps:  # get_task allows it on the embedded task only
            train = self.load_split(dataclasses.replace(self.cfg, min_steps=self.cfg.sft_min_steps), "train")
        if self.cfg.slip_rate:
            return arith.with_teacher_slips(train, self.cfg.slip_rate, self.cfg.seed, self.cfg.slip_borrow)
        return train

    # ---- steps

    @property
    def separator(self) -> str:
        """What joins steps into a completion."""
        return STEP_SEPARATORS[self.step_split]

    def split(self, text: str) -> list[str]:
        """A completion's steps (stripped, empty ones dropped)."""
        return [step.text for step in split_steps(text, self.step_split)]

    def join(self, steps: list[str] | tuple[str, ...]) -> str:
        """Steps joined into one completion text (``split(join(steps)) == steps`` for steps without separators)."""
        return self.separator.join(steps)

    # ---- answers

    def final_answer(self, text: str) -> str | None:
        """The final answer a completion states (boxed, ``####``, ``Answer:``/``the answer is``), or None."""
        return extract_answer(text)

    def is_correct(self, text: str, reference: str) -> bool:
        """THE answer check: the completion's final answer equals ``reference`` (``data.answers``)."""
        answer = self.final_answer(text)
        return answer is not None and answers_match(answer, reference)

    # ---- step verifier

    @property
    def has_verifier(self) -> bool:
        return self.verifier is not None

    def verify_steps(self, problem: Problem, steps: list[str]) -> list[bool]:
        """Exact first-error labels of ``steps``; UserError on a task without a verifier."""
        if self.verifier is None:
            raise UserError(f"data.task: '{self.name}' has no exact step verifier; label with Monte Carlo rollouts "
                            "(prm label --method mc|mc_binary, loop.labeller: mc|mc_binary)")
        return self.verifier(problem, steps)


# ---------------------------------------------------------------- loading each task's problems


def _arith_split(cfg: DataConfig, split: str) -> list[Problem]:
    return arith.generate(cfg, cfg.n_train if split == "train" else cfg.n_eval, split)


def _arith_verifier(problem: Problem, steps: list[str]) -> list[bool]:
    return verify_steps(arith.parse_question(problem.question), steps)


def _gsm8k_split(cfg: DataConfig, split: str) -> list[Problem]:
    problems, _ = load("gsm8k", cfg.source or "openai/gsm8k", split, subset=cfg.subset or None)
    return [Problem(p.id, p.question, p.answer, (*p.reference_steps, f"The answer is {p.answer}."))
            for p in problems]


def _math_split(cfg: DataConfig, split: str) -> list[Problem]:
    problems, _ = load("math", cfg.source or "HuggingFaceH4/MATH-500", split, subset=cfg.subset or None)
    return problems


def _problems_split(cfg: DataConfig, split: str) -> list[Problem]:
    if not cfg.source:
        raise UserError("data.source: the 'problems' task needs a file path or hub dataset name")
    problems = []
    for index, (where, row) in enumerate(iter_rows(cfg.source, split, cfg.subset or None)):
        if isinstance(row, BadRow):
            raise UserError(f"{where}: {row}")
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected an object with columns '{cfg.question_column}' and "
                            f"'{cfg.answer_column}'")
        values = []
        for key, column in (("question_column", cfg.question_column), ("answer_column", cfg.answer_column)):
            value = row.get(column)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str) or not value.strip():
                found = ", ".join(sorted(map(str, row))[:8])
                raise UserError(f"{where}: no text in column '{column}' (data.{key}); the row has: {found}")
            values.append(value.strip())
        problems.append(Problem(f"{cfg.task}-{split}-{index}", values[0], values[1]))
    return problems


TASKS: dict[str, tuple[Callable[[DataConfig, str], list[Problem]], str, bool]] = {
    "arith": (_arith_split, "newline", True),
    "gsm8k": (_gsm8k_split, "newline", False),
    "math": (_math_split, "blank_line", False),
    "problems": (_problems_split, "newline", False),
}
"""Task name -> (split loader, default step split, has an exact verifier)."""


def get_task(cfg: DataConfig) -> Task:
    """The task ``cfg.task`` names; UserError naming the key for an unknown task or step split."""
    if cfg.task not in TASKS:
        raise UserError(f"data.task: unknown task {cfg.task!r}; valid: {', '.join(sorted(TASKS))}")
    loader, default_split, has_verifier = TASKS[cfg.task]
    step_split = cfg.step_split or default_split
    if step_split not in STEP_SEPARATORS:
        raise UserError(f"data.step_split: unknown {step_split!r}; valid: {', '.join(sorted(STEP_SEPARATORS))}")
    if cfg.task == "arith":
        arith.check_config(cfg)
    elif cfg.slip_rate or cfg.slip_borrow or cfg.sft_min_steps:
        key = "slip_rate" if cfg.slip_rate else "slip_borrow" if cfg.slip_borrow else "sft_min_steps"
        raise UserError(f"data.{key}: only the embedded task ('arith') has it, not {cfg.task!r}")
    return Task(cfg.task, cfg, step_split, loader, _arith_verifier if has_verifier else None)
