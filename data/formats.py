"""Row parsers: one upstream dataset row (GSM8K, MATH, PRM800K, Math-Shepherd, ProcessBench, TRL) -> the one schema.

Each parser is a pure function ``parse(row, row_id, **options)`` that returns a ``Problem`` (question + reference
answer), a ``StepwiseExample`` (steps + one label per step), or None for a well-formed row that holds nothing to
convert (a PRM800K problem its labeler reported broken, or with no rated step). A malformed row raises ``BadRow``;
``data.loaders`` adds the file and row number. ``row_id`` is the id to use when the row carries none of its own.

Labelling rules (all hard labels are bools; soft labels stay floats, never rounded):
- **PRM800K** (Lightman et al. 2023): the solution is the path of chosen completions (or the labeler's own human
  completion, which is +1 by construction). Ratings: +1 -> True, -1 -> False, 0 (neutral: correct but no progress) ->
  ``neutral_as`` (default ``"positive"``, as ProcessBench and the paper's first-error view read it; TRL's
  ``trl-lib/prm800k`` conversion reads 0 as negative, pass ``neutral_as="negative"`` to match it; a neutral step is
  never an error, so the path goes on after it either way). The path stops at its first -1 step, which is kept
  (label False): steps after a first error are not rated. When no completion is
  chosen at a step (phase 2 stops on the error), the first -1 completion there is that error step. The path also stops
  before an unrated step (rating null). ``flagged`` is ignored. Rows whose ``finish_reason`` is ``bad_problem`` are
  skipped (None), since the labeler reported the problem itself broken.
- **ProcessBench** (Zheng et al. 2024): ``label`` is the index of the first wrong step, -1 if none. First-error
  semantics: steps before it are True, the step at it and every step after it are False.
- **Math-Shepherd** (Wang et al. 2023): each step ends in the tag ``ки``; ``label`` is the same text with each tag
  replaced by ``+`` (True) or ``-`` (False). Steps keep their ``Step k:`` prefixes, as in TRL's conversion.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .schema import Label, Problem, StepwiseExample
from .steps import split_steps

MATH_SHEPHERD_TAG = "ки"
NEUTRAL_AS = {"positive": True, "negative": False}
"""How a PRM800K neutral (0) rating maps to a step label, by option value."""


class BadRow(ValueError):
    """A row that does not match its format's schema; the message says what is wrong, the loader adds file:row."""


def _text(row: dict[str, Any], key: str) -> str:
    value = row.get(key) if isinstance(row, dict) else None
    if not isinstance(value, str) or not value.strip():
        raise BadRow(f"key '{key}' must be a non-empty string, got {_describe(value)}")
    return value


