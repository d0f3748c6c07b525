"""Tests for prm/model.py: formatting, head/label alignment (char and BPE tokenizers), batched scoring, save/load."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prmloop.data.config import DataConfig
from prmloop.data.errors import UserError
from prmloop.data.schema import StepwiseExample
from prmloop.data.tasks import get_task
from prmloop.data.vocab import build_bpe_tokenizer, build_task_tokenizer
from prmloop.policy.tiny import tiny_random_model
from prmloop.prm.model import (
    StepRewardModel,
    encode_solution,
    format_solution,
    span_logp_features,
    step_tensors,
    token_logp_and_margin,
)
from prmloop.prm.train import build_items, collate_items

BPE_CORPUS = ["7 + 5 = 12\n12 * 3 = 36\nAnswer: 36", "3 × 4 = 12\n√16 = 4\nAnswer: 12"] * 20
PROMPT = "Q?\n"
SOLUTIONS = [["7 + 5 = 12", "12 * 3 = 36", "Answer: 36"], ["3 × 4 = 12", "√16 = 4", "Answer: 12"], ["1 + 1 = 2"]]


@pytest.fixture(scope="module")
def bpe():
    # 280 = 259 byte/special tokens + 21 merges: merges cross newlines (" = 12\n", "4\nAnswer: "), and "×", "√"
    # stay split into byte tokens.
    return build_bpe_tokenizer(BPE_CORPUS, vocab_size=280)


def flat(nested):
    return [x for inner in nested for x in inner]


def random_prm(tokenizer, arch="llama", mode="process", max_length=160, seed=0):
    model = StepRewardModel.from_model(tiny_random_model(arch, tokenizer, seed), tokenizer, mode, max_length)
    torch.nn.init.normal_(model.head.weight, std=0.5, generator=torch.Generator().manual_seed(seed))  # a non-trivial head
    model.logp_weight.data = torch.tensor([0.7, -0.4, 0.3])
    return model.eval()


def test_format_solution_is_the_policy_completion_format():
    text, ends = format_solution("Q\n", ["1 + 2 = 3", "Answer: 3"])
    # "Q\n" is 2 chars; "1 + 2 = 3" ends at 2 + 9 = 11; "\n" at 11; "Answer: 3" ends at 12 + 9 = 21.
    assert (text, ends) == ("Q\n1 + 2 = 3\nAnswer: 3", [11, 21])
    assert text == "Q\n" + get_task(DataConfig()).join(["1 + 2 = 3", "Answer: 3"])  # what SFT teaches the policy


def test_char_tokenizer_alignment_literal():
    tokenizer = build_task_tokenizer()
    prompt = "1 + 2 = ? (left to right)\n"  # 26 chars, one token each
    encoded = encode_solution(tokenizer, prompt, ["1 + 2 = 3", "Answer: 3"], max_length=160)
    # step 0 ends at char 26 + 9 = 35 -> token 34; step 1 ends at 36 + 9 = 45 -> token 44.
    assert encoded.step_token_indices == [34, 44]
    # step 0 starts after the prompt's last token (25); step 1 at the "\n" after step 0 (token 35).
    assert encoded.step_token_starts == [26, 35]
    assert len(encoded.input_ids) == 45 and encoded.num_steps == 2
    # max_length 40 keeps tokens 0..39: step 0 (token 34) fits, step 1 (token 44) does not.
    cut = encode_solution(tokenizer, prompt, ["1 + 2 = 3", "Answer: 3"], max_length=40)
    assert cut.step_token_indices == [34] and len(cut.input_ids) == 40


def test_bpe_alignment_reads_the_token_holding_each_steps_last_character(bpe):
    first = encode_solution(bpe, PROMPT, SOLUTIONS[0], max_length=160)
    pieces = [bpe.decode([i]) for i in first.input_ids]
    # tokens: Q ? \n 7 ' ' '+ ' 5 ' = 12\n' 12 ' ' '* ' '3 = ' 36 '\nAnswer: ' 36 -> " = 12\n" spans steps 0 and 1.
    assert first.step_token_indices == [7, 12, 14]
    assert first.step_token_starts == [3, 8, 13]  # "Q?\n" is tokens 0-2; each later step starts after the last end
    assert pieces[7] == " = 12\n" and pieces[12] == "36" and pieces[14] == "36"
    second = encode_solution(bpe, PROMPT, SOLUTIONS[1], max_length=160)
    # "√16 = 4" ends inside the merged token "4\nAnswer: " (index 13); "×"/"√" are split into byte tokens.
    assert second.step_token_indices == [7, 13, 14]
    assert bpe.decode([second.input_ids[13]]) == "4\nAnswer: "
    for steps in SOLUTIONS:
        encoded = encode_solution(bpe, PROMPT, steps, max_length=160)
        text, ends = format_solution(PROMPT, steps)
        for index, end in zip(encoded.step_token_indices, ends):
            assert bpe.decode(encoded.input_ids[: index + 1]).startswith(text[:end])  # holds the last char ...
            assert len(bpe.decode(encoded.input_ids[:index])) < end  # ... and is the first token that does


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


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_score_is_sigmoid_of_head_plus_lm_logp_features_in_one_batch(bpe, arch):
    model = random_prm(bpe, arch)
    prompts = [PROMPT] * len(SOLUTIONS)
    scores = model.score_steps(prompts, SOLUTIONS)
    assert [len(s) for s in scores] == [3, 3, 1]
    # Recompute one solution's scores by hand from the causal LM's outputs (no batching, no span masks).
    encoded = model.encode(PROMPT, SOLUTIONS[0])
    ids = torch.tensor([encoded.input_ids])  # (1, T)
    with torch.no_grad():
        out = model.lm(input_ids=ids, output_hidden_states=True)
        logp_all = torch.log_softmax(out.logits[0].float(), dim=-1)  # (T, V)
        hidden = out.hidden_states[-1][0]  # (T, H)
        expected = []
        for start, end in zip(encoded.step_token_starts, encoded.step_token_indices):
            logp = torch.stack([logp_all[t - 1, ids[0, t]] for t in range(start, end + 1)])
            margin = torch.stack([logp_all[t - 1, ids[0, t]] - logp_all[t - 1].max() for t in range(start, end + 1)])
            features = torch.stack([logp.min(), logp.mean(), margin.min()])
            expected.append(torch.sigmoid(model.head(hidden[end]) + features @ model.logp_weight).item())
    assert scores[0] == pytest.approx(expected, abs=1e-5)
    assert len({round(s, 6) for s in scores[0]}) == 3  # the head reads different tokens, so scores differ
    # Batching does not change a solution's scores (right padding), nor do later steps (causal backbone).
    alone = model.score_steps([PROMPT], [SOLUTIONS[2]], batch_size=1)
    assert alone[0] == pytest.approx(scores[2], abs=1e-5)
    prefix = model.score_steps([PROMPT], [SOLUTIONS[0][:2]])
    assert prefix[0] == pytest.approx(scores[0][:2], abs=1e-5)
    assert flat(model.score_steps(prompts, SOLUTIONS, batch_size=2)) == pytest.approx(flat(scores), abs=1e-5)


def test_truncated_steps_score_nan_and_outcome_mode_scores_the_last_step(bpe):
    model = random_prm(bpe, max_length=13)  # SOLUTIONS[0]'s step ends are tokens 7, 12, 14: the last is cut off
    full = random_prm(bpe)
    [cut] = model.score_steps([PROMPT], [SOLUTIONS[0]])
    [whole] = full.score_steps([PROMPT], [SOLUTIONS[0]])
    assert cut[:2] == pytest.approx(whole[:2], abs=1e-6) and math.isnan(cut[2])
    outcome = random_prm(bpe, mode="outcome")
    scores = outcome.score_steps([PROMPT] * 3, SOLUTIONS)
    assert [len(s) for s in scores] == [1, 1, 1]
    assert scores[0][0] == pytest.approx(whole[2], abs=1e-6)  # same weights, the final step's score


def test_training_and_scoring_read_the_same_tokens(bpe):
    model = random_prm(bpe)
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
    scored = flat(model.score_steps([PROMPT] * 3, SOLUTIONS))
    assert trained_on.tolist() == pytest.approx(scored, abs=1e-6)


LOAD_AND_SCORE = """
import json, sys
from prmloop.prm.model import StepRewardModel
model = StepRewardModel.from_pretrained(sys.argv[1])
print(json.dumps({"mode": model.mode, "max_length": model.max_length,
                  "scores": model.score_steps(json.loads(sys.argv[2]), json.loads(sys.argv[3]))}))
