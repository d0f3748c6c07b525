"""The full study as docs/results.md reports it: the warm start's landing band over seeds, then the comparison, timed.

Run: ``python bench/study.py`` (defaults: ``configs/compare.yaml``, 5 band seeds, output ``runs/study``). Steps:
1. ``bench/sft_band.py --config CONFIG --seeds N --jobs J`` (each seed's SFT, reused if already trained);
2. the band's seed ``cfg.seed`` is the comparison's warm start (same data/policy/sft sections): it is copied into the
   loop's SFT cache unless that already holds one, so it is not trained twice;
3. ``prmloop compare --config CONFIG --out OUT`` (add ``--resume`` to continue an interrupted study), timed;
4. prints the machine, the torch version, the wall times, and the report's questions and final-accuracy sections,
   and copies report.md and its PNGs to ``bench/results/<config stem>/`` (git-ignored; docs/results/ keeps the reports).

``--judge`` first trains a judge LM, the same SFT recipe on the exact teacher's solutions (no slips), into
``runs/judge/<config stem>-<digest>`` (reused when there), and starts every reward model from it (``prm.init``) instead of from the
warm-started policy, which learned the slips it is meant to catch; results go to ``bench/results/<stem>_judge/``.
``--set KEY=VALUE`` passes further overrides to the comparison.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from sft_band import band_dir, cpu_name

from prmloop.loop.config import load_config
from prmloop.loop.report import HEADLINE, report_sections
from prmloop.loop.stages import warm_start_path

JUDGE_SETTINGS = ["data.slip_rate=0", "data.slip_borrow=false"]
"""The judge LM: the warm start's recipe on the exact teacher's solutions."""


def judge_dir(config: str) -> Path:
    """runs/judge/<config stem>-<digest of the file and the judge's settings>: a changed config trains a new judge."""
    return ROOT / "runs" / "judge" / band_dir(config, JUDGE_SETTINGS, 0).name.removesuffix("-s0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/compare.yaml")
    parser.add_argument("--band-seeds", type=int, default=5)
    parser.add_argument("--band-jobs", type=int, default=1, help="band seeds trained at once (sft_band.py --jobs)")
    parser.add_argument("--out", default="runs/study")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted comparison in --out")
    parser.add_argument("--judge", action="store_true", help="reward models start from an LM trained without slips")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for the comparison")
    parser.add_argument("--results", default=None, help="folder under bench/results/ for the report (default: the "
                        "config's stem, + '_judge' with --judge)")
    args = parser.parse_args()
    import torch

    started = time.perf_counter()
    if args.band_seeds:
        subprocess.run([sys.executable, str(ROOT / "bench" / "sft_band.py"), "--config", args.config, "--seeds",
                        str(args.band_seeds), "--jobs", str(args.band_jobs)], cwd=ROOT, check=True)
    band_seconds = time.perf_counter() - started
    cfg = load_config(ROOT / args.config)
    cache = ROOT / warm_start_path(cfg)
    seed_dir = band_dir(args.config, [], cfg.sft.seed)
    if args.band_seeds > cfg.sft.seed and not (cache / "sft_metrics.json").is_file() and seed_dir.is_dir():
        shutil.copytree(seed_dir, cache)
        print(f"warm start: the band's seed {cfg.sft.seed} ({seed_dir.name}) -> {cache.relative_to(ROOT)}")
    extra = [arg for item in args.set for arg in ("--set", item)]
    if args.judge:
        judge = judge_dir(args.config)
        if not (judge / "sft_metrics.json").is_file():
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "prmloop", "policy", "sft", "--config", args.config, "--out",
                            str(judge), *(arg for item in JUDGE_SETTINGS for arg in ("--set", item))], cwd=ROOT,
                           check=True)
            print(f"judge LM trained in {time.perf_counter() - started:.0f}s -> {judge.relative_to(ROOT)}")
        metrics = json.loads((judge / "sft_metrics.json").read_text())
        print(f"judge LM: held-out greedy accuracy {metrics['eval_accuracy']:.3f}")
        extra += ["--set", f"prm.init={judge}"]
    started = time.perf_counter()
    command = [sys.executable, "-m", "prmloop", "compare", "--config", args.config, "--out", args.out, *extra]
    subprocess.run(command + (["--resume"] if args.resume else []), cwd=ROOT, check=True)
    compare_seconds = time.perf_counter() - started
    print(f"\nStudy: {args.config}; torch {torch.__version__}, {cpu_name()}, {torch.get_num_threads()} threads")
    print(f"band: {band_seconds / 60:.1f} min; comparison: {compare_seconds / 60:.1f} min")
    print(report_sections((ROOT / args.out / "report.md").read_text(), HEADLINE))
    published = ROOT / "bench" / "results" / (args.results or Path(args.config).stem + ("_judge" if args.judge else ""))
    published.mkdir(parents=True, exist_ok=True)
    for path in (ROOT / args.out).glob("*"):
        if path.suffix in (".md", ".png"):
            shutil.copy2(path, published / path.name)
    print(f"report and plots copied to {published.relative_to(ROOT)}/")


if __name__ == "__main__":
    main()
