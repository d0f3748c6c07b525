"""Tests for ``grpo.padding_free`` in policy/grpo.py: the packed update's π_ref log-probs, loss and gradients equal the
padded update's (tiny Llama/Qwen2 and the embedded policy; LoRA; gradient checkpointing), whole steps match, the
check at start refuses a model that would mix sequences, and DeepSpeed runs it. The packing itself:
tests/test_packing.py; the packed forward on each architecture: tests/test_logps.py."""

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from prmloop.data.arith import generate
from prmloop.data.config import DataConfig
from prmloop.data.task_tokenizer import build_task_tokenizer
from prmloop.data.tasks import get_task
from prmloop.policy import logps
from prmloop.policy.config import GRPOConfig, PolicyConfig
from prmloop.policy.grpo import GRPOTrainer
from prmloop.policy.tiny import build_tiny_llama, tiny_random_model
from prmloop.utils.errors import UserError

sys.path.insert(0, str(Path(__file__).parent))
from grpo_ddp_script import DigitScorer
from test_grpo import one_thread  # noqa: F401 - one_thread is an autouse fixture

ARITH = get_task(DataConfig())
PROBLEMS = generate(DataConfig(), 16, "train")


def make_trainer(arch: str = "llama", policy_cfg: PolicyConfig | None = None, **overrides) -> GRPOTrainer:
    tokenizer = build_task_tokenizer()
    if arch == "tiny":  # the embedded policy's architecture, smaller
        model = build_tiny_llama(PolicyConfig(hidden_size=32, num_layers=2), tokenizer, seed=0)
    else:
        model = tiny_random_model(arch, tokenizer, seed=0)
    settings = {"prompts_per_step": 3, "group_size": 3, "lr": 1e-2, "supervision": "process", "reward_source": "prm"}
    return GRPOTrainer(model, tokenizer, GRPOConfig(**{**settings, **overrides}),
                       policy_cfg or PolicyConfig(max_new_tokens=10), ARITH, scorer=DigitScorer())


def varied_rollout(trainer: GRPOTrainer):
    """A sampled rollout of 3 prompts x G = 3, its completions cut to 10, 2, 7, 1, 9, 4, 10, 6, 3 tokens at most."""
    problems = PROBLEMS[:3]
    rollout = trainer._sample(trainer._encode(problems, [trainer.prompter(p.question) for p in problems]), 0, 0)
    cut = torch.tensor([10, 2, 7, 1, 9, 4, 10, 6, 3])[:, None]  # (9, 1)
    mask = rollout.completion_mask & (torch.arange(rollout.completion_mask.shape[1])[None, :] < cut)  # (9, T)
    ids = rollout.completion_ids.clone()
    ids[1, :2], ids[7, :4] = ids[0, :2], ids[6, :4]  # rows 1 and 7 share a prefix with the row before (prefix trees)
    return dataclasses.replace(rollout, completion_ids=ids, completion_mask=mask,
                               logp=torch.where(mask, rollout.logp, 0.0))


def update_of(trainer: GRPOTrainer, rollout, advantages: torch.Tensor, padding_free: bool):
    """π_ref log-probs, the micro-step's stats and the gradients of one update over all rows."""
    trainer.cfg.padding_free = padding_free
    trainer.optimizer.zero_grad(set_to_none=True)
    ref_logp = trainer._reference_logps(rollout)
    stats = trainer._micro_step(rollout, advantages, ref_logp, slice(0, 9), 1.0, True, True)
    grads = {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.requires_grad}
    return ref_logp, stats, grads


@pytest.mark.parametrize(("arch", "policy_cfg", "trees"), [
    ("llama", PolicyConfig(max_new_tokens=10), False),
    ("qwen2", PolicyConfig(max_new_tokens=10), False),
    ("tiny", PolicyConfig(max_new_tokens=10), False),
    ("llama", PolicyConfig(max_new_tokens=10, lora_r=4), False),
    ("llama", PolicyConfig(max_new_tokens=10, gradient_checkpointing=True), False),
    ("qwen2", PolicyConfig(max_new_tokens=10), True),
    ("tiny", PolicyConfig(max_new_tokens=10), True),
    ("llama", PolicyConfig(max_new_tokens=10, lora_r=4), True),
    ("llama", PolicyConfig(max_new_tokens=10, gradient_checkpointing=True), True),
], ids=["llama", "qwen2", "tiny-policy", "llama-lora", "llama-checkpointing", "qwen2-trees", "tiny-policy-trees",
        "llama-lora-trees", "llama-checkpointing-trees"])
