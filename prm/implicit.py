"""The implicit PRM: a causal LM φ read against a frozen reference π_ref, scored per step, trained from outcome labels.

Reading a solution: ``prm.encoding.encode_solution``, as every prmloop PRM (the prompt's ids, then each step's ids and
its separator), then one forward of φ and one of π_ref over the right-padded batch give log π(x_t | x_<t) of every
token, and ``prm.implicit_rewards`` turns them into token rewards r_φ(y_t) = β log π_φ/π_ref, step rewards (a step
spans its own tokens and its separator; the prompt's tokens carry none), step values q_j and step scores σ(q_j).
Steps past ``max_length`` score NaN. φ stays in eval mode (no dropout), also while it trains, as the GRPO policy does.

What reads which number:
- ``score_steps``: σ(q_j) per step, the ``StepScorer`` that evaluation, Best-of-N and ``prmloop search`` read;
- ``step_rewards``: the per-step sums of r_φ(y_t), GRPO's process rewards (``grpo.reward_source: implicit``);
- ``online_step``: PRIME's per-batch step inside GRPO: the rollouts' step rewards and one AdamW step of L_CE on their
  answer-check labels, in the order ``online_update`` names: 'after' (PRIME's released recipe,
  ``prime_model.update=after``): rewards from φ before the step, read off the forward that also gives the loss;
  'before': the step first, then a second forward with the updated φ;
- ``fit_batch``: the gradient step both use; offline training (``prm.implicit_train``) calls it with its own optimizer.

Saved form (``save_pretrained``): φ as a plain causal-LM checkpoint (``AutoModelForCausalLM`` loads the directory)
with its tokenizer, π_ref the same way in ``reference/``, and ``implicit_prm.json`` (format 'implicit', β, separator,
window), the file that marks the directory (``prm.formats.detect_format``); after online updates also
``online_optimizer.pt`` (AdamW state and update count), so a resumed GRPO run continues the same φ.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from ..utils.errors import UserError
from ..utils.jsonl import atomic_write_text
from .checkpoint import load_checkpoint
from .encoding import Encoded, check_solutions, encode_solution, pad_right, pad_token_id, separator_id, step_tensors
from .implicit_rewards import outcome_ce_loss, span_sums, step_scores, step_values, token_rewards
from .model import check_window

IMPLICIT_CONFIG_FILE = "implicit_prm.json"
"""Marks an implicit PRM directory: {format: 'implicit', beta, separator, max_length}."""
REFERENCE_DIR = "reference"
"""π_ref's checkpoint inside an implicit PRM directory."""
ONLINE_OPTIMIZER_FILE = "online_optimizer.pt"
"""The online AdamW state and update count (written once φ has been updated online)."""
ONLINE_UPDATES = ("after", "before")
"""When φ takes its step relative to scoring a GRPO batch (``grpo.implicit_update``)."""
MAX_GRAD_NORM = 1.0
"""Gradient clipping of every φ step (PRIME's default ``prime_model.optim.grad_clip``)."""


def read_implicit_meta(path: str | Path) -> dict:
    """implicit_prm.json of an implicit PRM directory; UserError naming the file when it is unreadable or incomplete."""
    file = Path(path) / IMPLICIT_CONFIG_FILE
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{file}: not a readable implicit PRM config ({type(err).__name__})") from None
    types = {"beta": (int, float), "separator": str, "max_length": int}
    if not isinstance(meta, dict) or any(not isinstance(meta.get(key), kind) for key, kind in types.items()):
        raise UserError(f"{file}: not an implicit PRM config (needs beta, separator and max_length)")
    return meta


def _token_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) log p(x_t | x_<t) under ``model`` for t >= 1; 0 at t = 0 (nothing conditions it)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()  # (B, T-1, V)
    logp = logits.gather(-1, input_ids[:, 1:, None]).squeeze(-1) - logits.logsumexp(dim=-1)  # (B, T-1)
    return torch.nn.functional.pad(logp, (1, 0))  # (B, T)


