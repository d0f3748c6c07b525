"""Benchmark: Monte Carlo step labels against the exact verifier on the study's warm start, and the PRMs they train.

Run ``python bench/mc_labels.py [--quick] [--seeds 0 1 2] [--n-problems 200] [--samples 4] [--ns 4 8]
[--eval-problems 100] [--eval-samples 8] [--variants exact mc8 mc16 mc8_consensus]``. It asks whether a PRM
trained on Monte Carlo labels reaches first-error F1 >= 0.85 on the policy's own samples, or what stops it. Per seed
(a different draw of training problems, policy samples, MC rollouts, held-out problems and samples, and of the PRM's
batch order and validation split):
1. the policy (configs/compare.yaml's shipped warm start, ``--policy``) samples ``--samples`` solutions of
   ``--n-problems`` training problems (``loop.stages.sample_rows``, temperature 1);
2. ``loop.stages.label_rows`` labels them exactly (the task's step verifier) and by exhaustive Monte Carlo at every n of
   ``--ns`` (Math-Shepherd's hard estimate). The rollouts are drawn once, max(ns) per distinct step prefix
   (``PrefixPool``), and a smaller n reads the first n of them: nested subsamples, so the n rows differ only in n;
3. label noise of each MC labelling against the exact labels (``label_noise``, ``noise_rows``);
4. PRMs trained with the loop's recipe (``loop.stages.train_reward_model``: from the policy, prm defaults, 10%
   validation split) on each label set of ``VARIANTS``; for ``TUNED`` also with ``prm.tune_threshold``'s threshold;
   and the label-free baseline (the policy's own step log-probs, untrained). All are evaluated on the same fresh
   held-out samples with exact labels (``prm.scoring_eval.evaluate_steps``: ProcessBench first-error F1).
Prints mean ± 95% CI over seeds (t-distribution, ``loop.report_stats.mean_ci``). Sampled and labelled data, trained
PRMs and per-seed results are cached under ``--out``, so a rerun only redoes what is missing; a cached pool of more
rollouts serves a smaller ``--ns`` (so ``--seeds 0 --ns 4 8 16`` first, then ``--ns 4 8``, gives n = 16 on seed 0).
Threads: torch is pinned to ``--threads`` (default 1): on a small shared CPU more threads are slower.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import time
from collections.abc import Callable
from pathlib import Path

import torch

from prmloop.data.prompts import Prompter
from prmloop.data.schema import StepwiseExample
from prmloop.data.tasks import get_task
from prmloop.loop.config import ExperimentConfig, load_config
from prmloop.loop.report_stats import mean_ci
from prmloop.loop.stages import label_rows, sample_rows, shipped_warm_start, train_reward_model
from prmloop.policy.load import load_policy
from prmloop.policy.rollout import PolicySampler
from prmloop.prm.formats import load_reward_model
from prmloop.prm.metrics import first_error_from_labels, processbench_metrics
from prmloop.prm.model import StepRewardModel
from prmloop.prm.scoring_eval import evaluate_steps
from prmloop.prm.threshold import tune_threshold

QUICK = {"n_problems": 24, "samples": 2, "ns": [4, 8], "eval_problems": 16, "eval_samples": 4, "seeds": [0]}
"""--quick settings (a smoke pass of a few minutes)."""
EVAL_SEED_OFFSET = 1000
"""Held-out samples of seed s are drawn with seed s + this (disjoint from the training samples' streams)."""
ROLLOUT_SEED_OFFSET = 500
"""MC rollouts of seed s are drawn with seed s + this."""


class PrefixPool:
    """A ``prm.label.Sampler`` that draws ``n_max`` completions per distinct prompt on its first call and serves the
    first n of them to every call (the same prompts each time): MC labels at several n from one set of rollouts.

    Unlike ``label_exhaustive`` alone, identical step prefixes (samples of one problem that agree so far) share their
    rollouts: about half the cost here, and each label is still an estimate from n rollouts."""

    def __init__(self, sampler: PolicySampler, n_max: int) -> None:
        self.sampler, self.n_max = sampler, n_max
        self.prompts: list[str] | None = None
        self.texts: list[list[str]] = []
        self.drawn = 0
        """Rollouts actually sampled (distinct prompts x n_max)."""

    def complete(self, prompts: list[str], n: int) -> list[list[str]]:
        if self.prompts is None:
            distinct = list(dict.fromkeys(prompts))
            by_prompt = dict(zip(distinct, self.sampler.complete(distinct, self.n_max)))
            self.prompts, self.texts = list(prompts), [by_prompt[prompt] for prompt in prompts]
            self.drawn = len(distinct) * self.n_max
        assert prompts == self.prompts and n <= self.n_max, "PrefixPool serves one set of prompts, n <= n_max"
        return [texts[:n] for texts in self.texts]


# ---- label noise (pure) -----------------------------------------------------------------------------------------


def label_noise(mc: list[list[float]], exact: list[list[bool]]) -> dict[str, float]:
    """How MC labels (1.0/0.0) differ from exact first-error labels of the same solutions.

    ``step_agreement``: all steps. ``first_error_agreement``: solutions whose first step labelled wrong is the same.
    Direction, over the steps the loss sees (through the exact first error): ``right_called_wrong`` = of the steps
    before the exact first error, the fraction MC labels 0 (no rollout from a correct prefix reached the answer);
    ``wrong_called_right`` = of exact first-error steps, the fraction MC labels 1 (a rollout from a wrong prefix
    reached the answer). Of the solutions whose first errors differ, ``fe_mc_earlier`` (MC's is earlier: it calls a
    correct step wrong) and ``fe_mc_later`` (later or none: it misses the error), as fractions of all solutions.
    ``first_error_f1``: ProcessBench F1 of the MC labels read as a PRM's predictions, with the exact labels as truth
    (what a PRM that learned the MC labels perfectly would score on these solutions).
    """
    if len(mc) != len(exact) or not mc:
        raise ValueError(f"{len(mc)} MC label lists for {len(exact)} exact ones (need the same, non-zero)")
    steps = agree = before = before_wrong = at_error = at_error_right = earlier = later = 0
    for index, (mc_labels, exact_labels) in enumerate(zip(mc, exact)):
        if len(mc_labels) != len(exact_labels):
            raise ValueError(f"solution {index}: {len(mc_labels)} MC labels for {len(exact_labels)} exact ones")
        steps += len(exact_labels)
        agree += sum((m >= 0.5) == bool(e) for m, e in zip(mc_labels, exact_labels))
        first = first_error_from_labels(exact_labels)
        upto = len(exact_labels) if first == -1 else first
        before += upto
        before_wrong += sum(m < 0.5 for m in mc_labels[:upto])
        if first != -1:
            at_error += 1
            at_error_right += mc_labels[first] >= 0.5
        mc_first = first_error_from_labels(mc_labels)
        if mc_first != first:
            mc_at = len(mc_labels) if mc_first == -1 else mc_first
            exact_at = len(exact_labels) if first == -1 else first
            earlier += mc_at < exact_at
            later += mc_at > exact_at
    n = len(mc)
    as_prediction = processbench_metrics([first_error_from_labels(m) for m in mc],
                                         [first_error_from_labels(e) for e in exact])
    return {"step_agreement": agree / steps, "first_error_agreement": 1 - (earlier + later) / n,
            "first_error_f1": as_prediction["f1"],
            "right_called_wrong": before_wrong / before if before else math.nan,
            "wrong_called_right": at_error_right / at_error if at_error else math.nan,
            "fe_mc_earlier": earlier / n, "fe_mc_later": later / n}


def hard(soft: list[list[float]], at_least: float = 1e-9) -> list[list[float]]:
    """1.0 where the soft estimate is >= ``at_least``, else 0.0; the default is Math-Shepherd's hard estimate (1.0 if
    any rollout reached the answer)."""
    return [[1.0 if value >= at_least else 0.0 for value in labels] for labels in soft]


def noise_rows(data: dict) -> dict[str, dict[str, float]]:
    """``label_noise`` of the hard MC labels at each n the data has, with their cost, and (n >= 8) of stricter
    readings of the same rollouts: at least 2, or n/2, of the n reach the answer."""
    rows, solutions = {}, len(data["exact"])
    ns = sorted(map(int, data["mc"]))
    for n in ns:
        rows[f"MC n={n}"] = {**label_noise(hard(data["mc"][str(n)]), data["exact"]),
                             "rollouts_per_solution": data["rollouts"][str(n)] / solutions,
                             "shared_rollouts_per_solution": data["rollouts_drawn"] * n / max(ns) / solutions}
    for n in ns:
        for k in sorted({2, n // 2}) if n >= 8 else []:
            rows[f"MC n={n}, >= {k} of {n} reach the answer"] = {
                **label_noise(hard(data["mc"][str(n)], (k - 0.5) / n), data["exact"]),
                "rollouts_per_solution": math.nan, "shared_rollouts_per_solution": math.nan}
    return rows


# ---- data (cached) ----------------------------------------------------------------------------------------------


def labelled_training_data(cfg: ExperimentConfig, model, tokenizer, args, seed: int, out: Path) -> dict:
    """The seed's policy samples of training problems with exact labels and soft MC labels at every n; cached."""
    stem = f"labels_p{args.n_problems}_s{args.samples}"
    for cached in sorted(out.glob(f"{stem}_n*_seed{seed}.json")):  # any n list covering --ns: the pools are nested
        if set(args.ns) <= set(map(int, cached.stem.split("_n")[1].split("_")[0].split("-"))):
            return json.loads(cached.read_text())
    cache = out / f"{stem}_n{'-'.join(map(str, args.ns))}_seed{seed}.json"
    task, prompter = get_task(cfg.data), Prompter.of(cfg.policy, tokenizer)
    train, _ = task.problems()
    started = time.perf_counter()
    rows = sample_rows(model, tokenizer, prompter, train, cfg.policy.max_new_tokens, args.n_problems, args.samples, seed)
    data = {"sample_seconds": time.perf_counter() - started}
    examples, _ = label_rows(rows, "exact", None, 0, "hard", task, prompter, 0)
    data.update(prompts=[e.prompt for e in examples], steps=[e.completions for e in examples],
                exact=[list(e.labels) for e in examples], mc={}, rollouts={})
    pool = PrefixPool(PolicySampler(model, tokenizer, cfg.policy.max_new_tokens, 1.0, seed=seed + ROLLOUT_SEED_OFFSET),
                      max(args.ns))
    started = time.perf_counter()
    for n in sorted(args.ns, reverse=True):  # the largest n draws the pool; the others read from it
        labelled, rollouts = label_rows(rows, "mc", pool, n, "soft", task, prompter, 0)
        data["mc"][str(n)] = [list(e.labels) for e in labelled]
        data["rollouts"][str(n)] = rollouts
    data["mc_seconds"] = time.perf_counter() - started  # the cost of the largest n (the others are free)
    data["rollouts_drawn"] = pool.drawn
    out.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(data))
    return data


def held_out_examples(cfg: ExperimentConfig, model, tokenizer, args, seed: int, out: Path) -> list[StepwiseExample]:
    """Fresh policy samples of held-out problems with exact step labels; cached."""
    cache = out / f"held_out_p{args.eval_problems}_s{args.eval_samples}_seed{seed}.json"
    if not cache.is_file():
        task, prompter = get_task(cfg.data), Prompter.of(cfg.policy, tokenizer)
        _, held_out = task.problems()
        rows = sample_rows(model, tokenizer, prompter, held_out, cfg.policy.max_new_tokens, args.eval_problems,
                           args.eval_samples, seed + EVAL_SEED_OFFSET)
        examples, _ = label_rows(rows, "exact", None, 0, "hard", task, prompter, 0)
        out.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps([[e.prompt, e.completions, list(e.labels)] for e in examples]))
    return [StepwiseExample(p, s, labels) for p, s, labels in json.loads(cache.read_text())]


# ---- what each PRM trains on ------------------------------------------------------------------------------------


def _examples(data: dict, labels: list[list]) -> list[StepwiseExample]:
    return [StepwiseExample(p, s, list(lab)) for p, s, lab in zip(data["prompts"], data["steps"], labels)]


def consensus_filtered(data: dict, n: int) -> list[StepwiseExample]:
    """MC-hard n labels of the solutions whose MC first error equals the exact one (the Qwen2.5-Math-PRM paper's
    consensus filter, arXiv 2501.07301 §3, with the exact verifier in the LLM judge's place)."""
    mc = hard(data["mc"][str(n)])
    kept = [i for i, (m, e) in enumerate(zip(mc, data["exact"]))
            if first_error_from_labels(m) == first_error_from_labels(e)]
    return [StepwiseExample(data["prompts"][i], data["steps"][i], mc[i]) for i in kept]


VARIANTS: dict[str, Callable[[dict], list[StepwiseExample]]] = {
    "exact": lambda d: _examples(d, d["exact"]),
    "mc4": lambda d: _examples(d, hard(d["mc"]["4"])),
    "mc8": lambda d: _examples(d, hard(d["mc"]["8"])),
    "mc16": lambda d: _examples(d, hard(d["mc"]["16"])),
    "mc8_consensus": lambda d: consensus_filtered(d, 8),
}
"""PRM training sets: name -> examples from the seed's labelled data. Those whose n is not in ``--ns`` are skipped."""
DEFAULT_VARIANTS = ["exact", "mc8", "mc16", "mc8_consensus"]
TUNED = ("exact", "mc8")
"""Variants also evaluated with ``prm.tune_threshold``'s threshold, tuned on their own (MC- or exact-labelled)
validation split: ``prm.threshold.tune_threshold`` applied to the trained PRM, as ``train_prm`` does after training
(so the same PRM, not a second training run)."""


def variant_available(name: str, ns: list[int]) -> bool:
    digits = "".join(ch for ch in name.split("_")[0] if ch.isdigit())
    return not digits or int(digits) in ns


def validation_split(examples: list[StepwiseExample], seed: int, fraction: float) -> list[StepwiseExample]:
    """The validation examples ``loop.stages.train_reward_model`` held out (its shuffle and split, repeated)."""
    shuffled = random.Random(seed).sample(examples, len(examples))
    return shuffled[: int(len(shuffled) * fraction)]


def train_and_evaluate(cfg: ExperimentConfig, policy: Path, data: dict, held_out: list[StepwiseExample], name: str,
                       seed: int, out: Path) -> dict[str, dict]:
    """Train the ``name`` PRM with the loop's recipe and evaluate it on ``held_out`` (and, for ``TUNED``, again with
    its tuned threshold); {row name: result}, cached per (seed, name)."""
    cache = out / f"prm_{name}_seed{seed}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    examples = VARIANTS[name](data)
    torch.manual_seed(seed)
    summary = train_reward_model(policy, "process", examples, [], cfg, out / f"prm_{name}_seed{seed}", seed,
                                 log=lambda line: None)
    prm = load_reward_model(out / f"prm_{name}_seed{seed}", cfg.prm)
    common = {"train_solutions": len(examples), "train_seconds": summary["seconds"]}
    results = {name: {**common, "tuned_threshold": math.nan, **evaluate_steps(prm, held_out, cfg.prm.threshold)}}
    if name in TUNED:
        tuned = tune_threshold(prm, validation_split(examples, seed, cfg.prm.val_fraction), cfg.prm.eval_batch_size)
        results[f"{name} + tuned threshold"] = {**common, "tuned_threshold": tuned["tuned_threshold"],
                                                **evaluate_steps(prm, held_out, cfg.prm.threshold)}
    cache.write_text(json.dumps(results))
    return results


def label_free(cfg: ExperimentConfig, policy: Path, held_out: list[StepwiseExample], seed: int, out: Path) -> dict:
    """The baseline with no labels: the policy's own step log-probs through a fresh, untrained PRM head; cached."""
    cache = out / f"label_free_seed{seed}.json"
    if not cache.is_file():
        prm = StepRewardModel.from_policy(str(policy), "process", cfg.prm.max_length, cfg.prm.step_separator, True)
        cache.write_text(json.dumps({"train_solutions": 0, "train_seconds": 0.0, "tuned_threshold": math.nan,
                                     **evaluate_steps(prm, held_out, cfg.prm.threshold)}))
    return json.loads(cache.read_text())


# ---- report -----------------------------------------------------------------------------------------------------


def ci_cell(values: list[float]) -> str:
    mean, half = mean_ci([v for v in values if not math.isnan(v)])
    return "nan" if math.isnan(mean) else f"{mean:.3f}" if math.isnan(half) else f"{mean:.3f} ± {half:.3f}"


def print_ci_table(title: str, rows: dict[str, list[dict]], columns: list[str]) -> None:
    """One markdown row per name: each column's mean ± 95% CI over the seeds' dicts."""
    print(f"\n### {title}\n\n| | seeds | {' | '.join(columns)} |\n|---|---|{'---|' * len(columns)}")
    for name, per_seed in rows.items():
        print(f"| {name} | {len(per_seed)} | {' | '.join(ci_cell([row[c] for row in per_seed]) for c in columns)} |")


PAIRED = (("exact", "mc8"), ("mc8_consensus", "mc8"), ("mc8 + tuned threshold", "mc8"),
          ("exact + tuned threshold", "exact"), ("mc8", "label-free (policy log-probs)"),
          ("exact", "label-free (policy log-probs)"))
"""Row pairs whose first-error F1 difference is shown per seed (same held-out samples), mean ± 95% CI."""


def print_paired(quality: dict[str, list[dict]], metric: str = "first_error_f1") -> None:
    """Seed-paired differences of ``metric`` between rows that every seed has."""
    print(f"\n### Paired differences in {metric} (a - b, per seed on the same held-out samples)\n\n"
          "| a - b | seeds | difference |\n|---|---|---|")
    for a, b in PAIRED:
        if a in quality and b in quality and len(quality[a]) == len(quality[b]):
            print(f"| {a} - {b} | {len(quality[a])} | "
                  f"{ci_cell([x[metric] - y[metric] for x, y in zip(quality[a], quality[b])])} |")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"small sizes for a smoke pass: {QUICK}")
    parser.add_argument("--config", default="configs/compare.yaml", help="data/policy/prm settings")
    parser.add_argument("--policy", default=None, help="policy directory (default: the config's shipped warm start)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-problems", type=int, default=200, help="training problems sampled for labels")
    parser.add_argument("--samples", type=int, default=4, help="policy samples per training problem")
    parser.add_argument("--ns", type=int, nargs="+", default=[4, 8], help="MC rollouts per step prefix")
    parser.add_argument("--eval-problems", type=int, default=100, help="held-out problems")
    parser.add_argument("--eval-samples", type=int, default=8, help="policy samples per held-out problem")
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, help=f"of {', '.join(VARIANTS)}")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/bench_mc_labels", help="cache and results directory")
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
        args.out += "_quick"
    unknown = [name for name in args.variants if name not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}; valid: {', '.join(VARIANTS)}")
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    cfg, out = load_config(args.config), Path(args.out)
    policy = Path(args.policy) if args.policy else shipped_warm_start(cfg)
    if policy is None:
        raise SystemExit(f"{args.config}: no shipped warm start for its data/policy/sft sections; pass --policy")
    model, tokenizer = load_policy(str(policy), cfg.policy.dtype)
    noise: dict[str, list[dict]] = {}
    quality: dict[str, list[dict]] = {}
    all_right: dict[str, list[float]] = {"training samples": [], "held-out samples": []}
    for seed in args.seeds:
        data = labelled_training_data(cfg, model, tokenizer, args, seed, out)
        print(f"seed {seed}: {len(data['exact'])} labelled solutions (sampling {data['sample_seconds']:.0f} s, "
              f"MC n={max(map(int, data['mc']))} {data['mc_seconds']:.0f} s, {data['rollouts_drawn']} rollouts)", flush=True)
        for row, values in noise_rows(data).items():  # --ns, or more where a cached pool has more
            noise.setdefault(row, []).append(values)
        variants = [name for name in args.variants if variant_available(name, list(map(int, data["mc"])))]
        held_out = held_out_examples(cfg, model, tokenizer, args, seed, out)
        for key, labels in (("training samples", data["exact"]), ("held-out samples", [e.labels for e in held_out])):
            all_right[key].append(sum(first_error_from_labels(x) == -1 for x in labels) / len(labels))
        results = {row: result for name in variants
                   for row, result in train_and_evaluate(cfg, policy, data, held_out, name, seed, out).items()}
        results["label-free (policy log-probs)"] = label_free(cfg, policy, held_out, seed, out)
        for row, result in results.items():
            quality.setdefault(row, []).append(result)
            print(f"seed {seed} {row}: first-error F1 {result['first_error_f1']:.3f} "
                  f"({result['train_solutions']} solutions, {result['train_seconds']:.0f} s)", flush=True)
    print(f"\n## bench/mc_labels.py ({json.dumps({k: v for k, v in vars(args).items() if k != 'variants'})})")
    print(f"policy {policy}; torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}; "
          f"mean ± 95% CI over seeds {args.seeds}; solutions with every step right (exact): "
          f"{', '.join(f'{key} {ci_cell(values)}' for key, values in all_right.items())}")
    print_ci_table("MC hard labels vs exact labels (training samples)", noise,
                   ["step_agreement", "first_error_agreement", "first_error_f1", "right_called_wrong", "wrong_called_right",
                    "fe_mc_earlier", "fe_mc_later", "rollouts_per_solution", "shared_rollouts_per_solution"])
    print_ci_table("PRMs on fresh held-out samples, exact labels", quality,
                   ["first_error_f1", "first_error_acc_erroneous", "first_error_acc_correct", "step_acc",
                    "tuned_threshold", "train_solutions", "train_seconds", "n_examples"])
    print_paired(quality)
    print(f"\nwall time {time.perf_counter() - started:.0f} s")
    (out / "results.json").write_text(json.dumps({"args": vars(args), "noise": noise, "quality": quality},
                                                 indent=1, default=str))


if __name__ == "__main__":
    main()
