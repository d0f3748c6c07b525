"""Tests for prm/formats.py: external PRMs (Math-Shepherd style, token classification with 2 classes or 1 logit) as
scorers, GRPO rewards and `prm eval` targets; detection; continuing training never drops a trained head."""

import json

import pytest
import torch
from fixtures_formats import PROCESSBENCH_ROWS
from transformers import AutoModelForTokenClassification, Qwen2Config

from prmloop.data.config import DataConfig
from prmloop.data.schema import Problem
from prmloop.data.task_tokenizer import build_bpe_tokenizer
from prmloop.data.tasks import get_task
from prmloop.policy.rewards import compute_rewards
from prmloop.policy.tiny import tiny_random_model
from prmloop.prm.config import PRMConfig
from prmloop.prm.formats import detect_format, init_reward_model, load_reward_model
from prmloop.prm.scoring_eval import evaluate_file
from prmloop.utils.errors import UserError

PROMPT = "Q: 2 + 3 * 4?\n"
STEPS = [["2 + 3 = 5", "5 * 4 = 20", "The answer is 20"], ["2 + 3 = 6", "The answer is 24"]]


@pytest.fixture(scope="module")
def tokenizer():
    tok = build_bpe_tokenizer(["2 + 3 = 5\n5 * 4 = 20\nThe answer is 20"] * 10, vocab_size=300)
    tok.add_special_tokens({"additional_special_tokens": ["ки", "<extra_0>"]})
    return tok


@pytest.fixture(scope="module")
def shepherd_dir(tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("shepherd")
    tiny_random_model("llama", tokenizer, seed=1).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _token_classifier(tokenizer, path, num_labels):
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, num_labels=num_labels,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(2)
    model = AutoModelForTokenClassification.from_config(config)
    torch.nn.init.normal_(model.score.weight, std=0.5)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model.eval()


def _ids_and_tags(tokenizer, steps, tag):
    """What an external PRM expects: prompt, then each step followed by its tag token (by hand)."""
    ids = tokenizer(PROMPT)["input_ids"]
    tags = []
    for step in steps:
        ids = ids + tokenizer(step, add_special_tokens=False)["input_ids"] + tokenizer(tag, add_special_tokens=False)["input_ids"]
        tags.append(len(ids) - 1)
    return torch.tensor([ids]), tags


def test_math_shepherd_prm_reads_p_good_vs_p_bad_at_the_tag(tokenizer, shepherd_dir):
    cfg = PRMConfig(format="math_shepherd", step_separator="ки", good_token="+", bad_token="-")
    prm = load_reward_model(shepherd_dir, cfg)
    scores = prm.score_steps([PROMPT] * 2, STEPS)
    lm = tiny_random_model("llama", tokenizer, seed=1).eval()
    good, bad = tokenizer.convert_tokens_to_ids(["+", "-"])
    for steps, got in zip(STEPS, scores):
        ids, tags = _ids_and_tags(tokenizer, steps, "ки")
        with torch.no_grad():
            logits = lm(input_ids=ids).logits[0]  # (T, V)
        expected = torch.softmax(logits[tags][:, [bad, good]], dim=-1)[:, 1]
        assert got == pytest.approx(expected.tolist(), abs=1e-5)
    with pytest.raises(UserError, match=r"a causal LM, not a reward model.*prm.format=math_shepherd"):
        load_reward_model(shepherd_dir, PRMConfig())


@pytest.mark.parametrize("num_labels", [2, 1])
def test_token_classification_prm_reads_the_separator(tokenizer, tmp_path, num_labels):
    model = _token_classifier(tokenizer, tmp_path / "tc", num_labels)
    assert detect_format(tmp_path / "tc") == "token_classification"
    with pytest.raises(UserError, match=r"prm.step_separator: .* external token-classification PRM"):
        load_reward_model(tmp_path / "tc", PRMConfig(step_separator=""))
    prm = load_reward_model(tmp_path / "tc", PRMConfig(step_separator="<extra_0>"))
    scores = prm.score_steps([PROMPT] * 2, STEPS)
    for steps, got in zip(STEPS, scores):
        ids, tags = _ids_and_tags(tokenizer, steps, "<extra_0>")
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0][tags]  # (K, C)
        expected = torch.softmax(logits, -1)[:, 1] if num_labels == 2 else torch.sigmoid(logits[:, 0])
        assert got == pytest.approx(expected.tolist(), abs=1e-5)


def test_external_prms_are_grpo_rewards_and_eval_targets(tokenizer, shepherd_dir, tmp_path):
    _token_classifier(tokenizer, tmp_path / "tc", 2)
    external = [
        load_reward_model(shepherd_dir, PRMConfig(format="math_shepherd", step_separator="ки")),
        load_reward_model(tmp_path / "tc", PRMConfig(step_separator="<extra_0>")),
    ]
    bench = tmp_path / "processbench.jsonl"
    bench.write_text("".join(json.dumps(row) + "\n" for row in PROCESSBENCH_ROWS))
    check = get_task(DataConfig(task="gsm8k")).is_correct
    for prm in external:
        problem = Problem("p", "2 + 3 * 4?", "20")
        rewards = compute_rewards([problem] * 2, [PROMPT] * 2, ["\n".join(s) for s in STEPS], STEPS, "process", "prm",
                                  check, prm)
        assert [len(row) for row in rewards.steps] == [3, 2] and rewards.is_finite()
        metrics = evaluate_file(prm, bench, "processbench", prompt_of=lambda question: question + "\n")
        assert metrics["n_examples"] == len(PROCESSBENCH_ROWS) and 0.0 <= metrics["step_acc"] <= 1.0


def test_continuing_a_token_classification_prm_keeps_its_head(tokenizer, tmp_path):
    saved = _token_classifier(tokenizer, tmp_path / "tc", 2)
    model, how = init_reward_model(tmp_path / "tc", PRMConfig(step_separator="<extra_0>"), "process")
    assert how == f"continued token_classification reward model {tmp_path / 'tc'}"
    assert torch.equal(model.head.weight, saved.score.weight) and torch.equal(model.head.bias, saved.score.bias)
    tiny_random_model("llama", tokenizer).save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    fresh, how = init_reward_model(tmp_path / "lm", PRMConfig(), "process")
    assert "newly initialised head (bad, good)" in how and torch.count_nonzero(fresh.head.weight) == 0


def test_undetectable_or_unknown_formats_are_one_line(tmp_path):
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text(json.dumps({"architectures": ["BertForMaskedLM"]}))
    with pytest.raises(UserError, match=r"cannot tell what kind of reward model .*BertForMaskedLM"):
        load_reward_model(tmp_path / "odd", PRMConfig())
    with pytest.raises(UserError, match=r"prm.format: unknown 'orm'"):
        load_reward_model(tmp_path / "odd", PRMConfig(format="orm"))
    with pytest.raises(UserError, match=r"no such directory"):
        load_reward_model(tmp_path / "missing", PRMConfig())