def test_the_packed_update_has_the_padded_updates_reference_logps_loss_and_gradients(arch, policy_cfg, trees,
                                                                                    monkeypatch):
    monkeypatch.setattr(logps, "TREE_SHARE", 1e9 if trees else -1.0)  # prefix trees always / never
    packed_trees, pack_trees = [], logps.pack_trees
    monkeypatch.setattr(logps, "pack_trees", lambda *args: packed_trees.append(1) or pack_trees(*args))
    trainer = make_trainer(arch, policy_cfg)
    rollout = varied_rollout(trainer)
    mask = rollout.completion_mask
    if policy_cfg.lora_r:  # π_ref = base + a copy of the adapters; move the adapters so that it differs from π_θ
        trainer.reference_adapters = {k: v + 0.05 * torch.randn_like(v) for k, v in trainer.reference_adapters.items()}
    else:
        trainer.reference.load_state_dict({k: v + 0.01 * torch.randn_like(v)
                                           for k, v in trainer.reference.state_dict().items()})
    rollout = dataclasses.replace(rollout, logp=rollout.logp + 0.3 * torch.randn_like(rollout.logp) * mask)  # ρ ≠ 1
    advantages = torch.randn(mask.shape) * mask  # (9, T)
    padded_ref, padded_stats, padded_grads = update_of(trainer, rollout, advantages, padding_free=False)
    ref, stats, grads = update_of(trainer, rollout, advantages, padding_free=True)
    assert torch.allclose(ref[mask], padded_ref[mask], atol=1e-5)
    assert stats["kl"] > 1e-4 and stats["clip_ratio/region_mean"] > 0  # the KL and the clip both take part
    for key in ("loss", "kl", "entropy", "clip_ratio/region_mean"):
        assert stats[key] == pytest.approx(padded_stats[key], abs=1e-4), key
    assert grads.keys() == padded_grads.keys() and (not policy_cfg.lora_r or all("lora" in k for k in grads))
    for name, grad in grads.items():
        assert torch.allclose(grad, padded_grads[name], atol=1e-4), name
    assert bool(packed_trees) == trees


def test_padding_free_steps_match_padded_steps():
    """Same seeds, same weights: two whole steps (sample, PRM score, π_ref, update) give the same metrics."""
    histories = [make_trainer(padding_free=padding_free).train(PROBLEMS, steps=2) for padding_free in (False, True)]
    for padded, packed in zip(*histories):
        for key in ("loss", "kl", "grad_norm", "entropy", "reward"):
            assert packed[key] == pytest.approx(padded[key], abs=1e-4), key


def test_a_model_that_would_mix_packed_sequences_is_refused_at_start():
    AttentionInterface.register("sdpa_without_masks", sdpa_attention_forward)  # transformers builds no mask for it
    tokenizer = build_task_tokenizer()
    model = tiny_random_model("llama", tokenizer, seed=0)
    model.config._attn_implementation = "sdpa_without_masks"
    cfg = GRPOConfig(prompts_per_step=2, group_size=2, supervision="outcome", reward_source="rule", padding_free=True)
    with pytest.raises(UserError, match=r"^grpo.padding_free: LlamaForCausalLM \(attention 'sdpa_without_masks'\) "
                                        r"does not keep attention within each packed sequence .* set "
                                        r"grpo.padding_free: false$"):
        GRPOTrainer(model, tokenizer, cfg, PolicyConfig(max_new_tokens=4), ARITH)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="DeepSpeed is not installed")
def test_deepspeed_runs_padding_free_with_the_padded_runs_losses(tmp_path):
    """One DeepSpeed ZeRO-2 process (over gloo) with padding_free against one plain process without it: the same 4
    steps (tests/grpo_ddp_script.py, grad_accum 2). Two processes are tests/test_grpo.py's DeepSpeed tests."""
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    script = str(Path(__file__).parent / "grpo_ddp_script.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("ACCELERATE_USE_CPU", None)
    commands = [[sys.executable, script, str(tmp_path / "one.json")],
                [accelerate, "launch", "--config_file", "configs/accelerate/cpu_deepspeed_zero2.yaml", "--num_processes",
                 "1", "--dynamo_backend", "no", script, str(tmp_path / "ds.json"), "--padding-free"]]
    for command in commands:
        done = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=300,
                              cwd=Path(__file__).parents[1])
        assert done.returncode == 0, done.stderr[-2000:]
    one, ds = (json.loads((tmp_path / name).read_text()) for name in ("one.json", "ds.json"))
    assert ds["distributed_type"] == "DistributedType.DEEPSPEED" and len(ds["history"]) == len(one["history"]) == 4
    for padded, packed in zip(one["history"], ds["history"]):
        for key in ("loss", "kl", "grad_norm"):
            assert packed[key] == pytest.approx(padded[key], abs=1e-5), key
