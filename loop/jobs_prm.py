"""The CLI's reward-model jobs: label policy samples, train a PRM/ORM, evaluate one on a labelled file (no math here).

Files: stepwise JSONL rows are ``{prompt, completions, labels, **meta}`` where ``prompt`` is the full text the policy
was conditioned on (the prompt template or chat template already applied), as the loop's labels.jsonl stores it; so a
``trl_stepwise`` file is read as is, while the other labelled formats (ProcessBench, PRM800K, Math-Shepherd) hold the
bare problem text and get the policy's prompt (``data.prompts.Prompter``) applied before the PRM reads them.
Problems to label come from ``--problems FILE`` read as the configured task's format (``data.task``: a prmloop
problems JSONL for arith, GSM8K rows for gsm8k, ...), or, without it, from the task's training split.

``prm train`` logs to W&B (loop.tracking; the main process only, by RANK, under accelerate launch): run
``prm-train-<name>`` in group ``<name>``; each epoch's row of the training history as ``prm/*`` against ``epoch``
(sent when training ends: prm.train has no per-epoch hook), and the summary's numbers as ``eval/rm_*`` at round 0, the
names the loop gives a retrained reward model's summary. The run id is kept in ``out/wandb_run_id.txt``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import torch
from accelerate import PartialState

from ..data.loaders import load
from ..data.prompts import Prompter
from ..data.schema import Problem, StepwiseExample
from ..data.tasks import get_task
from ..policy.load import load_policy
from ..policy.rollout import PolicySampler
from ..utils.errors import UserError
from ..utils.jsonl import atomic_write_text, read_jsonl, write_jsonl
from .config import ExperimentConfig, save_config
from .stages import LABELLER_ALIASES, LABELLERS, label_rows, outcome_examples, sample_rows
from .tracking import WandbRun, check_online_login, is_main_process, job_run, resolve_mode


def load_stepwise(path: str | Path) -> list[StepwiseExample]:
    """A prmloop stepwise JSONL file (bad rows are a UserError naming file:row)."""
    examples, _ = load("trl_stepwise", path)
    if not examples:
        raise UserError(f"{path}: no labelled solutions")
    return examples


def train_prm_job(cfg: ExperimentConfig, data_path: str, out: str, init: str | None, replay_path: str | None) -> dict:
    """Train a reward model on ``data_path`` (+ replay from ``replay_path``) from ``init``; save it with
    config.yaml and prm_metrics.json in ``out``. ``prm.mode: implicit`` trains an implicit PRM on each row's outcome
    label only (``prm.implicit_train``; its step labels then only measure it)."""
    from ..prm.train import train_prm  # lazy: torch/transformers-heavy

    check_online_login(resolve_mode(cfg.tracking.mode, os.environ))  # before any work: one line naming the key
    if init is None:
        if cfg.policy.model == "tiny":
            raise UserError("prm train: --init is needed (a policy directory or a PRM directory to continue)")
        init = cfg.policy.model
    examples = load_stepwise(data_path)
    replay = load_stepwise(replay_path) if replay_path else None
    from ..prm.formats import init_implicit_model, init_reward_model  # lazy: torch/transformers-heavy
    from ..prm.implicit_train import train_implicit

    if cfg.prm.mode == "outcome":
        examples = outcome_examples(examples)
        replay = outcome_examples(replay) if replay else replay
    implicit = cfg.prm.mode == "implicit"  # trained from each row's outcome label only (prm.implicit_train)
    model, how = init_implicit_model(init, cfg.prm) if implicit else init_reward_model(init, cfg.prm, cfg.prm.mode)
    torch.manual_seed(cfg.prm.seed)
    with prm_wandb_run(cfg, out, str(init), data_path, is_main_process(os.environ)) as run:
        summary = (train_implicit if implicit else train_prm)(model, examples, cfg.prm, replay=replay)
        summary = {"init": how, "init_from": str(init), **summary}
        log_prm_summary(run, summary)
    state = PartialState()  # under accelerate launch: the main process alone writes the output folder
    if state.is_main_process:
        out_dir = model.save_pretrained(out)
        save_config(cfg, out_dir)
        atomic_write_text(out_dir / "prm_metrics.json", json.dumps(summary, indent=1, default=str) + "\n")
    state.wait_for_everyone()
    return summary


def prm_wandb_run(cfg: ExperimentConfig, out: str, init: str, data_path: str, is_main: bool) -> WandbRun:
    """The W&B run of one ``prm train`` (a new run each time: the command has no resume)."""
    prm = cfg.prm
    config = {"experiment": cfg.name, "init": init, "data": data_path, "mode": prm.mode, "label_type": prm.label_type,
              "lr": prm.lr, "head_lr": prm.head_lr, "epochs": prm.epochs, "batch_size": prm.batch_size,
              "seed": prm.seed, "sections": dataclasses.asdict(cfg)}
    return job_run(out, "prm train", cfg.name, cfg.tracking, config, tags=["prm", prm.mode], is_main=is_main,
                   resume=False)


def log_prm_summary(run: WandbRun, summary: dict) -> None:
    """Per-epoch history rows as ``prm/*`` at their epoch; the summary's numbers as ``eval/rm_*`` at round 0."""
    for row in summary.get("history", []):
        run.log({f"prm/{key}": value for key, value in row.items() if key != "epoch"}, {"epoch": int(row["epoch"])})
    numbers = {key: value for key, value in summary.items() if isinstance(value, (int, float))}
    run.log({f"eval/rm_{key}": value for key, value in numbers.items()}, {"round": 0, "rl_step": 0})
    run.set_summary({f"rm_{key}": value for key, value in numbers.items()})


def read_problems(cfg: ExperimentConfig, path: str | None) -> list[Problem]:
    """Problems to label: ``path`` in the configured task's format, or the task's training problems."""
    task = get_task(cfg.data)
    if path is None:
        problems, _ = task.problems()
    elif task.name == "arith":
        problems = [Problem.from_row(row, f"{path}:{line}") for line, row in read_jsonl(path)]
    else:
        problems = task.load_split(dataclasses.replace(cfg.data, source=path), cfg.data.split)
    if not problems:
        raise UserError(f"{path or cfg.data.source}: no problems")
    return problems


def label_job(cfg: ExperimentConfig, policy_dir: str, problems_path: str | None, out: str, n: int, method: str,
              samples_per_problem: int) -> dict:
    """Sample ``samples_per_problem`` solutions per problem from the policy (temperature 1, seeded by cfg.seed) and
    label their steps: ``exact`` (the task's step verifier), ``mc`` (Math-Shepherd MC with ``n`` completions per
    prefix, estimate = prm.label_type, the task's answer check) or ``mc_binary`` (binary search, ``n`` per probe); the
    names of ``loop.labeller``. The old spellings ``exhaustive`` (= mc) and ``binary`` (= mc_binary) are still
    accepted, and the rows' ``label_method`` records the name as given. Writes stepwise JSONL to ``out``."""
    labeller = LABELLER_ALIASES.get(method, method)
    if labeller not in LABELLERS:
        raise UserError(f"prm label --method: {method!r} is not one of {', '.join(LABELLERS)} (old names: "
                        f"{', '.join(f'{old} = {new}' for old, new in LABELLER_ALIASES.items())})")
    if n < 1 or samples_per_problem < 1:
        raise UserError(f"prm label: --n and --samples must be >= 1, got {n} and {samples_per_problem}")
    task = get_task(cfg.data)
    if labeller == "exact" and not task.has_verifier:
        raise UserError(f"prm label --method exact: task '{task.name}' has no step verifier; use mc or mc_binary")
    problems = read_problems(cfg, problems_path)
    model, tokenizer = load_policy(policy_dir, cfg.policy.dtype, key="--policy")
    prompter = Prompter.of(cfg.policy, tokenizer)
    started = time.perf_counter()
    rows = sample_rows(model, tokenizer, prompter, problems, cfg.policy.max_new_tokens, len(problems),
                       samples_per_problem, cfg.seed)
    sampler = PolicySampler(model, tokenizer, cfg.policy.max_new_tokens, temperature=1.0, seed=cfg.seed)
    examples, rollouts = label_rows(rows, labeller, sampler, n, cfg.prm.label_type, task, prompter, 0)
    for example in examples:
        example.meta["label_method"] = method
    write_jsonl(out, (example.to_row() for example in examples))
    positive = [label for e in examples for label in e.labels]
    return {
        "n_problems": len(problems), "n_samples": len(rows), "n_labelled": len(examples),
        "n_skipped_empty": len(rows) - len(examples), "rollouts": rollouts,
        "positive_step_share": round(sum(float(x) >= 0.5 for x in positive) / max(1, len(positive)), 4),
        "final_answer_accuracy": round(sum(e.meta["final_answer_correct"] for e in examples) / max(1, len(examples)), 4),
        "seconds": round(time.perf_counter() - started, 1), "out": str(out),
    }


def eval_prm_job(cfg: ExperimentConfig, prm_dir: str, data_path: str, fmt: str, split: str = "train") -> dict:
    """Step metrics and ProcessBench first-error metrics of the saved reward model on a labelled file (``split`` of
    a hub dataset, e.g. ProcessBench's ``gsm8k``/``math``)."""
    from ..prm.formats import load_reward_model
    from ..prm.scoring_eval import evaluate_file  # lazy: torch/transformers-heavy

    model = load_reward_model(prm_dir, cfg.prm)
    prompt_of = None if fmt.lower().replace("-", "_") == "trl_stepwise" else Prompter.of(cfg.policy, model.tokenizer)
    return evaluate_file(model, data_path, fmt, split, prompt_of=prompt_of, threshold=cfg.prm.threshold,
                         batch_size=cfg.prm.eval_batch_size)
