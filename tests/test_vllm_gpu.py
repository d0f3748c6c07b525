"""policy/vllm_backend.py's real engine on a GPU (skipped without CUDA and the vllm extra; bench/gpu_vllm.sh runs
them): its samples against ``HFBackend``'s, raw log-probs, seeds, weight pushes (full and LoRA), sleep, a GRPO run,
and a bf16 engine beside an fp32 trainer (π_old recomputed)."""

import copy
import importlib.util
import math

import pytest
import torch
from grpo_ddp_script import DigitScorer
from hub_fixtures import build_hub_tokenizer
from test_grpo import ARITH, PROBLEMS
from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

import prmloop.policy.grpo as grpo_module
from prmloop.data.task_tokenizer import build_task_tokenizer
from prmloop.policy.config import GRPOConfig, PolicyConfig
from prmloop.policy.grpo import GRPOTrainer
from prmloop.policy.logps import forward_logps
from prmloop.policy.rollout import HFBackend, encode_prompts, left_pad
from prmloop.policy.sampling import row_seed
from prmloop.policy.tiny import build_tiny_llama
from prmloop.policy.vllm_backend import VLLMBackend
from prmloop.utils.lora import add_lora, is_lora

gpu = pytest.mark.skipif(not (torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None),
                         reason="needs a CUDA GPU and the vllm extra")
PROMPTS = ["What is 2 + 3?\n", "Tom has 5 apples and buys 7 more.\n", "Simplify 12/4.\n", "Half of 48 is\n"]
ENGINE = {"max_model_len": 256, "gpu_memory_utilization": 0.1, "sleep": False, "seed": 0}


def gpu_policy(seed: int = 0):
    """A tiny random Qwen2 on the GPU (float32, head size 64) whose samples are neither uniform nor all of one length:
    init std 0.2, and the <|im_end|> embedding doubled (tied, so EOS logits spread: ~40% of 32-token samples end)."""
    tokenizer = build_hub_tokenizer("qwen2")
    tokenizer.padding_side = "left"
    im_end, endoftext = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2Config(vocab_size=-(-len(tokenizer) // 64) * 64, hidden_size=128, intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, initializer_range=0.2, bos_token_id=endoftext, eos_token_id=im_end,
                         pad_token_id=endoftext)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight[im_end] *= 2.0
    model.generation_config = GenerationConfig(eos_token_id=[im_end, endoftext], pad_token_id=endoftext)
    return model.cuda(), tokenizer


def perturbed(model, scale: float = 0.05, seed: int = 1):
    """A copy with every weight moved by seeded noise (what training does, minus the training)."""
    moved = copy.deepcopy(model)
    generator = torch.Generator(device="cuda").manual_seed(seed)
    with torch.no_grad():
        for param in moved.parameters():
            param.add_(scale * torch.randn(param.shape, generator=generator, device="cuda"))
    return moved


@pytest.fixture(scope="module")
def engine():
    """One engine (no sleep) for the tests below; each pushes its own policy with ``sync_weights`` first."""
    model, tokenizer = gpu_policy()
    return VLLMBackend(model, tokenizer, 32, **ENGINE)


def rows_and_seeds(tokenizer, per_prompt: int, seed: int = 0):
    prompts = encode_prompts(tokenizer, PROMPTS)
    rows = [ids for ids in prompts for _ in range(per_prompt)]
    return rows, [row_seed(seed, 0, i, g) for i in range(len(prompts)) for g in range(per_prompt)]


def sample(backend, model, rows, seeds, temperature: float, top_p: float = 1.0):
    backend.temperature, backend.top_p = temperature, top_p  # the engine is shared: set this test's sampling
    backend.sync_weights(model)
    return backend.generate(rows, seeds)


def teacher_forced_logits(model, tokenizer, rows, generation):
    prompt, prompt_mask = left_pad(rows, tokenizer.pad_token_id, "cuda")
    ids = torch.cat([prompt, generation.completion_ids], 1)  # (B, P + T)
    attention = torch.cat([prompt_mask, generation.completion_mask], 1).long()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attention, position_ids=(attention.cumsum(1) - 1).clamp(min=0)
                       ).logits[:, prompt.shape[1] - 1 : -1].float()  # (B, T, V) logits predicting each o_t
    return logits