class ImplicitPRM(torch.nn.Module):
    """φ (trainable causal LM) + π_ref (frozen) + β: an implicit PRM (module docstring)."""

    mode = "process"
    """Scores every step (evaluation reads it like a process-mode PRM)."""

    def __init__(self, model, reference, tokenizer, beta: float, max_length: int, separator: str = "\n") -> None:
        super().__init__()
        if not beta > 0:
            raise UserError(f"prm.implicit_beta: {beta} must be > 0 (the reward is β·log π_φ/π_ref)")
        check_window(model.config, max_length)
        separator_id(tokenizer, separator)
        self.model, self.reference = model.eval(), reference.eval().requires_grad_(False)
        self.tokenizer, self.beta, self.max_length, self.separator = tokenizer, float(beta), max_length, separator
        self.online_lr, self.online_update, self.batch_size = 1e-6, "after", 64
        self.optimizer: torch.optim.Optimizer | None = None
        """The online AdamW (created at the first ``online_step``)."""
        self.updates = 0
        """Online steps taken so far."""

    # ---- building, loading, saving

    @classmethod
    def from_causal_lm(cls, model, tokenizer, beta: float, max_length: int, separator: str = "\n") -> ImplicitPRM:
        """A fresh implicit PRM: φ = ``model``, π_ref = a frozen copy of it, so every reward starts at 0."""
        return cls(model, copy.deepcopy(model), tokenizer, beta, max_length, separator)

    @classmethod
    def from_policy(cls, path_or_name: str, beta: float, max_length: int, separator: str = "\n") -> ImplicitPRM:
        """A fresh implicit PRM from a causal LM checkpoint (PRIME starts φ and π_ref from the SFT model)."""
        model, tokenizer = load_checkpoint(AutoModelForCausalLM, str(path_or_name))
        return cls.from_causal_lm(model, tokenizer, beta, max_length, separator)

    @classmethod
    def from_pretrained(cls, path: str | Path, max_length: int | None = None) -> ImplicitPRM:
        """A saved implicit PRM; ``max_length`` (prm.max_length at the time of use) replaces the saved window. Its
        online optimizer state, if saved, is read by ``load_online``, not here."""
        meta = read_implicit_meta(path)
        model, tokenizer = load_checkpoint(AutoModelForCausalLM, str(path))
        reference, _ = load_checkpoint(AutoModelForCausalLM, str(Path(path) / REFERENCE_DIR))
        return cls(model, reference, tokenizer, meta["beta"], max_length or meta["max_length"], meta["separator"])

    def save_pretrained(self, out_dir: str | Path) -> Path:
        """φ + tokenizer, ``reference/``, the online optimizer state (if any), then implicit_prm.json (module
        docstring)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for model, where in ((self.model, out), (self.reference, out / REFERENCE_DIR)):
            model.save_pretrained(where)
            self.tokenizer.save_pretrained(where)
        if self.optimizer is not None:
            torch.save({"optimizer": self.optimizer.state_dict(), "updates": self.updates}, out / ONLINE_OPTIMIZER_FILE)
        meta = {"format": "implicit", "beta": self.beta, "separator": self.separator, "max_length": self.max_length}
        atomic_write_text(out / IMPLICIT_CONFIG_FILE, json.dumps(meta, indent=1) + "\n")
        return out

    def load_online(self, path: str | Path) -> None:
        """Restore φ's weights and the online optimizer of a directory ``save_pretrained`` wrote (a GRPO resume)."""
        saved, _ = load_checkpoint(AutoModelForCausalLM, str(path))
        self.model.load_state_dict(saved.state_dict())
        state_file = Path(path) / ONLINE_OPTIMIZER_FILE
        if state_file.is_file():
            state = torch.load(state_file, map_location="cpu", weights_only=True)
            self.online_optimizer().load_state_dict(state["optimizer"])
            self.updates = int(state["updates"])

    def configure_online(self, lr: float, update: str, batch_size: int = 64) -> ImplicitPRM:
        """Settings of the online update inside GRPO (``grpo.implicit_lr``, ``grpo.implicit_update``); returns self."""
        if update not in ONLINE_UPDATES:
            raise UserError(f"grpo.implicit_update: unknown {update!r}; valid: {', '.join(ONLINE_UPDATES)}")
        self.online_lr, self.online_update, self.batch_size = lr, update, batch_size
        return self

    def online_optimizer(self) -> torch.optim.Optimizer:
        """The AdamW of the online update (PRIME: constant lr, no weight decay), made once."""
        if self.optimizer is None:
            if torch.distributed.is_available() and torch.distributed.is_initialized() and \
                    torch.distributed.get_world_size() > 1:
                raise UserError("grpo.reward_source: 'implicit' updates φ in one process; each process would train "
                                "its own copy. Run GRPO in one process")
            trainable = [p for p in self.model.parameters() if p.requires_grad]
            self.optimizer = torch.optim.AdamW(trainable, lr=self.online_lr, weight_decay=0.0)
        return self.optimizer

    # ---- reading

    def encode(self, prompt: str, steps: list[str]) -> Encoded:
        """This model's reading of one solution (``encode_solution`` with its tokenizer, window and separator)."""
        return encode_solution(self.tokenizer, prompt, steps, self.max_length, self.separator)

    def _step_rewards(self, encoded: list[Encoded]) -> tuple[torch.Tensor, torch.Tensor]:
        """(step rewards (S,), their solution rows (S,)) of every fitted step of a batch, gradient through φ."""
        rows, starts, ends = step_tensors(encoded, [list(range(len(e.step_token_indices))) for e in encoded])  # (S,)
        input_ids, attention_mask = pad_right([e.input_ids for e in encoded], pad_token_id(self.tokenizer))  # (B, T)
        device = next(self.model.parameters()).device
        input_ids, attention_mask, rows = input_ids.to(device), attention_mask.to(device), rows.to(device)
        logp = _token_logps(self.model, input_ids, attention_mask)  # (B, T)
        with torch.no_grad():
            ref_logp = _token_logps(self.reference, input_ids, attention_mask)  # (B, T)
        rewards = token_rewards(logp, ref_logp, self.beta)  # (B, T)
        return span_sums(rewards, rows, starts.to(device), ends.to(device)), rows

    def _per_step(self, prompts: list[str], solutions: list[list[str]], batch_size: int,
                  as_scores: bool) -> list[list[float]]:
        check_solutions(prompts, solutions)
        result: list[list[float]] = []
        for start in range(0, len(prompts), batch_size):
            encoded = [self.encode(p, s) for p, s in zip(prompts[start : start + batch_size],
                                                         solutions[start : start + batch_size])]
            with torch.no_grad():
                rewards, rows = self._step_rewards(encoded)  # (S,) each
            values = step_scores(step_values(rewards, rows)) if as_scores else rewards
            result.extend(_split(values.float().cpu().tolist(), encoded))
        return result

    def score_steps(self, prompts: list[str], solutions: list[list[str]], batch_size: int = 64) -> list[list[float]]:
        """σ(q_j) per step of each solution (NaN for steps past the window): P(the solution through step j ends
        right) as φ has learned it from outcome labels."""
        return self._per_step(prompts, solutions, batch_size, as_scores=True)

    def step_rewards(self, prompts: list[str], solutions: list[list[str]], batch_size: int = 64) -> list[list[float]]:
        """Σ of r_φ(y_t) over each step's tokens (NaN for steps past the window): GRPO's implicit process rewards."""
        return self._per_step(prompts, solutions, batch_size, as_scores=False)

    # ---- learning from outcome labels

    def fit_batch(self, prompts: list[str], solutions: list[list[str]], labels: list[float],
                  optimizer: torch.optim.Optimizer) -> tuple[list[list[float]], dict[str, float]]:
        """One optimizer step of L_CE (mean over the solutions whose every step fits the window) on outcome labels in
        [0, 1]; returns each solution's step rewards BEFORE the step (NaN past the window) and stats: loss and
        accuracy (σ(q_K) >= 0.5 against label >= 0.5) before the step, gradient norm, solutions used."""
        check_solutions(prompts, solutions)
        if len(labels) != len(prompts):
            raise ValueError(f"{len(labels)} labels for {len(prompts)} solutions")
        encoded_all = [self.encode(p, s) for p, s in zip(prompts, solutions)]
        whole = [i for i, e in enumerate(encoded_all) if len(e.step_token_indices) == e.num_steps]
        rewards_before: list[list[float]] = []
        loss_sum, right = 0.0, 0
        optimizer.zero_grad(set_to_none=True)
        for start in range(0, len(encoded_all), self.batch_size):
            encoded = encoded_all[start : start + self.batch_size]
            rewards, rows = self._step_rewards(encoded)  # (S,) each
            rewards_before.extend(_split(rewards.detach().float().cpu().tolist(), encoded))
            kept = [i - start for i in whole if start <= i < start + len(encoded)]
            if not kept:
                continue
            outcome = torch.zeros(len(encoded), device=rewards.device).index_add(0, rows, rewards)[kept]  # (k,) q_K
            targets = torch.tensor([float(labels[start + i]) for i in kept], device=rewards.device)  # (k,)
            loss = outcome_ce_loss(outcome, targets) * len(kept) / len(whole)
            loss.backward()
            loss_sum += loss.item()
            right += int(((outcome.detach() >= 0) == (targets >= 0.5)).sum())
        stats = {"implicit/solutions": float(len(whole))}
        if whole:
            trainable = [p for group in optimizer.param_groups for p in group["params"]]
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
            if torch.isfinite(grad_norm):  # a NaN/inf gradient leaves φ as it was
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            stats.update({"implicit/loss": loss_sum, "implicit/accuracy": right / len(whole),
                          "implicit/grad_norm": float(grad_norm)})
        return rewards_before, stats

    def online_step(self, prompts: list[str], solutions: list[list[str]],
                    labels: list[float]) -> tuple[list[list[float]], dict[str, float]]:
        """PRIME inside one GRPO step: the solutions' step rewards and one online step of φ on their outcome labels,
        in the order ``online_update`` names (module docstring)."""
        rewards, stats = self.fit_batch(prompts, solutions, labels, self.online_optimizer())
        self.updates += 1
        if self.online_update == "before":
            rewards = self.step_rewards(prompts, solutions, self.batch_size)
        return rewards, stats


def _split(flat: list[float], encoded: list[Encoded]) -> list[list[float]]:
    """Per-solution lists of the fitted steps' values (flat, in solution order), NaN for the steps past the window."""
    result, position = [], 0
    for item in encoded:
        fitted = len(item.step_token_indices)
        result.append(flat[position : position + fitted] + [math.nan] * (item.num_steps - fitted))
        position += fitted
    return result
