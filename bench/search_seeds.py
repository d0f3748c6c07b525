"""PRM-guided search over several sampling seeds: Best-of-N, weighted Best-of-N, maj@N, pass@N and a tree search, with
95% CIs over seeds and the paired per-seed differences: PRM reranking vs majority voting, tree search vs Best-of-N.

Run: ``python bench/search_seeds.py [--seeds 0 1 2] [--n 16] [--problems 64] [--strategy beam|dvts|best_of_n]``.
It builds the docs' PRM once (docs/benchmarks.md, "PRM-guided search"): 128 training problems x 4 samples of the
shipped warm start, exact step labels, ``prmloop prm train`` from the warm start, into ``--out``/prm (reused when
there), then runs ``prmloop search`` once per seed (``--set seed=K``: other samples, other subsets, another tree
search) into ``--out``/seed<K> (reused when its search.jsonl exists) and prints a markdown table: each strategy's
accuracy at n = N (and the tree search's at its own tokens) as mean ± 95% CI over seeds (t-distribution), and the
per-seed paired differences PRM Best-of-N − maj@N and tree search − Best-of-N. Every command is printed as it runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WARM_START = ROOT / "loop" / "warm_starts" / "sft-fd88599ed77d"
CONFIG = "configs/compare.yaml"


def prmloop(*args: str) -> None:
    command = [sys.executable, "-m", "prmloop", *args, "--config", CONFIG, "--set", "tracking.mode=disabled"]
    print("$ prmloop " + " ".join(args), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def build_prm(out: Path) -> Path:
    """The docs' PRM: exact labels of the warm start's samples on 128 training problems, trained from the warm start."""
    prm = out / "prm"
    if (prm / "config.json").is_file():
        return prm
    out.mkdir(parents=True, exist_ok=True)
    prmloop("data", "generate", "--n", "128", "--split", "train", "--out", str(out / "problems.jsonl"))
    prmloop("prm", "label", "--policy", str(WARM_START), "--problems", str(out / "problems.jsonl"), "--method",
            "exact", "--samples", "4", "--out", str(out / "labels.jsonl"))
    prmloop("prm", "train", "--data", str(out / "labels.jsonl"), "--init", str(WARM_START), "--out", str(prm))
    return prm


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--strategy", default="beam", help="best_of_n, beam or dvts (the tree search beside BoN)")
    parser.add_argument("--step-tokens", type=int, default=16)
    parser.add_argument("--out", default="runs/search_seeds")
    args = parser.parse_args()
    from prmloop.loop.report_stats import ci_text, mean_ci  # lazy: after argparse, so --help is instant

    out = ROOT / args.out
    started = time.perf_counter()
    prm = build_prm(out)
    per_seed: dict[int, dict[str, float]] = {}
    for seed in args.seeds:
        seed_dir = out / f"seed{seed}"
        if not (seed_dir / "search.jsonl").is_file():
            prmloop("search", "--policy", str(WARM_START), "--prm", str(prm), "--n", str(args.n), "--problems",
                    str(args.problems), "--strategy", args.strategy, "--step-tokens", str(args.step_tokens),
                    "--out", str(seed_dir), "--set", f"seed={seed}")
        rows = read_rows(seed_dir / "search.jsonl")
        last = next(row for row in reversed(rows) if row.get("strategy") == "best_of_n" and row["n"] == args.n)
        values = {name: last[name] for name in ("best_of_n", "weighted_best_of_n", "maj_at_n", "pass_at_n")}
        values["tokens_best_of_n"] = last["tokens_per_problem"]
        tree = next((row for row in rows if row.get("strategy") == args.strategy != "best_of_n"), None)
        if tree is not None:
            values[args.strategy] = tree[args.strategy]
            values[f"tokens_{args.strategy}"] = tree["tokens_per_problem"]
        per_seed[seed] = values
    names = list(next(iter(per_seed.values())))
    print(f"\n{len(per_seed)} seeds, {args.problems} held-out problems, n = {args.n}; {time.perf_counter() - started:.0f}s")
    print("\n| metric | per seed | mean ± 95% CI over seeds |\n|---|---|---|")
    for name in names:
        values = [per_seed[s][name] for s in per_seed]
        mean, half = mean_ci(values)
        print(f"| {name} | {', '.join(f'{v:.3f}' for v in values)} | {mean:.3f} ± {half:.3f} |")
    pairs = [("best_of_n", "maj_at_n"), ("weighted_best_of_n", "maj_at_n")]
    if args.strategy != "best_of_n":
        pairs.append((args.strategy, "best_of_n"))
    for a, b in pairs:
        print(f"| {a} − {b} (paired per seed) | "
              f"{', '.join(f'{per_seed[s][a] - per_seed[s][b]:+.3f}' for s in per_seed)} | "
              f"{ci_text(*mean_ci([per_seed[s][a] - per_seed[s][b] for s in per_seed]))} |")


if __name__ == "__main__":
    main()
