"""Tests for tests/hub_fixtures.py: the tiny hub-like model dirs load and follow each family's conventions; data files parse."""

import json
import operator
import re

import pytest
import torch
from hub_fixtures import (
    ARCHS,
    build_hub_model,
    gsm8k_rows,
    math500_rows,
    math_answers,
    write_gsm8k_file,
    write_math500_file,
    write_math_file,
)
from transformers import AutoModelForCausalLM, AutoTokenizer

from prmloop.data.loaders import load
from prmloop.data.task_tokenizer import load_tokenizer

TEXT = (
    "Tom has 5 + 7 = <<5+7=12>>12 apples.\nAfter giving away 3 he has 12 - 3 = <<12-3=9>>9 apples.\n#### 1,045\n\n"
    "We multiply: $\\frac{1}{2} \\cdot 90 = 45$.\n\nThe answer is 45, so $\\boxed{45}$.\n"
)
USER = [{"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture(scope="module")
def hub_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    return {arch: build_hub_model(arch, root / arch) for arch in ARCHS}


@pytest.mark.parametrize("arch", ARCHS)
def test_dir_loads_and_runs(hub_dirs, arch):
    path = hub_dirs[arch]
    model = AutoModelForCausalLM.from_pretrained(path)
    auto, direct = AutoTokenizer.from_pretrained(path), load_tokenizer(path)
    assert model.config.model_type == arch
    assert model.config.max_position_embeddings == 512
    assert auto(TEXT)["input_ids"] == direct(TEXT)["input_ids"]  # both loaders read the same tokenizer
    assert 400 <= len(direct) <= model.config.vocab_size
    batch = direct(TEXT, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (1, batch["input_ids"].shape[1], model.config.vocab_size)
    assert torch.isfinite(logits).all()
    out = model.generate(**batch, max_new_tokens=3, do_sample=False, pad_token_id=direct.eos_token_id)
    assert out.shape[1] <= batch["input_ids"].shape[1] + 3


@pytest.mark.parametrize("arch", ARCHS)
def test_round_trip_multiline_math(hub_dirs, arch):
    for tokenizer in (AutoTokenizer.from_pretrained(hub_dirs[arch]), load_tokenizer(hub_dirs[arch])):
        raw = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(raw) == TEXT
        assert tokenizer.decode(tokenizer(TEXT)["input_ids"], skip_special_tokens=True) == TEXT
        assert len(raw) < len(TEXT)  # BPE merges


def test_qwen2_conventions(hub_dirs):
    path = hub_dirs["qwen2"]
    tokenizer, model = load_tokenizer(path), AutoModelForCausalLM.from_pretrained(path)
    end, im_start, im_end = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    assert (im_start, im_end) == (end + 1, end + 2) and end >= 400  # special tokens after the BPE vocab
    assert tokenizer.bos_token is None and tokenizer.eos_token_id == im_end and tokenizer.pad_token_id == end
    assert tokenizer("x")["input_ids"] == tokenizer("x", add_special_tokens=False)["input_ids"]  # no BOS
    assert model.generation_config.eos_token_id == [im_end, end]
    assert (model.config.eos_token_id, model.config.pad_token_id, model.config.bos_token_id) == (im_end, end, end)
    assert model.config.vocab_size % 64 == 0 and model.config.vocab_size > len(tokenizer)  # padded, like the hub
    for tok in (tokenizer, AutoTokenizer.from_pretrained(path)):
        text = tok.apply_chat_template(USER, tokenize=False, add_generation_prompt=True)
        assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
        assert "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n" in text
    assert type(AutoTokenizer.from_pretrained(path)).__name__ == "Qwen2Tokenizer"  # transformers rebuilds it


@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_llama_style_bos(hub_dirs, arch):
    path = hub_dirs[arch]
    model = AutoModelForCausalLM.from_pretrained(path)
    for tokenizer in (AutoTokenizer.from_pretrained(path), load_tokenizer(path)):
        assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
        assert tokenizer.pad_token is None and tokenizer.pad_token_id is None
        assert tokenizer("x")["input_ids"][0] == 1
        assert 1 not in tokenizer("x", add_special_tokens=False)["input_ids"]
        text = tokenizer.apply_chat_template(USER, tokenize=False, add_generation_prompt=True)
        assert text.startswith("<s>")
        assert tokenizer(text)["input_ids"][:2] == [1, 1]  # the hub pitfall: a rendered template gets a second BOS
        assert tokenizer(text, add_special_tokens=False)["input_ids"][:2] != [1, 1]
    assert model.generation_config.eos_token_id == 2 and model.config.bos_token_id == 1
    if arch == "mistral":
        assert text == "<s>[INST] What is 2 + 3? [/INST]"
    else:
        assert text == "<s>### User:\nWhat is 2 + 3?\n\n### Assistant:\n"


def test_gpt2_conventions(hub_dirs):
    path = hub_dirs["gpt2"]
    model = AutoModelForCausalLM.from_pretrained(path)
    for tokenizer in (AutoTokenizer.from_pretrained(path), load_tokenizer(path)):
        assert tokenizer.chat_template is None
        assert tokenizer.bos_token == tokenizer.eos_token == tokenizer.unk_token == "<|endoftext|>"
        assert tokenizer.pad_token is None
        assert tokenizer.eos_token_id == len(tokenizer) - 1
        assert tokenizer("x")["input_ids"] == tokenizer("x", add_special_tokens=False)["input_ids"]
    assert model.generation_config.eos_token_id == model.config.bos_token_id == len(tokenizer) - 1


def test_chat_template_switch_and_determinism(tmp_path):
    assert load_tokenizer(build_hub_model("qwen2", tmp_path / "a", chat_template=False)).chat_template is None
    with pytest.raises(ValueError):
        build_hub_model("gpt2", tmp_path / "b", chat_template=True)
    with pytest.raises(ValueError):
        build_hub_model("bert", tmp_path / "c")
    one, two = build_hub_model("llama", tmp_path / "d", seed=3), build_hub_model("llama", tmp_path / "e", seed=3)
    assert (one / "tokenizer.json").read_bytes() == (two / "tokenizer.json").read_bytes()
    assert (one / "model.safetensors").read_bytes() == (two / "model.safetensors").read_bytes()


_ANNOTATION = re.compile(r"<<(\d+)([-+*/])(\d+)=(\d+)>>")
_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


def test_gsm8k_file_loads_with_correct_arithmetic(tmp_path):
    rows = gsm8k_rows(8)
    path = write_gsm8k_file(tmp_path / "gsm8k.jsonl", n=8)
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows
    problems, skipped = load("gsm8k", path)
    assert skipped == 0 and len(problems) == 8
    assert any(re.search(r"#### \d{1,3},\d{3}$", row["answer"]) for row in rows)  # thousands separators occur
    for row, problem in zip(rows, problems):
        annotations = _ANNOTATION.findall(row["answer"])
        assert len(annotations) == 2
        for left, op, right, result in annotations:
            assert _OPS[op](int(left), int(right)) == int(result)
        assert problem.answer == annotations[-1][3]
        assert problem.question == row["question"]
        assert len(problem.reference_steps) == 2 and not any("<<" in step for step in problem.reference_steps)


def test_math_and_math500_files_load(tmp_path):
    problems, skipped = load("math", write_math_file(tmp_path / "math.jsonl", n=6))
    assert skipped == 0
    assert [p.answer for p in problems] == math_answers(6)
    assert "\\frac{1}{2}" in math_answers(6) and any(a.isdigit() for a in math_answers(6))
    assert all(2 <= len(p.reference_steps) <= 3 for p in problems)
    assert all(p.reference_steps[-1].rstrip(".$").endswith("}") for p in problems)
    rows = math500_rows(4)
    problems, skipped = load("math", write_math500_file(tmp_path / "math500.jsonl", n=4))
    assert skipped == 0
    assert [p.id for p in problems] == [row["unique_id"] for row in rows]
    assert [p.answer for p in problems] == [row["answer"] for row in rows] == math_answers(4)
    assert set(rows[0]) == {"problem", "solution", "answer", "subject", "level", "unique_id"}
