"""Split free-form solutions into steps with character offsets, and align step ends to token indices.

Splitting (``split_steps``): a mode name picks one splitter from ``SPLITTERS``. Every step is returned with its
character span, ``text[step.start:step.end] == step.text``, stripped of the separator and surrounding whitespace;
empty steps are dropped. Nothing but separators and whitespace is ever dropped: the steps, in order, cover every
other character of the text.

- ``newline``: each non-empty line is a step.
- ``blank_line``: paragraphs; one or more blank (whitespace-only) lines separate steps.
- ``step_marker``: a step starts at each ``Step k:`` marker (any case, ``Step 12 :`` too) and runs to the next one; the
  marker stays in the step's text (as in Math-Shepherd and TRL's stepwise data). Text before the first marker, if
  any, is a step of its own.
- ``tag``: each step ends with an explicit tag string (Math-Shepherd's ``ки``); the tag is not part of the step.
  Text after the last tag, if any, is a final (unterminated) step.

Token alignment (a char position -> the token holding it; GRPO's ``index(j)`` of docs/math.md is the token holding the
end of what CLOSES step j, ``closing_char_ends``, or the EOS for a finished completion's last step):
- Each token i covers characters up to ``token_char_ends[i]`` (exclusive) of the completion text; these ends are
  non-decreasing. A token that contains no complete character (a special token, or the first bytes of a multi-byte
  UTF-8 character that a byte-level BPE split across tokens) gets the end of the token before it.
- **Rule:** step j ends on the first token whose char end reaches the step's exclusive char end ``e``, i.e. the token
  that contains the step's last character (for a character split across tokens, the token holding its last byte).
  If a BPE token spans a step boundary (it holds the end of step j and the start of step j+1, e.g. ``"4\\nAnswer"``),
  it ends step j, and step j+1's tokens start after it. Two steps may therefore end on the same token (a token that
  spans a whole short step); step ends are non-decreasing, not strictly increasing.
- **Truncation:** a step whose last character lies after the last token (the text was cut off mid-step) has no end
  token; it is dropped, so the returned list can be shorter than the step list (a prefix of it, since step ends are
  ordered). Callers zip the steps with the returned indices. No -1 sentinel, so a result can never index from the end.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Span = tuple[int, int]


@dataclass(frozen=True)
class Step:
    """One step of a solution: its text and its character span in the solution (``text == solution[start:end]``)."""

    text: str
    """The step, without separators or surrounding whitespace."""
    start: int
    """Offset of the step's first character in the solution text."""
    end: int
    """Offset one past the step's last character (exclusive)."""


def _spans_between(text: str, separator: re.Pattern[str]) -> list[Span]:
    """The spans of ``text`` between matches of ``separator`` (including before the first and after the last)."""
    spans, start = [], 0
    for match in separator.finditer(text):
        spans.append((start, match.start()))
        start = match.end()
    spans.append((start, len(text)))
    return spans


_NEWLINE = re.compile(r"\n")
_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n")
_STEP_MARKER = re.compile(r"\bstep\s*\d+\s*:", re.IGNORECASE)


def _split_newline(text: str, tag: str | None) -> list[Span]:
    return _spans_between(text, _NEWLINE)


def _split_blank_line(text: str, tag: str | None) -> list[Span]:
    return _spans_between(text, _BLANK_LINES)


def _split_step_marker(text: str, tag: str | None) -> list[Span]:
    starts = [match.start() for match in _STEP_MARKER.finditer(text)]
    bounds = [0, *starts, len(text)]
    return list(itertools.pairwise(bounds))


def _split_tag(text: str, tag: str | None) -> list[Span]:
    if not tag:
        raise ValueError("mode 'tag' needs a non-empty tag string, e.g. tag='ки'")
    return _spans_between(text, re.compile(re.escape(tag)))


SPLITTERS: dict[str, Callable[[str, str | None], list[Span]]] = {
    "newline": _split_newline,
    "blank_line": _split_blank_line,
    "step_marker": _split_step_marker,
    "tag": _split_tag,
}
"""Step-splitting modes by name; each maps (text, tag) to raw spans, which ``split_steps`` then strips."""


def split_steps(text: str, mode: str = "newline", tag: str | None = None) -> list[Step]:
    """Split ``text`` into steps with the splitter named ``mode`` (see the module docstring for each mode's rule).

    ``tag`` is the step-end tag for mode ``"tag"`` and must be None otherwise. Raises ValueError on an unknown mode.
    """
    if mode not in SPLITTERS:
        raise ValueError(f"unknown step split mode {mode!r}; valid modes: {', '.join(sorted(SPLITTERS))}")
    if tag is not None and mode != "tag":
        raise ValueError(f"tag={tag!r} is only used by mode 'tag', not {mode!r}")
    steps = []
    for start, end in SPLITTERS[mode](text, tag):
        piece = text[start:end]
        stripped = piece.strip()
        if not stripped:
            continue
        start += len(piece) - len(piece.lstrip())
        steps.append(Step(stripped, start, start + len(stripped)))
    return steps


