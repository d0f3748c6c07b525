"""Tests for policy/rollout.py: seeds, the inverse-CDF sampler, rollout shapes/masks/EOS/step ends, logp consistency."""

from types import SimpleNamespace

import pytest
import torch

from prmloop.data.steps import closing_char_ends, split_steps
from prmloop.data.task_tokenizer import build_bpe_tokenizer, build_task_tokenizer
from prmloop.policy.logps import forward_logps
from prmloop.policy.rollout import HFBackend, PolicySampler, encode_prompts, sample_rollout
from prmloop.policy.sampling import inverse_cdf_sample, row_seed, sample_next
from prmloop.policy.tiny import tiny_random_model


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_row_seed_is_splitmix64_and_depends_on_every_part():
    # splitmix64 from state 0 gives 0xE220A8397B1DCDAF (the reference first output); four rounds of zeros are
    # deterministic, and the seed keeps 63 bits.
    from prmloop.policy.sampling import _splitmix64

    assert _splitmix64(0) == 0xE220A8397B1DCDAF
    seeds = {row_seed(*parts) for parts in [(0, 0, 0, 0), (1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1)]}
    assert len(seeds) == 5
    assert row_seed(3, 4, 5, 6) == row_seed(3, 4, 5, 6)
    assert all(0 <= s < 2**63 for s in seeds)


def test_inverse_cdf_sample_literal():
    probs = torch.tensor([[0.5, 0.3, 0.2]] * 3)
    # cdf [0.5, 0.8, 1.0]: u 0.0 -> first cdf > 0 is token 0; u 0.6 -> token 1; u 0.95 -> token 2
    assert inverse_cdf_sample(probs, torch.tensor([0.0, 0.6, 0.95])).tolist() == [0, 1, 2]
    # top_p 0.6: mass before each token [0, 0.5, 0.8] < 0.6 keeps tokens 0 and 1 (mass 0.8);
    # u 0.7 -> target 0.56 > 0.5 -> token 1; u 0.5 -> target 0.4 -> token 0; u 0.99 -> 0.792 -> token 1, never 2
    assert inverse_cdf_sample(probs, torch.tensor([0.7, 0.5, 0.99]), top_p=0.6).tolist() == [1, 0, 1]
    # a zero-probability token is never drawn: cdf [0.5, 0.5, 1.0], target 0.5 -> first cdf > 0.5 is token 2
    assert inverse_cdf_sample(torch.tensor([[0.5, 0.0, 0.5]]), torch.tensor([0.5])).tolist() == [2]


def test_inverse_cdf_sample_top_p_sorts_by_probability():
    probs = torch.tensor([[0.1, 0.6, 0.3]])
    # sorted [0.6 (tok 1), 0.3 (tok 2), 0.1 (tok 0)]; top_p 0.5 keeps only token 1
    assert inverse_cdf_sample(probs, torch.tensor([0.99]), top_p=0.5).tolist() == [1]


def test_sample_next_returns_temperature_one_logp():
    logits = torch.tensor([[2.0, 0.0, 1.0]])
    token, logp = sample_next(logits, torch.tensor([0.0]), temperature=0.0, top_p=1.0)
    assert token.tolist() == [0]
    # log softmax of [2, 0, 1] at token 0: 2 - log(e^2 + 1 + e) = 2 - log(7.389056 + 1 + 2.718282) = -0.407606
    assert logp.item() == pytest.approx(-0.407606, abs=1e-5)
    _, hot = sample_next(logits, torch.tensor([0.0]), temperature=5.0, top_p=1.0)
    assert hot.item() == pytest.approx(-0.407606, abs=1e-5)  # same token 0 (u = 0), same temperature-1 logp


class FakeCache:
    """Records the row selections the sampling loop asks for."""

    def __init__(self):
        self.selections = []

    def batch_select_indices(self, indices):
        self.selections.append(indices.tolist())


class TableLM(torch.nn.Module):
    """Greedy decoding follows a transition table: the next token is ``table[last input token]`` (EOS if absent)."""

    def __init__(self, tokenizer, table: dict[str, str]):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.vocab, self.eos_id = len(tokenizer), tokenizer.eos_token_id
        encode = tokenizer.convert_tokens_to_ids
        self.table = {encode(a): encode(b) for a, b in table.items()}
        self.calls, self.batch_sizes, self.cache = 0, [], FakeCache()

    def forward(self, input_ids, attention_mask, position_ids, use_cache, logits_to_keep=0, cache=None):
        logits = torch.zeros(input_ids.shape[0], 1, self.vocab)
        for row, last in enumerate(input_ids[:, -1].tolist()):
            logits[row, 0, self.table.get(last, self.eos_id)] = 10.0
        self.calls += 1
        self.batch_sizes.append(input_ids.shape[0])
        return SimpleNamespace(logits=logits, cache=self.cache)


TABLE = {"a": "1", "1": "2", "2": "\n", "\n": "3", "b": "7", "c": "9", "9": "9"}
"""Prompt 'a' writes '12\n3' then EOS, 'b' writes '7' then EOS, 'c' writes 9s forever."""