@pytest.mark.gpu
@gpu
def test_logp_is_the_raw_temperature_one_log_prob(engine):
    model, tokenizer = gpu_policy()
    rows, seeds = rows_and_seeds(tokenizer, 16)
    generation = sample(engine, model, rows, seeds, temperature=0.7, top_p=0.9)
    mask = generation.completion_mask
    logits = teacher_forced_logits(model, tokenizer, rows, generation)  # (B, T, V)
    token = generation.completion_ids[..., None]
    raw = torch.log_softmax(logits, -1).gather(-1, token).squeeze(-1)  # (B, T)
    processed = torch.log_softmax(logits / 0.7, -1).gather(-1, token).squeeze(-1)  # what raw mode must NOT return
    assert (generation.logp - raw)[mask].abs().max() < 2e-3
    assert (generation.logp - processed)[mask].abs().mean() > 0.1  # the check above can tell the two apart
    hf_logp, _ = forward_logps(model, *left_pad(rows, tokenizer.pad_token_id, "cuda"), generation.completion_ids, mask)
    assert (generation.logp - hf_logp)[mask].abs().max() < 2e-3  # = the π_θ the GRPO loss computes


@pytest.mark.gpu
@gpu
def test_sampling_statistics_match_hf_backend(engine):
    # Different samplers, same distribution: per-row completion length, per-row mean token log-prob and the finished
    # fraction agree within 4 standard errors of their difference (1024 independent rows per backend).
    model, tokenizer = gpu_policy()
    rows, seeds = rows_and_seeds(tokenizer, 256)
    ours = sample(engine, model, rows, seeds, temperature=1.0)
    theirs = HFBackend(model, tokenizer, 32, temperature=1.0).generate(rows, seeds)

    def stats(generation):
        lengths = generation.completion_mask.sum(1).float()  # (B,)
        return {"length": lengths, "mean_logp": generation.logp.sum(1) / lengths, "finished": generation.finished.float()}

    for key, a in stats(ours).items():
        b = stats(theirs)[key]
        error = math.sqrt(a.var().item() / len(a) + b.var().item() / len(b))
        assert abs(a.mean().item() - b.mean().item()) < 4 * error + 1e-6, (key, a.mean().item(), b.mean().item())
    assert 0.1 < stats(theirs)["finished"].mean().item() < 0.9  # the test model is not degenerate


@pytest.mark.gpu
@gpu
def test_same_seeds_give_the_same_samples(engine):
    model, tokenizer = gpu_policy()
    rows, seeds = rows_and_seeds(tokenizer, 8)
    first, second = (sample(engine, model, rows, seeds, temperature=1.0) for _ in range(2))
    assert torch.equal(first.completion_ids, second.completion_ids)
    assert torch.allclose(first.logp, second.logp, atol=1e-5)
    other = sample(engine, model, rows, rows_and_seeds(tokenizer, 8, seed=1)[1], temperature=1.0)
    assert not torch.equal(first.completion_ids[:, :4], other.completion_ids[:, :4])


def greedy_hf(model, tokenizer, rows):
    return HFBackend(model, tokenizer, 32, temperature=0.0).generate(rows, [0] * len(rows))


@pytest.mark.gpu
@gpu
def test_sync_weights_moves_the_engine_to_the_changed_model(engine):
    model, tokenizer = gpu_policy()
    rows, seeds = rows_and_seeds(tokenizer, 1)
    before = sample(engine, model, rows, seeds, temperature=0.0)
    assert torch.equal(before.completion_ids, greedy_hf(model, tokenizer, rows).completion_ids)
    trained = perturbed(model)
    engine.temperature = 0.0
    assert torch.equal(engine.generate(rows, seeds).completion_ids, before.completion_ids)  # not pushed yet
    after = sample(engine, trained, rows, seeds, temperature=0.0)
    expected = greedy_hf(trained, tokenizer, rows)
    assert not torch.equal(expected.completion_ids, before.completion_ids)  # the change shows in greedy outputs
    assert torch.equal(after.completion_ids, expected.completion_ids)
    assert (after.logp - expected.logp)[after.completion_mask].abs().max() < 2e-3


@pytest.mark.gpu
@gpu
def test_lora_policy_is_merged_into_the_engine_and_left_unchanged(engine):
    model, tokenizer = gpu_policy()
    peft = add_lora(model, 4, 8, task_type="CAUSAL_LM")
    generator = torch.Generator(device="cuda").manual_seed(2)
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.copy_(0.2 * torch.randn(param.shape, generator=generator, device="cuda"))
    before = {name: p.detach().clone() for name, p in peft.named_parameters()}
    rows, seeds = rows_and_seeds(tokenizer, 1)
    ours = sample(engine, peft, rows, seeds, temperature=0.0)
    assert torch.equal(ours.completion_ids, greedy_hf(peft, tokenizer, rows).completion_ids)
    with peft.disable_adapter():
        assert not torch.equal(ours.completion_ids, greedy_hf(peft, tokenizer, rows).completion_ids)
    assert is_lora(peft) and all(torch.equal(before[n], p) for n, p in peft.named_parameters())


