"""Tests for policy/tiny.py: init_policy saves a model the Auto classes reload identically; tiny hub-style archs."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from prmloop.data.task_tokenizer import build_task_tokenizer
from prmloop.policy.config import PolicyConfig
from prmloop.policy.tiny import build_tiny_llama, init_policy, tiny_random_model


def test_init_policy_reloads_with_same_logits(tmp_path):
    cfg = PolicyConfig(hidden_size=32, num_layers=1, num_heads=2)
    out_dir = init_policy(cfg, tmp_path, seed=0)
    original = build_tiny_llama(cfg, build_task_tokenizer(), seed=0).eval()
    model = AutoModelForCausalLM.from_pretrained(out_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    assert tokenizer.padding_side == "left"
    input_ids = torch.tensor([tokenizer("7 + 5 = 12\n")["input_ids"]])  # (1, T)
    with torch.no_grad():
        expected = original(input_ids).logits
        got = model(input_ids).logits
    assert got.shape == (1, 11, len(tokenizer))
    assert torch.allclose(got, expected, atol=1e-6)


def test_init_policy_is_seeded(tmp_path):
    cfg = PolicyConfig(hidden_size=32, num_layers=1, num_heads=2)
    a = AutoModelForCausalLM.from_pretrained(init_policy(cfg, tmp_path / "a", seed=0))
    b = AutoModelForCausalLM.from_pretrained(init_policy(cfg, tmp_path / "b", seed=0))
    c = AutoModelForCausalLM.from_pretrained(init_policy(cfg, tmp_path / "c", seed=1))
    weight = "model.embed_tokens.weight"
    assert torch.equal(a.state_dict()[weight], b.state_dict()[weight])
    assert not torch.equal(a.state_dict()[weight], c.state_dict()[weight])


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tiny_random_model_forward(arch):
    tokenizer = build_task_tokenizer()
    model = tiny_random_model(arch, tokenizer).eval()
    batch = tokenizer(["7 + 5", "12"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits  # (B, T, V)
    assert logits.shape == (2, 5, len(tokenizer))
    assert torch.isfinite(logits).all()


def test_tiny_random_model_unknown_arch():
    with pytest.raises(ValueError, match="gpt2"):
        tiny_random_model("gpt2", build_task_tokenizer())
