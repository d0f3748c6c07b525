"""A few GRPO steps on a tiny random model; writes the per-step metrics as JSON (used by tests/test_grpo.py).

Run as ``python tests/grpo_ddp_script.py OUT.json [--resume] [--lora] [--padding-free]`` (one process) or under ``accelerate launch`` with two
processes (DDP or DeepSpeed ZeRO-2): all see the same global batch, so the losses must agree. ``--resume`` takes the
last step in a fresh trainer loaded from the checkpoint of the first ones.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from prmloop.data.arith import generate
from prmloop.data.config import DataConfig
from prmloop.data.task_tokenizer import build_task_tokenizer
from prmloop.data.tasks import get_task
from prmloop.policy.config import GRPOConfig, PolicyConfig
from prmloop.policy.grpo import GRPOTrainer
from prmloop.policy.tiny import tiny_random_model


class DigitScorer:
    """A deterministic stand-in PRM: a step's score is the fraction of its characters that are digits."""

    def score_steps(self, prompts: list[str], solutions: list[list[str]]) -> list[list[float]]:
        return [[sum(c.isdigit() for c in step) / len(step) for step in steps] for steps in solutions]


def make_trainer(accelerator=None, lora_r: int = 0, padding_free: bool = False) -> GRPOTrainer:
    tokenizer = build_task_tokenizer()
    model = tiny_random_model("llama", tokenizer, seed=0)
    cfg = GRPOConfig(prompts_per_step=4, group_size=4, lr=1e-2, beta=0.04, supervision="process", reward_source="prm",
                     seed=0, grad_accum=2, padding_free=padding_free)
    return GRPOTrainer(model, tokenizer, cfg, PolicyConfig(max_new_tokens=12, lora_r=lora_r), get_task(DataConfig()),
                       scorer=DigitScorer(), accelerator=accelerator)


def main(out_path: str, steps: int = 4, resume: bool = False, lora_r: int = 0, padding_free: bool = False) -> None:
    """``resume``: train 2 steps and checkpoint, then a fresh trainer loads it and takes the others (the last step's
    loss depends on the optimizer state the checkpoint restored). ``lora_r``: a LoRA policy (π_ref = base + a copy
    of the adapters)."""
    torch.set_num_threads(1)
    problems = generate(DataConfig(), 16, "train")
    trainer = make_trainer(lora_r=lora_r, padding_free=padding_free)
    if resume:
        checkpoint = Path(out_path).with_suffix(".ckpt")
        history = trainer.train(problems, steps=2, checkpoint_dir=checkpoint)
        trainer = make_trainer(trainer.accelerator, lora_r, padding_free)
        trainer.load(checkpoint)
        history += trainer.train(problems, steps=steps)
    else:
        history = trainer.train(problems, steps=steps)
    if trainer.accelerator.is_main_process:
        sharded = any(type(p).__name__ == "DTensor" for p in trainer.model.parameters())
        Path(out_path).write_text(json.dumps({"processes": trainer.accelerator.num_processes, "history": history,
                                              "distributed_type": str(trainer.accelerator.distributed_type),
                                              "sharded": sharded,
                                              "param_dtype": str(next(trainer.policy.parameters()).dtype),
                                              "mixed_precision": trainer.accelerator.mixed_precision}))
    trainer.accelerator.end_training()
    # torch 2.13's gloo teardown at interpreter exit sometimes aborts one rank ("terminate called without an active
    # exception") and leaves the other waiting forever; the outputs are written, so leave without that teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1], resume="--resume" in sys.argv, lora_r=4 if "--lora" in sys.argv else 0,
         padding_free="--padding-free" in sys.argv)