def test_rollout_masks_eos_padding_and_step_ends():
    tokenizer = build_task_tokenizer()
    encode = tokenizer.convert_tokens_to_ids
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    model = TableLM(tokenizer, TABLE)
    backend = HFBackend(model, tokenizer, max_new_tokens=6, temperature=0.0)
    rollout = sample_rollout(backend, tokenizer, encode_prompts(tokenizer, ["a", "b", "c"]), group_size=2, seed=0,
                             step=0)
    row_a = [encode("1"), encode("2"), encode("\n"), encode("3"), eos, pad]
    row_b = [encode("7"), eos, pad, pad, pad, pad]
    assert rollout.completion_ids.tolist() == [row_a, row_a, row_b, row_b, [encode("9")] * 6, [encode("9")] * 6]
    assert rollout.completion_mask.int().tolist() == [[1, 1, 1, 1, 1, 0]] * 2 + [[1, 1, 0, 0, 0, 0]] * 2 + [[1] * 6] * 2
    assert rollout.finished.tolist() == [True, True, True, True, False, False]
    assert rollout.texts == ["12\n3"] * 2 + ["7"] * 2 + ["999999"] * 2
    assert rollout.steps == [["12", "3"]] * 2 + [["7"]] * 2 + [["999999"]] * 2
    # The closing token: "\n" (index 2) closes "12", the EOS (index 4 / 1) closes the last step; a completion cut off
    # without EOS ends its last step at its last token (5).
    assert rollout.step_ends == [[2, 4]] * 2 + [[1]] * 2 + [[5]] * 2
    assert (rollout.logp[~rollout.completion_mask] == 0).all()
    ends, mask = rollout.step_tensors()
    assert ends.tolist() == [[2, 4]] * 2 + [[1, -1]] * 2 + [[5, -1]] * 2
    assert mask.tolist() == [[True, True]] * 2 + [[True, False]] * 4
    assert rollout.prompt_ids.shape == (6, 1) and rollout.prompt_mask.all()
    # each distinct prompt is prefilled once, then copied to its G rows; the 2 'b' rows leave the batch after ending
    # (2 of 6 >= a quarter), the 2 'a' rows after theirs (2 of 4)
    assert model.cache.selections == [[0, 0, 1, 1, 2, 2], [0, 1, 4, 5], [2, 3]]
    assert model.batch_sizes == [3, 6, 4, 4, 4, 2]


def test_rollout_stops_early_when_every_row_ends():
    tokenizer = build_task_tokenizer()
    model = TableLM(tokenizer, {"a": "5"})
    backend = HFBackend(model, tokenizer, max_new_tokens=50, temperature=0.0)
    rollout = sample_rollout(backend, tokenizer, encode_prompts(tokenizer, ["a", "ba"]), 2, seed=0, step=0)
    assert rollout.completion_ids.shape == (4, 2)  # "5" + EOS, then the loop stops
    assert model.calls == 2


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_sampling_logp_matches_a_fresh_forward(arch):
    tokenizer = build_bpe_tokenizer(["12 + 3 = 15\nAnswer: 15\n", "7 * 2 = 14\n14 - 1 = 13\n"] * 20, vocab_size=300)
    model = tiny_random_model(arch, tokenizer, seed=0).eval()
    prompts = ["7 * 2 = ?\n", "12 + 3 - 1 = ? (left to right)\n"]
    backend = HFBackend(model, tokenizer, max_new_tokens=12, temperature=1.0, batch_size=3)  # uneven batches
    rollout = sample_rollout(backend, tokenizer, encode_prompts(tokenizer, prompts), group_size=4, seed=1, step=2)
    assert rollout.completion_ids.shape[0] == 8 and rollout.completion_ids.shape[1] <= 12
    with torch.no_grad():
        logp, entropy = forward_logps(model, rollout.prompt_ids, rollout.prompt_mask, rollout.completion_ids,
                                      rollout.completion_mask, with_entropy=True)
    mask = rollout.completion_mask
    assert torch.allclose(logp[mask], rollout.logp[mask], atol=1e-4)
    assert (entropy[mask] > 0).all()
    # mask is a True-prefix per row
    assert (mask[:, 1:] <= mask[:, :-1]).all()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_shared_prompts_give_the_full_forwards_logps_and_gradients_with_one_prompt_pass_per_group(arch):
    tokenizer = build_bpe_tokenizer(["12 + 3 = 15\nAnswer: 15\n", "7 * 2 = 14\n14 - 1 = 13\n"] * 20, vocab_size=300)
    model = tiny_random_model(arch, tokenizer, seed=0).eval()
    prompts = ["7 * 2 = ?\n", "12 + 3 - 1 = ? (left to right)\n", "7 * 2 = ?\n"]  # prompts 0 and 2 are not adjacent
    backend = HFBackend(model, tokenizer, max_new_tokens=12, temperature=1.0)
    rollout = sample_rollout(backend, tokenizer, encode_prompts(tokenizer, prompts), group_size=4, seed=1, step=2)
    mask = rollout.completion_mask
    rows_seen = []
    hook = model.get_input_embeddings().register_forward_hook(lambda _m, args, _o: rows_seen.append(args[0].shape))
    results = {}
    for share in (False, True):
        model.zero_grad()
        rows_seen.clear()
        logp, entropy = forward_logps(model, rollout.prompt_ids, rollout.prompt_mask, rollout.completion_ids, mask,
                                      with_entropy=True, share_prompts=share)
        (logp * mask).sum().backward()
        results[share] = logp, entropy, [p.grad.clone() for p in model.parameters()], list(rows_seen)
    hook.remove()
    (full, full_entropy, full_grads, full_calls), (shared, entropy, grads, calls) = results[False], results[True]
    assert [tuple(shape) for shape in full_calls] == [(12, rollout.prompt_ids.shape[1] + mask.shape[1])]
    width = rollout.prompt_ids.shape[1]
    assert [tuple(shape) for shape in calls] == [(3, width), (12, mask.shape[1] - 1)]  # 3 runs of equal prompts
    assert torch.allclose(shared[mask], full[mask], atol=1e-5)
    assert torch.allclose(shared[mask], rollout.logp[mask], atol=1e-4)
    assert torch.allclose(entropy[mask], full_entropy[mask], atol=1e-5)
    for a, b in zip(grads, full_grads):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_no_repeated_prompt_means_one_full_forward():
    from prmloop.policy.logps import _distinct_prompts

    ids = torch.tensor([[0, 5, 6], [0, 5, 6], [5, 6, 7], [0, 5, 6]])
    mask = ids != 0
    starts, runs = _distinct_prompts(ids, mask)
    assert starts.tolist() == [0, 2, 3] and runs.tolist() == [0, 0, 1, 2]
    assert _distinct_prompts(ids[1:], mask[1:]) == (None, None)
    # the same ids with other padding are other prompts
    assert _distinct_prompts(ids[:2], torch.tensor([[False, True, True], [True, True, True]])) == (None, None)


