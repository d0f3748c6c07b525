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

Outputs in ``out``: ``search.md`` (the table, also printed), ``search.jsonl`` (one row per n), ``accuracy_vs_n.png``,
``config.yaml``, and the W&B run ``search-<name>`` (tracking.mode as grpo): ``search/<strategy>`` against ``n``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
from pathlib import Path

from ..data.answers import normalize_answer
from ..data.prompts import Prompter
from ..data.tasks import get_task
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
from .config import ExperimentConfig, save_config
from .report_stats import mean_ci
from .tracking import check_online_login, job_run, json_safe, resolve_mode

STRATEGIES = ("best_of_n", "weighted_best_of_n", "maj_at_n", "pass_at_n")
"""Columns of the table, in order."""


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


def plot_accuracy_vs_n(rows: list[dict[str, float]], path: Path) -> None:
    """Accuracy vs n on a log2 axis, one line per strategy (band: the 95% CI over problems)."""
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
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set(xlabel="n (samples per problem)", ylabel="held-out accuracy", title="Accuracy vs n (band: 95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def collect_samples(cfg: ExperimentConfig, policy_dir: str, prm_dir: str, n: int, num_problems: int | None) -> Samples:
    """Sample, split, score and check (see the module docstring)."""
    from ..prm.formats import load_reward_model  # lazy: torch/transformers-heavy
    from ..prm.scoring_eval import group_scores

    task = get_task(cfg.data)
    problems = task.problems()[1][:num_problems]
    scorer = load_reward_model(prm_dir, cfg.prm)
    model, tokenizer = load_policy(policy_dir, cfg.policy.dtype, key="--policy")
    prompter = Prompter.of(cfg.policy, tokenizer)
    prompts = [prompter(problem.question) for problem in problems]
    sampler = PolicySampler(model, tokenizer, cfg.policy.max_new_tokens, cfg.grpo.temperature, cfg.grpo.top_p,
                            seed=cfg.seed)
    texts, tokens = sampler.complete_counted(prompts, n)
    scores = group_scores(scorer, prompts, [[task.split(text) for text in group] for group in texts],
                          cfg.prm.eval_batch_size)
    answers = [[_vote_key(task.final_answer(text)) for text in group] for group in texts]
    correct = [[task.is_correct(text, p.answer) for text in group] for p, group in zip(problems, texts)]
    return Samples(scores, answers, correct, tokens)


def search_job(cfg: ExperimentConfig, policy_dir: str, prm_dir: str, out: str, n: int, num_problems: int | None,
               subsets: int, aggregation: str) -> str:
    """Run the search evaluation and write its outputs to ``out``; returns the markdown table."""
    if n < 1:
        raise UserError(f"search --n: must be >= 1, got {n}")
    if num_problems is not None and num_problems < 1:
        raise UserError(f"search --problems: must be >= 1, got {num_problems}")
    if subsets < 1:
        raise UserError(f"search --subsets: must be >= 1, got {subsets}")
    if aggregation not in AGGREGATIONS:
        raise UserError(f"search --aggregation: {aggregation!r} is not one of {', '.join(AGGREGATIONS)}")
    check_online_login(resolve_mode(cfg.tracking.mode, os.environ))  # before any work: one line naming the key
    samples = collect_samples(cfg, policy_dir, prm_dir, n, num_problems)
    rows = accuracy_vs_n(samples, subsets, cfg.seed, aggregation)
    table = markdown_table(rows, len(samples.correct), aggregation)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out_dir)
    atomic_write_text(out_dir / "search.md", table)
    write_jsonl(out_dir / "search.jsonl", ({key: json_safe(value) for key, value in row.items()} for row in rows))  # a nan CI (one problem) -> null
    plot_accuracy_vs_n(rows, out_dir / "accuracy_vs_n.png")
    config = {"experiment": cfg.name, "policy_dir": policy_dir, "prm_dir": prm_dir, "n": n,
              "problems": len(samples.correct), "subsets": subsets, "aggregation": aggregation, "seed": cfg.seed,
              "sections": dataclasses.asdict(cfg)}
    with job_run(out_dir, "search", cfg.name, cfg.tracking, config, tags=["search", aggregation], is_main=True,
                 resume=False) as run:
        for row in rows:
            run.log({f"search/{name}": row[name] for name in (*STRATEGIES, "tokens_per_problem")}, {"n": row["n"]})
        run.set_summary({name: rows[-1][name] for name in STRATEGIES})
    return table


def _vote_key(answer: str | None) -> str | None:
    """Answers vote in normalised form (``data.answers.normalize_answer``), so '45' and '45.0 ' share a vote."""
    return None if answer is None else normalize_answer(answer)
