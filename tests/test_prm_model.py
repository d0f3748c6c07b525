"""Tests for prm/model.py: reading at the separator, scoring by hand, the ideal-LM cases, save/load as a standard
token-classification checkpoint, and bad input."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForTokenClassification, LlamaConfig

from prmloop.data.schema import StepwiseExample
from prmloop.data.task_tokenizer import build_bpe_tokenizer, build_task_tokenizer
from prmloop.policy.tiny import tiny_random_model
from prmloop.prm.encoding import encode_solution, step_tensors
from prmloop.prm.features import span_logp_features, token_logp_and_margin
from prmloop.prm.metrics import first_error_index
from prmloop.prm.model import StepRewardModel
from prmloop.prm.train import build_items, collate_items
from prmloop.utils.errors import UserError

BPE_CORPUS = ["7 + 5 = 12\n12 * 3 = 36\nAnswer: 36", "3 × 4 = 12\n√16 = 4\nAnswer: 12"] * 20
PROMPT = "Q?\n"
SOLUTIONS = [["7 + 5 = 12", "12 * 3 = 36", "Answer: 36"], ["3 × 4 = 12", "√16 = 4", "Answer: 12"], ["1 + 1 = 2"]]


@pytest.fixture(scope="module")
def bpe():
    # merges cross newlines (" = 12\n", "4\nAnswer: ") when text is tokenized whole; the PRM tokenizes each step alone
    return build_bpe_tokenizer(BPE_CORPUS, vocab_size=280)


def flat(nested):
    return [x for inner in nested for x in inner]


def random_prm(tokenizer, arch="llama", mode="process", max_length=160, seed=0, logp=False):
    model = StepRewardModel.from_model(tiny_random_model(arch, tokenizer, seed), tokenizer, mode, max_length,
                                       logp_features=logp)
    torch.nn.init.normal_(model.head.weight, std=0.5, generator=torch.Generator().manual_seed(seed))  # a non-trivial head
    if logp:
        model.logp_weight.data = torch.tensor([0.7, -0.4, 0.3])
    return model.eval()


def test_char_tokenizer_reading_literal():
    tokenizer = build_task_tokenizer()
    newline = tokenizer.convert_tokens_to_ids("\n")
    prompt = "1 + 2 = ? (left to right)\n"  # 26 chars, one token each: tokens 0-25
    encoded = encode_solution(tokenizer, prompt, ["1 + 2 = 3", "Answer: 3"], max_length=160)
    # step 0 = tokens 26-34, its separator token 35; step 1 = tokens 36-44, its separator 45 (appended after the last).
    assert (encoded.step_token_indices, encoded.step_token_starts) == ([35, 45], [26, 36])
    assert len(encoded.input_ids) == 46 and encoded.num_steps == 2
    assert [encoded.input_ids[i] for i in (35, 45)] == [newline, newline]
    cut = encode_solution(tokenizer, prompt, ["1 + 2 = 3", "Answer: 3"], max_length=40)
    assert cut.step_token_indices == [35] and len(cut.input_ids) == 40  # step 1's separator (45) is past the window


def test_bpe_reading_keeps_each_separator_its_own_token(bpe):
    separator = bpe("\n", add_special_tokens=False)["input_ids"]
    assert len(separator) == 1
    for steps in SOLUTIONS:
        encoded = encode_solution(bpe, PROMPT, steps, max_length=160)
        for step, start, read in zip(steps, encoded.step_token_starts, encoded.step_token_indices):
            assert encoded.input_ids[read] == separator[0]
            assert bpe.decode(encoded.input_ids[start:read]) == step  # the step's own tokens, nothing merged across
    with pytest.raises(UserError, match=r"prm.step_separator: 'ки' is \d+ tokens for this tokenizer"):
        encode_solution(bpe, PROMPT, SOLUTIONS[0], 160, separator="ки")


class IdealBackbone(torch.nn.Module):
    """An LM that knows the right solution: its state at token t is +1 while the text so far is a prefix of the
    reference (prompt + steps, each followed by the separator), else −1."""

    def __init__(self, tokenizer, reference: str):
        super().__init__()
        self.tokenizer, self.reference = tokenizer, reference

    def forward(self, input_ids, attention_mask=None):
        states = torch.tensor([[[1.0 if self.reference.startswith(self.tokenizer.decode(row[: t + 1])) else -1.0]
                                for t in range(len(row))] for row in input_ids.tolist()])  # (B, T, 1)
        return type("Output", (), {"last_hidden_state": states})


def ideal_prm(tokenizer, reference: str) -> StepRewardModel:
    head = torch.nn.Linear(1, 2)
    with torch.no_grad():  # z = s_good - s_bad = 10 * state: P(good) ~ 1 on the reference path, ~ 0 off it
        head.weight.copy_(torch.tensor([[-5.0], [5.0]]))
        head.bias.zero_()
    return StepRewardModel(IdealBackbone(tokenizer, reference), head, tokenizer, LlamaConfig(), "process", 160)


def test_reading_at_the_separator_tells_14_from_the_start_of_144():
    tokenizer = build_task_tokenizer()
    prompt = "12 * 12 + 5 = ? (left to right)\n"
    right = ["12 * 12 = 144", "144 + 5 = 149", "Answer: 149"]
    prm = ideal_prm(tokenizer, prompt + "".join(step + "\n" for step in right))
    [ok] = prm.score_steps([prompt], [right])
    assert first_error_index(ok) == -1
    # "Answer: 14" is a prefix of "Answer: 149": read at its last character it looked right; at the separator it is not.
    [short_answer] = prm.score_steps([prompt], [[*right[:2], "Answer: 14"]])
    assert first_error_index(short_answer) == 2
    # "12 * 12 = 14" is flagged at its own step, not one step late.
    [wrong_first] = prm.score_steps([prompt], [["12 * 12 = 14", "14 + 5 = 19", "Answer: 19"]])
    assert first_error_index(wrong_first) == 0


def test_logp_features_literal():
    # Logits ln(2), 0, 0 -> probabilities 0.5, 0.25, 0.25: the argmax (token 0) has margin 0, token 1 margin -ln 2.
    logits = torch.tensor([[math.log(2.0), 0.0, 0.0], [math.log(2.0), 0.0, 0.0]])  # (N, V)
    logp, margin = token_logp_and_margin(logits, torch.tensor([0, 1]))
    assert logp.tolist() == pytest.approx([math.log(0.5), math.log(0.25)], abs=1e-6)
    assert margin.tolist() == pytest.approx([0.0, -math.log(2.0)], abs=1e-6)
    token_logp = torch.tensor([[0.0, -1.0, -3.0, -0.5], [0.0, -2.0, 0.0, 0.0]])  # (B, T)
    token_margin = torch.tensor([[0.0, 0.0, -2.0, 0.0], [0.0, -1.5, 0.0, 0.0]])  # (B, T)
    rows, starts, ends = torch.tensor([0, 0, 1]), torch.tensor([1, 3, 1]), torch.tensor([2, 3, 3])
    # span 0 = row 0, tokens 1-2: min -3, mean (-1 - 3) / 2 = -2, min margin -2.
    # span 1 = row 0, token 3: -0.5, -0.5, 0.  span 2 = row 1, tokens 1-3: min -2, mean -2 / 3, min margin -1.5.
    features = span_logp_features(token_logp, token_margin, rows, starts, ends)
    assert flat(features.tolist()) == pytest.approx([-3.0, -2.0, -2.0, -0.5, -0.5, 0.0, -2.0, -2 / 3, -1.5], abs=1e-6)


@pytest.mark.parametrize(("arch", "logp"), [("llama", False), ("qwen2", True)])
def test_score_is_the_head_at_the_separator_plus_features_in_one_batch(bpe, arch, logp):
    model = random_prm(bpe, arch, logp=logp)
    lm = tiny_random_model(arch, bpe, 0)
    prompts = [PROMPT] * len(SOLUTIONS)
    scores = model.score_steps(prompts, SOLUTIONS)
    assert [len(s) for s in scores] == [3, 3, 1]
    # By hand from the causal LM's outputs (no batching, no span masks): softmax of the head at each separator.
    encoded = model.encode(PROMPT, SOLUTIONS[0])
    ids = torch.tensor([encoded.input_ids])  # (1, T)
    with torch.no_grad():
        out = lm(input_ids=ids, output_hidden_states=True)
        logp_all = torch.log_softmax(out.logits[0].float(), dim=-1)  # (T, V)
        hidden = out.hidden_states[-1][0]  # (T, H)
        expected = []
        for start, read in zip(encoded.step_token_starts, encoded.step_token_indices):
            bad, good = model.head(hidden[read])
            z = good - bad
            if logp:
                token_logp = torch.stack([logp_all[t - 1, ids[0, t]] for t in range(start, read)])
                margin = torch.stack([logp_all[t - 1, ids[0, t]] - logp_all[t - 1].max() for t in range(start, read)])
                z = z + torch.stack([token_logp.min(), token_logp.mean(), margin.min()]) @ model.logp_weight
            expected.append(torch.sigmoid(z).item())
    assert scores[0] == pytest.approx(expected, abs=1e-5)
    assert len({round(s, 6) for s in scores[0]}) == 3
    alone = model.score_steps([PROMPT], [SOLUTIONS[2]], batch_size=1)
    assert alone[0] == pytest.approx(scores[2], abs=1e-5)  # right padding: batching changes nothing
    prefix = model.score_steps([PROMPT], [SOLUTIONS[0][:2]])
    assert prefix[0] == pytest.approx(scores[0][:2], abs=1e-5)  # causal: later steps change nothing
    assert flat(model.score_steps(prompts, SOLUTIONS, batch_size=2)) == pytest.approx(flat(scores), abs=1e-5)


def test_truncated_steps_score_nan_and_outcome_mode_scores_the_last_step(bpe):
    whole_encoded = encode_solution(bpe, PROMPT, SOLUTIONS[0], 160)
    window = whole_encoded.step_token_indices[2]  # the last separator falls just outside
    model, full = random_prm(bpe, max_length=window), random_prm(bpe)
    [cut] = model.score_steps([PROMPT], [SOLUTIONS[0]])
    [whole] = full.score_steps([PROMPT], [SOLUTIONS[0]])
    assert cut[:2] == pytest.approx(whole[:2], abs=1e-6) and math.isnan(cut[2])
    outcome = random_prm(bpe, mode="outcome")
    scores = outcome.score_steps([PROMPT] * 3, SOLUTIONS)
    assert [len(s) for s in scores] == [1, 1, 1]
    assert scores[0][0] == pytest.approx(whole[2], abs=1e-6)  # same weights, the final step's score


def test_training_and_scoring_read_the_same_tokens(bpe):
    model = random_prm(bpe, logp=True)
    examples = [StepwiseExample(PROMPT, steps, [1.0] * len(steps)) for steps in SOLUTIONS]
    items, dropped, skipped = build_items(examples, bpe, "process", "soft", max_length=160)
    assert (dropped, skipped) == (0, 0)
    for item, steps in zip(items, SOLUTIONS):
        encoded = model.encode(PROMPT, steps)
        assert item.input_ids == encoded.input_ids and item.positions == encoded.step_token_indices
        assert item.starts == encoded.step_token_starts
    batch = collate_items(items, pad_id=0)
    rows, starts, ends = step_tensors([model.encode(PROMPT, steps) for steps in SOLUTIONS], [[0, 1, 2], [0, 1, 2], [0]])
    assert (batch["rows"].tolist(), batch["starts"].tolist(), batch["positions"].tolist()) == (
        rows.tolist(), starts.tolist(), ends.tolist())
    with torch.no_grad():
        trained_on = torch.sigmoid(model(batch["input_ids"], batch["attention_mask"], rows, starts, ends))
    assert trained_on.tolist() == pytest.approx(flat(model.score_steps([PROMPT] * 3, SOLUTIONS)), abs=1e-6)


LOAD_AND_SCORE = """
import json, sys
from prmloop.prm.model import StepRewardModel
model = StepRewardModel.from_pretrained(sys.argv[1])
print(json.dumps({"mode": model.mode, "max_length": model.max_length, "separator": model.separator,
                  "scores": model.score_steps(json.loads(sys.argv[2]), json.loads(sys.argv[3]))}))