def step_end_token_indices(token_char_ends: Sequence[int], step_char_ends: Sequence[int]) -> list[int]:
    """Index of the token that ends each step (see the rule in the module docstring); truncated steps are dropped.

    ``token_char_ends[i]``: exclusive char end of token i in the completion text (non-decreasing).
    ``step_char_ends[j]``: exclusive char end of step j (non-decreasing). Example: tokens ``["12", "\\n1", "3"]`` of
    ``"12\\n13"`` have ends ``[2, 4, 5]``; steps ``"12"``, ``"13"`` end at 2 and 5 -> ``[0, 2]``.
    """
    assert all(a <= b for a, b in itertools.pairwise(token_char_ends)), "token char ends must be non-decreasing"
    indices = []
    for step_end in step_char_ends:
        # The first token whose end reaches step_end holds the step's last character.
        token_index = bisect.bisect_left(token_char_ends, step_end)
        if token_index == len(token_char_ends):
            break  # this step (and every later one) runs past the last token: truncated
        indices.append(token_index)
    return indices


def closing_char_ends(steps: Sequence[Step]) -> list[int]:
    """Exclusive char end of what closes each step, for GRPO credit: the separator (and any whitespace) after step j
    belongs to step j, so its end is the next step's start; the last step ends at its own last character (the caller
    adds the EOS, which closes it when the completion finished).

    Example: "12\n13" with steps (0, 2) and (3, 5) -> [3, 5]: the newline closes step 0."""
    return [steps[j + 1].start if j + 1 < len(steps) else steps[j].end for j in range(len(steps))]


def token_char_ends_from_offsets(offset_mapping: Sequence[Sequence[int]]) -> list[int]:
    """Exclusive char end of each token, from a fast tokenizer's ``offset_mapping`` (``return_offsets_mapping=True``).

    Zero-width tokens (special tokens, offsets ``(0, 0)``) cover no character. A token whose span overlaps the next
    token's (byte-level BPE pieces of one multi-byte character all report that character's span) completes only the
    characters before the next token starts. Both get ends that never decrease.
    """
    spans = [(int(start), int(end)) for start, end in offset_mapping]
    next_start: list[int | None] = [None] * len(spans)
    upcoming = None
    for index in range(len(spans) - 1, -1, -1):
        next_start[index] = upcoming
        if spans[index][0] < spans[index][1]:
            upcoming = spans[index][0]
    ends, previous = [], 0
    for (start, end), following in zip(spans, next_start):
        if start < end and following is not None and following < end:
            end = following  # the next token finishes this token's last character
        previous = max(previous, end if start < end else previous)
        ends.append(previous)
    return ends


def token_char_ends_from_ids(tokenizer: Any, token_ids: Sequence[int]) -> list[int]:
    """Exclusive char end of each token in ``tokenizer.decode(token_ids, skip_special_tokens=True,
    clean_up_tokenization_spaces=False)``, for generated ids that have no offsets.

    Incremental detokenization (as in streaming servers): decode a short window that starts a few tokens back, and
    count the characters it adds; a window ending in an incomplete UTF-8 character (decoded as U+FFFD) adds nothing
    until the token that completes it. Starting the window a token back keeps decoders that treat the first token
    specially (e.g. SentencePiece's leading space) consistent. About two decode calls per token, each on a window of
    a few tokens: O(n) work overall.
    """
    ends: list[int] = []
    length = 0
    prefix_start, read_start = 0, 0  # window = ids[prefix_start:i+1]; ids[prefix_start:read_start] already counted
    prefix_text = ""
    for index in range(len(token_ids)):
        window_text = _decode(tokenizer, token_ids[prefix_start : index + 1])
        is_last = index == len(token_ids) - 1
        if len(window_text) > len(prefix_text) and (is_last or not window_text.endswith("\ufffd")):
            length += len(window_text) - len(prefix_text)
            prefix_start, read_start = read_start, index + 1
            prefix_text = _decode(tokenizer, token_ids[prefix_start:read_start])
        ends.append(length)
    return ends


def _decode(tokenizer: Any, token_ids: Sequence[int]) -> str:
    return tokenizer.decode(list(token_ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


def align_steps(tokenizer: Any, completion: str | Sequence[int], steps: Sequence[Step] | Sequence[str]) -> list[int]:
    """Index of the last token of each step in the tokenized completion (truncated steps dropped; see module doc).

    ``completion`` is the completion text (tokenized here without special tokens) or its generated token ids (then
    the text is their decode, as in ``token_char_ends_from_ids``). ``steps`` are ``Step`` objects with offsets into
    that text, or step strings, which are located in the text in order (ValueError if one is not found).
    """
    if isinstance(completion, str):
        text = completion
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        token_ends = token_char_ends_from_offsets(encoding["offset_mapping"])
    else:
        text = _decode(tokenizer, completion)
        token_ends = token_char_ends_from_ids(tokenizer, completion)
    return step_end_token_indices(token_ends, _step_char_ends(text, steps))


def _step_char_ends(text: str, steps: Sequence[Step] | Sequence[str]) -> list[int]:
    """Exclusive char ends of ``steps`` in ``text``; string steps are found left to right."""
    ends, position = [], 0
    for index, step in enumerate(steps):
        if isinstance(step, Step):
            ends.append(step.end)
            continue
        found = text.find(step, position)
        if found < 0:
            raise ValueError(f"step {index} ({step[:40]!r}) does not occur in the completion after offset {position}")
        position = found + len(step)
        ends.append(position)
    return ends
