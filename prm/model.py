"""The step reward model: a transformer read at the separator that closes each step, with a 2-class (bad, good) head.

Reading a solution (``prm/encoding.py``'s ``encode_solution``, the ONE path for training and scoring): the prompt's ids
(``data.prompts.encode_prompt``), then for each step its ids (no special tokens) and the separator's id
(``prm.step_separator``, one token: "\\n" by default, "ки" for Math-Shepherd, "<extra_0>" for Qwen2.5-Math-PRM). Step
j is read at ITS separator token, after the whole step, so "= 14" and the start of "= 144" are never confused, and the
last step is read at the separator appended after it (TRL's PRM trainer does the same). A step spans its own tokens.

Step j's logit, from ONE forward pass: z_j = s_good − s_bad of ``head(h_sep)`` (two classes, ``positive_index`` is
good; a one-logit head gives z_j = s), plus, with log-prob features on (``logp_weight`` set), a·min_t logp_t +
c·mean_t logp_t + d·min_t (logp_t − max_v logp(v)_t) over the step's tokens t, read from the LM head (the policy's own
surprise at the step). P(step correct) = σ(z_j) = softmax(head(h_sep))[positive_index].

What trains (``prm.train``): the backbone (full fine-tuning at ``prm.lr``, or LoRA adapters with ``prm.lora_r``), the
head (``prm.head_lr``) and the log-prob weights; optionally the LM loss on the solution tokens beside the step loss.

Saved form (``prm/export.py``): a standard transformers token-classification checkpoint (``AutoModelForTokenClassification``
loads it and gives the same P(good) at the separator tokens when log-prob features are off), ``modeling_prmloop.py``
named by config.json's ``auto_map`` (with ``trust_remote_code=True`` it adds the log-prob features too), an untied LM
head as ``lm_head.weight`` in the checkpoint (older saves: ``lm_head.safetensors``, still read), its tokenizer,
``prm.json`` (format, separator, positive index, mode, window, log-prob weights) and a model card. The same class reads
external PRMs: token-classification checkpoints (``prm.step_separator`` given), Qwen2.5-Math-PRM (an MLP head) and
Skywork (a 1-logit value head) through ``prm/hub_formats.py``, and Math-Shepherd-style causal LMs (P(good token) vs
P(bad token) at the tag: a head whose rows are the LM head's rows of the two tokens). Weights load in float32.

Modes: ``process`` scores every step; ``outcome`` (an ORM) only the final one. Truncation: ids are cut to
``max_length``; a step whose separator falls beyond it scores NaN (``score_steps``) or is dropped and counted (training).
Padding is on the right; causal attention keeps each row's scores independent of its batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForTokenClassification, PreTrainedTokenizerBase

from ..utils.errors import UserError
from ..utils.lora import merge_lora
from .checkpoint import PRM_CONFIG_FILE, load_checkpoint, read_meta, saved_lm_head
from .encoding import (
    Encoded,
    check_solutions,
    encode_solution,
    pad_right,
    pad_token_id,
    separator_id,
    step_tensors,
)
from .export import save_reward_model
from .features import LOGP_WEIGHT_INIT, span_logp_features, token_logp_and_margin

HEAD_BIAS_INIT = 1.0
"""Initial s_good − s_bad of a fresh head: every step starts at σ(1) = 0.73 (most steps are right)."""
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


def backbone_positions(config) -> int | None:
    """How many positions a model config was built for (``max_position_embeddings`` / ``n_positions``), if it says."""
    config = config.get_text_config()
    for key in ("max_position_embeddings", "n_positions"):
        if isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    return None


def check_window(config, max_length: int) -> None:
    """UserError naming prm.max_length when the window is empty or longer than the backbone's positions."""
    positions = backbone_positions(config)
    if max_length < 1 or (positions is not None and max_length > positions):
        raise UserError(f"prm.max_length: {max_length} tokens does not fit the PRM backbone "
                        f"({positions} positions); use 1..{positions}")


