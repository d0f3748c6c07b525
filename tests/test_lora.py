"""utils.lora: the one PEFT wrapper (adapters where asked, one-line errors naming the caller's key) and the one merge
(``merged_weights`` reads the sums, ``merge_lora`` writes them; both equal PEFT's own merge)."""

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel

from prmloop.data.task_tokenizer import build_task_tokenizer
from prmloop.policy import lora
from prmloop.policy.rollout import encode_prompts
from prmloop.policy.tiny import tiny_random_model
from prmloop.utils.errors import UserError
from prmloop.utils.lora import add_lora, is_lora, merge_lora, merged_weights

pytest.importorskip("peft")

CONFIG = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                     num_key_value_heads=2, max_position_embeddings=16)
IDS = torch.tensor([[1, 5, 7, 3, 9]])


def trained_adapters(model):
    """``model`` with LoRA adapters whose B is no longer zero, as after some training (so the merge adds something)."""
    peft = add_lora(model, 4, 8, key="prm.lora_r")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return peft


def test_adapters_on_every_linear_layer_and_only_they_train():
    torch.manual_seed(0)
    peft = add_lora(LlamaModel(CONFIG), 4, 8, key="prm.lora_r")
    trainable = {name for name, p in peft.named_parameters() if p.requires_grad}
    # one layer: q, k, v, o, gate, up, down projections, each with lora_A and lora_B
    assert is_lora(peft) and len(trainable) == 7 * 2 and all("lora_" in name for name in trainable)


def test_a_module_the_model_lacks_is_one_line_naming_the_callers_key():
    with pytest.raises(UserError, match=r"^policy.lora_target_modules: 'c_attn': no module named \['c_attn'\] in "
                                        r"LlamaForCausalLM; use 'all-linear' or names such as \["):
        add_lora(LlamaForCausalLM(CONFIG), 4, 8, "c_attn", key="policy.lora_target_modules", task_type="CAUSAL_LM")
    with pytest.raises(UserError, match=r"^prm.lora_r: ' , ': no module named \[\]"):
        add_lora(LlamaModel(CONFIG), 4, 8, " , ", key="prm.lora_r")


def test_merged_weights_and_merge_lora_equal_peft_own_merge():
    torch.manual_seed(0)
    peft = trained_adapters(LlamaModel(CONFIG))
    with torch.no_grad():
        lora_output = peft(input_ids=IDS).last_hidden_state  # (1, T, H)
    peft_merged = copy.deepcopy(peft).merge_and_unload().state_dict()
    read = {name: value.clone() for name, value in merged_weights(peft)}
    assert is_lora(peft) and any("lora_" in name for name, _ in peft.named_parameters())  # reading changed nothing
    plain = merge_lora(peft)
    assert not is_lora(plain) and not any("lora_" in name or "base_layer" in name for name in plain.state_dict())
    assert read.keys() == peft_merged.keys() == plain.state_dict().keys()
    assert all(torch.equal(read[name], peft_merged[name]) for name in read)
    assert all(torch.equal(plain.state_dict()[name], peft_merged[name]) for name in read)
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=IDS).last_hidden_state, lora_output, atol=1e-5)


def test_a_plain_model_merges_to_itself():
    model = LlamaModel(CONFIG)
    assert merge_lora(model) is model
    assert dict(merged_weights(model)).keys() == model.state_dict().keys()


def test_merged_weights_of_a_plain_model_are_its_state_dict():
    model = tiny_random_model("llama", build_task_tokenizer(), seed=0)
    pushed = dict(merged_weights(model))
    assert list(pushed) == list(model.state_dict()) and all(torch.equal(pushed[k], v) for k, v in model.state_dict().items())


def test_merged_weights_of_a_lora_model_load_into_the_plain_base_and_match_it(tmp_path):
    tokenizer = build_task_tokenizer()
    peft = add_lora(tiny_random_model("llama", tokenizer, seed=0), 4, 8, task_type="CAUSAL_LM")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # lora_B starts at zero (no delta): give every adapter a real one
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))
    before = {name: p.detach().clone() for name, p in peft.named_parameters()}
    merged = dict(merged_weights(peft))
    assert all(torch.equal(before[name], p) for name, p in peft.named_parameters())  # the PEFT model is unchanged
    assert is_lora(peft) and not any("lora" in name or "base_layer" in name for name in merged)
    plain = tiny_random_model("llama", tokenizer, seed=1)
    plain.load_state_dict(merged, strict=True)  # every name is one the base model expects, and none is missing
    ids = torch.tensor([encode_prompts(tokenizer, ["12+30=\n"])[0]])
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=ids).logits, peft(input_ids=ids).logits, atol=1e-5)
    lora.save_merged(peft, tokenizer, tmp_path / "merged")  # the same merge as the export
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "merged" / "model.safetensors")
    assert all(torch.allclose(merged[name], value, atol=1e-6) for name, value in saved.items())
