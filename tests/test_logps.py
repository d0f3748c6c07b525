"""Tests for policy/logps.py's padding-free path: packed log-probs, entropies and gradients equal the padded forward's
on tiny random Qwen2/Llama/GPT-2/Mistral models and the embedded policy, and models that would mix sequences are
refused."""

import sys
from pathlib import Path

import pytest
import torch
from transformers import AttentionInterface, AutoModelForCausalLM
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from prmloop.data.task_tokenizer import build_task_tokenizer
from prmloop.policy import logps
from prmloop.policy.config import PolicyConfig
from prmloop.policy.logps import check_padding_free, forward_logps
from prmloop.policy.tiny import build_tiny_llama
from prmloop.utils.errors import UserError

sys.path.insert(0, str(Path(__file__).parent))
from hub_fixtures import ARCHS, build_hub_model
from test_grpo import one_thread  # noqa: F401 - one_thread is an autouse fixture


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    built = {arch: AutoModelForCausalLM.from_pretrained(build_hub_model(arch, root / arch)) for arch in ARCHS}
    built["tiny"] = build_tiny_llama(PolicyConfig(hidden_size=32, num_layers=2), build_task_tokenizer(), seed=0)
    return built


def batch(vocab: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """3 prompts (4, 2, 5 tokens, left-padded) x 3 completions of 7, 2, 5 / 1, 6, 6 / 3, 7, 4 tokens (right-padded);
    row 1 starts with row 0's first 2 tokens, row 5 with row 4's first 3 (prefixes a prefix tree runs once)."""
    generator = torch.Generator().manual_seed(seed)
    prompt_mask = torch.arange(5)[None, :] >= torch.tensor([1, 3, 0]).repeat_interleave(3)[:, None]  # (9, 5)
    prompt_ids = torch.randint(vocab, (3, 5), generator=generator).repeat_interleave(3, dim=0) * prompt_mask
    completion_mask = torch.arange(7)[None, :] < torch.tensor([7, 2, 5, 1, 6, 6, 3, 7, 4])[:, None]  # (9, 7)
    completion_ids = torch.randint(vocab, (9, 7), generator=generator)
    completion_ids[1, :2], completion_ids[5, :3] = completion_ids[0, :2], completion_ids[4, :3]
    return prompt_ids, prompt_mask, completion_ids * completion_mask, completion_mask


LAYOUTS = {  # (padding_free, share_prompts, trees) -> tokens through the model
    "padded": ((False, False, None), 9 * (5 + 7)),
    "prompt cache": ((True, True, False), None),
    "sequences": ((True, False, False), None),
    # items: prompt + tree nodes = 4 + (6 + 0 + 4), 2 + (0 + 5 + 2), 5 + (2 + 6 + 3): 14, 9, 16 -> rows of 16: 3 x 16
    "trees": ((True, True, True), 3 * 16),
    "trees, gradient checkpointing": ((True, False, True), 3 * 16),
}


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("arch", [*ARCHS, "tiny"])
def test_packed_logps_entropies_and_gradients_equal_the_padded_forwards(models, arch, attention):
    model = models[arch].eval()
    model.config._attn_implementation = attention
    prompt_ids, prompt_mask, completion_ids, mask = batch(model.get_input_embeddings().num_embeddings)
    tokens_seen = []
    hook = model.get_input_embeddings().register_forward_hook(lambda _m, args, _o: tokens_seen.append(args[0].numel()))
    results = {}
    for name, ((padding_free, share_prompts, trees), _) in LAYOUTS.items():
        model.zero_grad()
        tokens_seen.clear()
        logp, entropy = forward_logps(model, prompt_ids, prompt_mask, completion_ids, mask, with_entropy=True,
                                      share_prompts=share_prompts, padding_free=padding_free, trees=trees)
        (logp * mask * torch.linspace(0.5, 1.5, logp.numel()).view_as(logp)).sum().backward()  # unequal token weights
        results[name] = logp, entropy, [p.grad.clone() for p in model.parameters()], sum(tokens_seen)
    hook.remove()
    padded, padded_entropy, padded_grads, padded_tokens = results["padded"]
    for name, (logp, entropy, grads, tokens) in results.items():
        assert torch.allclose(logp[mask], padded[mask], atol=1e-5), name
        assert (logp[~mask] == 0).all() and (entropy[~mask] == 0).all() or name == "padded"
        assert torch.allclose(entropy[mask], padded_entropy[mask], atol=1e-5), name
        for a, b in zip(grads, padded_grads):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), name
        assert tokens == LAYOUTS[name][1] or LAYOUTS[name][1] is None, name
    # real: 33 prompt + 41 completion tokens; prompts once (3 x 5) + packed completions; a prompt per sequence
    assert results["prompt cache"][3] < results["sequences"][3] < padded_tokens


