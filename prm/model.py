"""The step reward model: a causal LM whose last hidden state and own token log-probs give one logit per step.

Reading a solution (``format_solution`` + ``encode_solution``, the ONE path used by training and scoring alike):
the PRM reads ``prompt + "\\n".join(steps)``, exactly the text the policy writes (policy/sft.py ``solution_text``
after the templated prompt). Step j ends at the token that holds its last character (data/steps.py alignment rule:
a BPE token that spans a step boundary ends the earlier step) and spans the tokens from the previous step's end + 1
(for step 0: the token after the one holding the prompt's last character) to its end.

Step j's logit, all from ONE forward pass of the causal LM (``StepRewardModel.forward``):
    z_j = w·h_end + a·min_t logp_t + c·mean_t logp_t + d·min_t (logp_t − max_v logp(v)_t) + b,
with h_end the last hidden state at the step's end token, logp_t = log p(x_t | x_<t) from the same LM's head, and
t over the step's span (``span_logp_features``). The log-prob terms let the PRM read how surprised the policy it was
initialised from is by the step (a wrong result is usually a low-probability, non-argmax token); the whole model,
LM head included, trains jointly on the step labels. The LM is causal, so a step's score depends only on the text
up to and including its end token.

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
from transformers import (
    AutoModelForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from prmloop.data.errors import UserError
from prmloop.data.hub import is_local, require_hub
from prmloop.data.prompts import adds_special_tokens
from prmloop.data.schema import check_solution_steps
from prmloop.data.steps import step_end_token_indices, token_char_ends_from_offsets
from prmloop.data.vocab import load_tokenizer

PRM_CONFIG_FILE = "prm.json"
"""Marks a directory as a saved StepRewardModel (mode, max_length); the backbone's config.json sits beside it."""
HEAD_FILE = "prm_head.safetensors"
"""The head's weights: ``weight``/``bias`` of w·h_end + b and ``logp_weight`` = (a, c, d) (the LM's are in the
transformers files)."""
LOGP_FEATURES = ("min_logp", "mean_logp", "min_margin")
"""The per-step log-prob features, in ``logp_weight`` order (see ``span_logp_features``)."""
LOGP_WEIGHT_INIT = (1.0, 0.0, 1.0)
"""Initial (a, c, d): a fresh PRM starts as 'a step is as good as its least likely token' (sensible before training)."""
HEAD_BIAS_INIT = 1.0
"""Initial b: a step whose tokens are all likely argmax tokens starts near sigmoid(1) = 0.73."""
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
    step_token_starts: list[int]
    """Index of each fitted step's first token (previous end + 1; step 0: first token after the prompt), <= its end."""
    num_steps: int
    """How many steps the solution has (fitted or not)."""


def encode_solution(tokenizer: PreTrainedTokenizerBase, prompt: str, steps: list[str], max_length: int) -> Encoded:
    """Tokenize ``format_solution(prompt, steps)`` and find each step's last token; cut to ``max_length`` tokens."""
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"tokenizer {type(tokenizer).__name__}: the PRM needs a fast tokenizer (char offsets)")
    text, step_char_ends = format_solution(prompt, steps)
    encoding = tokenizer(text, return_offsets_mapping=True, add_special_tokens=adds_special_tokens(tokenizer, text))
    token_ends = token_char_ends_from_offsets(encoding["offset_mapping"])
    indices = [index for index in step_end_token_indices(token_ends, step_char_ends) if index < max_length]
    prompt_end = step_end_token_indices(token_ends, [len(prompt)])[0] if prompt else -1
    starts = [min(previous_end + 1, end) for previous_end, end in zip([prompt_end, *indices], indices)]
    return Encoded(
        input_ids=list(encoding["input_ids"][:max_length]),
        step_token_indices=indices,
        step_token_starts=starts,
        num_steps=len(steps),
    )


