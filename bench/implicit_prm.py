"""The implicit PRM's online update as GRPO makes it, and what it adds to a GRPO step (docs/benchmarks.md).

Run: ``python bench/implicit_prm.py --train train.jsonl --eval eval.jsonl [--settings 1e-4,0.5 3e-4,0.5] [--cost]``
with stepwise files from ``prmloop prm label --method exact`` (docs/benchmarks.md, "Implicit PRM vs explicit PRM").
For each (lr, β): a fresh implicit PRM from the warm start takes ``--updates`` online steps (``grpo.implicit_update:
after``) of ``--batch`` training samples each, labelled by their answer check; the table gives the loss and accuracy
on the last batch before its step, the step metrics on ``--eval`` and seconds per update. ``--cost`` also times three
GRPO steps of the demo's setting (16 prompts x 8 samples) with an explicit PRM (``--prm``) and with the online one.
"""

from __future__ import annotations

import argparse
import copy
import random
import time
from pathlib import Path

import torch

from prmloop.data.tasks import get_task
from prmloop.loop.config import load_config
from prmloop.loop.jobs_prm import load_stepwise
from prmloop.policy.grpo import GRPOTrainer
from prmloop.policy.load import load_policy
from prmloop.prm.formats import load_reward_model, online_implicit_model
from prmloop.prm.implicit import ImplicitPRM
from prmloop.prm.implicit_train import outcome_label
from prmloop.prm.scoring_eval import evaluate_steps

ROOT = Path(__file__).resolve().parents[1]
WARM_START = str(ROOT / "loop" / "warm_starts" / "sft-fd88599ed77d")


def online_sweep(args: argparse.Namespace) -> None:
    train, evals = load_stepwise(args.train), load_stepwise(args.eval)
    print("| lr | β | loss (last batch) | accuracy (last batch) | eval step acc | eval first-error F1 | s/update |")
    print("|---|---|---|---|---|---|---|")
    for setting in args.settings:
        lr, beta = (float(x) for x in setting.split(","))
        prm = ImplicitPRM.from_policy(args.policy, beta, 160).configure_online(lr, "after")
        rows = random.Random(0).sample(train, len(train))
        started = time.perf_counter()
        for step in range(args.updates):
            batch = [rows[(step * args.batch + i) % len(rows)] for i in range(args.batch)]
            _, stats = prm.online_step([r.prompt for r in batch], [r.completions for r in batch],
                                       [outcome_label(r) for r in batch])
        seconds = (time.perf_counter() - started) / args.updates
        metrics = evaluate_steps(prm, evals, 0.5, 64)
        print(f"| {lr:g} | {beta:g} | {stats['implicit/loss']:.3f} | {stats['implicit/accuracy']:.3f} | "
              f"{metrics['step_acc']:.3f} | {metrics['first_error_f1']:.3f} | {seconds:.2f} |", flush=True)


def step_cost(args: argparse.Namespace) -> None:
    cfg = load_config(str(ROOT / "configs" / "demo.yaml"), [])
    task = get_task(cfg.data)
    train, _ = task.problems()
    for source in ("prm", "implicit"):
        run = copy.deepcopy(cfg)
        run.grpo.reward_source = source
        model, tokenizer = load_policy(args.policy, "float32")
        scorer = (online_implicit_model(args.policy, run.prm, run.grpo.implicit_lr, run.grpo.implicit_update)
                  if source == "implicit" else load_reward_model(args.prm, run.prm))
        trainer = GRPOTrainer(model, tokenizer, run.grpo, run.policy, task, scorer)
        times = [trainer.train_step(train[step * 16 : (step + 1) * 16], step) for step in range(3)]
        mean = {key: sum(m[f"time/{key}"] for m in times) / 3 for key in ("sample", "score", "update")}
        line = ", ".join(f"{key} {value:.1f} s" for key, value in mean.items())
        print(f"{source}: {line} per step", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--eval", required=True)
    parser.add_argument("--policy", default=WARM_START)
    parser.add_argument("--settings", nargs="+", default=["5e-5,0.05", "1e-4,0.05", "1e-4,0.5", "3e-4,0.5", "1e-3,0.5"])
    parser.add_argument("--updates", type=int, default=16)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--cost", action="store_true")
    parser.add_argument("--prm", default=None, help="with --cost: an explicit PRM directory")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    online_sweep(args)
    if args.cost:
        step_cost(args)


if __name__ == "__main__":
    main()