def _describe(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {str(value)[:40]!r}"


def _whole_number(value: Any) -> int | None:
    """``value`` as an int if it is a whole number, 2.0 included; None for anything else (bool, NaN, 2.5, "2").

    Floats are accepted because a parquet column with one NaN holds all its numbers as floats: the good rows of such
    a file must still read, so that the error names the NaN row, not row 1.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not value.is_integer():  # False for NaN and infinities too
        return None
    return int(value)


# ---------------------------------------------------------------- GSM8K


_CALCULATOR = re.compile(r"<<[^<>]*>>")
_GSM8K_FINAL = re.compile(r"^\s*####\s*(.*?)\s*$")


def parse_gsm8k(row: dict[str, Any], row_id: str) -> Problem:
    """GSM8K ``{question, answer}``: the answer's last line is ``#### N``; the lines before it are the steps.

    ``<<48/2=24>>`` calculator annotations are removed from steps; thousands separators are removed from N.
    """
    question, answer = _text(row, "question"), _text(row, "answer")
    lines = answer.strip().split("\n")
    final = _GSM8K_FINAL.match(lines[-1])
    if final is None or not final.group(1):
        raise BadRow(f"the answer's last line must be '#### <final answer>', got {lines[-1][:40]!r}")
    steps = [_CALCULATOR.sub("", line).strip() for line in lines[:-1]]
    return Problem(row_id, question.strip(), final.group(1).replace(",", ""), tuple(s for s in steps if s))


# ---------------------------------------------------------------- MATH / MATH-500


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, nested braces matched; None if none."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    open_brace = text.index("{", start)
    depth = 0
    for position in range(open_brace, len(text)):
        if text[position] == "{":
            depth += 1
        elif text[position] == "}":
            depth -= 1
            if depth == 0:
                return text[open_brace + 1 : position]
    return None


def parse_math(row: dict[str, Any], row_id: str) -> Problem:
    """MATH ``{problem, solution, level, type}`` / MATH-500 ``{problem, solution, answer, subject, level, unique_id}``.

    The answer is ``answer`` when present, else the last ``\\boxed{}`` of the solution. Reference steps are the
    solution's paragraphs (MATH solutions break lines inside display math, so single lines are not steps).
    """
    problem, solution = _text(row, "problem"), _text(row, "solution")
    answer = row.get("answer")  # absent (null where other rows of a parquet file have one): use \boxed{}
    if answer is not None and not isinstance(answer, str):
        raise BadRow(f"key 'answer' must be a string, got {_describe(answer)}")
    if answer is None or not answer.strip():
        answer = last_boxed(solution)
    if answer is None or not answer.strip():
        raise BadRow("no 'answer' and no \\boxed{...} answer in 'solution'")
    unique_id = row.get("unique_id")
    problem_id = unique_id if isinstance(unique_id, str) and unique_id else row_id
    steps = tuple(step.text for step in split_steps(solution, "blank_line"))
    return Problem(problem_id, problem.strip(), answer.strip(), steps)


# ---------------------------------------------------------------- PRM800K


def _rating(rating: Any, where: str) -> int | None:
    """The PRM800K rating -1, 0 or +1, or None for an unrated step; anything else is a BadRow."""
    if rating is None:
        return None
    value = _whole_number(rating)
    if value not in (-1, 0, 1):
        raise BadRow(f"{where}: rating must be -1, 0, 1 or null, got {_describe(rating)}")
    return value


def _prm800k_step(step: Any, index: int) -> tuple[str, int | None] | None:
    """(text, rating) of the step on the labelled path at ``step``; None when the path has no step here."""
    where = f"label.steps[{index}]"
    if not isinstance(step, dict):
        raise BadRow(f"{where} must be an object, got {_describe(step)}")
    completions = step.get("completions") or []
    if not isinstance(completions, list) or not all(isinstance(c, dict) for c in completions):
        raise BadRow(f"{where}.completions must be a list of objects")
    chosen, human = step.get("chosen_completion"), step.get("human_completion")
    if chosen is not None:
        index_chosen = _whole_number(chosen)
        if index_chosen is None or not 0 <= index_chosen < len(completions):
            count = len(completions)
            raise BadRow(f"{where}.chosen_completion {chosen!r} is not an index into its {count} completions")
        picked = completions[index_chosen]
        return _text(picked, "text"), _rating(picked.get("rating"), f"{where}.completions[{index_chosen}]")
    if human is not None:  # phase 1: the labeler's own step (+1 by construction), written when all were rated -1
        text = human.get("text") if isinstance(human, dict) else human
        if not isinstance(text, str) or not text.strip():
            raise BadRow(f"{where}.human_completion has no text")
        return text, 1
    for position, completion in enumerate(completions):  # phase 2 stops on the first error, choosing nothing
        if _rating(completion.get("rating"), f"{where}.completions[{position}]") == -1:
            return _text(completion, "text"), -1
    return None


def parse_prm800k(row: dict[str, Any], row_id: str, *, neutral_as: str = "positive") -> StepwiseExample | None:
    """PRM800K phase1/phase2 JSONL row -> the labelled solution path (rules in the module docstring)."""
    question, label = row.get("question"), row.get("label")
    if not isinstance(question, dict) or not isinstance(label, dict):
        raise BadRow("keys 'question' and 'label' must be objects")
    problem = _text(question, "problem")
    steps = label.get("steps")
    if not isinstance(steps, list):
        raise BadRow(f"label.steps must be a list, got {_describe(steps)}")
    if label.get("finish_reason") == "bad_problem":
        return None
    rating_labels = {1: True, -1: False, 0: NEUTRAL_AS[neutral_as]}
    completions: list[str] = []
    labels: list[Label] = []
    for index, step in enumerate(steps):
        picked = _prm800k_step(step, index)
        if picked is None or picked[1] is None:
            break  # nothing chosen, or unrated: the labelled path ends here
        completions.append(picked[0].strip())
        labels.append(rating_labels[picked[1]])
        if picked[1] == -1:
            break  # first error: later steps are not rated
    if not completions:
        return None
    meta = {"id": row_id, "answer": question.get("ground_truth_answer"), "finish_reason": label.get("finish_reason")}
    return StepwiseExample(problem.strip(), completions, labels, meta)


# ---------------------------------------------------------------- Math-Shepherd


_FIRST_STEP = re.compile(r"\bstep\s*1\s*:", re.IGNORECASE)


def parse_math_shepherd(row: dict[str, Any], row_id: str) -> StepwiseExample:
    """Math-Shepherd ``{input, label, task}``: split ``input`` on ``ки``; read each step's ``+``/``-`` in ``label``.

    Tag k (0-based) at offset p in ``input`` sits at offset ``p - k`` in ``label`` (each earlier 2-character tag became
    one character). The prompt is the text before the first step: ``Step 1:`` (any case), else through the last ``?``.
    """
    text, label_text = _text(row, "input"), _text(row, "label")
    tag_offsets = [match.start() for match in re.finditer(MATH_SHEPHERD_TAG, text)]
    if not tag_offsets:
        raise BadRow(f"'input' holds no step tag {MATH_SHEPHERD_TAG!r}")
    labels: list[Label] = []
    for k, offset in enumerate(tag_offsets):
        mark = label_text[offset - k : offset - k + 1]
        if mark not in ("+", "-"):
            raise BadRow(f"step {k + 1}: 'label' has {mark!r} where 'input' has its tag; expected '+' or '-'")
        labels.append(mark == "+")
    pieces = text.split(MATH_SHEPHERD_TAG)
    if pieces[-1].strip():
        raise BadRow(f"text after the last {MATH_SHEPHERD_TAG!r} tag: {pieces[-1].strip()[:40]!r}")
    first = _FIRST_STEP.search(pieces[0])
    cut = first.start() if first else pieces[0].rfind("?") + 1
    prompt, first_step = pieces[0][:cut].strip(), pieces[0][cut:].strip()
    if not prompt or not first_step:
        raise BadRow("cannot tell the question from the first step (no 'Step 1:' and no '?')")
    completions = [first_step] + [piece.strip() for piece in pieces[1:-1]]
    meta = {"id": row_id, "task": row.get("task")}
    return StepwiseExample(prompt, completions, labels, meta)


# ---------------------------------------------------------------- ProcessBench


def parse_processbench(row: dict[str, Any], row_id: str) -> StepwiseExample:
    """ProcessBench ``{id, generator, problem, steps, final_answer_correct, label}`` with first-error labels."""
    problem, steps = _text(row, "problem"), row.get("steps")
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
        raise BadRow(f"key 'steps' must be a non-empty list of strings, got {_describe(steps)}")
    first_error = _whole_number(row.get("label"))
    if first_error is None or not -1 <= first_error < len(steps):
        raise BadRow(f"key 'label' must be -1 or a step index below {len(steps)}, got {_describe(row.get('label'))}")
    labels: list[Label] = [first_error == -1 or index < first_error for index in range(len(steps))]
    meta = {
        "id": row.get("id") if isinstance(row.get("id"), str) else row_id,
        "generator": row.get("generator"),
        "label": first_error,
        "final_answer_correct": row.get("final_answer_correct"),
    }
    return StepwiseExample(problem.strip(), [step.strip() for step in steps], labels, meta)


# ---------------------------------------------------------------- TRL stepwise


def parse_trl_stepwise(row: dict[str, Any], row_id: str) -> StepwiseExample:
    """TRL stepwise ``{prompt, completions, labels}`` (bool or float labels, kept as given); other keys go to meta."""
    missing = [key for key in ("prompt", "completions", "labels") if row.get(key) is None]
    if missing:
        raise BadRow(f"missing key '{missing[0]}'")
    labels = row["labels"]
    if isinstance(labels, list):  # JSON ints 0/1 read as floats, as schema.StepwiseExample.from_row does
        labels = [float(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in labels]
    # Arrow fills a key that only some rows have with null in the others: drop those nulls.
    meta = {k: v for k, v in row.items() if k not in ("prompt", "completions", "labels") and v is not None}
    return StepwiseExample(row["prompt"], row["completions"], labels, meta)


RowParser = Callable[..., "Problem | StepwiseExample | None"]
ROW_PARSERS: dict[str, RowParser] = {
    "gsm8k": parse_gsm8k,
    "math": parse_math,
    "prm800k": parse_prm800k,
    "math_shepherd": parse_math_shepherd,
    "processbench": parse_processbench,
    "trl_stepwise": parse_trl_stepwise,
}
"""Format name -> row parser. MATH-500 is format ``math``."""
OPTION_CHOICES: dict[str, tuple[str, ...]] = {"neutral_as": tuple(NEUTRAL_AS)}
"""Allowed values of parser options that take a name."""
