"""Chat-turn PRMs (RLHFlow style, e.g. RLHFlow/Llama3.1-8B-PRM-Deepseek-Data): a causal LM asked after every step.

The solution becomes a conversation through the tokenizer's own chat template: user turn 1 = the prompt, a space and
step 1; user turn k = step k; after each user turn an assistant turn answering ``good_token`` ('+'). Step k's score is
read at the last token of the assistant-turn marker that follows user turn k (the position whose next token is the
assistant's answer; the marker may be several tokens, the template decides): P(step k correct) =
softmax(logits[good_token], logits[bad_token])[0] there. Causal attention makes this the same number as asking one
conversation per step prefix (RLHFlow's loop, which reads ``logits[:, -3]``), in one forward pass per batch.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from ..utils.errors import UserError
from .checkpoint import load_checkpoint
from .encoding import check_solutions, pad_right, pad_token_id


def token_id(tokenizer, token: str, key: str) -> int:
    """The one id of ``token``; UserError naming ``key`` if the tokenizer splits it."""
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise UserError(f"{key}: {token!r} is {len(ids)} tokens for this tokenizer; it must be one token")
    return int(ids[0])


def turn_ids(tokenizer, messages: list[dict], generation_prompt: bool) -> list[int]:
    """The ids of ``messages`` through the chat template (rendered, then tokenized without extra special tokens)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_turns(tokenizer, prompt: str, steps: list[str], good_token: str) -> tuple[list[int], list[int]]:
    """(ids of the whole conversation, index of each step's read position: the last token before its answer)."""
    messages, reads = [], []
    for index, step in enumerate(steps):
        messages.append({"role": "user", "content": f"{prompt} {step}" if index == 0 else step})
        reads.append(len(turn_ids(tokenizer, messages, True)) - 1)
        messages.append({"role": "assistant", "content": good_token})
    ids = turn_ids(tokenizer, messages, False)
    for index, read in enumerate(reads):
        prefix = turn_ids(tokenizer, messages[: 2 * index + 1], True)
        if ids[: read + 1] != prefix:
            raise UserError(f"prm.format=chat_turns: the chat template tokenizes step {index}'s turn differently inside "
                            "the whole conversation; this template cannot be read in one pass")
    return ids, reads


class ChatTurnPRM:
    """A causal LM scored per step through its chat template (module docstring); StepRewardModel's scoring interface."""

    mode = "process"

    def __init__(self, lm, tokenizer, good_token: str, bad_token: str, max_length: int) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise UserError("prm.format=chat_turns: the PRM's tokenizer has no chat template")
        self.candidates = [token_id(tokenizer, good_token, "prm.good_token"),
                           token_id(tokenizer, bad_token, "prm.bad_token")]
        self.lm, self.tokenizer, self.good_token, self.max_length = lm.eval(), tokenizer, good_token, max_length

    @classmethod
    def load(cls, path: str | Path, good_token: str, bad_token: str, max_length: int) -> ChatTurnPRM:
        lm, tokenizer = load_checkpoint(AutoModelForCausalLM, str(path))
        return cls(lm, tokenizer, good_token, bad_token, max_length)

    @torch.no_grad()
    def score_steps(self, prompts: list[str], solutions: list[list[str]], batch_size: int = 64) -> list[list[float]]:
        """P(step correct) per step; NaN for a step whose read position falls beyond max_length."""
        check_solutions(prompts, solutions)
        device = next(self.lm.parameters()).device
        scores: list[list[float]] = []
        for start in range(0, len(prompts), batch_size):
            encoded = [encode_turns(self.tokenizer, p, s, self.good_token)
                       for p, s in zip(prompts[start : start + batch_size], solutions[start : start + batch_size])]
            fitted = [[r for r in reads if r < self.max_length] for _, reads in encoded]
            input_ids, attention_mask = pad_right([ids[: self.max_length] for ids, _ in encoded],
                                                  pad_token_id(self.tokenizer))
            keep = sorted({r for reads in fitted for r in reads})
            if not keep:  # nothing of this batch fits the window
                scores += [[math.nan] * len(reads) for _, reads in encoded]
                continue
            logits = self.lm(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                             logits_to_keep=torch.tensor(keep, device=device)).logits  # (B, len(keep), V)
            column = {position: index for index, position in enumerate(keep)}
            for row, ((_, reads), kept) in enumerate(zip(encoded, fitted)):
                pair = logits[row, [column[r] for r in kept]][:, self.candidates].float()  # (K', 2) good, bad
                probs = torch.softmax(pair, dim=-1)[:, 0].cpu().tolist()
                scores.append(probs + [math.nan] * (len(reads) - len(kept)))
        return scores
