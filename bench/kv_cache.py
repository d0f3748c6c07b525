"""The sampling loop's caches, same run: transformers' own (a torch.cat per token, every row run), the in-place
growing cache (policy/kv_cache.py) with slots (policy/slots.py: samples that agree run once), and prefix sharing
(policy/prefix_sharing.py) with slots, the default.

Run: ``python bench/kv_cache.py [--policy DIR] [--rounds 4]``. Each round samples one batch (16 prompts x G = 8,
``policy.max_new_tokens``) each way, interleaved, from the same seeds, and checks that the samples are the same (tokens
equal, log-probs within 1e-4: float32 rounding of another attention order); it prints each way's seconds per round
(the first round warms up).
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
from prmloop.policy.rollout import HFBackend, encode_prompts
from prmloop.policy.sampling import row_seed

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
    backends = {share: HFBackend(model, tokenizer, policy_cfg.max_new_tokens, 1.0, 1.0, 256, share_prefixes=share)
                for share in (False, True)}
    in_place = rollout.grow_in_place
    ways = {"torch.cat, every row": (False, False), "in place, slots": (True, False),
            "prefix sharing, slots": (True, True)}  # name: (grow in place, share prefixes)
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    with torch.no_grad():
        for r in range(args.rounds):
            prompts = encode_prompts(tokenizer, [prompter(p.question) for p in problems[16 * r : 16 * (r + 1)]])
            rows = [ids for ids in prompts for _ in range(8)]
            seeds = [row_seed(0, r, k // 8, k % 8) for k in range(len(rows))]
            outputs = []
            for name, (grow, share) in ways.items():
                rollout.grow_in_place = in_place if grow else (lambda *_: None)
                started = time.perf_counter()
                outputs.append(backends[share].generate(rows, seeds))
                seconds[name].append(time.perf_counter() - started)
            same = all(torch.equal(out.completion_ids, outputs[0].completion_ids)
                       and torch.allclose(out.logp, outputs[0].logp, atol=1e-4) for out in outputs)
            print(f"round {r}: the same samples every way: {same}")
    rollout.grow_in_place = in_place
    print(f"torch {torch.__version__}, {args.threads} threads; seconds per batch (round 0 warms up)")
    for name, values in seconds.items():
        print(f"{name:<24} " + " ".join(f"{v:.3f}" for v in values) + f"   best after warm-up {min(values[1:]):.3f}")


if __name__ == "__main__":
    main()
