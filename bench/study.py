"""The full study as the README reports it: the warm start's landing band over seeds, then the comparison, timed.

Run: ``python bench/study.py`` (defaults: ``configs/compare.yaml``, 5 band seeds, output ``runs/study``). Steps:
1. ``bench/sft_band.py --config CONFIG --seeds N --jobs J`` (each seed's SFT, reused if already trained);
2. the band's seed ``cfg.seed`` is the comparison's warm start (same data/policy/sft sections): it is copied into the
   loop's SFT cache unless that already holds one, so it is not trained twice;
3. ``prmloop compare --config CONFIG --out OUT`` (add ``--resume`` to continue an interrupted study), timed;
4. prints the machine, the torch version, the wall times, and the report's questions and final-accuracy sections,
   and copies report.md and its PNGs to ``bench/results/<config stem>/`` (what the README shows).
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/compare.yaml")
    parser.add_argument("--band-seeds", type=int, default=5)
    parser.add_argument("--band-jobs", type=int, default=1, help="band seeds trained at once (sft_band.py --jobs)")
    parser.add_argument("--out", default="runs/study")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted comparison in --out")
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
    started = time.perf_counter()
    command = [sys.executable, "-m", "prmloop", "compare", "--config", args.config, "--out", args.out]
    subprocess.run(command + (["--resume"] if args.resume else []), cwd=ROOT, check=True)
    compare_seconds = time.perf_counter() - started
    print(f"\nStudy: {args.config}; torch {torch.__version__}, {cpu_name()}, {torch.get_num_threads()} threads")
    print(f"band: {band_seconds / 60:.1f} min; comparison: {compare_seconds / 60:.1f} min")
    print(report_sections((ROOT / args.out / "report.md").read_text(), HEADLINE))
    published = ROOT / "bench" / "results" / Path(args.config).stem
    published.mkdir(parents=True, exist_ok=True)
    for path in (ROOT / args.out).glob("*"):
        if path.suffix in (".md", ".png"):
            shutil.copy2(path, published / path.name)
    print(f"report and plots copied to {published.relative_to(ROOT)}/")


if __name__ == "__main__":
    main()
