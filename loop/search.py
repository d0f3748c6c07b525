"""The `prmloop search` job: test-time search with a PRM over N policy samples, accuracy against n at equal tokens.

One sampling pass: N completions per held-out problem (the task's held-out split, first K problems; temperature and
top_p from grpo.*; the one generation path, ``policy.rollout.PolicySampler``, seeded by ``seed``), split with the
task's step split, every step scored by the reward model (any format ``prm.formats.load_reward_model`` reads), every
completion judged by the task's answer check. Then for n = 1, 2, 4, ..., N each strategy picks from random subsets of
n of a problem's N samples (``subsets`` draws without replacement per problem, seeded; one subset at n = N):
- ``best_of_n``: the sample with the highest aggregated PRM score (``prm.metrics.AGGREGATIONS``, min by default);
- ``weighted_best_of_n``: the answer whose samples' aggregated scores sum highest (search-and-learn's weighted BoN);
- ``maj_at_n``: the most common answer (self-consistency);
- ``pass_at_n``: any sample right (the ceiling of every reranker over these samples).
All four read the same samples, so at each n they cost the same generated tokens (PRM scoring not counted).
``--strategy beam`` also runs step-level beam search (``loop.beam_search``, W = ``--beam-width`` prefixes, E =
``--expansions`` one-step continuations each) and reports it beside the row above whose tokens per problem are
closest to beam's (a ``strategy: beam`` row in ``search.jsonl``, a second table in ``search.md``, one marker on
the plot). ``--strategy dvts`` runs diverse verifier tree search instead (``loop.beam_search.dvts``: the same W * E
budget as W independent width-1 beam searches of E expansions each, the best final over them) and reports it the
same way (a ``strategy: dvts`` row, its own table, its own marker).

Outputs in ``out``: ``search.md`` (the table, also printed), ``search.jsonl`` (one row per n), ``accuracy_vs_n.png``,
``config.yaml``, and the W&B run ``search-<name>`` (tracking.mode as grpo): ``search/<strategy>`` against ``n``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from pathlib import Path
from typing import Any

from ..data.answers import normalize_answer
from ..data.prompts import Prompter
from ..data.schema import Problem
from ..data.tasks import Task, get_task
from ..policy.load import load_policy
from ..policy.rollout import PolicySampler
from ..prm.metrics import (
    AGGREGATIONS,
    best_of_n_accuracy,
    majority_vote_accuracy,
    pass_at_n,
    weighted_best_of_n_accuracy,
)
from ..utils.errors import UserError
from ..utils.jsonl import atomic_write_text, write_jsonl
from .beam_search import beam_search, dvts
from .config import ExperimentConfig, save_config
from .report_stats import mean_ci
from .stages import format_prefix_for
from .tracking import check_online_login, job_run, json_safe, resolve_mode

STRATEGIES = ("best_of_n", "weighted_best_of_n", "maj_at_n", "pass_at_n")
"""Columns of the table, in order."""
SEARCH_STRATEGIES = ("best_of_n", "beam", "dvts")
"""``search --strategy``: 'best_of_n' reranks N samples (the four columns); 'beam' adds step-level beam search;
'dvts' adds diverse verifier tree search (W independent width-1 beam searches)."""
TREE_SEARCHES = {"beam": "Step-level beam search", "dvts": "Diverse verifier tree search (W independent subtrees of "
                 "width 1)"}
"""The strategies run on top of the N samples, and the caption of their table."""


@dataclasses.dataclass(frozen=True)
class BeamOptions:
    """``search --strategy beam`` and ``dvts`` (``loop.beam_search``)."""

    width: int = 4
    """W: prefixes kept per step (dvts: independent subtrees, one prefix each)."""
    expansions: int = 4
    """E: sampled one-step continuations per kept prefix (W * E candidates per step, both strategies)."""
    step_tokens: int = 24
    """New-token budget of one step's generation, cut at its first step end (every token counts)."""


@dataclasses.dataclass
class Samples:
    """N samples of each problem (problems outer, samples inner), everything the strategies read."""

    step_scores: list[list[list[float]]]
    """PRM score of every step ([0.0] for a sample the PRM could not score)."""
    answers: list[list[str | None]]
    """Normalised final answers (None: none extracted)."""
    correct: list[list[bool]]
    """The task's answer check."""
    tokens: list[list[int]]
    """Generated tokens of each sample, its EOS included."""


def sample_sizes(largest: int) -> list[int]:
    """1, 2, 4, ... up to ``largest``, and ``largest`` itself when it is not a power of two."""
    sizes = [1 << k for k in range(largest.bit_length()) if 1 << k <= largest]
    return sizes if sizes[-1] == largest else [*sizes, largest]


