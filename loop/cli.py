"""The `prmloop` command line: parses arguments and dispatches to loop.jobs; holds no training logic.

Every command takes ``--config FILE.yaml`` and ``--set section.key=value``. Mistakes a user can make end in one line
on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
import time
from pathlib import Path

from ..utils.errors import UserError
from .config import ExperimentConfig, config_to_yaml, load_config
from .config_docs import keys_help
from .report import HEADLINE, report_sections
from .tracking import check_online_login, is_main_process, resolve_mode, wandb_sync_hint


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="experiment config YAML (default: built-in defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set sft.steps=200 (repeatable)")


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose help ends with the config keys its command reads (``config_keys``: glob patterns)."""

    config_keys: tuple[str, ...] | None = None

    def format_help(self) -> str:
        text = super().format_help()
        if self.config_keys is None:
            return text
        return f"{text}\n{keys_help(ExperimentConfig(), self.config_keys)}\n"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="prmloop", description="Process reward models with an iterative GRPO loop.",
                     epilog="`prmloop COMMAND --help` lists the config keys COMMAND reads, with defaults; "
                     "`prmloop config show [--config F] [--set K=V]` prints the resolved config as YAML.")
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

    prm = commands.add_parser("prm", help="the step reward model").add_subparsers(dest="action", required=True)
    prm_train = prm.add_parser("train", help="train a PRM (an ORM with --set prm.mode=outcome, an implicit "
                               "PRM from outcome labels with prm.mode=implicit) on stepwise JSONL")
    prm_train.add_argument("--data", required=True, help="TRL stepwise JSONL (prompt, completions, labels)")
    prm_train.add_argument("--init", required=True, help="a policy/LM directory or hub name, or a PRM dir to continue")
    prm_train.add_argument("--replay", default=None, help="stepwise JSONL of earlier data; prm.replay_fraction is mixed in")
    prm_train.add_argument("--out", required=True)
    prm_label = prm.add_parser("label", help="sample solutions from a policy and label their steps")
    prm_label.add_argument("--policy", required=True, help="policy directory (save_pretrained) or hub name")
    prm_label.add_argument("--problems", default=None, help="problems file in the task's format (arith: `prmloop data "
                           "generate` JSONL; gsm8k/math/problems: that dataset's rows); default: the task's train split")
    prm_label.add_argument("--out", required=True, help="stepwise JSONL to write")
    prm_label.add_argument("--method", default="mc", choices=["mc", "mc_binary", "exact", "exhaustive", "binary"],
                           help="mc: Monte Carlo on every step prefix; mc_binary: Monte Carlo binary search for the "
                           "first bad step; exact: the task's step verifier (embedded task); the names of "
                           "loop.labeller. 'exhaustive' and 'binary' are old names of mc and mc_binary, still accepted")
    prm_label.add_argument("--n", type=int, default=8, help="completions per step prefix (Monte Carlo)")
    prm_label.add_argument("--samples", type=int, default=4, help="solutions sampled per problem")
    prm_eval = prm.add_parser("eval", help="step metrics and ProcessBench first-error F1 of a PRM on a labelled file")
    prm_eval.add_argument("--prm", required=True, help="PRM directory")
    prm_eval.add_argument("--data", required=True, help="labelled file")
    prm_eval.add_argument("--format", default="trl_stepwise", help="trl_stepwise, processbench, prm800k, math_shepherd")
    prm_eval.add_argument("--split", default="train", help="split of a hub dataset (ProcessBench: gsm8k, math, ...)")
    for sub in (prm_train, prm_label, prm_eval):
        _common(sub)

    grpo = commands.add_parser("grpo", help="GRPO on the policy (outcome or process supervision)")
    grpo.add_argument("--policy", required=True, help="policy directory (e.g. the SFT output) or hub name")
    grpo.add_argument("--prm", default=None, help="reward model directory (needed unless grpo.reward_source=rule; "
                      "with 'implicit': an implicit PRM or a causal LM to start φ from, by default the policy)")
    grpo.add_argument("--out", required=True)
    grpo.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    _common(grpo)
    search = commands.add_parser("search", help="test-time search with a PRM: best-of-n, weighted best-of-n, maj@n "
                                 "and pass@n vs n on held-out problems, from one set of N samples per problem")
    search.add_argument("--policy", required=True, help="policy directory (save_pretrained) or hub name")
    search.add_argument("--prm", required=True, help="reward model directory or hub name (any format prm.format reads)")
    search.add_argument("--n", type=int, default=16, help="samples per problem (N); the table has a row "
                        "for each n in 1, 2, 4, ..., N")
    search.add_argument("--problems", type=int, default=None, help="the first K held-out problems (default: all, "
                        "at most data.n_eval)")
    search.add_argument("--subsets", type=int, default=8, help="random subsets of n samples per problem averaged at "
                        "each n < N")
    search.add_argument("--aggregation", default="min", help="step scores -> one solution score: min, product, last "
                        "or mean")
    search.add_argument("--strategy", default="best_of_n", help="best_of_n: rerank the N samples (four columns); "
                        "beam: also step-level beam search with the PRM, reported beside the row nearest in tokens; "
                        "dvts: also diverse verifier tree search (W independent width-1 beam searches of E "
                        "expansions each, the best final over them), reported the same way")
    search.add_argument("--beam-width", type=int, default=4, help="beam: prefixes kept per step (W); dvts: "
                        "independent subtrees (W)")
    search.add_argument("--expansions", type=int, default=4, help="beam/dvts: one-step continuations sampled per kept "
                        "prefix (E; W * E candidates per step)")
    search.add_argument("--step-tokens", type=int, default=24, help="beam/dvts: new-token budget of one step's "
                        "generation, cut at its first step end (all generated tokens count)")
    search.add_argument("--out", required=True)
    _common(search)
    loop = commands.add_parser("loop", help="iterative rounds for one arm (see the loop and grpo config sections)")
    compare = commands.add_parser("compare", help="run every arm x seed of compare.* and write report.md + PNGs")
    demo = commands.add_parser("demo", help="the headline comparison on the embedded task, about 8 min on 2 cores "
                               "(configs/demo.yaml: the study's shipped warm start, PRM, outcome vs process "
                               "supervision x 2 seeds)")
    demo.add_argument("--quick", action="store_true", help="configs/quick.yaml-sized settings (about a minute) under "
                      "your --config/--set, which win")
    for sub, default in ((loop, "runs/loop"), (compare, "runs/compare"), (demo, "runs/demo")):
        sub.add_argument("--out", default=default)
        sub.add_argument("--resume", action="store_true", help="continue an interrupted run from its last stage")
        _common(sub)
    config = commands.add_parser("config", help="inspect the experiment config").add_subparsers(dest="action",
                                                                                               required=True)
    _common(config.add_parser("show", help="print the resolved config (defaults < --config < --set) as the YAML a "
                              "run saves as config.yaml; it loads back with --config"))
    for path, sub in _leaf_parsers(parser):
        sub.config_keys = CONFIG_KEYS_READ.get(path)
    return parser


