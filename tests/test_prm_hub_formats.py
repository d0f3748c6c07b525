"""Tests for prm/hub_formats.py, prm/chat_turns.py and detection in prm/formats.py: hub PRM layouts scored as their own
code scores them (1e-5), built as tiny stand-ins in the REAL layouts (config names, auto_map, weight names, separators,
chat templates); the trust_remote_code gate; missing head weights refused by name; float32 loading."""

import importlib.util
import json
import sys

import pytest
import torch
from hub_fixtures import CHATML_TEMPLATE, build_hub_tokenizer
from safetensors.torch import load_file, save_file
from transformers import AutoModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from prmloop.prm.config import PRMConfig
from prmloop.prm.formats import detect_format, init_reward_model, load_reward_model
from prmloop.prm.model import StepRewardModel
from prmloop.utils.errors import UserError

QUESTION = "Tom has 5 apples and buys 7 more. How many apples does he have?"
SOLUTIONS = [["Tom has 5 + 7 = 12 apples.", "The answer is 12"], ["He has 5 - 7 = 2 apples.", "So 2 + 1 = 3.", "The answer is 3"]]
SIZES = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 512}

# The Qwen2.5-Math-PRM remote code, as its hub repo ships it (class names, attribute names, head shape, output).
QWEN_RM_CONFIG = '''from transformers import Qwen2Config


class Qwen2RMConfig(Qwen2Config):
    model_type = "qwen2"
'''
QWEN_RM_MODELING = '''import torch
from torch import nn
from transformers import Qwen2Model, Qwen2PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast

from .configuration_qwen2_rm import Qwen2RMConfig


class Qwen2ForProcessRewardModel(Qwen2PreTrainedModel):
    config_class = Qwen2RMConfig

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = 2
        self.model = Qwen2Model(config)
        self.score = nn.Sequential(nn.Linear(config.hidden_size, config.hidden_size), nn.ReLU(),
                                   nn.Linear(config.hidden_size, self.num_labels))
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return (self.score(hidden),)
'''
QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\\\boxed{}."


def _load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def qwen_tokenizer():
    tokenizer = build_hub_tokenizer("qwen2")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<extra_0>"]})
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


@pytest.fixture(scope="module")
def qwen_prm_dir(qwen_tokenizer, tmp_path_factory):
    """A tiny Qwen2.5-Math-PRM: its config/auto_map, remote code files, weight names and <extra_0> tokenizer."""
    path = tmp_path_factory.mktemp("qwen_prm")
    (path / "configuration_qwen2_rm.py").write_text(QWEN_RM_CONFIG)
    (path / "modeling_qwen2_rm.py").write_text(QWEN_RM_MODELING)
    package = path.name.replace("-", "_")
    (path / "__init__.py").write_text("")
    _load_module(path / "__init__.py", package)
    _load_module(path / "configuration_qwen2_rm.py", f"{package}.configuration_qwen2_rm")
    modeling = _load_module(path / "modeling_qwen2_rm.py", f"{package}.modeling_qwen2_rm")
    config_class = sys.modules[f"{package}.configuration_qwen2_rm"].Qwen2RMConfig
    config = config_class(vocab_size=len(qwen_tokenizer), tie_word_embeddings=False, **SIZES,
                          pad_token_id=qwen_tokenizer.pad_token_id)
    torch.manual_seed(3)
    model = modeling.Qwen2ForProcessRewardModel(config)
    torch.nn.init.normal_(model.score[2].weight, std=0.5)
    model.save_pretrained(path)
    (path / "__init__.py").unlink()
    saved = json.loads((path / "config.json").read_text())
    saved.update(architectures=["Qwen2ForProcessRewardModel"],
                 auto_map={"AutoConfig": "configuration_qwen2_rm.Qwen2RMConfig",
                           "AutoModel": "modeling_qwen2_rm.Qwen2ForProcessRewardModel"})
    (path / "config.json").write_text(json.dumps(saved))
    qwen_tokenizer.save_pretrained(path)
    return path


