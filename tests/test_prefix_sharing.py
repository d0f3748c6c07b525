"""policy/prefix_sharing.py: the decode attention over shared prompt keys equals attention over each row's own copy
(by hand and against the plain formula), and sampling with it gives what the plain cache gives, on real layouts; a
model whose attention does not come through it is caught and sampled the plain way."""

import math
from contextlib import nullcontext

import pytest
import torch
from hub_fixtures import build_hub_model
from test_kv_cache import _policy
from test_rollout import one_thread  # noqa: F401 - autouse: one torch thread
from transformers import AutoModelForCausalLM, AutoTokenizer

from prmloop.policy import prefix_sharing, rollout
from prmloop.policy.prefix_sharing import PrefixSharingUnsupported, decode_attention, prefix_sharing_attention, slots
from prmloop.policy.rollout import HFBackend, encode_prompts, sample_rollout


def test_slots_by_hand():
    assert slots(torch.tensor([0, 1, 0, 2, 1])).tolist() == [0, 0, 1, 0, 1]
    assert slots(torch.tensor([3, 3, 3])).tolist() == [0, 1, 2]


def test_decode_attention_by_hand():
    # one row, one head, D = 1, scaling 1; prompt [pad, k=1 v=2], own [k=0 v=4]; q = 1
    # scores: pad masked, 1, 0 -> weights e/(e+1), 1/(e+1) -> output (2e + 4)/(e + 1)
    out = decode_attention(torch.ones(1, 1, 1, 1), torch.tensor([[[[9.0], [1.0]]]]), torch.tensor([[[[7.0], [2.0]]]]),
                           torch.tensor([[False, True]]), torch.tensor([0]), torch.tensor([0]),
                           torch.zeros(1, 1, 1, 1), torch.full((1, 1, 1, 1), 4.0), scaling=1.0)
    assert out.shape == (1, 1, 1, 1)
    assert out.item() == pytest.approx((2 * math.e + 4) / (math.e + 1), abs=1e-6)


@pytest.mark.parametrize("group", [[0, 0, 0, 1, 1, 1], [1, 0, 1, 2, 0, 1]], ids=["dense", "scattered"])
def test_decode_attention_is_attention_over_each_rows_prompt_and_own_keys(group):
    torch.manual_seed(0)
    heads, kv_heads, dim, prompt_len, own_len = 4, 2, 8, 5, 3
    group = torch.tensor(group)
    units = int(group.max()) + 1
    prompt_keys, prompt_values = torch.randn(units, kv_heads, prompt_len, dim), torch.randn(units, kv_heads, prompt_len,
                                                                                            dim)
    prompt_mask = torch.ones(units, prompt_len, dtype=torch.bool)
    prompt_mask[0, :2] = False  # left padding
    rows = len(group)
    query, keys, values = (torch.randn(rows, heads, 1, dim), torch.randn(rows, kv_heads, own_len, dim),
                           torch.randn(rows, kv_heads, own_len, dim))
    got = decode_attention(query, prompt_keys, prompt_values, prompt_mask, group, slots(group), keys, values, 0.3)
    full_keys = torch.cat([prompt_keys[group], keys], dim=2).repeat_interleave(heads // kv_heads, dim=1)
    full_values = torch.cat([prompt_values[group], values], dim=2).repeat_interleave(heads // kv_heads, dim=1)
    visible = torch.cat([prompt_mask[group], torch.ones(rows, own_len, dtype=torch.bool)], dim=1)[:, None, None, :]
    expected = torch.nn.functional.scaled_dot_product_attention(query, full_keys, full_values, attn_mask=visible,
                                                                scale=0.3)
    assert torch.allclose(got, expected, atol=1e-6)


def test_attention_refuses_what_it_cannot_compute():
    layer = prefix_sharing.PrefixSharingLayer(torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 4, 2),
                                              torch.ones(1, 4, dtype=torch.bool), torch.tensor([0]), capacity=4)
    keys, values = layer.update(torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 1, 2))
    query = torch.zeros(1, 1, 1, 2)
    prefix_sharing_attention(None, query, keys, values, None, sliding_window=5)  # 4 + 1 tokens fit the window
    assert layer.calls == 1
    for kwargs in ({"sliding_window": 4}, {"softcap": 30.0}, {"s_aux": torch.zeros(1)}, {"dropout": 0.1}):
        with pytest.raises(PrefixSharingUnsupported):
            prefix_sharing_attention(None, query, keys, values, None, **kwargs)
    with pytest.raises(PrefixSharingUnsupported):  # keys that are not this cache's (e.g. repeated by the model)
        prefix_sharing_attention(None, query, keys.clone(), values, None)
    with pytest.raises(PrefixSharingUnsupported):  # more than one query token
        prefix_sharing_attention(None, torch.zeros(1, 1, 2, 2), keys, values, None)


def _model(kind, tmp_path):
    if kind in ("shipped", "qwen2-bpe"):
        return _policy("shipped" if kind == "shipped" else "qwen2")
    directory = build_hub_model(kind, tmp_path / kind)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    return AutoModelForCausalLM.from_pretrained(directory).eval(), tokenizer, ["Tom has 3 apples.", "What is 7 * 8?"]


def _sample(model, tokenizer, texts, share):
    backend = HFBackend(model, tokenizer, max_new_tokens=40, temperature=1.0, batch_size=16, share_prefixes=share)
    rollout = sample_rollout(backend, tokenizer, encode_prompts(tokenizer, texts) * 2, group_size=4, seed=3, step=1)
    return backend, rollout


@pytest.mark.parametrize("kind", ["shipped", "qwen2-bpe", "qwen2", "llama", "gpt2", "mistral"])
def test_sampling_with_shared_prefixes_gives_the_plain_caches_samples(kind, tmp_path):
    model, tokenizer, texts = _model(kind, tmp_path)
    texts = [texts[0], texts[1] + " and more words"]  # prompts of different lengths: left padding
    (shared_backend, shared), (_, plain) = (_sample(model, tokenizer, texts, share) for share in (True, False))
    assert shared_backend.share_prefixes  # it ran shared all along, on this architecture's real attention
    assert torch.equal(shared.completion_ids, plain.completion_ids)
    assert torch.allclose(shared.logp, plain.logp, atol=1e-5)
    if kind == "shipped":
        assert not shared.completion_mask.all()  # rows ended at different times: the loop compacted its cache


def test_a_model_whose_attention_bypasses_it_is_sampled_the_plain_way(monkeypatch, tmp_path):
    """The registry switch is undone, as for a model that calls its own attention: the loop notices on the first
    decode step and samples the batch with the plain cache."""
    model, tokenizer, texts = _model("qwen2-bpe", tmp_path)
    _, plain = _sample(model, tokenizer, texts, share=False)
    monkeypatch.setattr(prefix_sharing, "sharing_attention", lambda model: nullcontext())
    backend, got = _sample(model, tokenizer, texts, share=True)
    assert not backend.share_prefixes
    assert torch.equal(got.completion_ids, plain.completion_ids) and torch.equal(got.logp, plain.logp)
    assert model.config._attn_implementation != prefix_sharing.NAME


def test_the_attention_implementation_is_restored_after_sampling(tmp_path):
    model, tokenizer, texts = _model("llama", tmp_path)
    before = model.config._attn_implementation
    _sample(model, tokenizer, texts, share=True)
    assert model.config._attn_implementation == before
    assert rollout.prefix_sharing is prefix_sharing