def is_reward_model_dir(path: str | Path) -> bool:
    return (Path(path) / PRM_CONFIG_FILE).is_file()


def head_classes(head: torch.nn.Module) -> int:
    """How many logits a head gives: a Linear's outputs, or the last Linear's of an MLP head (Qwen2.5-Math-PRM)."""
    linears = [module for module in head.modules() if isinstance(module, torch.nn.Linear)]
    return linears[-1].out_features if linears else 0


def classifier_of(model: torch.nn.Module) -> tuple[str, torch.nn.Linear]:
    """(attribute name, module) of a token-classification model's head (``score`` or ``classifier``)."""
    for name in ("score", "classifier"):
        if isinstance(getattr(model, name, None), torch.nn.Linear):
            return name, getattr(model, name)
    raise UserError(f"{type(model).__name__}: no 'score' or 'classifier' head; not a token-classification model")


class StepRewardModel(torch.nn.Module):
    """A backbone + a (bad, good) head read at each step's separator token (+ optional log-prob features)."""

    def __init__(self, backbone: torch.nn.Module, head: torch.nn.Module, tokenizer: PreTrainedTokenizerBase,
                 config, mode: str, max_length: int, separator: str = "\n", positive_index: int = 1,
                 lm_head: torch.nn.Module | None = None, logp_weight: torch.Tensor | None = None) -> None:
        super().__init__()
        get_step_selection(mode)
        check_window(config, max_length)
        separator_id(tokenizer, separator)
        classes = head_classes(head)
        if classes not in (1, 2) or positive_index not in range(classes):
            raise UserError(f"prm head: {classes} classes with positive index {positive_index}; a PRM head "
                            "has 2 classes (bad, good) or 1 logit")
        if logp_weight is not None and lm_head is None:
            raise UserError("prm.logp_features: needs the LM head (an untied head saved in lm_head.safetensors)")
        self.backbone, self.head, self.lm_head, self.tokenizer, self.config = backbone, head, lm_head, tokenizer, config
        self.mode, self.max_length, self.separator, self.positive_index = mode, max_length, separator, positive_index
        self.logp_weight = None if logp_weight is None else torch.nn.Parameter(logp_weight.detach().clone().float())

    # ---- building and loading

    @classmethod
    def from_model(cls, causal_lm, tokenizer, mode: str = "process", max_length: int = 160, separator: str = "\n",
                   logp_features: bool = False) -> StepRewardModel:
        """A fresh PRM around ``causal_lm``'s transformer (shared, not copied): zero head weights, bias favouring
        'good' (HEAD_BIAS_INIT), log-prob features at LOGP_WEIGHT_INIT if asked for."""
        hidden = causal_lm.config.get_text_config().hidden_size
        head = torch.nn.Linear(hidden, 2)
        torch.nn.init.zeros_(head.weight)
        with torch.no_grad():
            head.bias.copy_(torch.tensor([0.0, HEAD_BIAS_INIT]))
        logp = torch.tensor(LOGP_WEIGHT_INIT) if logp_features else None
        return cls(causal_lm.base_model, head, tokenizer, causal_lm.config, mode, max_length, separator,
                   lm_head=causal_lm.get_output_embeddings(), logp_weight=logp)

    @classmethod
    def from_policy(cls, path_or_name: str, mode: str = "process", max_length: int = 160, separator: str = "\n",
                    logp_features: bool = False) -> StepRewardModel:
        """A fresh PRM from a causal LM checkpoint (a local directory or a hub name)."""
        lm, tokenizer = load_checkpoint(AutoModelForCausalLM, path_or_name)  # float32 master weights
        return cls.from_model(lm, tokenizer, mode, max_length, separator, logp_features)

    @classmethod
    def from_math_shepherd(cls, path_or_name: str, separator: str, good_token: str, bad_token: str,
                           max_length: int = 160) -> StepRewardModel:
        """A Math-Shepherd-style PRM: a causal LM whose next-token logits at the step tag, P(good) vs P(bad), score it."""
        lm, tokenizer = load_checkpoint(AutoModelForCausalLM, path_or_name)
        rows = [separator_id(tokenizer, token) for token in (bad_token, good_token)]
        weight = lm.get_output_embeddings().weight[rows]  # (2, H) the LM head's rows of the two tokens
        head = torch.nn.Linear(weight.shape[1], 2, bias=False)
        with torch.no_grad():
            head.weight.copy_(weight)
        return cls(lm.base_model, head, tokenizer, lm.config, "process", max_length, separator,
                   lm_head=lm.get_output_embeddings())

    @classmethod
    def from_token_classification(cls, path_or_name: str, separator: str | None = None, positive_index: int | None = None,
                                  max_length: int | None = None, mode: str | None = None,
                                  trust_remote_code: bool = False) -> StepRewardModel:
        """A token-classification checkpoint: a prmloop PRM (its prm.json fills what is not given) or an external one
        (``separator`` needed). None arguments take the saved value. A missing or unexpected head weight is a
        UserError naming it (only ``lm_head.weight``, kept for the log-prob features, may be extra)."""
        meta = read_meta(path_or_name)
        model, tokenizer = load_checkpoint(AutoModelForTokenClassification, path_or_name, trust_remote_code,
                                           allowed_unexpected=("lm_head.weight",))
        _, head = classifier_of(model)
        lm_head = saved_lm_head(path_or_name, model)
        logp = meta.get("logp_weight")
        separator = separator if separator is not None else meta.get("separator")
        if not separator:
            raise UserError(f"prm.step_separator: {path_or_name} is an external token-classification PRM; name the "
                            "token its steps end with (e.g. '<extra_0>' or '\\n')")
        if head.out_features == 1:
            positive_index = 0  # one logit: P(good) = sigmoid(logit)
        elif positive_index is None:
            positive_index = meta.get("positive_index", 1)
        return cls(model.base_model, head, tokenizer, model.config, mode or meta.get("mode", "process"),
                   max_length or meta.get("max_length", 160), separator, positive_index, lm_head,
                   None if logp is None else torch.tensor(logp))

    @classmethod
    def from_pretrained(cls, prm_dir: str | Path, max_length: int | None = None) -> StepRewardModel:
        """A saved prmloop PRM; ``max_length`` (prm.max_length at the time of use) replaces the saved window."""
        if not is_reward_model_dir(prm_dir):
            raise UserError(f"{prm_dir}: not a saved PRM directory (no {PRM_CONFIG_FILE})")
        return cls.from_token_classification(str(prm_dir), max_length=max_length)

    def save_pretrained(self, out_dir: str | Path) -> Path:
        """A token-classification checkpoint + remote code for its log-prob features + tokenizer + prm.json + model
        card (``prm/export.py``); LoRA adapters are merged first."""
        self.backbone = merge_lora(self.backbone)
        return save_reward_model(self, out_dir)

    # ---- scoring

    def token_logps(self, hidden: torch.Tensor, input_ids: torch.Tensor, needed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) log p(x_t | x_<t) and its argmax margin where ``needed`` (B, T) is true (t >= 1), else 0."""
        needed = needed.clone()
        needed[:, 0] = False
        rows, positions = needed.nonzero(as_tuple=True)  # (N,) each
        lm_logits = self.lm_head(hidden[rows, positions - 1])  # (N, V)
        logp, margin = token_logp_and_margin(lm_logits, input_ids[rows, positions])  # (N,)
        token_logp = torch.zeros(input_ids.shape, dtype=logp.dtype, device=logp.device)  # (B, T)
        token_margin = torch.zeros_like(token_logp)  # (B, T)
        token_logp[rows, positions], token_margin[rows, positions] = logp, margin
        return token_logp, token_margin

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T, H) last hidden states of the backbone."""
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def step_logits(self, hidden: torch.Tensor, input_ids: torch.Tensor, rows: torch.Tensor, starts: torch.Tensor,
                    ends: torch.Tensor) -> torch.Tensor:
        """(S,) logits z of S steps: the head at each separator ``ends[s]`` of row ``rows[s]`` (+ log-prob features
        over tokens starts[s]..ends[s] − 1, the step's own tokens)."""
        out = self.head(hidden[rows, ends].to(next(self.head.parameters()).dtype)).float()  # (S, C)
        z = out[:, 0] if out.shape[1] == 1 else out[:, self.positive_index] - out[:, 1 - self.positive_index]  # (S,)
        if self.logp_weight is None:
            return z
        step_ends = torch.maximum(starts, ends - 1)  # (S,) a step with no token of its own reads its separator
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (T,)
        in_span = (positions[None, :] >= starts[:, None]) & (positions[None, :] <= step_ends[:, None])  # (S, T)
        needed = torch.zeros(input_ids.shape, device=input_ids.device).index_add_(0, rows, in_span.float()) > 0
        token_logp, token_margin = self.token_logps(hidden, input_ids, needed)  # (B, T) each
        features = span_logp_features(token_logp, token_margin, rows, starts, step_ends)  # (S, 3)
        return z + features @ self.logp_weight.float()  # float32 features; the weight is bf16 in a bf16 model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: torch.Tensor, starts: torch.Tensor,
                ends: torch.Tensor, with_lm_loss: bool = False):
        """Step logits (S,) for S steps (step s: tokens starts[s]..ends[s] of row rows[s], read at ends[s]) of the
        right-padded ``input_ids``/``attention_mask`` (B, T); one forward pass. ``with_lm_loss``: returns
        (logits, the mean next-token cross-entropy of the steps' own tokens) for training beside the step loss."""
        hidden = self.hidden_states(input_ids, attention_mask)  # (B, T, H)
        logits = self.step_logits(hidden, input_ids, rows, starts, ends)  # (S,)
        if not with_lm_loss:
            return logits
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (T,)
        in_step = (positions[None, :] >= starts[:, None]) & (positions[None, :] < ends[:, None])  # (S, T)
        mask = torch.zeros(input_ids.shape, device=input_ids.device).index_add_(0, rows, in_step.float()) > 0  # (B, T)
        mask[:, 0] = False
        batch_rows, token_positions = mask.nonzero(as_tuple=True)  # (N,) each
        lm_logits = self.lm_head(hidden[batch_rows, token_positions - 1]).float()  # (N, V)
        return logits, torch.nn.functional.cross_entropy(lm_logits, input_ids[batch_rows, token_positions])

    def encode(self, prompt: str, steps: list[str]) -> Encoded:
        """This model's reading of one solution (``encode_solution`` with its tokenizer, window and separator)."""
        return encode_solution(self.tokenizer, prompt, steps, self.max_length, self.separator)

    @torch.no_grad()
    def score_steps(self, prompts: list[str], solutions: list[list[str]], batch_size: int = 64) -> list[list[float]]:
        """P(step correct) per step: len(steps) floats per solution in process mode (NaN for steps past the window),
        one float (the final step's) in outcome mode. One forward pass per ``batch_size`` solutions."""
        check_solutions(prompts, solutions)
        select = get_step_selection(self.mode)
        device = next(self.head.parameters()).device
        was_training = self.training
        self.eval()
        scores: list[list[float]] = []
        for start in range(0, len(prompts), batch_size):
            encoded = [self.encode(p, s) for p, s in zip(prompts[start : start + batch_size],
                                                         solutions[start : start + batch_size])]
            wanted = [[j for j in select(e.num_steps) if j < len(e.step_token_indices)] for e in encoded]
            rows, starts, ends = step_tensors(encoded, wanted)  # (S,) each
            input_ids, attention_mask = pad_right([e.input_ids for e in encoded], pad_token_id(self.tokenizer))
            logits = self(input_ids.to(device), attention_mask.to(device), rows.to(device), starts.to(device),
                          ends.to(device))
            probs = iter(torch.sigmoid(logits).float().cpu().tolist())  # (S,) in (row, step) order
            for item, fitted in zip(encoded, wanted):
                scores.append([next(probs) if j in fitted else math.nan for j in select(item.num_steps)])
        self.train(was_training)
        return scores

