"""Final answers: pull the answer out of a solution text, and decide whether two answers are mathematically equal.

Model output is hostile input. Nothing here executes or evaluates text (no ``eval``, ``exec``, ``sympify`` or
``parse_expr`` on it), and every call is bounded in time:

- ``extract_answer`` uses only linear regular expressions and brace scans capped at ``MAX_ANSWER_CHARS``.
- ``answers_match`` first normalises both sides and rejects anything outside a small math alphabet (no quotes, no
  ``__``, no control characters), longer than ``MAX_ANSWER_CHARS``, nested deeper than ``MAX_NESTING``, with digit
  runs over ``MAX_DIGITS``, power towers (``9^9^9``, ``10^{10^{10}}``), exponents over ``MAX_EXPONENT`` or factorials
  over ``MAX_FACTORIAL``: such answers match nothing. Then a pure-Python exact path settles plain numbers, fractions,
  decimals, thousands separators, percentages and tuples of these (microseconds, no sympy). Only what is left goes
  to math-verify + sympy, in a child process killed after ``timeout_s`` (``data/_answer_worker.py``).

Matching rules (the same as math-verify's where both apply):

- Plain numbers compare exactly (``1,000 == 1000.0``, ``\\frac{1}{2} == 0.5 == 1/2``), except that when either side
  is written as a decimal both are rounded to 6 decimal places first, so ``0.333333 == \\frac{1}{3}``.
- A percentage matches its number with or without the 1/100: ``50\\% == 50 == 0.5``.
- Tuples and intervals of numbers match element-wise with the same brackets: ``(1, 2) == (1,2) != [1,2]``.
- Units and words in ``\\text{...}``, degree signs, ``$``, ``\\left``/``\\right`` and spacing commands are dropped;
  ``\\dfrac``/``\\tfrac`` read as ``\\frac``; a leading ``x =`` is dropped (``x = 5`` matches ``5``).
- Everything else (``2^3 == 8``, ``\\sqrt{18} == 3\\sqrt{2}``, ``2x+1 == 1+2x``, sets, intervals with symbols)
  is math-verify's ``verify(gold=reference, target=predicted)`` on both sides read as LaTeX.
"""

from __future__ import annotations

import re
from fractions import Fraction

from ._answer_worker import symbolic_match