def test_qwen_math_prm_layout_is_detected_and_scores_as_its_own_code(qwen_prm_dir, qwen_tokenizer):
    assert set(load_file(str(qwen_prm_dir / "model.safetensors"))) >= {"score.0.weight", "score.2.bias"}
    assert detect_format(qwen_prm_dir) == "qwen_prm"
    prm = load_reward_model(qwen_prm_dir, PRMConfig())  # no trust_remote_code: read natively
    prompt = qwen_tokenizer.apply_chat_template(
        [{"role": "system", "content": QWEN_SYSTEM}, {"role": "user", "content": QUESTION}],
        tokenize=False, add_generation_prompt=True)
    scores = prm.score_steps([prompt] * 2, SOLUTIONS)
    reference = AutoModel.from_pretrained(qwen_prm_dir, trust_remote_code=True, dtype=torch.float32).eval()
    separator = qwen_tokenizer.encode("<extra_0>")[0]
    for steps, got in zip(SOLUTIONS, scores):  # Qwen's model card: the whole chat, steps joined by <extra_0>
        chat = qwen_tokenizer.apply_chat_template(
            [{"role": "system", "content": QWEN_SYSTEM}, {"role": "user", "content": QUESTION},
             {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"}], tokenize=False)
        ids = torch.tensor([qwen_tokenizer.encode(chat)])
        with torch.no_grad():
            logits = reference(input_ids=ids)[0][0]  # (T, 2)
        expected = torch.softmax(logits[ids[0] == separator], dim=-1)[:, 1]
        assert len(got) == len(steps) and got == pytest.approx(expected.tolist(), abs=1e-5)
    again = load_reward_model(qwen_prm_dir, PRMConfig()).score_steps([prompt], SOLUTIONS[:1])
    assert again[0] == pytest.approx(scores[0], abs=1e-6)  # the same on every load: no random head


def test_qwen_math_prm_as_token_classification_is_refused_by_key(qwen_prm_dir):
    with pytest.raises(UserError, match=r"lacks weights score.bias, score.weight; refusing to score with randomly"):
        load_reward_model(qwen_prm_dir, PRMConfig(format="token_classification", step_separator="<extra_0>"))
    with pytest.raises(UserError, match=r"prm.init: .* qwen_prm PRM, which prmloop scores with but cannot continue"):
        init_reward_model(qwen_prm_dir, PRMConfig(), "process")


def test_missing_token_classification_head_is_a_user_error(qwen_tokenizer, tmp_path):
    config = Qwen2Config(vocab_size=len(qwen_tokenizer), **SIZES, num_labels=2)
    torch.manual_seed(0)
    from transformers import AutoModelForTokenClassification

    AutoModelForTokenClassification.from_config(config).save_pretrained(tmp_path)
    qwen_tokenizer.save_pretrained(tmp_path)
    weights = load_file(str(tmp_path / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if not k.startswith("score.")}, str(tmp_path / "model.safetensors"),
              metadata={"format": "pt"})
    with pytest.raises(UserError, match=r"lacks weights score.bias, score.weight"):
        load_reward_model(tmp_path, PRMConfig(step_separator="<extra_0>"))


# ---------------------------------------------------------------- Skywork-o1-Open-PRM (value head)


@pytest.fixture(scope="module")
def skywork_dir(qwen_tokenizer, tmp_path_factory):
    """A tiny Skywork PRM: a Qwen2 causal LM's weights (lm_head included) + v_head.summary.*, arch Qwen2ForPrmModel."""
    path = tmp_path_factory.mktemp("skywork")
    torch.manual_seed(4)
    lm = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(qwen_tokenizer), tie_word_embeddings=False, **SIZES))
    lm.save_pretrained(path)
    weights = load_file(str(path / "model.safetensors"))
    weights["v_head.summary.weight"] = torch.randn(1, 32) * 0.5
    weights["v_head.summary.bias"] = torch.tensor([0.3])
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    saved = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**saved, "architectures": ["Qwen2ForPrmModel"]}))
    qwen_tokenizer.save_pretrained(path)
    return path


def _skywork_reference(path, tokenizer, problem, steps):
    """Skywork's prepare_input + PRM_MODEL forward (return_probs=True) + derive_step_rewards, for one solution."""
    lm = Qwen2ForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    weights = load_file(str(path / "model.safetensors"))
    ids, flags = tokenizer.encode(problem + "\n"), []
    flags = [0] * len(ids)
    step_token_id = tokenizer.encode("\n")[-1]
    for step in "\n".join(steps).split("\n"):
        step_ids = tokenizer.encode(step) + [step_token_id]
        ids += step_ids
        flags += [0] * (len(step_ids) - 1) + [1]
    with torch.no_grad():
        hidden = lm(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]  # (T, H)
    value = torch.sigmoid(hidden @ weights["v_head.summary.weight"].T + weights["v_head.summary.bias"])[:, 0]  # (T,)
    return value[torch.tensor(flags) == 1].tolist()


def test_skywork_value_head_prm_is_detected_and_scores_as_its_own_code(skywork_dir, qwen_tokenizer):
    assert detect_format(skywork_dir) == "value_head"
    prm = load_reward_model(skywork_dir, PRMConfig())
    scores = prm.score_steps([QUESTION + "\n"] * 2, SOLUTIONS)
    for steps, got in zip(SOLUTIONS, scores):
        assert got == pytest.approx(_skywork_reference(skywork_dir, qwen_tokenizer, QUESTION, steps), abs=1e-5)


# ---------------------------------------------------------------- RLHFlow chat-turn PRM

