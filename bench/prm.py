"""Benchmark of the PRM pipeline on the embedded task: batched scoring, Monte Carlo labelling, and the PRM's quality.

Run ``python bench/prm.py [--quick] [--n-problems 300] [--samples 4] [--n 8] [--eval-problems 100] [--bon 16] [--prm-lm-steps 1800]``.
It warm-starts (or reuses) the SFT policy in ``--sft`` (configs/demo.yaml defaults), samples solutions of training
problems at temperature 1, labels them three ways (exact step verifier, exhaustive Monte Carlo, binary search; the
Monte Carlo rollouts at ``--label-temperature``, default 1), trains
a PRM from the SFT policy on the Monte Carlo labels, then samples fresh held-out solutions and prints markdown tables:
(a) scoring throughput, one batched pass vs one call per step prefix (same scores); (b) labelling cost and agreement;
(c) the PRM's first-error F1 against the exact verifier's labels, and Best-of-N against majority vote.

Labels for training (``--train-labels``): ``mc_hard`` (exhaustive MC, Math-Shepherd's hard estimate: 1 if any of n
completions reaches the answer, derived from the soft estimate as soft > 0), ``mc_soft`` (the fraction), or
``binary`` (binary search). Sampled and labelled data are cached in ``--out`` per (problems, samples, n, seed).
Threads: torch is pinned to ``--threads`` (default 1) because on a small shared CPU more threads are much slower.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import torch

from prmloop.data import arith
from prmloop.data.prompts import Prompter
from prmloop.data.schema import StepwiseExample
from prmloop.data.tasks import get_task
from prmloop.data.verifier import final_answer, split_solution, verify
from prmloop.loop.config import load_config
from prmloop.loop.stages import label_rows, run_sft, sample_rows
from prmloop.policy.load import load_policy
from prmloop.policy.rollout import PolicySampler
from prmloop.prm.metrics import first_error_from_labels
from prmloop.prm.model import StepRewardModel
from prmloop.prm.scoring_eval import best_of_n, evaluate_steps
from prmloop.prm.train import train_prm

QUICK = {"n_problems": 60, "samples": 4, "eval_problems": 40, "bon": 16}
"""--quick settings (a smoke pass in a few minutes)."""


def ensure_sft(cfg, sft_dir: Path) -> Path:
    """The SFT policy in ``sft_dir``, trained with ``cfg`` first if it is not there (about 2-3 min on 2 cores)."""
    if not (sft_dir / "config.json").is_file():
        print(f"warm-starting the SFT policy into {sft_dir} ...", flush=True)
        run_sft(cfg, str(sft_dir))
    return sft_dir


def label_training_data(cfg, model, tokenizer, args, out: Path) -> dict:
    """Samples of training problems with exact, exhaustive-MC (soft) and binary-search labels; cached as JSON."""
    # Temperature 1 keeps its old cache name, so caches made before --label-temperature existed are reused.
    temp = "" if args.label_temperature == 1.0 else f"_t{args.label_temperature:g}"
    cache = out / f"labels_p{args.n_problems}_s{args.samples}_n{args.n}{temp}_seed{args.seed}.json"
    if cache.is_file():
        print(f"reusing labelled samples from {cache}", flush=True)
        return json.loads(cache.read_text())
    train = arith.generate(cfg.data, cfg.data.n_train, "train")
    started = time.perf_counter()
    rows = sample_rows(model, tokenizer, Prompter.of(cfg.policy, tokenizer), train, cfg.policy.max_new_tokens,
                       args.n_problems, args.samples, args.seed)
    sample_seconds = time.perf_counter() - started
    result = {"rows": rows, "sample_seconds": sample_seconds}
    for method, estimate in (("exact", "soft"), ("mc", "soft"), ("mc_binary", "hard")):
        sampler = PolicySampler(model, tokenizer, cfg.policy.max_new_tokens, temperature=args.label_temperature,
                                 seed=args.seed)
        started = time.perf_counter()
        examples, rollouts = label_rows(rows, method, sampler, args.n, estimate, get_task(cfg.data),
                                        Prompter.of(cfg.policy, tokenizer), 0)
        result[method] = {"labels": [e.labels for e in examples], "rollouts": rollouts,
                          "seconds": time.perf_counter() - started}
        print(f"labelled {len(examples)} solutions with {method}: {rollouts} rollouts, "
              f"{result[method]['seconds']:.1f}s", flush=True)
    result["prompts"] = [e.prompt for e in examples]
    result["steps"] = [e.completions for e in examples]
    out.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result))
    return result


def labelling_table(data: dict) -> dict:
    """Rollouts per solution, first-error agreement of binary vs exhaustive, and MC labels vs exact ones."""
    exact, soft, binary = data["exact"]["labels"], data["mc"]["labels"], data["mc_binary"]["labels"]
    hard = [[1.0 if label > 0 else 0.0 for label in labels] for labels in soft]
    n = len(exact)

    def first_error_agreement(a, b):
        return sum(first_error_from_labels(x) == first_error_from_labels(y) for x, y in zip(a, b)) / n

    def step_agreement(a, b):
        pairs = [(x >= 0.5, bool(y)) for xs, ys in zip(a, b) for x, y in zip(xs, ys)]
        return sum(x == y for x, y in pairs) / len(pairs)

    result = {
        "solutions": n,
        "exhaustive_rollouts_per_solution": data["mc"]["rollouts"] / n,
        "binary_rollouts_per_solution": data["mc_binary"]["rollouts"] / n,
        "binary_vs_exhaustive_first_error_agreement": first_error_agreement(binary, hard),
        "mc_hard_vs_exact_step_agreement": step_agreement(hard, exact),
        "mc_hard_vs_exact_first_error_agreement": first_error_agreement(hard, exact),
        "mc_soft_vs_exact_first_error_agreement": first_error_agreement(soft, exact),
        "binary_vs_exact_first_error_agreement": first_error_agreement(binary, exact),
        "exhaustive_seconds": data["mc"]["seconds"], "binary_seconds": data["mc_binary"]["seconds"],
    }
    result["rollout_ratio"] = result["binary_rollouts_per_solution"] / result["exhaustive_rollouts_per_solution"]
    return result


def training_examples(data: dict, which: str) -> list[StepwiseExample]:
    """The sampled solutions with the chosen Monte Carlo labels."""
    if which == "exact":
        labels = [[float(label) for label in labels] for labels in data["exact"]["labels"]]
    elif which == "mc_hard":
        labels = [[1.0 if label > 0 else 0.0 for label in labels] for labels in data["mc"]["labels"]]
    elif which in ("mc_soft", "binary"):
        labels = data["mc" if which == "mc_soft" else "mc_binary"]["labels"]
    else:
        raise SystemExit(f"--train-labels: {which!r} is not one of exact, mc_hard, mc_soft, binary")
    return [StepwiseExample(p, s, list(lab)) for p, s, lab in zip(data["prompts"], data["steps"], labels)]


def held_out_groups(cfg, model, tokenizer, args) -> dict:
    """``--bon`` fresh samples per held-out problem with exact step labels, correctness and final answers."""
    problems = arith.generate(cfg.data, cfg.data.n_eval, "eval")[: args.eval_problems]
    rows = sample_rows(model, tokenizer, Prompter.of(cfg.policy, tokenizer), problems, cfg.policy.max_new_tokens,
                       len(problems), args.bon, args.seed + 1000)
    by_problem: dict[str, list[dict]] = {}
    for row in rows:
        by_problem.setdefault(row["problem_id"], []).append(row)
    groups = {"prompts": [], "steps": [], "correct": [], "answers": [], "examples": []}
    for samples in by_problem.values():
        verdicts = [verify(arith.parse_question(row["question"]), row["completion"]) for row in samples]
        groups["prompts"].append(samples[0]["prompt"])
        groups["steps"].append([split_solution(row["completion"]) for row in samples])
        groups["correct"].append([v.final_correct for v in verdicts])
        groups["answers"].append([final_answer(row["completion"]) for row in samples])
        groups["examples"] += [StepwiseExample(row["prompt"], v.steps, list(v.step_labels))
                               for row, v in zip(samples, verdicts) if v.steps]
    return groups


def scoring_table(prm: StepRewardModel, examples: list[StepwiseExample]) -> dict:
    """One batched pass over every step vs one call per step prefix, on the same solutions."""
    prompts, solutions = [e.prompt for e in examples], [e.completions for e in examples]
    started = time.perf_counter()
    batched = prm.score_steps(prompts, solutions)
    batched_seconds = time.perf_counter() - started
    started = time.perf_counter()
    separate = [[prm.score_steps([p], [steps[: j + 1]])[0][-1] for j in range(len(steps))]
                for p, steps in zip(prompts, solutions)]
    separate_seconds = time.perf_counter() - started
    diff = max(abs(a - b) for xs, ys in zip(batched, separate) for a, b in zip(xs, ys))
    assert diff < 1e-4, f"batched and per-prefix scores differ by {diff}"
    steps = sum(len(s) for s in solutions)
    return {"solutions": len(examples), "steps": steps, "batched_steps_per_s": steps / batched_seconds,
            "per_prefix_steps_per_s": steps / separate_seconds, "speedup": separate_seconds / batched_seconds,
            "max_abs_diff": diff}


def print_table(title: str, values: dict) -> None:
    print(f"\n### {title}\n\n| metric | value |\n|---|---|")
    for key, value in values.items():
        shown = f"{value:.4f}" if isinstance(value, float) and not math.isnan(value) else str(value)
        print(f"| {key} | {shown} |")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"small sizes for a smoke pass: {QUICK}")
    parser.add_argument("--n-problems", type=int, default=300, help="training problems sampled for labels")
    parser.add_argument("--samples", type=int, default=4, help="policy samples per training problem")
    parser.add_argument("--n", type=int, default=8, help="Monte Carlo completions per step prefix")
    parser.add_argument("--eval-problems", type=int, default=100, help="held-out problems for (a) and (c)")
    parser.add_argument("--bon", type=int, default=16, help="samples per held-out problem (Best-of-N's N)")
    parser.add_argument("--train-labels", default="mc_hard", help="exact, mc_hard, mc_soft or binary")
    parser.add_argument("--label-temperature", type=float, default=1.0,
                        help="sampling temperature of the Monte Carlo labelling rollouts (the solutions are always "
                             "sampled at the policy's own settings)")
    parser.add_argument("--set", action="append", default=[], help="config override, e.g. prm.epochs=6")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sft", default="runs/bench_sft", help="SFT policy directory (created if missing)")
    parser.add_argument("--prm-init", default=None,
                        help="causal LM the PRM starts from (default: the SFT policy that is being judged)")
    parser.add_argument("--prm-lm-steps", type=int, default=0,
                        help="start the PRM from an LM trained with the SFT recipe for this many steps (cached in "
                             "runs/bench_prm_lm<N>); 1800 gives a 95%%-accurate LM")
    parser.add_argument("--out", default="runs/bench_prm", help="cache and results directory")
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config("configs/demo.yaml", args.set)
    out = Path(args.out)
    policy_dir = ensure_sft(cfg, Path(args.sft))
    model, tokenizer = load_policy(str(policy_dir), cfg.policy.dtype)
    data = label_training_data(cfg, model, tokenizer, args, out)
    labelling = labelling_table(data)
    examples = training_examples(data, args.train_labels)
    prm_init = args.prm_init or str(policy_dir)
    if args.prm_lm_steps:  # a stronger LM for the PRM: the same SFT recipe, trained longer (cached)
        lm_cfg = load_config("configs/demo.yaml", [*args.set, f"sft.steps={args.prm_lm_steps}"])
        prm_init = str(ensure_sft(lm_cfg, Path(f"runs/bench_prm_lm{args.prm_lm_steps}")))
    print(f"PRM starts from {prm_init}", flush=True)
    torch.manual_seed(cfg.prm.seed)
    prm = StepRewardModel.from_policy(prm_init, "process", cfg.prm.max_length, cfg.prm.step_separator,
                                      cfg.prm.logp_features)
    summary = train_prm(prm, examples, cfg.prm, log=lambda line: print(line, flush=True))
    groups = held_out_groups(cfg, model, tokenizer, args)
    quality = evaluate_steps(prm, groups["examples"], cfg.prm.threshold)
    bon = best_of_n(prm, groups["prompts"], groups["steps"], groups["correct"], groups["answers"])
    # The label-free baseline: the same backbone's own step log-probs, untrained (what the labels add to it).
    free = StepRewardModel.from_policy(prm_init, "process", cfg.prm.max_length, cfg.prm.step_separator, True)
    free_quality = evaluate_steps(free, groups["examples"], cfg.prm.threshold)
    free_bon = best_of_n(free, groups["prompts"], groups["steps"], groups["correct"], groups["answers"])
    baseline = {"first_error_f1_vs_exact": free_quality["first_error_f1"], "step_acc": free_quality["step_acc"],
                **{key: value for key, value in free_bon.items() if key.startswith("bon_")}}
    scoring = scoring_table(prm, groups["examples"][:256])
    done = {
        "train_solutions": summary["n_train"], "train_labels": args.train_labels,
        "train_seconds": summary["seconds"], "held_out_solutions": quality["n_examples"],
        "first_error_f1_vs_exact": quality["first_error_f1"],
        "first_error_acc_erroneous": quality["first_error_acc_erroneous"],
        "first_error_acc_correct": quality["first_error_acc_correct"],
        "step_acc": quality["step_acc"], "step_f1_error": quality["step_f1_error"],
        "tuned_threshold": summary.get("tuned_threshold", math.nan),
        **{f"{key}@{bon['n']}" if key in ("maj", "pass") else key: value for key, value in bon.items() if key != "n"},
    }
    shown_args = ("n_problems", "samples", "n", "label_temperature", "eval_problems", "bon", "seed")
    print(f"\n## bench/prm.py ({json.dumps({k: getattr(args, k) for k in shown_args})})")
    print(f"PRM config: {dataclasses.asdict(cfg.prm)}")
    print_table("(a) scoring: one batched pass vs one call per step prefix", scoring)
    print_table("(b) labelling SFT-policy samples", labelling)
    print_table(f"(c) PRM trained on {args.train_labels} labels, on fresh held-out samples", done)
    print_table("(d) label-free baseline: the same backbone's step log-probs, untrained", baseline)
    verdict = (quality["first_error_f1"] >= 0.85, max(bon["bon_min"], bon["bon_product"]) > bon["maj"])
    print(f"\ndone-when: first-error F1 >= 0.85: {verdict[0]}; Best-of-{bon['n']} min/product > maj@{bon['n']}: {verdict[1]}")
    results = {"args": vars(args), "prm": dataclasses.asdict(cfg.prm), "scoring": scoring, "labelling": labelling,
               "quality": done, "label_free_baseline": baseline, "history": summary["history"]}
    tag = "_".join(part.replace("=", "-") for part in args.set)
    (out / f"results_{args.train_labels}{'_' + tag if tag else ''}.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
