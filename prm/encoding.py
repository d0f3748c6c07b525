"""How the PRM reads a solution: its token ids, the separator token where each step is read, padding and spans.

``encode_solution`` is the ONE path for training and scoring: the prompt's ids (``data.prompts.encode_prompt``), then
for each step its ids (no special tokens) and the separator's id (``prm.step_separator``, one token: "\\n" by default,
"ки" for Math-Shepherd, "<extra_0>" for Qwen2.5-Math-PRM). Step j is read at ITS separator token, after the whole step,
so "= 14" and the start of "= 144" are never confused, and the last step is read at the separator appended after it
(TRL's PRM trainer does the same). A step spans its own tokens. Ids are cut to ``max_length``; padding is on the right.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from ..data.prompts import encode_prompt
from ..data.schema import check_solution_steps
from ..utils.errors import UserError


@dataclass(frozen=True)
class Encoded:
    """One solution as the PRM reads it."""

    input_ids: list[int]
    """Prompt ids, then each step's ids and its separator id; cut to max_length."""
    step_token_indices: list[int]
    """Index of each step's separator token (where it is read); steps past max_length are absent (a prefix)."""
    step_token_starts: list[int]
    """Index of each fitted step's first token (its separator's index if the step has no token of its own)."""
    num_steps: int
    """How many steps the solution has (fitted or not)."""


def separator_id(tokenizer: PreTrainedTokenizerBase, separator: str) -> int:
    """The one token id of ``separator``; UserError naming prm.step_separator if the tokenizer splits it."""
    if not separator:
        raise UserError("prm.step_separator: must not be empty")
    ids = tokenizer(separator, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise UserError(f"prm.step_separator: {separator!r} is {len(ids)} tokens for this tokenizer; the PRM reads a "
                        "step at one separator token (e.g. '\\n', or a special token the tokenizer keeps whole)")
    return int(ids[0])


def encode_solution(tokenizer: PreTrainedTokenizerBase, prompt: str, steps: list[str], max_length: int,
                    separator: str = "\n") -> Encoded:
    """The ids the PRM reads for one solution and where each step is read (module docstring); cut to max_length."""
    sep = separator_id(tokenizer, separator)
    ids = encode_prompt(tokenizer, prompt)
    step_ids = tokenizer(list(steps), add_special_tokens=False)["input_ids"] if steps else []
    reads, starts = [], []
    for tokens in step_ids:
        start = len(ids)
        ids = ids + list(tokens) + [sep]
        if len(ids) - 1 < max_length:
            reads.append(len(ids) - 1)
            starts.append(min(start, len(ids) - 1))
    return Encoded(ids[:max_length], reads, starts, len(steps))


def pad_right(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask), both (B, T) long."""
    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)  # (B, T)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask


def step_tensors(encoded: list[Encoded], steps: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, starts, ends), each (S,) long: the spans (first token .. separator) of steps ``steps[i]`` (fitted step
    indices) of ``encoded[i]``, in (solution, step) order."""
    picked = [(row, e.step_token_starts[j], e.step_token_indices[j]) for row, (e, js) in enumerate(zip(encoded, steps))
              for j in js]
    rows, starts, ends = zip(*picked) if picked else ((), (), ())
    return tuple(torch.tensor(values, dtype=torch.long) for values in (rows, starts, ends))


def check_solutions(prompts: list[str], solutions: list[list[str]]) -> None:
    """UserError naming the solution index for an empty solution or an empty step; ValueError if lengths differ."""
    if len(prompts) != len(solutions):
        raise ValueError(f"{len(prompts)} prompts for {len(solutions)} solutions; they must be index-aligned")
    check_solution_steps(solutions)


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id used for right padding (any id works: padded positions are masked and never read)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0
