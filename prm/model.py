"""The step reward model: a transformers backbone plus a linear head giving one logit per token, read at step ends.

Reading a solution (``format_solution`` + ``encode_solution``, the ONE path used by training and scoring alike):
the PRM reads ``prompt + "\\n".join(steps)``, exactly the text the policy writes (policy/sft.py ``solution_text``
after the templated prompt). Step j's score is the sigmoid of the head's logit at the token that holds the step's
last character (data/steps.py alignment rule: a BPE token that spans a step boundary ends the earlier step). The
backbone is causal, so a step's score depends only on the text up to and including that token.

Modes (``STEP_SELECTIONS``): ``process`` supervises and scores every step; ``outcome`` (an ORM) only the final step,
and ``score_steps`` then returns a one-element list per solution.

Truncation: the tokenized text is cut to ``max_length`` tokens; a step whose last token falls beyond it has no score.
``score_steps`` returns ``float('nan')`` for such steps (so a list always has the documented length), training
drops them and counts them.

Padding is on the right everywhere: every row's positions start at 0, and causal attention keeps real tokens blind
to the padding after them, so a solution's scores do not depend on what it was batched with.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from data.errors import UserError
from data.steps import step_end_token_indices, token_char_ends_from_offsets

PRM_CONFIG_FILE = "prm.json"
"""Marks a directory as a saved StepRewardModel (mode, max_length); the backbone's config.json sits beside it."""
HEAD_FILE = "prm_head.safetensors"
"""The head's weights (the backbone's are in the transformers files)."""
GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")
"""Saved tokenizer classes that mean 'exactly this tokenizer.json' (e.g. data/vocab.py's tokenizers)."""

STEP_SELECTIONS: dict[str, Callable[[int], list[int]]] = {
    "process": lambda num_steps: list(range(num_steps)),
    "outcome": lambda num_steps: [num_steps - 1],
}
"""Mode -> which step indices (of K) are supervised in training and returned by ``score_steps``."""


def get_step_selection(mode: str) -> Callable[[int], list[int]]:
    """The step selection of ``mode``; UserError naming the key and the valid modes otherwise."""
    if mode not in STEP_SELECTIONS:
        raise UserError(f"prm.mode: unknown mode {mode!r}; valid: {', '.join(sorted(STEP_SELECTIONS))}")
    return STEP_SELECTIONS[mode]


def format_solution(prompt: str, steps: list[str]) -> tuple[str, list[int]]:
    """The text the PRM reads (prompt, then steps joined by newlines) and the char offset just past each step.

    Example: ``format_solution("Q\\n", ["1 + 2 = 3", "Answer: 3"])`` -> ``("Q\\n1 + 2 = 3\\nAnswer: 3", [11, 21])``.
    """
    text, ends = prompt, []
    for index, step in enumerate(steps):
        if index:
            text += "\n"
        text += step
        ends.append(len(text))
    return text, ends


@dataclass(frozen=True)
class Encoded:
    """One solution as the PRM reads it."""

    input_ids: list[int]
    """Token ids of the formatted text, cut to max_length."""
    step_token_indices: list[int]
    """Index into input_ids of each step's last token; steps that did not fit are absent (a prefix of the steps)."""
    num_steps: int
    """How many steps the solution has (fitted or not)."""


def encode_solution(tokenizer: PreTrainedTokenizerBase, prompt: str, steps: list[str], max_length: int) -> Encoded:
    """Tokenize ``format_solution(prompt, steps)`` and find each step's last token; cut to ``max_length`` tokens."""
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"tokenizer {type(tokenizer).__name__}: the PRM needs a fast tokenizer (char offsets)")
    text, step_char_ends = format_solution(prompt, steps)
    encoding = tokenizer(text, return_offsets_mapping=True)
    token_ends = token_char_ends_from_offsets(encoding["offset_mapping"])
    indices = step_end_token_indices(token_ends, step_char_ends)
    return Encoded(
        input_ids=list(encoding["input_ids"][:max_length]),
        step_token_indices=[index for index in indices if index < max_length],
        num_steps=len(steps),
    )


def pad_right(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask), both (B, T) long."""
    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)  # (B, T)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask


def check_solutions(prompts: list[str], solutions: list[list[str]]) -> None:
    """UserError naming the solution index for an empty solution or an empty step; ValueError if lengths differ."""
    if len(prompts) != len(solutions):
        raise ValueError(f"{len(prompts)} prompts for {len(solutions)} solutions; they must be index-aligned")
    for index, steps in enumerate(solutions):
        if not steps:
            raise UserError(f"solution {index}: has no steps")
        empty = next((j for j, step in enumerate(steps) if not isinstance(step, str) or not step.strip()), None)
        if empty is not None:
            raise UserError(f"solution {index}: step {empty} is empty")


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id used for right padding (any id works: padded positions are masked and never read)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def is_reward_model_dir(path: str | Path) -> bool:
    """Whether ``path`` holds a saved StepRewardModel (rather than a policy checkpoint or a hub name)."""
    return (Path(path) / PRM_CONFIG_FILE).is_file()


def load_tokenizer(path_or_name: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved at ``path_or_name``, as saved.

    transformers 5's AutoTokenizer prefers the class of the model type in config.json (e.g. Qwen2Tokenizer for a
    qwen2 model) over a generic saved class, and so rebuilds a custom BPE tokenizer with other pre-tokenization
    rules; a generic saved class is therefore loaded as PreTrainedTokenizerFast, which reads tokenizer.json as is.
    """
    config_file = Path(path_or_name) / "tokenizer_config.json"
    if config_file.is_file():
        saved_class = json.loads(config_file.read_text(encoding="utf-8")).get("tokenizer_class")
        if saved_class in GENERIC_TOKENIZER_CLASSES:
            return PreTrainedTokenizerFast.from_pretrained(path_or_name)
    return AutoTokenizer.from_pretrained(path_or_name)