MAX_ANSWER_CHARS = 1000
"""Longer answers match nothing; extracted answers are cut to this length."""
MAX_NESTING = 20
"""Deepest allowed nesting of ( [ { brackets."""
MAX_DIGITS = 60
"""Longest allowed run of digits."""
MAX_EXPONENT = 10_000
"""Largest integer allowed inside an exponent."""
MAX_FACTORIAL = 1000
"""Largest integer allowed under a factorial sign."""
DEFAULT_TIMEOUT_S = 1.0
"""Default time one symbolic check may compute before its child process is killed and the answer judged wrong."""
DECIMAL_PLACES = 6
"""When either side is a decimal, both are rounded to this many places (math-verify's float_rounding)."""

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)[ \t]*\{")
_BOXED_BARE_RE = re.compile(r"\\boxed[ \t]+([^\s${}]{1,100})")
_GSM8K_RE = re.compile(r"^[ \t]*####[ \t]*([^\n]*)", re.MULTILINE)
_PHRASE_RE = re.compile(r"\b(?i:answer)(?:\*\*)?(?:[ \t]{1,8}is\b|[ \t]{0,8}:)(?:\*\*)?[ \t]{0,8}:?")
_INLINE_MATH_RE = re.compile(r"\$\$?([^$]+)\$|\\\((.+?)\\\)")
_SENTENCE_END_RE = re.compile(r"\.(?:\s|$)")
_MAX_BOXED_TRIES = 8
_MAX_OPERATORS = 16  # powers or factorials per answer: bounds the filter's own work

_UNICODE = {"−": "-", "×": r"\times ", "÷": r"\div ", "·": r"\cdot ", "π": r"\pi ", "∞": r"\infty ",
            "≤": r"\le ", "≥": r"\ge ", "±": r"\pm ", "√": r"\sqrt ", "°": ""}  # fmt: skip
_DROP_RE = re.compile(r"\\(?:left|right|displaystyle)\b|\\[!,;:]|\^\s*\{?\s*\\circ\s*\}?|\\?\$")
_SPACE_RE = re.compile(r"\\q?quad\b|(?<!\\)\\ |\s")  # "\ " is a space; a row break "\\" stays
_TEXT_RE = re.compile(r"\\(?:text|textbf|textrm|mbox)\s*\{([^{}]*)\}(?:\^\{?\d\}?)?")
_ASSIGNMENT_RE = re.compile(r"^[A-Za-z]\s*=(?!=)\s*(?=[^=,]+$)")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_ALLOWED_RE = re.compile(r"[A-Za-z0-9 +\-*/^()\[\]{}.,=<>!|\\_:;%&~]*")
_FORBIDDEN_RE = re.compile(r"__|(?<![\\A-Za-z])(?:lambda|import|exec|eval|getattr|globals|subprocess|system)")

_NUMBER = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
_NUMBER_RE = re.compile(
    rf"(?P<sign>[+-]?)(?:(?P<num>{_NUMBER})(?:/(?P<den>{_NUMBER}))?"
    rf"|\\frac\{{(?P<fnum>[+-]?(?:{_NUMBER}))\}}\{{(?P<fden>[+-]?(?:{_NUMBER}))\}}"
    r"|\\frac(?P<digit_num>\d)(?P<digit_den>\d))(?P<percent>\\?%)?"
)
_TUPLE_RE = re.compile(r"([(\[])([^()\[\]]*,[^()\[\]]*)([)\]])")


# ------------------------------------------------------------------ extraction


def _balanced_group(text: str, start: int) -> str | None:
    """The text from ``start`` up to the brace closing an already-opened ``{``, or None if unbalanced or too long."""
    depth, end = 1, min(len(text), start + MAX_ANSWER_CHARS)
    for index in range(start, end):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[start:index]
    return None


def _last_boxed(text: str) -> str | None:
    """Content of the last balanced, non-empty ``\\boxed{...}``/``\\fbox{...}`` (or ``\\boxed 5``), else None."""
    starts = [match.end() for match in _BOXED_RE.finditer(text)]
    for start in reversed(starts[-_MAX_BOXED_TRIES:]):
        content = _balanced_group(text, start)
        if content and content.strip():
            return content
    bare = _last_match(_BOXED_BARE_RE, text)
    return bare.group(1) if bare else None


def _phrase_value(value: str) -> str:
    """The answer part of the text after "answer is"/"Answer:": the first inline math, else up to the sentence end."""
    value = value.strip()
    math = _INLINE_MATH_RE.match(value)
    if math:
        return math.group(1) or math.group(2)
    sentence_end = _SENTENCE_END_RE.search(value)
    return value[: sentence_end.start()] if sentence_end else value


def _clean(answer: str) -> str | None:
    """Strip whitespace, ``$``, markdown ``*`` and trailing periods; None if nothing is left."""
    answer, previous = answer[: 2 * MAX_ANSWER_CHARS], None  # cut first: each pass below is linear
    while answer != previous:
        previous = answer
        answer = answer.strip().strip("$*").rstrip(".")
    return answer[:MAX_ANSWER_CHARS] or None


def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    last = None
    for last in pattern.finditer(text):
        pass
    return last


def extract_answer(text: str) -> str | None:
    """The final answer in a solution text, or None if it states none.

    Looks, in order, for: the last ``\\boxed{...}`` or ``\\fbox{...}`` (nested braces kept: ``\\boxed{\\frac{1}{2}}``
    gives ``\\frac{1}{2}``); GSM8K's last ``#### N`` line; the last "answer is ..." or "Answer: ..." (case-insensitive;
    the embedded task's final line ``Answer: 32`` gives ``32``), taking inline ``$...$`` math if it follows, else the
    rest of the sentence. The result has surrounding whitespace, ``$`` and trailing periods stripped.
    """
    if not isinstance(text, str):
        return None
    gsm8k = _last_match(_GSM8K_RE, text)
    for found in (_last_boxed(text), gsm8k.group(1) if gsm8k else None):
        if found is not None and (answer := _clean(found)) is not None:
            return answer
    phrase = _last_match(_PHRASE_RE, text)  # the match stops before the value, so "Answer: the answer is 5" finds 5
    if phrase is None:
        return None
    start = phrase.end()
    line_end = text.find("\n", start, start + 2 * MAX_ANSWER_CHARS)
    value = text[start : line_end if line_end >= 0 else start + 2 * MAX_ANSWER_CHARS]
    return _clean(_phrase_value(value))


# ------------------------------------------------------------------ normalisation and filters


def _unwrap_boxed(answer: str) -> str:
    if answer.startswith(("\\boxed", "\\fbox")) and (boxed := _last_boxed(answer)) is not None:
        return boxed
    return answer


def normalize_answer(answer: str) -> str | None:
    """The answer in the form both match paths read, or None if it is empty or fails a safety filter."""
    if not isinstance(answer, str) or len(answer) > MAX_ANSWER_CHARS or _CONTROL_RE.search(answer):
        return None
    answer = _unwrap_boxed(answer.strip().strip("$").strip())
    for symbol, latex in _UNICODE.items():
        answer = answer.replace(symbol, latex)
    answer = answer.replace("**", "^").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    answer = _SPACE_RE.sub(" ", _DROP_RE.sub("", answer))
    without_text = _TEXT_RE.sub("", answer).strip()
    answer = without_text if without_text else _TEXT_RE.sub(lambda match: match.group(1), answer).strip()
    answer = _ASSIGNMENT_RE.sub("", answer).strip()
    if not answer or len(answer) > MAX_ANSWER_CHARS or not _is_safe(answer):
        return None
    return answer


def _is_safe(answer: str) -> bool:
    """The safety filter: a math alphabet, no Python-looking words, bounded nesting, digits, powers and factorials."""
    if not _ALLOWED_RE.fullmatch(answer) or _FORBIDDEN_RE.search(answer):
        return False
    if re.search(rf"\d{{{MAX_DIGITS + 1}}}", answer):
        return False
    depth = 0
    for char in answer:
        depth += 1 if char in "([{" else -1 if char in ")]}" else 0
        if depth > MAX_NESTING:
            return False
    compact = answer.replace(" ", "")
    return _powers_are_small(compact) and _factorials_are_small(compact)


def _group_after(text: str, start: int) -> str:
    """The operand starting at ``start``: a bracketed group (to its matching bracket), a command, or a number/letter."""
    if start < len(text) and text[start] in "({[":
        depth = 0
        for index in range(start, len(text)):
            depth += 1 if text[index] in "({[" else -1 if text[index] in ")}]" else 0
            if depth == 0:
                return text[start : index + 1]
        return text[start:]
    token = re.match(r"\\[A-Za-z]+|\d+(?:\.\d+)?|.?", text[start:])
    return token.group(0)


def _group_before(text: str, end: int) -> str:
    """The operand ending just before ``end``: a bracketed group (from its matching bracket), or a number/letter."""
    if end > 0 and text[end - 1] in ")}]":
        depth = 0
        for index in range(end - 1, -1, -1):
            depth += 1 if text[index] in ")}]" else -1 if text[index] in "({[" else 0
            if depth == 0:
                return text[index:end]
        return text[:end]
    token = re.search(r"(?:\d+|[A-Za-z])$", text[:end])
    return token.group(0) if token else ""


def _powers_are_small(compact: str) -> bool:
    """No power towers (``a^b^c``, ``a^{b^c}``), no factorial in an exponent, every exponent integer <= MAX_EXPONENT."""
    carets = [index for index, char in enumerate(compact) if char == "^"]
    if len(carets) > _MAX_OPERATORS:
        return False
    for caret in carets:
        exponent = _group_after(compact, caret + 1)
        if "^" in exponent or "!" in exponent or compact.startswith("^", caret + 1 + len(exponent)):
            return False
        if any(int(digits) > MAX_EXPONENT for digits in re.findall(r"\d+", exponent)):
            return False
    return True


def _factorials_are_small(compact: str) -> bool:
    """Every factorial (``n!``, not ``!=``) is of a letter or of integers <= MAX_FACTORIAL, with no power inside."""
    bangs = list(re.finditer(r"!(?!=)", compact))
    if len(bangs) > _MAX_OPERATORS:
        return False
    for match in bangs:
        operand = _group_before(compact, match.start())
        if compact.startswith("!", match.end()) or "^" in operand or "!" in operand:
            return False
        if any(int(digits) > MAX_FACTORIAL for digits in re.findall(r"\d+", operand)):
            return False
    return True


# ------------------------------------------------------------------ the exact path for plain numbers


def parse_number(compact: str) -> tuple[Fraction, bool, bool] | None:
    """``(value, written_as_decimal, is_percentage)`` for a plain number, fraction or ``\\frac``, else None.

    ``compact`` has no whitespace. ``"-1,234.5" -> (Fraction(-2469, 2), True, False)``; a zero denominator gives None.
    """
    match = _NUMBER_RE.fullmatch(compact)
    if match is None:
        return None
    parts = match.groupdict()
    numerator = parts["num"] or parts["fnum"] or parts["digit_num"]
    denominator = parts["den"] or parts["fden"] or parts["digit_den"] or "1"
    value_den = Fraction(denominator.replace(",", ""))
    if value_den == 0:
        return None
    value = Fraction(numerator.replace(",", "")) / value_den
    decimal = "." in numerator or "." in denominator
    return (-value if parts["sign"] == "-" else value), decimal, bool(parts["percent"])


def _numbers_equal(left: tuple[Fraction, bool, bool], right: tuple[Fraction, bool, bool]) -> bool:
    """Exact equality; 6-place rounding if either is a decimal; a percentage may stand for x or x/100."""
    (left_value, left_decimal, left_percent), (right_value, right_decimal, right_percent) = left, right
    left_values = {left_value, left_value / 100} if left_percent else {left_value}
    right_values = {right_value, right_value / 100} if right_percent else {right_value}
    if left_decimal or right_decimal:
        left_values = {round(value, DECIMAL_PLACES) for value in left_values}
        right_values = {round(value, DECIMAL_PLACES) for value in right_values}
    return not left_values.isdisjoint(right_values)


def _parse_tuple(compact: str) -> tuple[str, list[tuple[Fraction, bool, bool]]] | None:
    """``(brackets, numbers)`` for a bracketed list of 2+ plain numbers, e.g. ``"[1,2)" -> ("[)", [1, 2])``."""
    match = _TUPLE_RE.fullmatch(compact)
    if match is None:
        return None
    numbers = [parse_number(item) for item in match.group(2).split(",")]
    if any(number is None for number in numbers):
        return None
    return match.group(1) + match.group(3), numbers


def _numeric_verdict(predicted: str, reference: str) -> bool | None:
    """The exact path's verdict on two normalised answers: True/False if both are plain numbers (or tuples of
    them), None if the symbolic path must decide."""
    predicted, reference = predicted.replace(" ", ""), reference.replace(" ", "")
    left, right = parse_number(predicted), parse_number(reference)
    if left is not None and right is not None:
        return _numbers_equal(left, right)
    left_tuple, right_tuple = _parse_tuple(predicted), _parse_tuple(reference)
    if left_tuple is None or right_tuple is None:
        return None
    (left_brackets, left_items), (right_brackets, right_items) = left_tuple, right_tuple
    if left_brackets != right_brackets or len(left_items) != len(right_items):
        return False
    return all(_numbers_equal(a, b) for a, b in zip(left_items, right_items))


# ------------------------------------------------------------------ the public check


def answers_match(predicted: str, reference: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether ``predicted`` states the same mathematical answer as ``reference`` (see the module docstring).

    Never raises on bad input: None, non-strings, empty, unsafe or unparseable answers give False. Plain numbers
    take microseconds; a symbolic check computes for at most ``timeout_s`` seconds (plus, when no idle child process
    is ready, one child start of about 0.3 s), from any thread or process. Raises UserError only for a broken
    install (the child process cannot import math-verify).
    """
    predicted_norm, reference_norm = normalize_answer(predicted), normalize_answer(reference)
    if predicted_norm is None or reference_norm is None:
        return False
    if predicted_norm.replace(" ", "") == reference_norm.replace(" ", ""):
        return True
    verdict = _numeric_verdict(predicted_norm, reference_norm)
    if verdict is not None:
        return verdict
    return symbolic_match(predicted_norm, reference_norm, timeout_s)