def _leaf_parsers(parser: argparse.ArgumentParser, path: str = ""):
    """(``"prm train"``, its parser) for every command that runs something."""
    actions = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    if not actions:
        yield path, parser
    for action in actions:
        for name, sub in action.choices.items():
            yield from _leaf_parsers(sub, f"{path} {name}".strip())


_PROMPT = ("policy.prompt_template", "policy.chat_template", "policy.system_prompt")
_VLLM = ("grpo.use_vllm", "grpo.vllm_*")  # a command that samples uses GRPO's vLLM engine when grpo.use_vllm is on
CONFIG_KEYS_READ: dict[str, tuple[str, ...]] = {
    "data generate": ("data.*",),
    "data show": ("data.*",),
    "data convert": (),
    "policy init": ("policy.*", "sft.seed"),
    "policy sft": ("data.*", "policy.*", "sft.*", *_VLLM),
    "prm train": ("name", "policy.model", "prm.*", "tracking.*"),
    "prm label": ("seed", "data.*", "policy.*", "prm.label_type", *_VLLM),
    "prm eval": (*_PROMPT, "prm.*"),
    "grpo": ("name", "data.*", "policy.*", "prm.*", "grpo.*", "tracking.*"),
    "search": ("name", "seed", "data.*", "policy.*", "prm.*", "grpo.temperature", "grpo.top_p", *_VLLM, "tracking.*"),
    "loop": ("name", "seed", "data.*", "policy.*", "sft.*", "prm.*", "grpo.*", "loop.*", "tracking.*"),
    "compare": ("*",),
    "demo": ("*",),
    "config show": ("*",),
}
"""The config keys each command's job reads (glob patterns over dotted keys), listed by ``prmloop COMMAND --help``.
The one place that says which sections a command uses; a test checks it names every command and only real keys."""


