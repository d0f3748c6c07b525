"""Tests for policy/precision.py and the training precision of GRPO: fp32 master weights with bf16 autocast take every
small update; pure bf16 weights lose most of them (measured, on the tiny policy on CPU)."""

import logging

import pytest
import torch
from test_grpo import ARITH, PROBLEMS, DigitScorer, one_thread  # noqa: F401 - one_thread is an autouse fixture

from prmloop.data.task_tokenizer import build_task_tokenizer
from prmloop.loop.config import load_config
from prmloop.policy.config import GRPOConfig, PolicyConfig
from prmloop.policy.grpo import GRPOTrainer
from prmloop.policy.precision import low_precision_warning
from prmloop.policy.tiny import tiny_random_model
from prmloop.utils.lora import add_lora

WARNING = ("policy.dtype: training bfloat16 weights directly: AdamW loses updates smaller than the weights' rounding "
           "step (most of them at lr 1e-6); for fp32 master weights with bf16 compute set policy.dtype=float32 and "
           "grpo.mixed_precision=bf16")


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one mixed-precision setting per process: start and leave these tests without one."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_warning_names_the_dtype_and_the_alternative():
    tokenizer = build_task_tokenizer()
    assert low_precision_warning(tiny_random_model("llama", tokenizer, seed=0)) is None
    assert low_precision_warning(tiny_random_model("llama", tokenizer, seed=0).to(torch.bfloat16)) == WARNING
    # LoRA on a bf16 base: PEFT keeps the adapters (the only trainable weights) in fp32, so there is nothing to warn of
    peft = add_lora(tiny_random_model("llama", tokenizer, seed=0).to(torch.bfloat16), 4, 32, task_type="CAUSAL_LM")
    assert low_precision_warning(peft) is None


def test_real_model_configs_train_fp32_weights_with_bf16_compute():
    for path in ("configs/gsm8k_qwen.yaml", "configs/math_qwen.yaml"):
        cfg = load_config(path, [])
        assert (cfg.policy.dtype, cfg.grpo.mixed_precision, cfg.grpo.vllm_dtype) == ("float32", "bf16", "bfloat16")
        assert cfg.grpo.lr == 1e-6


def run_small_lr(dtype: torch.dtype, mixed_precision: str, steps: int = 10) -> tuple[float, set[torch.dtype]]:
    """Fraction of the policy's weights that 10 GRPO steps at lr 1e-6 change, and the dtypes its linear layers
    computed in (the gsm8k/math configs' GRPO settings: lr 1e-6, beta 0.04, mu 1, on the tiny policy)."""
    tokenizer = build_task_tokenizer()
    model = tiny_random_model("llama", tokenizer, seed=0).to(dtype)
    cfg = GRPOConfig(prompts_per_step=2, group_size=4, lr=1e-6, beta=0.04, mu=1, mixed_precision=mixed_precision)
    trainer = GRPOTrainer(model, tokenizer, cfg, PolicyConfig(max_new_tokens=10), ARITH, scorer=DigitScorer())
    compute = set()
    trainer.policy.model.layers[0].self_attn.q_proj.register_forward_hook(lambda m, i, out: compute.add(out.dtype))
    before = {name: p.detach().clone() for name, p in trainer.policy.named_parameters()}
    for step in range(steps):
        metrics = trainer.train_step(PROBLEMS[2 * step % 16 : 2 * step % 16 + 2], step)
        assert metrics["skipped_updates"] == 0
    changed = sum((p != before[name]).sum().item() for name, p in trainer.policy.named_parameters())
    assert all(p.dtype == dtype for p in trainer.policy.parameters())
    return changed / sum(p.numel() for p in trainer.policy.parameters()), compute


def test_fp32_weights_with_bf16_autocast_take_small_updates_and_pure_bf16_loses_them(caplog, fresh_accelerate_state):
    # fp32 weights, bf16 compute: measured 99.7% of the weights move (the rest: embedding rows of unused tokens)
    with caplog.at_level(logging.WARNING, logger="prmloop.policy.grpo"):
        mixed, mixed_compute = run_small_lr(torch.float32, "bf16")
    assert mixed > 0.99 and mixed_compute == {torch.bfloat16} and not caplog.records
    # bf16 weights: a 1e-6 step is below the rounding step of almost every weight; measured 1.7% move
    with caplog.at_level(logging.WARNING, logger="prmloop.policy.grpo"):
        pure, pure_compute = run_small_lr(torch.bfloat16, "no")
    assert pure < 0.05 and pure_compute == {torch.bfloat16}
    assert [r.getMessage() for r in caplog.records] == [WARNING]