class StepRewardModel(torch.nn.Module):
    """Backbone (a transformers base model) + ``head`` = Linear(hidden, 1): one correctness logit per token."""

    def __init__(
        self, backbone: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, mode: str, max_length: int,
        head: torch.nn.Linear | None = None,
    ):
        super().__init__()
        get_step_selection(mode)
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.mode = mode
        self.max_length = max_length
        if head is None:
            # Zero init: every step starts at probability 0.5, and the backbone's features are left untouched.
            head = torch.nn.Linear(backbone.config.get_text_config().hidden_size, 1)
            torch.nn.init.zeros_(head.weight)
            torch.nn.init.zeros_(head.bias)
        self.head = head

    @classmethod
    def from_model(
        cls, causal_lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, mode: str = "process",
        max_length: int = 160,
    ) -> StepRewardModel:
        """A PRM whose backbone is ``causal_lm``'s base model (shared, not copied) and whose head is fresh."""
        return cls(causal_lm.base_model, tokenizer, mode, max_length)

    @classmethod
    def from_policy(cls, path_or_name: str, mode: str = "process", max_length: int = 160) -> StepRewardModel:
        """A PRM initialised from a causal LM checkpoint (a local directory or a hub name) with a fresh head."""
        try:
            backbone = AutoModel.from_pretrained(path_or_name)
            tokenizer = load_tokenizer(path_or_name)
        except (OSError, ValueError) as err:
            raise UserError(f"prm init: cannot load {path_or_name!r} ({str(err).splitlines()[0][:160]})") from None
        return cls(backbone, tokenizer, mode, max_length)

    def save_pretrained(self, out_dir: str | Path) -> Path:
        """Write backbone, tokenizer, head and ``prm.json`` to ``out_dir``; ``from_pretrained`` reads them back."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)
        head_state = {key: value.detach().cpu().contiguous() for key, value in self.head.state_dict().items()}
        save_file(head_state, str(out_dir / HEAD_FILE))
        meta = {"mode": self.mode, "max_length": self.max_length, "hidden_size": self.head.in_features}
        (out_dir / PRM_CONFIG_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        return out_dir

    @classmethod
    def from_pretrained(cls, prm_dir: str | Path) -> StepRewardModel:
        """Load what ``save_pretrained`` wrote; a missing or non-PRM directory is a one-line UserError."""
        prm_dir = Path(prm_dir)
        if not is_reward_model_dir(prm_dir):
            raise UserError(f"{prm_dir}: not a saved PRM directory (no {PRM_CONFIG_FILE})")
        meta = json.loads((prm_dir / PRM_CONFIG_FILE).read_text(encoding="utf-8"))
        backbone = AutoModel.from_pretrained(prm_dir)
        tokenizer = load_tokenizer(prm_dir)
        head = torch.nn.Linear(meta["hidden_size"], 1)
        head.load_state_dict(load_file(str(prm_dir / HEAD_FILE)))
        return cls(backbone, tokenizer, meta["mode"], meta["max_length"], head=head)

    def step_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Per-token correctness logits (B, T) for right-padded ``input_ids`` and ``attention_mask`` (B, T)."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1)  # (B, T)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Same as ``step_logits`` (so a DDP-wrapped model trains through ``model(...)``)."""
        return self.step_logits(input_ids, attention_mask)

    def encode(self, prompt: str, steps: list[str]) -> Encoded:
        """This model's reading of one solution (``encode_solution`` with its tokenizer and max_length)."""
        return encode_solution(self.tokenizer, prompt, steps, self.max_length)

    @torch.no_grad()
    def score_steps(self, prompts: list[str], solutions: list[list[str]], batch_size: int = 64) -> list[list[float]]:
        """P(step correct) per step: len(steps) floats per solution in process mode (NaN for steps cut off by
        max_length), one float (the final step's) in outcome mode. One forward pass per ``batch_size`` solutions."""
        check_solutions(prompts, solutions)
        select = get_step_selection(self.mode)
        device = self.head.weight.device
        was_training = self.training
        self.eval()
        scores: list[list[float]] = []
        for start in range(0, len(prompts), batch_size):
            encoded = [self.encode(p, s) for p, s in zip(prompts[start : start + batch_size], solutions[start : start + batch_size])]
            input_ids, attention_mask = pad_right([e.input_ids for e in encoded], pad_token_id(self.tokenizer))
            probs = torch.sigmoid(self.step_logits(input_ids.to(device), attention_mask.to(device))).float().cpu()  # (B, T)
            for row, item in enumerate(encoded):
                fitted = item.step_token_indices
                scores.append([probs[row, fitted[j]].item() if j < len(fitted) else math.nan for j in select(item.num_steps)])
        self.train(was_training)
        return scores
