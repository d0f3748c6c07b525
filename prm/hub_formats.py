"""Hub PRM layouts prmloop reads natively (no remote code), and the gate for checkpoints that ship their own code.

- ``qwen_prm`` (Qwen2.5-Math-PRM): config ``architectures: ["Qwen2ForProcessRewardModel"]`` with an ``auto_map`` to
  remote code; weights ``model.*`` (a Qwen2Model) and ``score.0.*``, ``score.2.*`` (Linear(H, H), ReLU, Linear(H, 2)).
  The token ``<extra_0>`` follows every step; P(step correct) = softmax(score(h))[1] at it. Loaded here as a
  StepRewardModel with that MLP head: the backbone through transformers' own Qwen2Model, the head from safetensors.
- ``value_head`` (Skywork-o1-Open-PRM, TRL's value-head layout): a causal LM checkpoint plus ``v_head.summary.weight``
  / ``.bias`` (Linear(H, 1)); each step is followed by ``"\\n"`` and P(step correct) = sigmoid(v_head(h)) at it.
- ``remote_token_classification``: a token-classification checkpoint whose ``auto_map`` names its own model code. It
  runs only with ``prm.trust_remote_code: true``; its own forward gives the logits, read at the separator.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from transformers import AutoModel, AutoModelForTokenClassification

from ..utils.errors import UserError
from .checkpoint import load_checkpoint, read_weights, weight_names
from .encoding import check_solutions, encode_solution, pad_right, pad_token_id, step_tensors
from .model import StepRewardModel

QWEN_PRM_ARCHITECTURE = "Qwen2ForProcessRewardModel"
"""config.json ``architectures`` of Qwen2.5-Math-PRM-7B / -72B."""
QWEN_PRM_HEAD = ("score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias")
"""Qwen2.5-Math-PRM's head weights: Sequential(Linear(H, H), ReLU, Linear(H, 2))."""
QWEN_PRM_SEPARATOR = "<extra_0>"
"""The token Qwen2.5-Math-PRM appends after every step (its scores are read there)."""
VALUE_HEAD_ARCHITECTURE = "Qwen2ForPrmModel"
"""config.json ``architectures`` of Skywork-o1-Open-PRM (a Qwen2 causal LM + value head)."""
VALUE_HEAD = ("v_head.summary.weight", "v_head.summary.bias")
"""The value head's weights (TRL ``ValueHead``: dropout, then Linear(H, 1))."""
VALUE_HEAD_SEPARATOR = "\n"
"""Skywork's step token: each step's ids, then the id of "\\n", read there."""


def read_config(path: str | Path) -> dict:
    """config.json of a local checkpoint ({} for a hub name: only local directories are inspected further)."""
    file = Path(path) / "config.json"
    try:
        return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{file}: unreadable model config ({type(err).__name__})") from None


def needs_remote_code(config: dict, auto_class: str) -> bool:
    """Whether config.json's ``auto_map`` sends ``auto_class`` to code shipped with the checkpoint."""
    return auto_class in (config.get("auto_map") or {})


def check_trusted(path: str | Path, config: dict, trust_remote_code: bool, auto_class: str) -> None:
    """UserError naming prm.trust_remote_code when the checkpoint's own code would run and the user did not allow it."""
    if needs_remote_code(config, auto_class) and not trust_remote_code:
        entry = config["auto_map"][auto_class]
        raise UserError(f"prm.trust_remote_code: {path} runs its own model code ({auto_class} -> {entry}); read it, "
                        "then set prm.trust_remote_code=true to allow it")


def load_backbone(path: str | Path, extra_weights: tuple[str, ...]):
    """(backbone, tokenizer) through transformers' own base class for the config (never the checkpoint's code), in
    float32; the checkpoint may hold ``extra_weights`` (the head, read separately) and an LM head beside it."""
    return load_checkpoint(AutoModel, str(path), trust_remote_code=False,
                           allowed_unexpected=(*extra_weights, "lm_head.weight"))