MULTI_PROCESS = ("grpo", "prm train")
"""Commands that split their work over the processes of ``accelerate launch``; the others run in one process."""


def check_processes(args: argparse.Namespace) -> None:
    """UserError for a one-process command started as several processes (they would race on one output folder)."""
    command = " ".join(part for part in (args.command, getattr(args, "action", None)) if part)
    processes = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if processes > 1 and command not in MULTI_PROCESS:
        raise UserError(f"{command}: runs in one process, and accelerate launch started {processes}; launch it "
                        f"without accelerate (only {' and '.join(MULTI_PROCESS)} split their work over processes)")


def dispatch(args: argparse.Namespace) -> None:
    check_processes(args)

    quick = args.command == "demo" and args.quick
    demo = args.command == "demo" and not quick and args.config is None
    preset = QUICK_CONFIG if quick else DEMO_CONFIG if demo else None
    cfg = load_config(args.config, args.overrides, preset=preset)  # the user's keys win
    if args.command == "config":
        print(config_to_yaml(cfg), end="")
        return
    if args.command == "demo" and args.config is None:
        cfg.name = "demo-quick" if args.quick else "demo"
    if cfg.grpo.use_vllm:  # the engine GRPO samples with serves evaluation and labelling too (built when first used)
        from ..policy.vllm_backend import sample_with_vllm  # lazy: vllm/torch, only with grpo.use_vllm

        sample_with_vllm(cfg.grpo, cfg.policy)
    _quiet_libraries()
    if args.command in ("loop", "compare", "demo"):  # before the shared warm start, not when the first arm starts
        check_online_login(resolve_mode(cfg.tracking.mode, os.environ))
    from . import jobs  # lazy: datasets/torch load only once a command runs (not for --help)

    if args.command == "data" and args.action == "generate":
        count = jobs.generate_problems(cfg, args.n, args.split, args.seed, args.out)
        print(f"wrote {count} {args.task} problems ({args.split}) to {args.out}")
    elif args.command == "data" and args.action == "show":
        print(jobs.show_rows(cfg, args.file, args.n))
    elif args.command == "data" and args.action == "convert":
        from ..data.loaders import convert  # lazy: datasets is slow to import

        options = {"neutral_as": args.neutral_as} if args.neutral_as else {}
        written, skipped = convert(args.format, args.source, args.out, skip_bad=args.skip_bad, split=args.split,
                                   subset=args.subset, **options)
        print(f"wrote {written} rows to {args.out}; skipped {skipped} bad rows")
    elif args.command == "policy" and args.action == "init":
        print(f"wrote a tiny policy to {jobs.init_policy(cfg, args.out)}")
    elif args.command == "policy":
        from .stages import run_sft  # lazy: torch/transformers-heavy

        summary = run_sft(cfg, args.out)
        errors = f", first errors by step {summary['first_error_counts']}" if "first_error_counts" in summary else ""
        trace = f" (trace accuracy {summary['eval_trace_accuracy']:.3f})" if "eval_trace_accuracy" in summary else ""
        print(f"SFT done in {summary['seconds']}s: held-out greedy accuracy {summary['eval_accuracy']:.3f}{trace}"
              f"{errors}; saved to {args.out}")
    elif args.command == "prm":
        _dispatch_prm(cfg, args)
    elif args.command == "grpo":
        from .jobs_grpo import grpo_job  # lazy: torch/transformers-heavy

        summary = grpo_job(cfg, args.policy, args.prm, args.out, args.resume)
        print(f"GRPO done: {summary}; saved to {args.out}")
        _print_wandb_hint(args.out)
    elif args.command == "search":
        from .search import BeamOptions, search_job  # lazy: torch/transformers-heavy

        beam = BeamOptions(args.beam_width, args.expansions, args.step_tokens)
        print(search_job(cfg, args.policy, args.prm, args.out, args.n, args.problems, args.subsets, args.aggregation,
                         args.strategy, beam), end="")
        print(f"search done; outputs in {args.out}")
        _print_wandb_hint(args.out)
    elif args.command == "loop":
        print(f"loop done; outputs in {jobs.loop_job(cfg, args.out, args.resume)}")
    elif args.command in ("compare", "demo"):
        started = time.perf_counter()
        report = jobs.compare_job(cfg, args.out, args.resume)
        print(f"\n{report_sections(report.read_text(), HEADLINE)}\n")
        print(f"{args.command} done in {time.perf_counter() - started:.0f}s; report: {report}")
        print(f"W&B runs are under {args.out}/arms/*/seed*/wandb; to upload them: {wandb_sync_hint(args.out)}")