def token_logp_and_margin(lm_logits: torch.Tensor, next_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(next token) and its margin to the argmax, log p(next) − max_v log p(v) (<= 0, 0 iff it is an argmax),
    from LM logits (N, V) and the tokens that came next (N,); both (N,) float32."""
    logp_all = torch.log_softmax(lm_logits.float(), dim=-1)  # (N, V)
    logp = logp_all.gather(-1, next_ids[:, None]).squeeze(-1)  # (N,)
    return logp, logp - logp_all.max(dim=-1).values


def span_logp_features(
    token_logp: torch.Tensor, token_margin: torch.Tensor, rows: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor
) -> torch.Tensor:
    """(S, 3) features of S token spans: min and mean of ``token_logp`` and min of ``token_margin`` (both (B, T))
    over tokens starts[s]..ends[s] (inclusive) of row rows[s]."""
    positions = torch.arange(token_logp.shape[1], device=token_logp.device)  # (T,)
    in_span = (positions[None, :] >= starts[:, None]) & (positions[None, :] <= ends[:, None])  # (S, T)
    logp, margin = token_logp[rows], token_margin[rows]  # (S, T)
    inf = torch.tensor(torch.inf, dtype=logp.dtype, device=logp.device)
    min_logp = torch.where(in_span, logp, inf).min(dim=-1).values  # (S,)
    mean_logp = (logp * in_span).sum(dim=-1) / in_span.sum(dim=-1)  # (S,)
    min_margin = torch.where(in_span, margin, inf).min(dim=-1).values  # (S,)
    return torch.stack([min_logp, mean_logp, min_margin], dim=-1)  # (S, 3)


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
    """(rows, starts, ends), each (S,) long: the spans of steps ``steps[i]`` (fitted step indices) of ``encoded[i]``,
    in (solution, step) order."""
    picked = [(row, e.step_token_starts[j], e.step_token_indices[j]) for row, (e, js) in enumerate(zip(encoded, steps)) for j in js]
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


def backbone_positions(lm: PreTrainedModel) -> int | None:
    """How many positions the LM was built for (``max_position_embeddings`` / ``n_positions``), if it says."""
    config = lm.config.get_text_config()
    for key in ("max_position_embeddings", "n_positions"):
        if isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    return None


def check_window(lm: PreTrainedModel, max_length: int) -> None:
    """UserError naming prm.max_length when the window is empty or longer than the backbone's positions."""
    positions = backbone_positions(lm)
    if max_length < 1 or (positions is not None and max_length > positions):
        raise UserError(f"prm.max_length: {max_length} tokens does not fit the PRM backbone "
                        f"({positions} positions); use 1..{positions}")


def is_reward_model_dir(path: str | Path) -> bool:
    """Whether ``path`` holds a saved StepRewardModel (rather than a policy checkpoint or a hub name)."""
    return (Path(path) / PRM_CONFIG_FILE).is_file()


class StepRewardModel(torch.nn.Module):
    """A causal LM + ``head`` = Linear(hidden, 1) on the step's end state + ``logp_weight`` (3,) on its log-prob
    features (module docstring): one correctness logit per step."""

    def __init__(
        self, lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, mode: str, max_length: int,
        head: torch.nn.Linear | None = None, logp_weight: torch.Tensor | None = None,
    ):
        super().__init__()
        get_step_selection(mode)
        check_window(lm, max_length)
        self.lm = lm
        self.tokenizer = tokenizer
        self.mode = mode
        self.max_length = max_length
        if head is None:
            # w = 0: the hidden-state term starts silent, so a fresh PRM scores by the LM's log-probs alone.
            head = torch.nn.Linear(lm.config.get_text_config().hidden_size, 1)
            torch.nn.init.zeros_(head.weight)
            torch.nn.init.constant_(head.bias, HEAD_BIAS_INIT)
        self.head = head
        init = torch.tensor(LOGP_WEIGHT_INIT) if logp_weight is None else logp_weight.detach().clone()
        self.logp_weight = torch.nn.Parameter(init.to(head.weight.dtype))  # (3,)

    @property
    def backbone(self) -> PreTrainedModel:
        """The LM's base model (the transformer without its LM head)."""
        return self.lm.base_model

    @classmethod
    def from_model(
        cls, causal_lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, mode: str = "process",
        max_length: int = 160,
    ) -> StepRewardModel:
        """A PRM around ``causal_lm`` (shared, not copied) with a fresh head."""
        return cls(causal_lm, tokenizer, mode, max_length)

    @classmethod
    def from_policy(cls, path_or_name: str, mode: str = "process", max_length: int = 160) -> StepRewardModel:
        """A PRM initialised from a causal LM checkpoint (a local directory or a hub name) with a fresh head."""
        if not is_local(path_or_name):
            require_hub(path_or_name, "prm init")
        try:
            lm = AutoModelForCausalLM.from_pretrained(path_or_name)
            tokenizer = load_tokenizer(path_or_name)
        except (OSError, ValueError) as err:
            raise UserError(f"prm init: cannot load {path_or_name!r} ({str(err).splitlines()[0][:160]})") from None
        return cls(lm, tokenizer, mode, max_length)

    def save_pretrained(self, out_dir: str | Path) -> Path:
        """Write the LM, tokenizer, head and ``prm.json`` to ``out_dir``; ``from_pretrained`` reads them back."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.lm.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)
        head_state = {key: value.detach().cpu().contiguous() for key, value in self.head.state_dict().items()}
        head_state["logp_weight"] = self.logp_weight.detach().cpu().contiguous()
        save_file(head_state, str(out_dir / HEAD_FILE))
        meta = {"mode": self.mode, "max_length": self.max_length, "hidden_size": self.head.in_features,
                "logp_features": list(LOGP_FEATURES)}
        (out_dir / PRM_CONFIG_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        return out_dir

    @classmethod
    def from_pretrained(cls, prm_dir: str | Path, max_length: int | None = None) -> StepRewardModel:
        """Load what ``save_pretrained`` wrote; a missing or non-PRM directory is a one-line UserError.

        ``max_length``: the scoring window in tokens (``prm.max_length`` at the time of use); None keeps the saved one.
        """
        prm_dir = Path(prm_dir)
        if not is_reward_model_dir(prm_dir):
            raise UserError(f"{prm_dir}: not a saved PRM directory (no {PRM_CONFIG_FILE})")
        meta = json.loads((prm_dir / PRM_CONFIG_FILE).read_text(encoding="utf-8"))
        lm = AutoModelForCausalLM.from_pretrained(prm_dir)
        tokenizer = load_tokenizer(prm_dir)
        head_state = load_file(str(prm_dir / HEAD_FILE))
        # A PRM saved before the log-prob features existed scores by its hidden-state head alone: weights 0.
        logp_weight = head_state.pop("logp_weight", torch.zeros(len(LOGP_FEATURES)))
        head = torch.nn.Linear(meta["hidden_size"], 1)
        head.load_state_dict(head_state)
        window = meta["max_length"] if max_length is None else max_length
        return cls(lm, tokenizer, meta["mode"], window, head=head, logp_weight=logp_weight)

    def token_logps(self, hidden: torch.Tensor, input_ids: torch.Tensor, needed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) log p(x_t | x_<t) and its argmax margin where ``needed`` (B, T) is true (t >= 1), else 0.

        The LM head runs only on the needed positions: a hub model's vocabulary makes (B, T, V) logits large."""
        needed = needed.clone()
        needed[:, 0] = False  # the first token has no prediction
        rows, positions = needed.nonzero(as_tuple=True)  # (N,) each
        lm_logits = self.lm.get_output_embeddings()(hidden[rows, positions - 1])  # (N, V)
        logp, margin = token_logp_and_margin(lm_logits, input_ids[rows, positions])  # (N,)
        token_logp = torch.zeros(input_ids.shape, dtype=logp.dtype, device=logp.device)  # (B, T)
        token_margin = torch.zeros_like(token_logp)  # (B, T)
        token_logp[rows, positions], token_margin[rows, positions] = logp, margin
        return token_logp, token_margin

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: torch.Tensor, starts: torch.Tensor,
        ends: torch.Tensor,
    ) -> torch.Tensor:
        """Step logits (S,) for S steps, step s being tokens starts[s]..ends[s] of row rows[s] of the right-padded
        ``input_ids``/``attention_mask`` (B, T); one forward pass of the LM."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (T,)
        in_span = (positions[None, :] >= starts[:, None]) & (positions[None, :] <= ends[:, None])  # (S, T)
        needed = torch.zeros(input_ids.shape, device=input_ids.device).index_add_(0, rows, in_span.float()) > 0  # (B, T)
        token_logp, token_margin = self.token_logps(hidden, input_ids, needed)  # (B, T) each
        features = span_logp_features(token_logp, token_margin, rows, starts, ends)  # (S, 3)
        end_hidden = hidden[rows, ends].to(self.head.weight.dtype)  # (S, H)
        return self.head(end_hidden).squeeze(-1) + features.to(self.logp_weight.dtype) @ self.logp_weight  # (S,)

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
            wanted = [[j for j in select(e.num_steps) if j < len(e.step_token_indices)] for e in encoded]
            rows, starts, ends = step_tensors(encoded, wanted)  # (S,) each
            input_ids, attention_mask = pad_right([e.input_ids for e in encoded], pad_token_id(self.tokenizer))
            logits = self(input_ids.to(device), attention_mask.to(device), rows.to(device), starts.to(device), ends.to(device))
            probs = iter(torch.sigmoid(logits).float().cpu().tolist())  # (S,) in (row, step) order
            for item, fitted in zip(encoded, wanted):
                scores.append([next(probs) if j in fitted else math.nan for j in select(item.num_steps)])
        self.train(was_training)
        return scores
