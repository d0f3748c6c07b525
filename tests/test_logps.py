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
    """3 prompts (4, 2, 5 tokens, left-padded) x 3 completions of 7, 2, 5 / 1, 6, 6 / 3, 7, 4 tokens (right-padded)."""
    generator = torch.Generator().manual_seed(seed)
    prompt_mask = torch.arange(5)[None, :] >= torch.tensor([1, 3, 0]).repeat_interleave(3)[:, None]  # (9, 5)
    prompt_ids = torch.randint(vocab, (3, 5), generator=generator).repeat_interleave(3, dim=0) * prompt_mask
    completion_mask = torch.arange(7)[None, :] < torch.tensor([7, 2, 5, 1, 6, 6, 3, 7, 4])[:, None]  # (9, 7)
    completion_ids = torch.randint(vocab, (9, 7), generator=generator) * completion_mask
    return prompt_ids, prompt_mask, completion_ids, completion_mask


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("arch", [*ARCHS, "tiny"])
def test_packed_logps_entropies_and_gradients_equal_the_padded_forwards(models, arch, attention):
    model = models[arch].eval()
    model.config._attn_implementation = attention
    prompt_ids, prompt_mask, completion_ids, mask = batch(model.get_input_embeddings().num_embeddings)
    tokens_seen = []
    hook = model.get_input_embeddings().register_forward_hook(lambda _m, args, _o: tokens_seen.append(args[0].numel()))
    results = {}
    for padding_free, share_prompts in [(False, False), (True, True), (True, False)]:
        model.zero_grad()
        tokens_seen.clear()
        logp, entropy = forward_logps(model, prompt_ids, prompt_mask, completion_ids, mask, with_entropy=True,
                                      share_prompts=share_prompts, padding_free=padding_free)
        (logp * mask * torch.linspace(0.5, 1.5, logp.numel()).view_as(logp)).sum().backward()  # unequal token weights
        results[padding_free, share_prompts] = logp, entropy, [p.grad.clone() for p in model.parameters()], sum(
            tokens_seen)
    hook.remove()
    padded, _, padded_grads, padded_tokens = results[False, False]
    for key in [(True, True), (True, False)]:
        logp, entropy, grads, tokens = results[key]
        assert torch.allclose(logp[mask], padded[mask], atol=1e-5), key
        assert (logp[~mask] == 0).all() and (entropy[~mask] == 0).all()
        assert torch.allclose(entropy[mask], results[False, False][1][mask], atol=1e-5), key
        for a, b in zip(grads, padded_grads):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), key
        # padded: 9 rows x (5 + 7) = 108 tokens; real: 33 prompt + 41 completion tokens
        assert tokens < padded_tokens == 108, key
    # prompts once (3 x 5) + packed completions; sequences packed end to end with a repeated prompt each
    assert results[True, True][3] < results[True, False][3] < padded_tokens


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