def load_qwen_prm(path: str | Path, max_length: int):
    """A StepRewardModel in the Qwen2.5-Math-PRM layout: Qwen2Model + the 2-layer MLP head, read at <extra_0>."""
    backbone, tokenizer = load_backbone(path, QWEN_PRM_HEAD)
    weights = read_weights(path, list(QWEN_PRM_HEAD))
    hidden = backbone.config.get_text_config().hidden_size
    head = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2))
    head.load_state_dict({key.removeprefix("score."): value for key, value in weights.items()}, strict=True)
    return StepRewardModel(backbone, head, tokenizer, backbone.config, "process", max_length, QWEN_PRM_SEPARATOR, 1)


def load_value_head(path: str | Path, max_length: int):
    """A StepRewardModel in Skywork's value-head layout: the LM's backbone + Linear(H, 1), sigmoid, read at "\\n"."""
    backbone, tokenizer = load_backbone(path, VALUE_HEAD)
    weights = read_weights(path, list(VALUE_HEAD))
    head = torch.nn.Linear(weights[VALUE_HEAD[0]].shape[1], 1)
    head.load_state_dict({"weight": weights[VALUE_HEAD[0]], "bias": weights[VALUE_HEAD[1]]}, strict=True)
    return StepRewardModel(backbone, head, tokenizer, backbone.config, "process", max_length, VALUE_HEAD_SEPARATOR, 0)


def has_weights(path: str | Path, names: tuple[str, ...]) -> bool:
    return set(names) <= weight_names(path)


class RemoteTokenClassifierPRM:
    """A token-classification PRM whose own (remote) forward gives the logits (B, T, C), read at the separator after
    each step: softmax(...)[positive_index] for 2 classes, sigmoid for 1. Scoring only (StepRewardModel's interface)."""

    mode = "process"

    def __init__(self, model, tokenizer, separator: str, positive_index: int, max_length: int) -> None:
        self.model, self.tokenizer, self.separator = model.eval(), tokenizer, separator
        self.positive_index, self.max_length = positive_index, max_length
        encode_solution(tokenizer, "", ["x"], max_length, separator)  # one-token separator, else UserError

    @classmethod
    def load(cls, path: str | Path, separator: str, positive_index: int, max_length: int) -> RemoteTokenClassifierPRM:
        if not separator:
            raise UserError(f"prm.step_separator: {path} is an external token-classification PRM; name the token its "
                            "steps end with")
        model, tokenizer = load_checkpoint(AutoModelForTokenClassification, str(path), trust_remote_code=True)
        return cls(model, tokenizer, separator, positive_index, max_length)

    @torch.no_grad()
    def score_steps(self, prompts: list[str], solutions: list[list[str]], batch_size: int = 64) -> list[list[float]]:
        """P(step correct) per step (NaN past the window), one forward pass of the checkpoint's code per batch."""
        check_solutions(prompts, solutions)
        device = next(self.model.parameters()).device
        scores: list[list[float]] = []
        for start in range(0, len(prompts), batch_size):
            encoded = [encode_solution(self.tokenizer, p, s, self.max_length, self.separator)
                       for p, s in zip(prompts[start : start + batch_size], solutions[start : start + batch_size])]
            wanted = [list(range(len(e.step_token_indices))) for e in encoded]
            rows, _, ends = step_tensors(encoded, wanted)  # (S,) each
            input_ids, attention_mask = pad_right([e.input_ids for e in encoded], pad_token_id(self.tokenizer))
            logits = self.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
            picked = logits[rows.to(device), ends.to(device)].float()  # (S, C)
            probs = (torch.softmax(picked, -1)[:, self.positive_index] if picked.shape[1] > 1
                     else torch.sigmoid(picked[:, 0]))
            flat = iter(probs.cpu().tolist())
            for item in encoded:
                fitted = len(item.step_token_indices)
                scores.append([next(flat) if j < fitted else math.nan for j in range(item.num_steps)])
        return scores
