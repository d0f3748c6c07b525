"""Peak memory and time of one GRPO step on a Qwen2-0.5B-shaped random model on CPU: full fine-tuning vs LoRA.

Run: ``python bench/memory.py`` (every variant, each in a fresh subprocess so its peak RSS is its own) or
``python bench/memory.py --variant lora`` (one). The model has Qwen2-0.5B's shape (hidden 896, 24 layers, 14 heads,
2 KV heads, MLP 4864, vocabulary 151,936, tied embeddings: 494M parameters, float32) and random weights; the prompts
are embedded-task questions (the task tokenizer's ids are a subset of the vocabulary). One step: 2 prompts x G=4,
32 new tokens, outcome supervision with the rule reward, β = 0.04 (so full fine-tuning holds a π_ref copy); two steps,
the second timed (the first creates the optimizer state).
Variants:
- ``full``: full fine-tuning, π_ref a deep copy, the divergence rollback's CPU copy on (the default);
- ``full-norollback``: the same with ``grpo.rollback: false``;
- ``lora``: LoRA r=16 on all linear layers, π_ref = the base plus a copy of the adapters;
- ``lora-gc``: LoRA with gradient checkpointing.
Prints one table row per variant: peak RSS (GiB, the whole process, model load included), the model's parameter
count, trainable parameters, and the step's seconds (``--threads`` torch threads).

``python bench/memory.py --processes 2 --layers 12`` instead compares two CPU processes under DDP and under DeepSpeed
ZeRO-2 (``configs/accelerate/cpu_ddp.yaml`` / ``cpu_deepspeed_zero2.yaml``), full fine-tuning with
``grpo.rollback: false`` (DeepSpeed keeps no rollback copy): peak RSS of each process. ``--layers`` shrinks the
model's depth (Qwen2-0.5B has 24) so that two processes fit in this machine's memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "full": ({}, {}),
    "full-norollback": ({}, {"rollback": False}),
    "lora": ({"lora_r": 16}, {}),
    "lora-gc": ({"lora_r": 16, "gradient_checkpointing": True}, {}),
}


def qwen2_half_b(tokenizer, layers: int = 24):
    """A random model with Qwen2-0.5B's shape (``layers`` of its 24 decoder layers)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(hidden_size=896, num_hidden_layers=layers, num_attention_heads=14, num_key_value_heads=2,
                         intermediate_size=4864, vocab_size=151_936, max_position_embeddings=512,
                         tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    return Qwen2ForCausalLM(config)


ENGINES = {"DDP": "cpu_ddp.yaml", "DeepSpeed ZeRO-2": "cpu_deepspeed_zero2.yaml"}


def run_variant(name: str, threads: int, layers: int = 24) -> dict:
    import torch

    from prmloop.data.arith import generate
    from prmloop.data.config import DataConfig
    from prmloop.data.task_tokenizer import build_task_tokenizer
    from prmloop.data.tasks import get_task
    from prmloop.policy.config import GRPOConfig, PolicyConfig
    from prmloop.policy.grpo import GRPOTrainer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    policy_overrides, grpo_overrides = VARIANTS[name]
    tokenizer = build_task_tokenizer()
    model = qwen2_half_b(tokenizer, layers)
    cfg = GRPOConfig(prompts_per_step=2, group_size=4, supervision="outcome", reward_source="rule", beta=0.04,
                     lr=1e-5, **grpo_overrides)
    policy_cfg = PolicyConfig(model="random-qwen2-0.5b-shape", max_new_tokens=32, max_length=160, **policy_overrides)
    trainer = GRPOTrainer(model, tokenizer, cfg, policy_cfg, get_task(DataConfig()))
    problems = generate(DataConfig(), 4, "train")
    trainer.train_step(problems[:2], step=0)  # the first step creates the optimizer state
    started = time.perf_counter()
    metrics = trainer.train_step(problems[2:4], step=1)
    seconds = time.perf_counter() - started
    return {"variant": name, "rank": trainer.accelerator.process_index,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "params_m": sum(p.numel() for p in trainer.policy.parameters()) / 1e6,
            "trainable_m": sum(p.numel() for p in trainer.policy.parameters() if p.requires_grad) / 1e6,
            "step_s": seconds, "sample_s": metrics["time/sample"], "skipped": metrics["skipped_updates"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS), help="run only this one (in this process)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=24, help="decoder layers (Qwen2-0.5B: 24)")
    parser.add_argument("--processes", type=int, default=1, help="2: DDP vs DeepSpeed ZeRO-2 on two CPU processes")
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.threads, args.layers)), flush=True)
        os._exit(0)  # under accelerate launch, torch 2.13's gloo teardown at exit can hang a rank
    import torch

    print(f"torch {torch.__version__}, {args.threads} threads per process, {args.layers} layers; GRPO steps of "
          "2 prompts x G=4, 32 new tokens")
    if args.processes > 1:
        compare_engines(args)
        return
    print("| variant | peak RSS GiB | params M | trainable M | step s | sample s |")
    print("|---|---|---|---|---|---|")
    for name in VARIANTS:
        done = subprocess.run([sys.executable, __file__, "--variant", name, "--threads", str(args.threads),
                               "--layers", str(args.layers)], capture_output=True, text=True, check=False, cwd=ROOT)
        if done.returncode != 0:
            print(f"| {name} | failed: {done.stderr.strip().splitlines()[-1][:150]} |")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {name} | {row['peak_rss_gib']:.2f} | {row['params_m']:.0f} | {row['trainable_m']:.1f} | "
              f"{row['step_s']:.1f} | {row['sample_s']:.1f} |")


def compare_engines(args: argparse.Namespace) -> None:
    """Full fine-tuning (no rollback copy) on ``args.processes`` CPU processes, under DDP and DeepSpeed ZeRO-2."""
    import shutil

    accelerate = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    print("| engine | peak RSS GiB per process | params M | step s |")
    print("|---|---|---|---|")
    for engine, config in ENGINES.items():
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        env.pop("ACCELERATE_USE_CPU", None)
        if engine == "DDP":
            env["ACCELERATE_USE_CPU"] = "1"  # DDP on CPU (DeepSpeed runs over gloo without it)
        command = [accelerate, "launch", "--config_file", f"configs/accelerate/{config}", "--num_processes",
                   str(args.processes), __file__, "--variant", "full-norollback", "--threads", str(args.threads),
                   "--layers", str(args.layers)]
        done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT, env=env)
        rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or len(rows) != args.processes:
            print(f"| {engine} | failed: {(done.stderr.strip().splitlines() or ['?'])[-1][:150]} |")
            continue
        peaks = " / ".join(f"{row['peak_rss_gib']:.2f}" for row in sorted(rows, key=lambda row: row["rank"]))
        print(f"| {engine} | {peaks} | {rows[0]['params_m']:.0f} | {max(row['step_s'] for row in rows):.1f} |")


if __name__ == "__main__":
    main()
