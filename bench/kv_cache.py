"""Sampling with the in-place KV cache (policy/kv_cache.py) vs transformers' own (a torch.cat per token), same run.

Run: ``python bench/kv_cache.py [--policy DIR] [--rounds 4]``. Each round samples one batch (16 prompts x G = 8,
``policy.max_new_tokens``) both ways, interleaved, from the same seeds, and checks that the samples are
bit-identical; it prints each way's seconds per round (the first round warms up).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from prmloop.data.arith import generate
from prmloop.data.config import DataConfig
from prmloop.data.prompts import Prompter
from prmloop.policy import rollout
from prmloop.policy.config import PolicyConfig
from prmloop.policy.rollout import HFBackend, encode_prompts, row_seed

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default=str(ROOT / "loop" / "warm_starts" / "sft-fd88599ed77d"))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(args.policy).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.policy)
    policy_cfg = PolicyConfig()
    prompter = Prompter.of(policy_cfg, tokenizer)
    problems = generate(DataConfig(), 16 * args.rounds, "train")
    backend = HFBackend(model, tokenizer, policy_cfg.max_new_tokens, 1.0, 1.0, 256)
    in_place = rollout.grow_in_place
    seconds: dict[str, list[float]] = {"torch.cat (transformers)": [], "in place (prmloop)": []}
    with torch.no_grad():
        for r in range(args.rounds):
            prompts = encode_prompts(tokenizer, [prompter(p.question) for p in problems[16 * r : 16 * (r + 1)]])
            rows = [ids for ids in prompts for _ in range(8)]
            seeds = [row_seed(0, r, k // 8, k % 8) for k in range(len(rows))]
            outputs = []
            for name, times in seconds.items():
                rollout.grow_in_place = in_place if name.startswith("in place") else (lambda *_: None)
                started = time.perf_counter()
                outputs.append(backend.generate(rows, seeds))
                times.append(time.perf_counter() - started)
            same = all(torch.equal(getattr(outputs[0], key), getattr(outputs[1], key))
                       for key in ("completion_ids", "logp", "completion_mask"))
            print(f"round {r}: bit-identical samples: {same}")
    rollout.grow_in_place = in_place
    print(f"torch {torch.__version__}, {args.threads} threads; seconds per batch (round 0 warms up)")
    for name, values in seconds.items():
        print(f"{name:<26} " + " ".join(f"{v:.3f}" for v in values) + f"   best after warm-up {min(values[1:]):.3f}")


if __name__ == "__main__":
    main()
