"""Rollouts: G sampled completions per prompt, with masks, sampling-time log-probs and each step's end-token index.

What a rollout holds (B = prompts · G rows, the G samples of a prompt contiguous):
- ``prompt_ids``/``prompt_mask`` (B, P): the prompt, LEFT-padded; ``completion_ids``/``completion_mask`` (B, T): the
  generated tokens, RIGHT-padded. The mask covers every generated token including the final EOS (so the policy is
  taught to stop); after EOS a row holds pad ids with mask 0. T is the longest completion of the batch.
- ``logp`` (B, T): log π_old(o_t | q, o_<t) of each sampled token under the sampling policy, computed as
  ``log_softmax`` of the RAW logits (temperature 1) at sampling time, 0 at padding. This is the π_old of the GRPO
  ratio; sampling itself uses temperature/top-p, which shape which tokens are drawn, not the log-probs returned.
- ``steps``/``step_ends``: the completion text (decoded without EOS and special tokens) split with
  ``data.steps.split_steps``; ``step_ends[i][j]`` is the 0-based index in ``completion_ids[i]`` of the token that
  CLOSES step j (``data.steps.closing_char_ends``): the token holding the end of the separator after it, and for the
  last step the EOS when the completion finished (else its last token). So the policy is credited for ending steps
  and for stopping; a token that also starts the next step ends the earlier one.

Position ids are ``cumsum(attention_mask) - 1`` in the sampling loop and in ``policy.logps.forward_logps``, so a row's
numbers do not depend on how much left padding its batch needed.

Determinism: every row draws its randomness from its own seeded generator (``policy.sampling``), so a prompt's samples
are the same however the prompts are split into batches or across processes (up to float rounding of the logits).

Backends: ``CompletionBackend`` is the small interface a faster engine (e.g. vLLM) can implement; ``HFBackend`` is a
hand-written sampling loop over a transformers causal LM with a KV cache. It prefills each distinct prompt once, runs
the samples of a prompt as one sequence until they draw different tokens (``policy.slots``), and reads each prompt's
keys and values once per group where the model allows (``policy.prefix_sharing``).
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from ..data.prompts import encode_prompt
from ..data.steps import closing_char_ends, split_steps, step_end_token_indices, token_char_ends_from_ids
from . import prefix_sharing
from .kv_cache import grow_in_place
from .sampling import row_seed, row_uniforms, sample_next
from .slots import can_reslot, next_slots, reslot


@dataclass
class Generation:
    """Raw sampled tokens of B rows, right-padded."""

    completion_ids: Tensor
    """(B, T) long: generated tokens, pad id after the end."""
    completion_mask: Tensor
    """(B, T) bool: True on every generated token, the final EOS included."""
    logp: Tensor
    """(B, T) float32: temperature-1 log-prob of each token under the sampling policy; 0 at padding."""
    finished: Tensor
    """(B,) bool: the row ended with EOS (False: cut off at max_new_tokens)."""


class CompletionBackend(Protocol):
    """Samples one completion per row; row i draws its randomness from ``row_seeds[i]`` only."""

    def generate(self, prompt_ids: list[list[int]], row_seeds: list[int]) -> Generation: ...


def left_pad(rows: list[list[int]], pad_id: int, device: Any) -> tuple[Tensor, Tensor]:
    """Left-padded ids (B, P) and bool mask (B, P)."""
    width = max((len(ids) for ids in rows), default=0)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for row, tokens in enumerate(rows):
        if tokens:
            ids[row, width - len(tokens) :] = torch.tensor(tokens)
            mask[row, width - len(tokens) :] = True
    return ids.to(device), mask.to(device)


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends a completion: the tokenizer's EOS plus the model's generation_config EOS ids."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


class HFBackend:
    """Batched sampling from a transformers causal LM with a KV cache (a hand-written loop, not ``generate``)."""

    def __init__(self, model: Any, tokenizer: Any, max_new_tokens: int, temperature: float = 1.0,
                 top_p: float = 1.0, batch_size: int = 256, share_prefixes: bool = True) -> None:
        self.model, self.tokenizer, self.share_prefixes = model, tokenizer, share_prefixes
        self.max_new_tokens, self.temperature, self.top_p, self.batch_size = max_new_tokens, temperature, top_p, batch_size
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @torch.no_grad()
    def generate(self, prompt_ids: list[list[int]], row_seeds: list[int]) -> Generation:
        if len(prompt_ids) != len(row_seeds):
            raise ValueError(f"{len(prompt_ids)} prompts for {len(row_seeds)} row seeds")
        was_training = self.model.training
        self.model.eval()
        try:
            parts = [self._generate_batch(prompt_ids[start : start + self.batch_size],
                                          row_seeds[start : start + self.batch_size])
                     for start in range(0, len(prompt_ids), self.batch_size)]
        finally:
            self.model.train(was_training)
        return concat_generations(parts, self.pad_id)

    def _prefill(self, prompt_ids: list[list[int]], device: Any, share: bool) -> tuple[Tensor, Any, Tensor, Tensor,
                                                                                        bool]:
        """Run each DISTINCT prompt once (G samples share a prompt) into a cache with room for every row: with
        ``share``, where the model allows, prefix-sharing layers (``policy.prefix_sharing``), else growing ones.

        Returns the next-token logits of each distinct prompt (U, V), the cache (U slots), the prompts' mask (U, P),
        each row's prompt (B,) and whether the cache shares prefixes.
        """
        distinct: dict[tuple[int, ...], int] = {}
        row_to_distinct = [distinct.setdefault(tuple(ids), len(distinct)) for ids in prompt_ids]
        prompt, prompt_mask = left_pad([list(ids) for ids in distinct], self.pad_id, device)  # (U, P)
        out = self.model(input_ids=prompt, attention_mask=prompt_mask.long(), use_cache=True, logits_to_keep=1,
                         position_ids=(prompt_mask.long().cumsum(1) - 1).clamp(min=0))
        cache = cache_of(out)
        shared = share and prefix_sharing.applicable(cache)
        rows = len(prompt_ids)
        if shared:
            prefix_sharing.share_prefixes(cache, prompt_mask, torch.arange(len(distinct), device=device),
                                          self.max_new_tokens, rows)
        else:
            grow_in_place(cache, prompt.shape[1] + self.max_new_tokens, rows)  # no O(T²) copying as completions grow
        return out.logits[:, -1], cache, prompt_mask, torch.tensor(row_to_distinct, device=device), shared

    def _generate_batch(self, prompt_ids: list[list[int]], row_seeds: list[int]) -> Generation:
        """Sample the batch with prefix sharing where this model's attention allows it, else with the plain cache (the
        first refusal turns sharing off for this backend; the batch is sampled again from the start)."""
        if self.share_prefixes:
            try:
                return self._sample(prompt_ids, row_seeds, share=True)
            except prefix_sharing.PrefixSharingUnsupported:
                self.share_prefixes = False
        return self._sample(prompt_ids, row_seeds, share=False)

    def _sample(self, prompt_ids: list[list[int]], row_seeds: list[int], share: bool) -> Generation:
        """Sample up to max_new_tokens per row. The slots start as the distinct prompts where the cache can fork them
        (``policy.slots``), else as the rows (transformers' own cache layers)."""
        device = next(self.model.parameters()).device
        uniforms = row_uniforms(row_seeds, self.max_new_tokens).to(device)  # (B, N)
        eos = torch.tensor(eos_token_ids(self.model, self.tokenizer), device=device)
        logits, cache, prompt_mask, row_prompt, shared = self._prefill(prompt_ids, device, share)
        slot_prompt, row_slot = torch.arange(len(logits), device=device), row_prompt  # (S,), (B,)
        forking = can_reslot(cache)
        if not forking:
            if len(logits) < len(row_prompt):
                cache.batch_select_indices(row_prompt)
            logits, slot_prompt, row_slot = logits[row_prompt], row_prompt, torch.arange(len(row_prompt), device=device)
        with prefix_sharing.sharing_attention(self.model) if shared else contextlib.nullcontext():
            return self._decode(logits, cache, forking, prompt_mask, slot_prompt, row_slot, uniforms, eos, shared)

    def _decode(self, logits: Tensor, cache: Any, forking: bool, prompt_mask: Tensor, slot_prompt: Tensor,
                row_slot: Tensor, uniforms: Tensor, eos: Tensor, shared: bool) -> Generation:
        """The decode steps from the slots' logits (S, V) and cache (``forking``: its layers can fork slots);
        ``prompt_mask`` (U, P) of the distinct prompts, ``slot_prompt`` (S,) each slot's prompt, ``row_slot`` (B,)
        each row's slot. Each live row draws its token from its slot's logits with its own uniform number; ended rows
        leave their slot."""
        device, (batch, budget) = logits.device, uniforms.shape
        keyword, prompt_len = cache_keyword(self.model), prompt_mask.sum(1)  # (U,)
        ids = torch.full((batch, budget), self.pad_id, dtype=torch.long, device=device)  # (B, N)
        logp = torch.zeros((batch, budget), device=device)  # (B, N)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)  # (B,)
        length = 0
        for t in range(budget):
            alive = (~finished).nonzero().squeeze(1)  # (a,)
            token, token_logp = sample_next(logits[row_slot[alive]], uniforms[alive, t], self.temperature, self.top_p)
            ids[alive, t], logp[alive, t] = token, token_logp
            ended = torch.isin(token, eos)  # (a,)
            finished[alive[ended]] = True
            length = t + 1
            if t == budget - 1 or bool(finished.all()):
                break
            rows = alive[~ended]
            parents, feed, row_slot[rows] = next_slots(row_slot[rows], token[~ended], len(slot_prompt), batch,
                                                       self.pad_id)
            if parents is not None:
                reslot(cache, parents, forking)
                slot_prompt = slot_prompt[parents]  # (S',)
            attention = torch.cat([prompt_mask[slot_prompt], prompt_mask.new_ones(len(slot_prompt), t + 1)], dim=1)
            logits = self.model(input_ids=feed[:, None], attention_mask=attention.long(), use_cache=True,
                                position_ids=(prompt_len[slot_prompt] + t)[:, None], **{keyword: cache}).logits[:, -1]
            if shared and not prefix_sharing.served_every_layer(cache):
                raise prefix_sharing.PrefixSharingUnsupported("an attention layer did not read the shared prompts")
        mask = torch.arange(budget, device=device) < _lengths(ids, finished, eos, length)[:, None]  # (B, N)
        return Generation(ids[:, :length], mask[:, :length], logp[:, :length], finished)


def _lengths(ids: Tensor, finished: Tensor, eos: Tensor, budget: int) -> Tensor:
    """Generated tokens per row (B,): up to and including the first EOS, else the whole budget."""
    is_eos = torch.isin(ids[:, :budget], eos)  # (B, N)
    first_eos = torch.where(is_eos.any(1), is_eos.float().argmax(1), budget - 1)  # (B,)
    return torch.where(finished, first_eos + 1, budget)


def cache_of(output: Any) -> Any:
    """The KV cache an output carries (``cache`` in transformers 5, ``past_key_values`` before)."""
    cache = getattr(output, "cache", None)
    return output.past_key_values if cache is None else cache


def cache_keyword(model: Any) -> str:
    """The keyword this model's forward takes the cache by (``cache`` in transformers 5, ``past_key_values`` before);
    a PEFT, DDP or DeepSpeed wrapper's forward takes ``**kwargs`` and passes them on, so the base model's decides."""
    model = getattr(model, "module", model)  # DDP's and DeepSpeed's wrappers take ``*args, **kwargs`` too
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def concat_generations(parts: list[Generation], pad_id: int) -> Generation:
    """Stack batches of different lengths into one, right-padding to the longest."""
    width = max((part.completion_ids.shape[1] for part in parts), default=0)

    def pad(tensor: Tensor, value: Any) -> Tensor:
        return torch.nn.functional.pad(tensor, (0, width - tensor.shape[1]), value=value)

    return Generation(
        completion_ids=torch.cat([pad(p.completion_ids, pad_id) for p in parts]),
        completion_mask=torch.cat([pad(p.completion_mask, False) for p in parts]),
        logp=torch.cat([pad(p.logp, 0.0) for p in parts]),
        finished=torch.cat([p.finished for p in parts]),
    )


@dataclass
class Rollout:
    """G completions per prompt with everything GRPO needs (layout in the module docstring)."""

    prompt_ids: Tensor
    """(B, P) long, left-padded."""
    prompt_mask: Tensor
    """(B, P) bool."""
    completion_ids: Tensor
    """(B, T) long, right-padded."""
    completion_mask: Tensor
    """(B, T) bool, the EOS included."""
    logp: Tensor
    """(B, T) temperature-1 sampling log-probs (π_old), 0 at padding."""
    finished: Tensor
    """(B,) bool: ended with EOS."""
    texts: list[str]
    """Decoded completions (no EOS, no special tokens)."""
    steps: list[list[str]]
    """Each completion's steps (stripped text), only those with an end token."""
    step_ends: list[list[int]]
    """Completion-token index of the last token of each step."""

    def step_tensors(self) -> tuple[Tensor, Tensor]:
        """Step ends (B, K) long (-1 at padding) and step mask (B, K) bool, K = most steps of any row."""
        most = max((len(ends) for ends in self.step_ends), default=0)
        ends = torch.full((len(self.step_ends), most), -1, dtype=torch.long)
        for row, row_ends in enumerate(self.step_ends):
            ends[row, : len(row_ends)] = torch.tensor(row_ends, dtype=torch.long)
        return ends, ends >= 0


def encode_prompts(tokenizer: Any, prompts: list[str]) -> list[list[int]]:
    """Token ids of each prompt text, exactly as SFT encodes them (``data.prompts.encode_prompt``: BOS never twice)."""
    return [encode_prompt(tokenizer, prompt) for prompt in prompts]


def completion_token_lists(generation: Generation, tokenizer: Any, eos_ids: list[int]) -> list[list[int]]:
    """Each row's generated ids without padding and without its final EOS."""
    lengths = generation.completion_mask.sum(1).tolist()
    rows = []
    for ids, length, finished in zip(generation.completion_ids.tolist(), lengths, generation.finished.tolist()):
        ids = ids[:length]
        rows.append(ids[:-1] if finished and ids and ids[-1] in eos_ids else ids)
    return rows


def decode(tokenizer: Any, ids: list[int]) -> str:
    """The text of ``ids`` exactly as ``data.steps.align_steps`` decodes it."""
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def sample_rollout(backend: CompletionBackend, tokenizer: Any, prompt_ids: list[list[int]], group_size: int,
                   seed: int, step: int, first_prompt_index: int = 0, step_mode: str = "newline") -> Rollout:
    """G = ``group_size`` samples of each prompt, split into steps; prompt i is global prompt first_prompt_index + i."""
    rows = [ids for ids in prompt_ids for _ in range(group_size)]
    seeds = [row_seed(seed, step, first_prompt_index + i, g) for i in range(len(prompt_ids)) for g in range(group_size)]
    generation = backend.generate(rows, seeds)
    model = getattr(backend, "model", None)
    token_lists = completion_token_lists(generation, tokenizer, eos_token_ids(model, tokenizer))
    texts, steps, step_ends = [], [], []
    for ids, finished in zip(token_lists, generation.finished.tolist()):
        text = decode(tokenizer, ids)
        row_steps = split_steps(text, step_mode)
        ends = step_end_token_indices(token_char_ends_from_ids(tokenizer, ids), closing_char_ends(row_steps))
        if finished and ends and len(ends) == len(row_steps):
            ends[-1] = len(ids)  # the EOS (just after ids) closes the last step
        texts.append(text)
        steps.append([s.text for s in row_steps[: len(ends)]])
        step_ends.append(ends)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = generation.completion_ids.device
    prompt, prompt_mask = left_pad(rows, pad_id, device)
    return Rollout(prompt, prompt_mask, generation.completion_ids, generation.completion_mask, generation.logp,
                   generation.finished, texts, steps, step_ends)


SAMPLER_BACKEND: Any = None
"""None: ``PolicySampler`` samples with ``HFBackend``. ``policy.vllm_backend.sample_with_vllm`` sets a factory
(model, tokenizer, max_new_tokens, temperature, top_p) -> backend, so that ``grpo.use_vllm`` serves all sampling."""


class PolicySampler:
    """THE way prmloop generates text outside GRPO's rollouts (labelling, evaluation, SFT checks): ``complete(prompts,
    n)`` -> n continuation texts per prompt (``prm.label.Sampler``); temperature 0 is greedy.

    Call k of this sampler seeds prompt i's sample g with ``row_seed(seed, k, i, g)``: reproducible, and fresh per call.
    """

    def __init__(self, model: Any, tokenizer: Any, max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                 batch_size: int = 256, seed: int = 0) -> None:
        self.backend = (HFBackend(model, tokenizer, max_new_tokens, temperature, top_p, batch_size)
                        if SAMPLER_BACKEND is None else SAMPLER_BACKEND(model, tokenizer, max_new_tokens, temperature,
                                                                        top_p))
        self.tokenizer, self.seed, self.calls = tokenizer, seed, 0
        self.tokens = 0
        """Prompt + generated tokens of every row sampled so far (the compute a caller spent through this sampler)."""

    def complete(self, prompts: list[str], n: int) -> list[list[str]]:
        return self.complete_counted(prompts, n)[0]

    def complete_counted(self, prompts: list[str], n: int) -> tuple[list[list[str]], list[list[int]]]:
        """``complete``, plus each completion's generated-token count (its final EOS included), grouped alike."""
        if not prompts:
            return [], []
        rows = [ids for ids in encode_prompts(self.tokenizer, prompts) for _ in range(n)]
        seeds = [row_seed(self.seed, self.calls, i, g) for i in range(len(prompts)) for g in range(n)]
        self.calls += 1
        generation = self.backend.generate(rows, seeds)
        eos_ids = eos_token_ids(self.backend.model, self.tokenizer)
        texts = [decode(self.tokenizer, ids) for ids in completion_token_lists(generation, self.tokenizer, eos_ids)]
        counts = generation.completion_mask.sum(1).tolist()  # (B,) generated tokens per row
        self.tokens += sum(len(ids) for ids in rows) + sum(counts)
        return ([texts[i * n : (i + 1) * n] for i in range(len(prompts))],
                [counts[i * n : (i + 1) * n] for i in range(len(prompts))])