"""


@pytest.mark.parametrize("logp", [False, True])
def test_save_and_load_in_a_fresh_process_gives_identical_scores(bpe, tmp_path, logp):
    model = random_prm(bpe, arch="qwen2", max_length=120, logp=logp)
    expected = model.score_steps([PROMPT] * 3, SOLUTIONS)
    model.save_pretrained(tmp_path / "prm")
    result = subprocess.run(
        [sys.executable, "-c", LOAD_AND_SCORE, str(tmp_path / "prm"), json.dumps([PROMPT] * 3), json.dumps(SOLUTIONS)],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], check=True,
    )
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert (loaded["mode"], loaded["max_length"], loaded["separator"]) == ("process", 120, "\n")
    assert loaded["scores"] == expected  # bit-identical: same weights, same tokens, same kernels


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_a_saved_prm_is_a_standard_token_classification_checkpoint(bpe, tmp_path, arch):
    model = random_prm(bpe, arch=arch)
    expected = model.score_steps([PROMPT], [SOLUTIONS[0]])[0]
    model.save_pretrained(tmp_path / "prm")
    plain = AutoModelForTokenClassification.from_pretrained(tmp_path / "prm").eval()
    assert plain.config.id2label == {0: "bad", 1: "good"}
    encoded = model.encode(PROMPT, SOLUTIONS[0])
    with torch.no_grad():
        probs = torch.softmax(plain(input_ids=torch.tensor([encoded.input_ids])).logits[0], dim=-1)  # (T, 2)
    assert probs[encoded.step_token_indices, 1].tolist() == pytest.approx(expected, abs=1e-5)


def test_from_policy_shares_the_causal_lms_base_weights_with_a_fresh_head(bpe, tmp_path):
    causal_lm = tiny_random_model("llama", bpe, seed=3)
    causal_lm.save_pretrained(tmp_path / "policy")
    bpe.save_pretrained(tmp_path / "policy")
    model = StepRewardModel.from_policy(str(tmp_path / "policy"), mode="outcome", max_length=64)
    ids = torch.tensor([bpe(PROMPT + "7 + 5 = 12")["input_ids"]])  # (1, T)
    with torch.no_grad():
        expected = causal_lm.model(input_ids=ids).last_hidden_state
        got = model.backbone(input_ids=ids).last_hidden_state
    assert torch.allclose(got, expected, atol=1e-6)
    [[score]] = model.score_steps([PROMPT], [["7 + 5 = 12"]])
    assert score == pytest.approx(1 / (1 + math.exp(-1.0)), abs=1e-6)  # fresh head: zero weights, good-class bias 1
    with pytest.raises(UserError, match="prm: cannot load"):
        StepRewardModel.from_policy(str(tmp_path / "nowhere"))


def test_bad_input_is_one_clear_error(bpe, tmp_path):
    model = random_prm(bpe)
    with pytest.raises(UserError, match=r"^solution 1: has no steps$"):
        model.score_steps([PROMPT, PROMPT], [["1 + 1 = 2"], []])
    with pytest.raises(UserError, match=r"^solution 0: step 1 is empty$"):
        model.score_steps([PROMPT], [["1 + 1 = 2", "  "]])
    with pytest.raises(UserError, match=r"no prm.json"):
        StepRewardModel.from_pretrained(tmp_path / "missing")
    with pytest.raises(UserError, match=r"prm.mode: unknown mode 'dense'; valid: outcome, process"):
        StepRewardModel.from_model(tiny_random_model("llama", bpe), bpe, mode="dense")
    model.save_pretrained(tmp_path / "prm")
    (tmp_path / "prm" / "prm.json").write_text("{broken")
    with pytest.raises(UserError, match=r"prm.json: not a readable PRM config"):
        StepRewardModel.from_pretrained(tmp_path / "prm")
    model.save_pretrained(tmp_path / "prm")
    weights = tmp_path / "prm" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(UserError, match=r"^prm: cannot load"):
        StepRewardModel.from_pretrained(tmp_path / "prm")
    weights.unlink()
    with pytest.raises(UserError, match=r"^prm: cannot load"):
        StepRewardModel.from_pretrained(tmp_path / "prm")