LLAMA3_TEMPLATE = (  # Llama-3.1-Instruct's turn markers (no system prompt injection)
    "{{- bos_token }}{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)


@pytest.fixture(scope="module")
def rlhflow_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("rlhflow")
    tokenizer = build_hub_tokenizer("llama")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>",
                                                                "<|eot_id|>"]})
    tokenizer.chat_template = LLAMA3_TEMPLATE
    torch.manual_seed(5)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), **SIZES)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, tokenizer


def test_chat_turn_prm_reads_plus_vs_minus_at_each_assistant_turn(rlhflow_dir):
    path, tokenizer = rlhflow_dir
    marker = tokenizer("<|start_header_id|>assistant<|end_header_id|>\n\n", add_special_tokens=False)["input_ids"]
    assert len(marker) > 1  # the assistant-turn marker is several tokens
    assert detect_format(path) == "causal_lm"
    with pytest.raises(UserError, match=r"prm.format=chat_turns"):
        load_reward_model(path, PRMConfig())
    prm = load_reward_model(path, PRMConfig(format="chat_turns"))
    scores = prm.score_steps([QUESTION] * 2, SOLUTIONS)
    lm = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    plus, minus = tokenizer.encode("+")[-1], tokenizer.encode("-")[-1]
    for steps, got in zip(SOLUTIONS, scores):  # RLHFlow's loop: one conversation per step prefix, logits[:, -3]
        conversation, expected = [], []
        for k, step in enumerate(steps):
            conversation.append({"content": QUESTION + " " + step if k == 0 else step, "role": "user"})
            conversation.append({"content": "+", "role": "assistant"})
            text = tokenizer.apply_chat_template(conversation, tokenize=False)
            ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
            with torch.no_grad():
                logits = lm(input_ids=ids).logits[:, -3, [plus, minus]]
            expected.append(torch.softmax(logits, dim=-1)[0, 0].item())
        assert got == pytest.approx(expected, abs=1e-5)
    short = load_reward_model(path, PRMConfig(format="chat_turns", max_length=60)).score_steps([QUESTION], SOLUTIONS[1:])
    assert short[0][0] == pytest.approx(scores[1][0], abs=1e-5) and short[0][-1] != short[0][-1]  # NaN past window
    with pytest.raises(UserError, match=r"prm.good_token: 'plus sign' is \d+ tokens"):
        load_reward_model(path, PRMConfig(format="chat_turns", good_token="plus sign"))


# ---------------------------------------------------------------- the remote-code gate, dtype


def test_checkpoints_with_their_own_code_need_trust_remote_code(tmp_path, qwen_prm_dir):
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"architectures": ["FooForReward"], "model_type": "qwen2",
                                                 "auto_map": {"AutoModel": "modeling_foo.FooForReward"}}))
    with pytest.raises(UserError, match=r"FooForReward.*own model code \(AutoModel\) that prmloop does not implement"):
        load_reward_model(odd, PRMConfig())


def test_prms_load_in_float32_even_from_bf16_checkpoints(qwen_tokenizer, tmp_path):
    torch.manual_seed(0)
    lm = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(qwen_tokenizer), **SIZES, dtype="bfloat16"))
    lm.to(torch.bfloat16).save_pretrained(tmp_path / "lm")
    qwen_tokenizer.save_pretrained(tmp_path / "lm")
    assert json.loads((tmp_path / "lm" / "config.json").read_text())["dtype"] == "bfloat16"
    prm = StepRewardModel.from_policy(str(tmp_path / "lm"))
    assert {p.dtype for p in prm.parameters()} == {torch.float32}
    prm.save_pretrained(tmp_path / "prm")
    reloaded = load_reward_model(tmp_path / "prm", PRMConfig())
    assert {p.dtype for p in reloaded.parameters()} == {torch.float32}


# ---------------------------------------------------------------- by hub name, through the hub cache


def _into_hub_cache(source, cache, repo_id, monkeypatch):
    """Lay ``source``'s files out as huggingface_hub's cache holds a downloaded repo (snapshots/<commit>, refs/main)
    and go offline, so a hub name resolves to that copy as it does on a machine that downloaded it."""
    import shutil

    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(source, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))


def test_hub_name_of_a_qwen_prm_is_read_from_its_cached_snapshot(qwen_prm_dir, tmp_path, monkeypatch):
    local = load_reward_model(qwen_prm_dir, PRMConfig()).score_steps([QUESTION], SOLUTIONS[:1])
    _into_hub_cache(qwen_prm_dir, tmp_path / "hub", "Qwen/Qwen2.5-Math-PRM-7B", monkeypatch)
    by_name = load_reward_model("Qwen/Qwen2.5-Math-PRM-7B", PRMConfig())  # detected, head read from safetensors
    assert by_name.score_steps([QUESTION], SOLUTIONS[:1])[0] == pytest.approx(local[0], abs=1e-6)
    with pytest.raises(UserError, match=r"^prm: cannot get 'Qwen/Not-A-PRM' from the hub or its cache"):
        load_reward_model("Qwen/Not-A-PRM", PRMConfig())
