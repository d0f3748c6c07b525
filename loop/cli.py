"""The `prmloop` command line: parses arguments and dispatches to loop.jobs; holds no training logic.

Every command takes ``--config FILE.yaml`` and ``--set section.key=value``. Mistakes a user can make end in one line
on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from data.errors import UserError


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="experiment config YAML (default: built-in defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set sft.steps=200 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prmloop", description="Process reward models with an iterative GRPO loop.")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="generate, convert and inspect datasets").add_subparsers(dest="action", required=True)
    gen = data.add_parser("generate", help="write embedded-task problems as JSONL")
    gen.add_argument("--task", default="arith", choices=["arith"])
    gen.add_argument("--n", type=int, required=True, help="number of problems")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--split", default="train", choices=["train", "eval"])
    gen.add_argument("--out", required=True)
    show = data.add_parser("show", help="print a few problems or stepwise rows with their step labels")
    show.add_argument("file")
    show.add_argument("--n", type=int, default=3)
    conv = data.add_parser("convert", help="convert a dataset to TRL stepwise JSONL (the PRM's training format)")
    conv.add_argument("--format", required=True, help="gsm8k, math, prm800k, math_shepherd, processbench, trl_stepwise")
    conv.add_argument("--source", required=True, help="hub dataset name or local JSON/JSONL/parquet path")
    conv.add_argument("--out", required=True)
    conv.add_argument("--split", default="train")
    conv.add_argument("--subset", default=None)
    conv.add_argument("--neutral-as", default=None, choices=["positive", "negative"], help="PRM800K: how 0 ratings map")
    conv.add_argument("--skip-bad", action="store_true", help="skip malformed rows and report how many")
    for sub in (gen, show, conv):
        _common(sub)

    policy = commands.add_parser("policy", help="the policy model").add_subparsers(dest="action", required=True)
    init = policy.add_parser("init", help="write the embedded tokenizer and a fresh tiny LM (save_pretrained dir)")
    init.add_argument("--out", required=True)
    sft = policy.add_parser("sft", help="supervised warm start on reference solutions, with held-out accuracy")
    sft.add_argument("--out", default="runs/sft")
    for sub in (init, sft):
        _common(sub)

    demo = commands.add_parser("demo", help="the default experiment on the embedded task")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--quick", action="store_true", help="use configs/quick.yaml-sized settings (seconds)")
    _common(demo)
    return parser


def dispatch(args: argparse.Namespace) -> None:
    from loop import jobs
    from loop.config import load_config

    cfg = load_config(args.config, args.overrides)
    if args.command == "data" and args.action == "generate":
        count = jobs.generate_problems(cfg, args.n, args.split, args.seed, args.out)
        print(f"wrote {count} {args.task} problems ({args.split}) to {args.out}")
    elif args.command == "data" and args.action == "show":
        print(jobs.show_rows(args.file, args.n))
    elif args.command == "data" and args.action == "convert":
        from data.loaders import convert

        options = {"neutral_as": args.neutral_as} if args.neutral_as else {}
        written, skipped = convert(args.format, args.source, args.out, skip_bad=args.skip_bad, split=args.split,
                                   subset=args.subset, **options)
        print(f"wrote {written} rows to {args.out}; skipped {skipped} bad rows")
    elif args.command == "policy" and args.action == "init":
        print(f"wrote a tiny policy to {jobs.init_policy(cfg, args.out)}")
    elif args.command in ("policy", "demo"):
        if args.command == "demo" and args.quick:
            from loop.config import apply_override

            for assignment in QUICK_OVERRIDES:
                apply_override(cfg, assignment)
        summary = jobs.run_sft(cfg, args.out)
        print(f"SFT done in {summary['seconds']}s: held-out greedy accuracy {summary['eval_accuracy']:.3f}, "
              f"first errors by step {summary['first_error_counts']}; saved to {args.out}")


QUICK_OVERRIDES = ["data.n_train=200", "data.n_eval=20", "policy.hidden_size=32", "policy.num_layers=1",
                   "policy.num_heads=2", "sft.steps=30", "sft.batch_size=16", "sft.warmup_steps=5", "sft.eval_every=0",
                   "sft.eval_problems=20"]
"""`demo --quick`: the settings of configs/quick.yaml (a test keeps the two equal)."""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        dispatch(args)
    except UserError as err:
        print(f"prmloop: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prmloop: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