def draw_subsets(num_samples: int, n: int, count: int, rng: random.Random) -> list[list[int]]:
    """``count`` subsets of n sample indices drawn without replacement, each sorted (ties go to the earlier sample);
    the one full set when n = num_samples."""
    if n == num_samples:
        return [list(range(num_samples))]
    return [sorted(rng.sample(range(num_samples), n)) for _ in range(count)]


def problem_hits(samples: Samples, problem: int, chosen: list[int], aggregation: str) -> dict[str, float]:
    """Whether each strategy gets one problem right (1.0 / 0.0) from the samples ``chosen``."""
    scores = [[samples.step_scores[problem][i] for i in chosen]]
    answers = [[samples.answers[problem][i] for i in chosen]]
    correct = [[samples.correct[problem][i] for i in chosen]]
    return {"best_of_n": best_of_n_accuracy(scores, correct, aggregation),
            "weighted_best_of_n": weighted_best_of_n_accuracy(scores, answers, correct, aggregation),
            "maj_at_n": majority_vote_accuracy(answers, correct), "pass_at_n": pass_at_n(correct)}


def accuracy_vs_n(samples: Samples, subsets: int, seed: int, aggregation: str) -> list[dict[str, float]]:
    """One row per n: each strategy's accuracy (mean over problems of its hit rate over the problem's subsets) with a
    95% CI over problems (t-distribution, ``<strategy>_ci``), and the mean generated tokens per problem of n samples."""
    num_samples = len(samples.correct[0])
    rows = []
    for n in sample_sizes(num_samples):
        rng = random.Random(seed * 1_000_003 + n)  # one stream per n: the row for n does not depend on other rows
        per_problem: dict[str, list[float]] = {name: [] for name in STRATEGIES}
        tokens = []
        for problem in range(len(samples.correct)):
            drawn = draw_subsets(num_samples, n, subsets, rng)
            hits = [problem_hits(samples, problem, chosen, aggregation) for chosen in drawn]
            for name in STRATEGIES:
                per_problem[name].append(sum(hit[name] for hit in hits) / len(hits))
            tokens.append(sum(sum(samples.tokens[problem][i] for i in chosen) for chosen in drawn) / len(drawn))
        row: dict[str, float] = {"n": n, "tokens_per_problem": sum(tokens) / len(tokens), "subsets": len(drawn)}
        for name in STRATEGIES:
            row[name], row[f"{name}_ci"] = mean_ci(per_problem[name])
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, float]], num_problems: int, aggregation: str) -> str:
    """The table of ``search.md``: n, tokens per problem, then each strategy as mean ± 95% CI over problems."""
    caption = (f"Accuracy on {num_problems} held-out problems, mean ± 95% CI over problems (t-distribution); each cell "
               f"averages random subsets of n of the same N samples per problem (aggregation: {aggregation}).")
    lines = [caption, "", "| n | tokens/problem | " + " | ".join(STRATEGIES) + " |", "|---" * (2 + len(STRATEGIES)) + "|"]
    for row in rows:
        cells = [f"{row[name]:.3f} ± {row[f'{name}_ci']:.3f}" for name in STRATEGIES]
        lines.append(f"| {row['n']} | {row['tokens_per_problem']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_accuracy_vs_n(rows: list[dict[str, float]], path: Path, beam: dict[str, Any] | None = None) -> None:
    """Accuracy vs n on a log2 axis, one line per strategy (band: the 95% CI over problems); beam search, if run, as
    one marker at the n of the row nearest it in tokens (error bar: its 95% CI); ``beam`` is beam's or dvts's row."""
    from matplotlib.figure import Figure  # lazy: matplotlib loads only when the job draws

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    ns = [row["n"] for row in rows]
    for index, name in enumerate(STRATEGIES):
        means = [row[name] for row in rows]
        half = [0.0 if math.isnan(row[f"{name}_ci"]) else row[f"{name}_ci"] for row in rows]  # one problem: no CI
        ax.plot(ns, means, marker="o", color=f"C{index}", label=name)
        ax.fill_between(ns, [m - h for m, h in zip(means, half)], [m + h for m, h in zip(means, half)],
                        color=f"C{index}", alpha=0.15, linewidth=0)
    if beam is not None:
        name = beam["strategy"]
        half = 0.0 if math.isnan(beam[f"{name}_ci"]) else beam[f"{name}_ci"]
        ax.errorbar([beam["nearest_n"]], [beam[name]], yerr=[half], marker="*" if name == "beam" else "D",
                    markersize=12 if name == "beam" else 8, color="black",
                    linestyle="none", label=f"{name} W={beam['beam_width']} E={beam['expansions']} "
                    f"({beam['tokens_per_problem']:.0f} tokens/problem)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set(xlabel="n (samples per problem)", ylabel="held-out accuracy", title="Accuracy vs n (band: 95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


@dataclasses.dataclass
class SearchInputs:
    """What both strategies read: the task, its first K held-out problems, their prompts, the PRM and the policy."""

    task: Task
    problems: list[Problem]
    prompter: Prompter
    prompts: list[str]
    scorer: Any
    model: Any
    tokenizer: Any


def load_inputs(cfg: ExperimentConfig, policy_dir: str, prm_dir: str, num_problems: int | None) -> SearchInputs:
    """Load the task's held-out problems, the reward model and the policy."""
    from ..prm.formats import load_reward_model  # lazy: torch/transformers-heavy

    task = get_task(cfg.data)
    problems = task.problems()[1][:num_problems]
    scorer = load_reward_model(prm_dir, cfg.prm)
    model, tokenizer = load_policy(policy_dir, cfg.policy.dtype, key="--policy")
    prompter = Prompter.of(cfg.policy, tokenizer)
    return SearchInputs(task, problems, prompter, [prompter(p.question) for p in problems], scorer, model, tokenizer)


def collect_samples(cfg: ExperimentConfig, inputs: SearchInputs, n: int) -> Samples:
    """Sample, split, score and check (see the module docstring)."""
    from ..prm.scoring_eval import group_scores  # lazy: torch/transformers-heavy

    task, problems, prompts = inputs.task, inputs.problems, inputs.prompts
    sampler = PolicySampler(inputs.model, inputs.tokenizer, cfg.policy.max_new_tokens, cfg.grpo.temperature,
                            cfg.grpo.top_p, seed=cfg.seed)
    texts, tokens = sampler.complete_counted(prompts, n)
    scores = group_scores(inputs.scorer, prompts, [[task.split(text) for text in group] for group in texts],
                          cfg.prm.eval_batch_size)
    answers = [[_vote_key(task.final_answer(text)) for text in group] for group in texts]
    correct = [[task.is_correct(text, p.answer) for text in group] for p, group in zip(problems, texts)]
    return Samples(scores, answers, correct, tokens)


def task_max_steps(task: Task) -> int | None:
    """The most steps a solution has: the embedded task's data.max_steps operations plus its answer line; None
    elsewhere (policy.max_new_tokens bounds the length)."""
    return task.cfg.max_steps + 1 if task.name == "arith" else None


def run_beam(cfg: ExperimentConfig, inputs: SearchInputs, options: BeamOptions, aggregation: str,
             strategy: str = "beam") -> dict[str, Any]:
    """Beam search (``strategy`` 'beam') or DVTS ('dvts') on every problem; its row: accuracy (mean ± 95% CI over
    problems, under the key ``strategy``), tokens per problem."""
    from ..prm.scoring_eval import group_scores  # lazy: torch/transformers-heavy

    task = inputs.task
    sampler = PolicySampler(inputs.model, inputs.tokenizer, min(options.step_tokens, cfg.policy.max_new_tokens),
                            cfg.grpo.temperature, cfg.grpo.top_p, seed=cfg.seed)
    start = time.perf_counter()
    search = {"beam": beam_search, "dvts": dvts}[strategy]
    results = search(
        [p.question for p in inputs.problems], format_prefix_for(inputs.prompter, task), sampler.complete_counted,
        lambda prompts, groups: group_scores(inputs.scorer, prompts, groups, cfg.prm.eval_batch_size),
        task.separator, sampler.backend.max_new_tokens, options.width, options.expansions, aggregation,
        lambda step: task.final_answer(step) is not None, task_max_steps(task), cfg.policy.max_new_tokens,
        lambda steps: len(inputs.tokenizer.encode(task.join(steps) + task.separator, add_special_tokens=False)))
    hits = [float(task.is_correct(task.join(r.best.steps), p.answer)) for r, p in zip(results, inputs.problems)]
    accuracy, ci = mean_ci(hits)
    return {"strategy": strategy, "n": options.width * options.expansions, "beam_width": options.width,
            "expansions": options.expansions, "step_tokens": options.step_tokens,
            "tokens_per_problem": sum(r.tokens for r in results) / len(results), strategy: accuracy,
            f"{strategy}_ci": ci,
            "seconds": round(time.perf_counter() - start, 1)}


def nearest_row(rows: list[dict[str, float]], tokens: float) -> dict[str, float]:
    """The Best-of-N row whose tokens per problem are closest to ``tokens`` (ties: the smaller n)."""
    return min(rows, key=lambda row: abs(row["tokens_per_problem"] - tokens))


def beam_table(beam: dict[str, Any], nearest: dict[str, float]) -> str:
    """Beam's (or dvts's) row of ``search.md`` beside the four rerankers at the Best-of-N row nearest in tokens."""
    name = beam["strategy"]
    caption = (f"{TREE_SEARCHES[name]} (W = {beam['beam_width']}, E = {beam['expansions']}, at most "
               f"{beam['step_tokens']} tokens per step, every generated token counted) beside the rerankers at the "
               f"row of the table above whose tokens/problem is closest to {name}'s (n = {nearest['n']}).")
    lines = [caption, "", "| strategy | n | tokens/problem | accuracy |", "|---|---|---|---|",
             (f"| {name} | {beam['n']} | {beam['tokens_per_problem']:.1f} | {beam[name]:.3f} ± "
              f"{beam[f'{name}_ci']:.3f} |")]
    lines += [f"| {other} | {nearest['n']} | {nearest['tokens_per_problem']:.1f} | "
              f"{nearest[other]:.3f} ± {nearest[f'{other}_ci']:.3f} |" for other in STRATEGIES]
    return "\n".join(lines) + "\n"


def search_job(cfg: ExperimentConfig, policy_dir: str, prm_dir: str, out: str, n: int, num_problems: int | None,
               subsets: int, aggregation: str, strategy: str = "best_of_n", beam: BeamOptions | None = None) -> str:
    """Run the search evaluation and write its outputs to ``out``; returns the markdown table."""
    beam = beam or BeamOptions()
    if n < 1:
        raise UserError(f"search --n: must be >= 1, got {n}")
    if num_problems is not None and num_problems < 1:
        raise UserError(f"search --problems: must be >= 1, got {num_problems}")
    if subsets < 1:
        raise UserError(f"search --subsets: must be >= 1, got {subsets}")
    if aggregation not in AGGREGATIONS:
        raise UserError(f"search --aggregation: {aggregation!r} is not one of {', '.join(AGGREGATIONS)}")
    if strategy not in SEARCH_STRATEGIES:
        raise UserError(f"search --strategy: {strategy!r} is not one of {', '.join(SEARCH_STRATEGIES)}")
    for key, value in (("beam-width", beam.width), ("expansions", beam.expansions), ("step-tokens", beam.step_tokens)):
        if value < 1:
            raise UserError(f"search --{key}: must be >= 1, got {value}")
    check_online_login(resolve_mode(cfg.tracking.mode, os.environ))  # before any work: one line naming the key
    inputs = load_inputs(cfg, policy_dir, prm_dir, num_problems)
    samples = collect_samples(cfg, inputs, n)
    rows: list[dict[str, Any]] = [{"strategy": "best_of_n", **row}
                                  for row in accuracy_vs_n(samples, subsets, cfg.seed, aggregation)]
    table = markdown_table(rows, len(samples.correct), aggregation)
    beam_row = None
    if strategy in TREE_SEARCHES:
        beam_row = run_beam(cfg, inputs, beam, aggregation, strategy)
        nearest = nearest_row(rows, beam_row["tokens_per_problem"])
        beam_row["nearest_n"] = nearest["n"]
        table += "\n" + beam_table(beam_row, nearest)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out_dir)
    atomic_write_text(out_dir / "search.md", table)
    all_rows = rows + ([beam_row] if beam_row else [])
    write_jsonl(out_dir / "search.jsonl", ({key: json_safe(value) for key, value in row.items()} for row in all_rows))  # a nan CI (one problem) -> null
    plot_accuracy_vs_n(rows, out_dir / "accuracy_vs_n.png", beam_row)
    config = {"experiment": cfg.name, "policy_dir": policy_dir, "prm_dir": prm_dir, "n": n,
              "problems": len(samples.correct), "subsets": subsets, "aggregation": aggregation, "seed": cfg.seed,
              "strategy": strategy, "beam": dataclasses.asdict(beam) if beam_row else None,
              "sections": dataclasses.asdict(cfg)}
    with job_run(out_dir, "search", cfg.name, cfg.tracking, config, tags=["search", aggregation], is_main=True,
                 resume=False) as run:
        for row in rows:
            run.log({f"search/{name}": row[name] for name in (*STRATEGIES, "tokens_per_problem")}, {"n": row["n"]})
        summary = {name: rows[-1][name] for name in STRATEGIES}
        if beam_row:
            summary.update({strategy: beam_row[strategy],
                            f"{strategy}_tokens_per_problem": beam_row["tokens_per_problem"]})
        run.set_summary(summary)
    return table


def _vote_key(answer: str | None) -> str | None:
    """Answers vote in normalised form (``data.answers.normalize_answer``), so '45' and '45.0 ' share a vote."""
    return None if answer is None else normalize_answer(answer)
