"""policy/kv_cache.py: the in-place growing KV cache layer holds exactly what transformers' DynamicLayer holds, forks
and compacts rows in place, and sampling with it gives the same tokens and log-probs."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.cache_utils import DynamicLayer

from prmloop.data.task_tokenizer import build_bpe_tokenizer
from prmloop.policy import rollout
from prmloop.policy.kv_cache import GrowingLayer, grow_in_place
from prmloop.policy.rollout import HFBackend, encode_prompts, sample_rollout
from prmloop.policy.tiny import tiny_random_model


def test_growing_layer_holds_what_dynamic_layer_holds_through_growth_selection_and_repeats():
    torch.manual_seed(0)
    first_k, first_v = torch.randn(3, 2, 4, 5), torch.randn(3, 2, 4, 6)  # value head dim may differ
    dynamic, growing = DynamicLayer(), GrowingLayer(capacity=6)
    for layer in (dynamic, growing):
        layer.update(first_k, first_v)
    rows = 3
    for index in range(5):  # 4 + 5 tokens > capacity 6
        k, v = torch.randn(rows, 2, 1, 5), torch.randn(rows, 2, 1, 6)
        expected, got = dynamic.update(k, v), growing.update(k, v)
        assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])
        assert growing.get_seq_length() == dynamic.get_seq_length() == 5 + index
        if index == 1:  # drop a row, then double the rest, as the sampling loop and the prefill do
            for layer in (dynamic, growing):
                layer.batch_select_indices(torch.tensor([0, 2]))
                layer.batch_repeat_interleave(2)
            rows = 4
            assert torch.equal(growing.keys, dynamic.keys)
    assert growing.get_mask_sizes(1) == dynamic.get_mask_sizes(1)


def test_grow_in_place_swaps_only_plain_dynamic_layers():
    cache = SimpleNamespace(layers=[DynamicLayer(), DynamicLayer(), "sliding"])
    cache.layers[0].update(torch.ones(1, 1, 2, 3), torch.zeros(1, 1, 2, 3))
    grow_in_place(cache, capacity=8)
    assert isinstance(cache.layers[0], GrowingLayer) and cache.layers[0].get_seq_length() == 2
    assert type(cache.layers[1]) is DynamicLayer  # empty: left alone
    assert cache.layers[2] == "sliding"
    assert torch.equal(cache.layers[0].keys, torch.ones(1, 1, 2, 3))


ROOT = Path(__file__).resolve().parents[1]
WARM_START = ROOT / "loop" / "warm_starts" / "sft-fd88599ed77d"


def _policy(kind: str):
    """The shipped warm start (a trained Llama that ends its answers) or a random Qwen2 on a BPE tokenizer."""
    if kind == "shipped":
        from prmloop.data.prompts import Prompter
        from prmloop.policy.config import PolicyConfig

        model, tokenizer = AutoModelForCausalLM.from_pretrained(WARM_START), AutoTokenizer.from_pretrained(WARM_START)
        prompter = Prompter.of(PolicyConfig(), tokenizer)
        return model.eval(), tokenizer, [prompter("12 + 39 = ?"), prompter("7 * 8 - 5 = ?")]
    tokenizer = build_bpe_tokenizer(["12 + 3 = 15\nAnswer: 15\n", "7 * 2 = 14\n14 - 1 = 13\n"] * 20, vocab_size=300)
    return tiny_random_model("qwen2", tokenizer, seed=0).eval(), tokenizer, ["7 * 2 = ?\n", "12 + 3 - 1 = ?\n"]


@pytest.mark.parametrize("kind", ["shipped", "qwen2"])
def test_sampling_with_the_growing_cache_gives_the_plain_caches_samples(kind, monkeypatch):
    """The growing cache also forks slots (rows that drew the same tokens run once, ``policy.slots``); transformers'
    own cache runs every row: the same tokens, and log-probs equal up to the float rounding of other batch sizes."""
    model, tokenizer, texts = _policy(kind)
    prompts = encode_prompts(tokenizer, texts)
    runs = []
    for grow in (True, False):
        if not grow:
            monkeypatch.setattr(rollout, "grow_in_place", lambda *args: None)
        backend = HFBackend(model, tokenizer, max_new_tokens=64, temperature=1.0, batch_size=16,
                            share_prefixes=False)  # the plain cache: the one grow_in_place serves
        runs.append(sample_rollout(backend, tokenizer, prompts, group_size=8, seed=3, step=1))
    grown, plain = runs
    assert not grown.completion_mask.all()  # rows ended at different times: the loop compacted its cache
    assert torch.equal(grown.completion_ids, plain.completion_ids)
    assert torch.allclose(grown.logp, plain.logp, atol=1e-6)