def _print_wandb_hint(out: str) -> None:
    """The upload command for the offline W&B run a training command wrote (main process only)."""
    if is_main_process(os.environ) and any(Path(out).rglob("offline-run-*")):
        print(f"W&B run is under {out}/wandb; to upload it: {wandb_sync_hint(out)}")


def _dispatch_prm(cfg, args: argparse.Namespace) -> None:
    from . import jobs_prm  # lazy: torch/transformers-heavy

    if args.action == "train":
        summary = jobs_prm.train_prm_job(cfg, args.data, args.out, args.init, args.replay)
        shown = {key: summary[key] for key in ("train_loss", "n_train", "n_val", "val_first_error_f1", "seconds")
                 if isinstance(summary.get(key), (int, float))}
        print("PRM trained: " + ", ".join(f"{key} {value:.4g}" for key, value in shown.items())
              + f"; saved to {args.out} (every number: {args.out}/prm_metrics.json)")
        _print_wandb_hint(args.out)
    elif args.action == "label":
        summary = jobs_prm.label_job(cfg, args.policy, args.problems, args.out, args.n, args.method, args.samples)
        print(f"labelled: {summary}; wrote {args.out}")
    else:
        summary = jobs_prm.eval_prm_job(cfg, args.prm, args.data, args.format, args.split)
        print("\n".join(f"{key}: {value}" for key, value in summary.items()))


SHIPPED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
"""configs/ of the installed package (package data): the one source of the demo's settings."""
DEMO_CONFIG = SHIPPED_CONFIGS / "demo.yaml"
"""`prmloop demo` without --config: the full study's regime and warm start (configs/compare.yaml; its SFT policy ships
in loop/warm_starts) with its first two rounds, three arms (outcome, fixed PRM, iterative PRM) and two seeds: 521 s on
2 cores (8 minutes more with loop.shipped_warm_start=false, which trains the warm start)."""
QUICK_CONFIG = SHIPPED_CONFIGS / "quick.yaml"
"""`demo --quick`: seconds-long settings, laid under the user's --config and --set."""


def _quiet_libraries() -> None:
    """Our own progress bars say what is happening; transformers' per-load and per-save bars only add noise."""
    from transformers.utils import logging as hf_logging  # lazy: transformers is slow to import

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


@contextlib.contextmanager
def _main_process_output():
    """Under ``accelerate launch`` only the main process (RANK 0) prints results; errors still go to stderr."""
    if os.environ.get("RANK", "0") == "0":
        yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _main_process_output():
            dispatch(args)
    except UserError as err:
        print(f"prmloop: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a path the user gave: read-only, under a plain file, a directory for a file, disk full
        where = err.filename or "a file"
        print(f"prmloop: error: {where}: {err.strerror or type(err).__name__}", file=sys.stderr)
        return 1 if err.errno == errno.ENOSPC else 2
    except KeyboardInterrupt:
        print("prmloop: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