def test_step_ends_point_at_the_token_closing_each_step_with_bpe():
    corpus = ["12 + 3 = 15\nAnswer: 15\n", "7 * 2 = 14\n14 - 1 = 13\nAnswer: 13\n"] * 20
    tokenizer = build_bpe_tokenizer(corpus, vocab_size=300)
    model = tiny_random_model("llama", tokenizer, seed=3).eval()
    backend = HFBackend(model, tokenizer, max_new_tokens=30, temperature=1.0)
    rollout = sample_rollout(backend, tokenizer, encode_prompts(tokenizer, ["7 * 2 = ?\n"]), 8, seed=0, step=0)
    checked = 0
    rows = zip(rollout.completion_ids.tolist(), rollout.texts, rollout.step_ends, rollout.finished.tolist())
    for ids, text, ends, finished in rows:
        steps = split_steps(text, "newline")
        closing = closing_char_ends(steps)
        for j, (end, char_end) in enumerate(zip(ends, closing)):
            if finished and j == len(steps) - 1:
                assert ids[end] == tokenizer.eos_token_id  # the EOS closes the last step
            else:  # token `end` holds the last character of what closes step j (its newline)
                upto = [len(tokenizer.decode(ids[:n], skip_special_tokens=True)) for n in (end, end + 1)]
                assert upto[1] >= char_end > upto[0]
            checked += 1
    assert checked >= 8


def test_samples_do_not_depend_on_batch_split():
    tokenizer = build_task_tokenizer()
    model = tiny_random_model("llama", tokenizer, seed=0).eval()
    prompts = encode_prompts(tokenizer, ["1 + 2 = ? (left to right)\n", "13 * 4 - 2 = ? (left to right)\n"])
    backend = HFBackend(model, tokenizer, max_new_tokens=10, temperature=1.0)
    both = sample_rollout(backend, tokenizer, prompts, group_size=3, seed=5, step=7)
    second = sample_rollout(backend, tokenizer, prompts[1:], group_size=3, seed=5, step=7, first_prompt_index=1)
    width = second.completion_ids.shape[1]
    assert torch.equal(both.completion_ids[3:, :width], second.completion_ids)
    assert both.texts[3:] == second.texts
    other_step = sample_rollout(backend, tokenizer, prompts[1:], group_size=3, seed=5, step=8, first_prompt_index=1)
    assert other_step.texts != second.texts


def test_policy_sampler_complete():
    tokenizer = build_task_tokenizer()
    model = tiny_random_model("llama", tokenizer, seed=0)
    sampler = PolicySampler(model, tokenizer, max_new_tokens=8, batch_size=4, seed=0)
    first = sampler.complete(["1 + 2\n", "3 * 4\n", "5\n"], n=3)
    assert [len(group) for group in first] == [3, 3, 3]
    assert all(isinstance(text, str) and len(text) <= 8 for group in first for text in group)
    assert sampler.complete(["1 + 2\n", "3 * 4\n", "5\n"], n=3) != first  # a fresh draw per call
    again = PolicySampler(model, tokenizer, max_new_tokens=8, batch_size=2, seed=0)
    assert again.complete(["1 + 2\n", "3 * 4\n", "5\n"], n=3) == first  # reproducible, whatever the batch size
    assert sampler.complete([], n=2) == []
    assert model.training  # mode restored
