"""Tests for prm/export.py: a PRM saved by prmloop with its defaults scores the same (1e-5) in plain transformers,
through the saved modeling_prmloop.py (log-prob features on) or the standard class (features off); the model card;
a saved dir without prm.json is an external checkpoint whose code runs only with prm.trust_remote_code."""

import json

import pytest
import torch
from hub_fixtures import build_hub_model
from transformers import AutoModelForTokenClassification, AutoTokenizer

from prmloop.prm.config import PRMConfig
from prmloop.prm.formats import load_reward_model
from prmloop.prm.hub_formats import RemoteTokenClassifierPRM
from prmloop.prm.model import StepRewardModel
from prmloop.utils.errors import UserError

PROMPT = "Q: Tom has 5 apples and buys 7 more. How many apples does he have?\n"
SOLUTIONS = [["Tom has 5 + 7 = 12 apples.", "The answer is 12"], ["He has 5 - 7 = 2 apples.", "So 2 + 1 = 3.", "#### 3"]]


def _saved_prm(tmp_path, arch, logp_features):
    """A prmloop PRM with a non-trivial head (and log-prob weights), saved; returns (dir, its own scores)."""
    policy = build_hub_model(arch, tmp_path / "policy")
    prm = StepRewardModel.from_policy(str(policy), logp_features=logp_features)
    torch.manual_seed(1)
    with torch.no_grad():
        torch.nn.init.normal_(prm.head.weight, std=0.3)
        if prm.logp_weight is not None:
            prm.logp_weight.copy_(torch.tensor([0.4, -0.3, 0.2]))
    scores = prm.score_steps([PROMPT] * 2, SOLUTIONS)
    return prm.save_pretrained(tmp_path / "prm"), scores


def _plain_scores(path, trust_remote_code):
    """What a user outside prmloop gets, following the saved README."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForTokenClassification.from_pretrained(path, trust_remote_code=trust_remote_code,
                                                            dtype=torch.float32).eval()
    sep = tokenizer("\n", add_special_tokens=False)["input_ids"]
    scores = []
    for steps in SOLUTIONS:
        ids = tokenizer(PROMPT)["input_ids"]
        prompt_length, reads = len(ids), []
        for step in steps:
            ids += tokenizer(step, add_special_tokens=False)["input_ids"] + sep
            reads.append(len(ids) - 1)
        extra = {"prompt_lengths": torch.tensor([prompt_length])} if trust_remote_code else {}
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids]), **extra).logits[0]  # (T, 2)
        scores.append(torch.softmax(logits[reads], dim=-1)[:, 1].tolist())
    return model, scores


@pytest.mark.parametrize("arch", ["llama", "qwen2"])  # untied LM head (saved as lm_head.weight) and tied
def test_default_prm_scores_the_same_through_its_saved_model_code(tmp_path, arch):
    path, scores = _saved_prm(tmp_path, arch, logp_features=True)
    config = json.loads((path / "config.json").read_text())
    assert config["auto_map"] == {"AutoModelForTokenClassification": "modeling_prmloop.PrmloopForTokenClassification"}
    model, plain = _plain_scores(path, trust_remote_code=True)
    assert type(model).__name__ == "PrmloopForTokenClassification"
    for got, expected in zip(plain, scores):
        assert got == pytest.approx(expected, abs=1e-5)
    _, standard = _plain_scores(path, trust_remote_code=False)  # the caveat the model card states: head part only
    assert max(abs(a - b) for g, e in zip(standard, scores) for a, b in zip(g, e)) > 1e-3
    reloaded = load_reward_model(path, PRMConfig()).score_steps([PROMPT] * 2, SOLUTIONS)
    assert reloaded == [pytest.approx(s, abs=1e-6) for s in scores]
    card = (path / "README.md").read_text()
    assert "trust_remote_code=True" in card and "'\\n'" in card and "1 = good" in card and "log-prob" in card


def test_prm_without_logp_features_is_exactly_standard_token_classification(tmp_path):
    path, scores = _saved_prm(tmp_path, "llama", logp_features=False)
    model, plain = _plain_scores(path, trust_remote_code=False)
    assert type(model).__name__ == "LlamaForTokenClassification"
    assert plain == [pytest.approx(s, abs=1e-5) for s in scores]
    assert "gives exactly prmloop's scores" in (path / "README.md").read_text()
    (path / "prm.json").unlink()  # now an external token-classification PRM that ships its own code
    with pytest.raises(UserError, match=r"prm.trust_remote_code: .* runs its own model code"):
        load_reward_model(path, PRMConfig())
    remote = load_reward_model(path, PRMConfig(trust_remote_code=True))
    assert isinstance(remote, RemoteTokenClassifierPRM)
    assert remote.score_steps([PROMPT] * 2, SOLUTIONS) == [pytest.approx(s, abs=1e-5) for s in scores]