def test_the_check_passes_where_packing_is_kept_and_refuses_where_sequences_would_mix(models):
    model = models["qwen2"].eval()
    for attention in ("sdpa", "eager"):
        model.config._attn_implementation = attention
        check_padding_free(model, share_prompts=True)
        check_padding_free(model, share_prompts=False)
    AttentionInterface.register("sdpa_without_masks", sdpa_attention_forward)  # no mask function: packing is ignored
    model.config._attn_implementation = "sdpa_without_masks"  # transformers builds no mask: one causal row
    try:
        with pytest.raises(UserError, match=r"^grpo.padding_free: Qwen2ForCausalLM \(attention 'sdpa_without_masks'\) "
                                            r"does not keep attention within each packed sequence"):
            check_padding_free(model, share_prompts=True)
    finally:
        model.config._attn_implementation = "sdpa"


def test_a_model_that_cannot_take_packed_rows_is_refused_in_one_line(models):
    model = models["llama"].eval()

    class NoPositions(torch.nn.Module):  # a forward without position_ids: packing cannot restart positions
        config = model.config

        def __init__(self):
            super().__init__()
            self.inner = model

        def get_input_embeddings(self):
            return model.get_input_embeddings()

        def forward(self, input_ids, attention_mask=None, logits_to_keep=0, use_cache=False, **kwargs):
            if "position_ids" in kwargs:
                raise TypeError("forward() got an unexpected keyword argument 'position_ids'")
            return model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep)

    with pytest.raises(UserError, match=r"^grpo.padding_free: NoPositions .* cannot run packed rows \(TypeError: "):
        check_padding_free(NoPositions(), share_prompts=False)


def test_prefix_trees_are_chosen_where_they_at_least_halve_the_tokens(models, monkeypatch):
    model = models["tiny"].eval()
    model.config._attn_implementation = "sdpa"
    prompt_ids, prompt_mask, completion_ids, mask = batch(model.get_input_embeddings().num_embeddings)
    chosen, pack_trees = [], logps.pack_trees
    monkeypatch.setattr(logps, "pack_trees", lambda *args: chosen.append(1) or pack_trees(*args))
    # the batch: 11 prompt + 28 node tokens in trees against 11 + 32 prompt-once tokens: no trees
    forward_logps(model, prompt_ids, prompt_mask, completion_ids, mask, padding_free=True)
    assert not chosen
    # each group's three completions the same 7, 6 and 7 tokens: 11 + (6 + 5 + 6) in trees against 11 + 3 x 17
    same = torch.arange(9) // 3 * 3  # each row's group's first row
    completion_ids, mask = completion_ids[same], torch.arange(7)[None, :] < torch.tensor([7, 6, 7])[same // 3, None]
    completion_ids = completion_ids * mask
    with torch.no_grad():
        got, _ = forward_logps(model, prompt_ids, prompt_mask, completion_ids, mask, padding_free=True)
        padded, _ = forward_logps(model, prompt_ids, prompt_mask, completion_ids, mask, share_prompts=False)
    assert chosen and torch.allclose(got[mask], padded[mask], atol=1e-5)