@pytest.mark.gpu
@gpu
def test_grpo_trainer_with_a_sleeping_engine():
    # The only sleep-mode engine of the process (vLLM's sleep allocator serves one engine per process). After each
    # step the engine sleeps (its memory comes back to the GPU) and the next sampling is from the updated policy: the
    # rollout's log-probs equal the policy's own forward on the same tokens (π_old = π_θ before the update). An fp32
    # engine (grpo.vllm_dtype), so that the comparison can be tight; the bf16 default: the test below.
    tokenizer = build_task_tokenizer()
    policy_cfg = PolicyConfig(max_new_tokens=10)
    cfg = GRPOConfig(prompts_per_step=2, group_size=4, lr=1e-2, use_vllm=True, vllm_gpu_memory_utilization=0.1,
                     vllm_dtype="float32")
    trainer = GRPOTrainer(build_tiny_llama(policy_cfg, tokenizer, seed=0), tokenizer, cfg, policy_cfg, ARITH,
                          scorer=DigitScorer())  # the embedded tiny policy: head size 32 (vLLM kernels need >= 16)
    assert trainer.backend.device.type == "cuda"
    initial = {name: value.clone() for name, value in trainer.policy.state_dict().items()}
    free_awake = torch.cuda.mem_get_info()[0]
    for step in range(2):
        metrics = trainer.train_step(PROBLEMS[2 * step : 2 * step + 2], step=step)
        assert metrics["skipped_updates"] == 0 and math.isfinite(metrics["loss"])
    assert not all(torch.equal(initial[k], v) for k, v in trainer.policy.state_dict().items())  # the policy moved
    assert torch.cuda.mem_get_info()[0] > free_awake + 2**30  # the sleeping engine gave back its KV cache
    prompts = [trainer.prompter(p.question) for p in PROBLEMS[4:6]]
    rollout = trainer._sample(trainer._encode(PROBLEMS[4:6], prompts), 2, 0)
    with torch.no_grad():
        logp, _ = forward_logps(trainer.policy, rollout.prompt_ids, rollout.prompt_mask, rollout.completion_ids,
                                rollout.completion_mask)
    assert (rollout.logp - logp)[rollout.completion_mask].abs().max() < 2e-3


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one mixed-precision setting per process: start and leave the test without one."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.gpu
@gpu
def test_bf16_engine_fp32_trainer_recomputes_old_logps(monkeypatch, fresh_accelerate_state):
    # The real-model configs' precision: fp32 trainer weights with bf16 autocast, a bf16 engine (the default
    # grpo.vllm_dtype). The engine's log-probs differ from the trainer's; π_old is recomputed by the trainer, so ρ = 1
    # exactly at the first inner update; truncated IS weights (cap 2) are reported under TRL's names.
    ratios, original = [], grpo_module.grpo_loss

    def recording(logp, old_logp, ref_logp, advantages, mask, *rest):
        ratios.append((logp.detach() - old_logp)[mask])
        return original(logp, old_logp, ref_logp, advantages, mask, *rest)

    monkeypatch.setattr(grpo_module, "grpo_loss", recording)
    tokenizer = build_task_tokenizer()
    policy_cfg = PolicyConfig(max_new_tokens=10)
    cfg = GRPOConfig(prompts_per_step=2, group_size=4, lr=1e-2, use_vllm=True, vllm_gpu_memory_utilization=0.1,
                     vllm_sleep=False, vllm_is_cap=2.0, mixed_precision="bf16")
    trainer = GRPOTrainer(build_tiny_llama(policy_cfg, tokenizer, seed=1), tokenizer, cfg, policy_cfg, ARITH,
                          scorer=DigitScorer())
    metrics = trainer.train_step(PROBLEMS[:2], step=0)
    assert metrics["skipped_updates"] == 0 and next(trainer.policy.parameters()).dtype == torch.float32
    assert torch.equal(ratios[0], torch.zeros_like(ratios[0]))
    assert 0 < metrics["sampling/sampling_logp_difference/mean"] < 0.1  # bf16 engine vs trainer: near, not equal
    low, high = metrics["sampling/importance_sampling_ratio/min"], metrics["sampling/importance_sampling_ratio/max"]
    assert 0 < low <= high <= 2

