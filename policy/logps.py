"""Log-probs of sampled completions under a model (π_θ in the update, π_ref): ``forward_logps``, padded or packed.

Same layout as ``policy.rollout``: prompts left-padded (B, P), completions right-padded (B, T), position ids
``cumsum(attention_mask) - 1``, so on unchanged weights it reproduces the sampling-time ``Rollout.logp``. The packed
path (``grpo.padding_free``, ``packed_logps``) returns the same numbers from rows without padding
(``policy.packing``); ``check_padding_free`` refuses a model whose packed rows would mix sequences.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..utils.errors import UserError
from .packing import Packed, pack_completions, pack_sequences, shared_prompt_mask, unpack
from .prefix_tree import GroupTrees, pack_trees
from .rollout import cache_keyword, cache_of

MASK_KINDS: dict[str, Callable[[Tensor], Tensor]] = {
    "sdpa": lambda allowed: allowed,  # bool, True = attend
    "eager": lambda allowed: torch.where(allowed, 0.0, torch.finfo(torch.float32).min),  # added to the scores
}
"""Attention implementations that take a 4D mask for the shared-prompt packed rows, and the mask each wants."""


def forward_logps(model: Any, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor,
                  completion_mask: Tensor, with_entropy: bool = False, share_prompts: bool = True,
                  padding_free: bool = False, trees: bool | None = None) -> tuple[Tensor, Tensor | None]:
    """Temperature-1 log-prob (B, T) of each completion token, and optionally its entropy (B, T).

    Same layout and position ids as the sampling loop, so on unchanged weights it reproduces ``Rollout.logp``. With
    ``share_prompts`` (the default), rows whose prompt equals the row before's (a GRPO group) run the prompt once:
    one forward over the distinct prompts, its KV cache copied to their rows, then one over the completions. The
    gradient reaches the weights through the copied cache, so it is the full forward's, with the prompt compute cut
    by the group size. Without repeated prompts, or with ``share_prompts`` false (gradient checkpointing, which
    drops the cache), one forward over prompt + completion. ``padding_free``: the same numbers from packed rows
    (``packed_logps``, which takes ``trees``).
    """
    if padding_free:
        return packed_logps(model, prompt_ids, prompt_mask, completion_ids, completion_mask, with_entropy,
                            share_prompts, trees)
    num_tokens = completion_ids.shape[1]
    attention = torch.cat([prompt_mask, completion_mask], dim=1).long()  # (B, P + T)
    positions = (attention.cumsum(1) - 1).clamp(min=0)  # (B, P + T)
    distinct, inverse = _distinct_prompts(prompt_ids, prompt_mask) if share_prompts else (None, None)
    if distinct is None or num_tokens < 2:
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)  # (B, P + T)
        logits = model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                       logits_to_keep=num_tokens + 1).logits[:, :-1]  # (B, T, V) logits predicting o_t
    else:
        width = prompt_ids.shape[1]
        first = model(input_ids=prompt_ids[distinct], attention_mask=attention[distinct, :width],
                      position_ids=positions[distinct, :width], use_cache=True, logits_to_keep=1)  # (U, 1, V)
        cache = cache_of(first)
        cache.batch_select_indices(inverse)  # (U, ...) -> (B, ...): each row gets its prompt's keys and values
        rest = model(input_ids=completion_ids[:, :-1], attention_mask=attention[:, :-1], use_cache=True,
                     position_ids=positions[:, width:-1], **{cache_keyword(model): cache}).logits  # (B, T-1, V)
        logits = torch.cat([first.logits[inverse], rest], dim=1)  # (B, T, V) logits predicting o_t
    return token_logps(logits, completion_ids, with_entropy)


def token_logps(logits: Tensor, tokens: Tensor, with_entropy: bool) -> tuple[Tensor, Tensor | None]:
    """Log-prob (...) of ``tokens`` under ``logits`` (..., V) at temperature 1, and optionally the entropy (...)."""
    logits = logits.float()
    log_norm = logits.logsumexp(dim=-1)  # (...)
    logp = logits.gather(-1, tokens[..., None]).squeeze(-1) - log_norm  # (...)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            log_probs = logits - log_norm[..., None]  # (..., V)
            entropy = -(log_probs.exp() * log_probs).sum(-1)  # (...)
    return logp, entropy


TREE_SHARE = 0.5
"""``packed_logps`` lays a micro-batch as prefix trees (``policy.prefix_tree``) when they hold at most this share of
the tokens the prompt-once layout runs: trees cut the tokens through every layer, but each packed row's attention grows
with the square of its width (a group's whole tree), so only a large cut pays for it."""


def packed_logps(model: Any, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor,
                 completion_mask: Tensor, with_entropy: bool = False, share_prompts: bool = True,
                 trees: bool | None = None) -> tuple[Tensor, Tensor | None]:
    """``forward_logps`` without padding (``policy.packing``): (B, T) log-probs and entropies, 0 at padding.

    With repeated prompts, an attention that takes a 4D mask (sdpa, eager) and no sliding window within the
    sequences, one of two layouts runs each prompt once:
    - prefix trees (``policy.prefix_tree``): each group's prompt and the trie of its completions, so that tokens the
      samples share (the same prefix) run once too; no KV cache, so also with gradient checkpointing. ``trees`` None:
      where they hold at most ``TREE_SHARE`` of the tokens of the layout below; True/False: always/never.
    - with ``share_prompts``: one forward over the distinct prompts, its KV cache copied to packed rows of each
      group's completions, and a mask that keeps each completion to its prompt and itself.
    Otherwise prompt + completion sequences packed end to end, positions restarting at 0, no mask: transformers then
    keeps attention within each sequence (flash attention through varlen kernels, sdpa/eager/flex through a
    block-diagonal mask). Rows are as long as the longest sequence, or one row with flash and flex attention, whose
    cost does not grow with the row.
    """
    shape, config = completion_ids.shape, _config(model)
    implementation = getattr(config, "_attn_implementation", None) or "eager"
    longest = int((prompt_mask.sum(1) + completion_mask.sum(1)).max()) if shape[0] else 0
    masked = implementation in MASK_KINDS and _full_attention(config, longest)
    distinct, inverse = _distinct_prompts(prompt_ids, prompt_mask) if masked else (None, None)
    tree = None
    if distinct is not None and trees is not False:
        once = int(prompt_mask[distinct].sum() + (completion_mask.sum(1) - 1).clamp(min=0).sum())  # prompt-once
        limit = None if trees else int(TREE_SHARE * once)
        grouped = GroupTrees(prompt_ids, prompt_mask, completion_ids, completion_mask, inverse, limit)
        if trees or (grouped.complete and all(grouped.prompts)):
            tree = pack_trees(grouped, completion_ids, completion_mask)
    if tree is not None:
        packed, mask = tree, MASK_KINDS[implementation](tree.visible[:, None])  # (R, 1, C, C)
        parts = [_logits_at(model, packed, packed.logit_cols >= 0, attention_mask=mask, use_cache=False)]
    elif distinct is None or not share_prompts:
        one_row = any(name in implementation for name in ("flash", "flex"))
        packed = pack_sequences(prompt_ids, prompt_mask, completion_ids, completion_mask, None if one_row else longest)
        parts = [_logits_at(model, packed, packed.logit_cols >= 0, use_cache=False)]
    else:
        positions = (prompt_mask.long().cumsum(1) - 1).clamp(min=0)  # (U, P)
        first = model(input_ids=prompt_ids[distinct], attention_mask=prompt_mask[distinct], use_cache=True,
                      position_ids=positions[distinct], logits_to_keep=1)  # (U, 1, V)
        capacity = int(completion_mask.sum(1).max()) - 1
        packed = pack_completions(prompt_mask, completion_ids, completion_mask, inverse, capacity)
        from_prompt = packed.logit_cols < 0  # (N,) the first completion tokens
        parts = [(first.logits[packed.logit_rows[from_prompt], -1], from_prompt)]  # (N0, V)
        if packed.input_ids.shape[0]:
            cache = cache_of(first)
            cache.batch_select_indices(packed.row_group)  # (U, ...) -> (R, ...): each row gets its prompt's cache
            mask = MASK_KINDS[implementation](shared_prompt_mask(packed, prompt_mask[distinct]))  # (R, 1, C, P + C)
            parts.append(_logits_at(model, packed, ~from_prompt, attention_mask=mask, use_cache=True,
                                    **{cache_keyword(model): cache}))
    logits = torch.cat([logits for logits, _ in parts])  # (N, V)
    logp, entropy = token_logps(logits, torch.cat([packed.targets[which] for _, which in parts]), with_entropy)
    destination = torch.cat([packed.destination[which] for _, which in parts])  # (N,)
    return unpack(logp, destination, shape), None if entropy is None else unpack(entropy, destination, shape)


@torch.no_grad()
def check_padding_free(model: Any, share_prompts: bool) -> None:
    """UserError naming ``grpo.padding_free`` unless ``model``'s packed forward (``packed_logps``) gives its padded
    forward's log-probs on a small made-up batch (2 prompts x 3 completions of mixed lengths, some sharing a prefix),
    in both layouts (prefix trees and not), and keeps attention within each packed sequence: changing one group's
    tokens leaves the other group's log-probs exactly as they were."""
    config = _config(model)
    name = f"{type(getattr(model, 'module', model)).__name__} (attention '{getattr(config, '_attn_implementation', '?')}')"
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    vocab = model.get_input_embeddings().num_embeddings
    prompt_mask = torch.arange(4)[None, :] >= torch.tensor([0, 0, 0, 2, 2, 2])[:, None]  # (6, 4) left-padded
    completion_mask = torch.arange(6)[None, :] < torch.tensor([6, 3, 2, 5, 1, 4])[:, None]  # (6, 6) right-padded
    batches = []
    for _ in range(3):  # the batch, then each group's tokens changed in turn
        prompt_ids = torch.randint(vocab, (2, 4), generator=generator).repeat_interleave(3, dim=0) * prompt_mask
        completion_ids = torch.randint(vocab, (6, 6), generator=generator)
        completion_ids[1, :2], completion_ids[4, :1] = completion_ids[0, :2], completion_ids[3, :1]  # shared prefixes
        batches.append([prompt_ids, completion_ids * completion_mask])
    batches[1] = [torch.cat([batches[1][k][:3], batches[0][k][3:]]) for k in range(2)]  # group 0 changed
    batches[2] = [torch.cat([batches[0][k][:3], batches[2][k][3:]]) for k in range(2)]  # group 1 changed
    try:
        padded, _ = forward_logps(model, *_on(device, batches[0][0], prompt_mask, batches[0][1], completion_mask),
                                  share_prompts=False)
        packed = [forward_logps(model, *_on(device, ids, prompt_mask, completion_ids, completion_mask),
                                share_prompts=share_prompts, padding_free=True, trees=trees)[0]
                  for trees in (False, True) for ids, completion_ids in batches]
    except (TypeError, ValueError, RuntimeError) as err:
        raise UserError(f"grpo.padding_free: {name} cannot run packed rows ({type(err).__name__}: {err}); "
                        "set grpo.padding_free: false") from err
    mask = completion_mask.to(device)
    gap = (packed[0] - padded).float()[mask].abs().max().item()
    gap = max(gap, (packed[3] - padded).float()[mask].abs().max().item())  # the prefix-tree layout
    leak = max(max((packed[k + 1] - packed[k])[3:][mask[3:]].abs().max().item(),
                   (packed[k + 2] - packed[k])[:3][mask[:3]].abs().max().item()) for k in (0, 3))
    tolerance = 1e-3 if next(model.parameters()).dtype == torch.float32 else 0.1  # 16-bit weights round more
    if leak > 1e-6 or gap > tolerance:
        raise UserError(f"grpo.padding_free: {name} does not keep attention within each packed sequence (packed "
                        f"log-probs move by {leak:.2g} with another sequence's tokens and differ from the padded "
                        f"forward's by {gap:.2g}); use sdpa, eager or flash attention, or set grpo.padding_free: false")


def _on(device: Any, *tensors: Tensor) -> list[Tensor]:
    return [tensor.to(device) for tensor in tensors]


def _logits_at(model: Any, packed: Packed, which: Tensor, **kwargs: Any) -> tuple[Tensor, Tensor]:
    """Logits (n, V) at the packed logit positions ``which`` (N,) bool selects, from one forward over the packed rows
    (only the columns some row needs go through the output layer); and ``which``."""
    rows, columns = packed.logit_rows[which], packed.logit_cols[which]  # (n,)
    kept, where = torch.unique(columns, return_inverse=True)  # (K,) the columns any row needs
    logits = model(input_ids=packed.input_ids, position_ids=packed.position_ids, logits_to_keep=kept,
                   **kwargs).logits  # (R, K, V)
    return logits[rows, where], which  # (n, V)


def _config(model: Any) -> Any:
    """The transformers config under DDP/DeepSpeed (``.module``) and PEFT wrappers (which forward ``.config``)."""
    return getattr(getattr(model, "module", model), "config", None)


def _full_attention(config: Any, length: int) -> bool:
    """Every layer attends to the whole sequence so far, for sequences up to ``length`` tokens: full attention, or a
    sliding window at least that long (the shared-prompt mask has no window)."""
    window = getattr(config, "sliding_window", None)
    kinds = set(getattr(config, "layer_types", None) or ["full_attention"] + (["sliding_attention"] if window else []))
    return kinds <= {"full_attention", "sliding_attention"} and (
        "sliding_attention" not in kinds or window is None or window >= length)


def _distinct_prompts(prompt_ids: Tensor, prompt_mask: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """Rows starting a run of equal prompts (U,) and each row's run (B,), or (None, None) when no prompt repeats."""
    same = (prompt_ids[1:] == prompt_ids[:-1]).all(1) & (prompt_mask[1:] == prompt_mask[:-1]).all(1)  # (B-1,)
    if not bool(same.any()):
        return None, None
    starts = torch.cat([torch.ones(1, dtype=torch.bool, device=same.device), ~same])  # (B,)
    return starts.nonzero().squeeze(1), starts.long().cumsum(0) - 1