"""


def test_save_and_load_in_a_fresh_process_gives_identical_scores(bpe, tmp_path):
    model = random_prm(bpe, arch="qwen2", max_length=120)
    expected = model.score_steps([PROMPT] * 3, SOLUTIONS)
    model.save_pretrained(tmp_path / "prm")
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", LOAD_AND_SCORE, str(tmp_path / "prm"), json.dumps([PROMPT] * 3), json.dumps(SOLUTIONS)],
        capture_output=True, text=True, cwd=root, check=True,
    )
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert (loaded["mode"], loaded["max_length"]) == ("process", 120)
    assert [len(s) for s in loaded["scores"]] == [3, 3, 1]
    assert loaded["scores"] == expected  # bit-identical: same weights, same tokens, same kernels


def test_from_policy_shares_the_causal_lms_base_weights(bpe, tmp_path):
    causal_lm = tiny_random_model("llama", bpe, seed=3)
    causal_lm.save_pretrained(tmp_path / "policy")
    bpe.save_pretrained(tmp_path / "policy")
    model = StepRewardModel.from_policy(str(tmp_path / "policy"), mode="outcome", max_length=64)
    ids = torch.tensor([bpe(PROMPT + "7 + 5 = 12")["input_ids"]])  # (1, T)
    with torch.no_grad():
        expected = causal_lm.model(input_ids=ids).last_hidden_state
        got = model.backbone(input_ids=ids).last_hidden_state
    assert torch.allclose(got, expected, atol=1e-6)
    # Fresh head: w = 0, b = 1, (a, c, d) = (1, 0, 1), so the score is sigmoid(1 + min logp + min margin) of the LM.
    encoded = model.encode(PROMPT, ["7 + 5 = 12"])
    start, end = encoded.step_token_starts[0], encoded.step_token_indices[0]
    with torch.no_grad():
        logp_all = torch.log_softmax(causal_lm(input_ids=ids).logits[0], dim=-1)  # (T, V)
    logp = [logp_all[t - 1, ids[0, t]].item() for t in range(start, end + 1)]
    margin = [logp_all[t - 1, ids[0, t]].item() - logp_all[t - 1].max().item() for t in range(start, end + 1)]
    [[score]] = model.score_steps([PROMPT], [["7 + 5 = 12"]])
    assert score == pytest.approx(1 / (1 + math.exp(-(1 + min(logp) + min(margin)))), abs=1e-5)
    with pytest.raises(UserError, match="prm init: cannot load"):
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
