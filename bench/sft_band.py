"""Where the SFT warm start lands across seeds: held-out greedy accuracy and per-step accuracy, mean, range and CI.

Run: ``python bench/sft_band.py --config configs/compare.yaml --seeds 5 [--jobs 2]`` (one ``prmloop policy sft`` per
seed into ``runs/sft_band/<config>-<digest>-s<seed>``, ``--jobs`` of them at once with the CPU cores shared out as torch
threads; a seed whose folder already holds a finished SFT is read, not retrained). Prints one row per seed and a summary line with the mean, the range and the 95% t-interval of the mean,
plus the torch version and the CPU, since the landing point has been seen to depend on the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from prmloop.loop.config import load_config
from prmloop.loop.report import mean_ci


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def band_dir(config: str, extra: list[str], seed: int) -> Path:
    """runs/sft_band/<config stem>-<digest of the file and overrides>-s<seed>: a changed config trains anew."""
    settings = Path(config).read_text() + "\n".join(extra)
    return ROOT / "runs" / "sft_band" / f"{Path(config).stem}-{hashlib.sha256(settings.encode()).hexdigest()[:8]}-s{seed}"


def trace_from_counts(metrics: dict, problems: int) -> float:
    """Trace accuracy of an SFT run that predates its logging: the share of solutions with no wrong step."""
    return 1 - sum(metrics["first_error_counts"].values()) / problems


def run_seed(config: str, seed: int, out: Path, extra: list[str], threads: int = 0) -> dict:
    metrics = out / "sft_metrics.json"
    if not metrics.is_file():
        sets = [arg for item in [f"sft.seed={seed}", *extra] for arg in ("--set", item)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "prmloop", "policy", "sft", "--config", config, "--out", str(out), *sets],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL, env=env)
        print(f"  seed {seed}: trained in {time.perf_counter() - started:.0f}s"
              + (f" ({threads} threads)" if threads else ""), flush=True)
    return json.loads(metrics.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/compare.yaml")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained at once (each gets cores/jobs threads)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    args = parser.parse_args()
    import torch

    print(f"SFT landing band: {args.config}, seeds 0..{args.seeds - 1}; torch {torch.__version__}, {cpu_name()}")
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else 0
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        rows = list(pool.map(lambda seed: run_seed(args.config, seed, band_dir(args.config, args.set, seed), args.set,
                                                   threads), range(args.seeds)))
    problems = load_config(ROOT / args.config, args.set).sft.eval_problems
    for seed, metrics in enumerate(rows):
        metrics.setdefault("eval_trace_accuracy", trace_from_counts(metrics, problems))
        print(f"| seed {seed} | greedy accuracy {metrics['eval_accuracy']:.3f} | trace accuracy "
              f"{metrics['eval_trace_accuracy']:.3f} | step accuracy {metrics['eval_step_accuracy']:.3f} | "
              f"{metrics['seconds']:.0f} s |", flush=True)
    for key in ("eval_accuracy", "eval_trace_accuracy", "eval_step_accuracy"):
        values = [row[key] for row in rows]
        mean, half = mean_ci(values)
        print(f"{key}: mean {mean:.3f} ± {half:.3f} (95% CI of the mean, n={len(values)}), "
              f"range {min(values):.3f}-{max(values):.3f}")


if __name__ == "__main__":
    main()
