"""Where one SFT step's time goes: forward, backward and optimizer, and torch's per-op profile of a few steps.

Run: ``python bench/sft_profile.py [--config configs/compare.yaml] [--steps 20] [--threads 2]``. It builds the
config's tiny policy and its SFT batches exactly as ``prmloop policy sft`` does, times ``--steps`` steps after 3 warm-up
steps, then profiles 3 steps and prints the top ops by self CPU time, plus the matmul throughput estimated from the
linear layers' FLOPs (6 x linear parameters x tokens per step).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from sft_band import cpu_name

from prmloop.data.prompts import Prompter
from prmloop.data.task_tokenizer import build_task_tokenizer
from prmloop.data.tasks import get_task
from prmloop.loop.config import load_config
from prmloop.policy.sft import collate, encode_sft_examples
from prmloop.policy.tiny import build_tiny_llama


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/compare.yaml")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(ROOT / args.config)
    task = get_task(cfg.data)
    tokenizer = build_task_tokenizer()
    model = build_tiny_llama(cfg.policy, tokenizer, cfg.sft.seed)
    prompter = Prompter.of(cfg.policy, tokenizer)
    examples = encode_sft_examples(task.sft_problems(task.problems()[0]), tokenizer, prompter, task,
                                   cfg.policy.max_length)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.sft.lr)
    rng = random.Random(0)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))

    def batch() -> dict[str, torch.Tensor]:
        return collate(rng.sample(examples, cfg.sft.batch_size), tokenizer.pad_token_id)

    def step(inputs: dict[str, torch.Tensor]) -> tuple[float, float, float]:
        started = time.perf_counter()
        loss = model(**inputs).loss
        forward = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        backward = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return forward - started, backward - forward, time.perf_counter() - backward

    for _ in range(3):
        step(batch())
    times, tokens = [], 0
    for _ in range(args.steps):
        inputs = batch()
        tokens += inputs["input_ids"].numel()
        times.append(step(inputs))
    fwd, bwd, opt = (sum(t[i] for t in times) / len(times) for i in range(3))
    total = fwd + bwd + opt
    print(f"SFT step ({args.config}, batch {cfg.sft.batch_size}, {tokens / args.steps:.0f} tokens incl. padding, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters); torch {torch.__version__}, "
          f"{cpu_name()}, {args.threads} threads")
    print(f"step {total:.3f} s = forward {fwd:.3f} + backward {bwd:.3f} + optimizer {opt:.3f}; "
          f"{cfg.sft.steps} steps ~ {total * cfg.sft.steps / 60:.1f} min")
    print(f"linear layers: {6 * linear * tokens / args.steps / 1e9:.1f} GFLOP per step, "
          f"{6 * linear * tokens / args.steps / total / 1e9:.0f} GFLOP/s over the whole step")
    inputs = batch()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        for _ in range(3):
            step(inputs)
    print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))


if __name__ == "__main__":
    main()
