"""The CLI's reward-model jobs: label policy samples, train a PRM/ORM, evaluate one on a labelled file (no math here).

Files: stepwise JSONL rows are ``{prompt, completions, labels, **meta}`` where ``prompt`` is the full text the policy
was conditioned on (``policy.prompt_template`` already applied), as the loop's labels.jsonl stores it; so a
``trl_stepwise`` file is read as is, while the other labelled formats (ProcessBench, PRM800K, Math-Shepherd) hold the
bare problem text and get ``policy.prompt_template`` applied before the PRM reads them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from prmloop.data.errors import UserError
from prmloop.data.jsonl import atomic_write_text, read_jsonl, write_jsonl
from prmloop.data.loaders import load
from prmloop.data.schema import Problem, StepwiseExample
from prmloop.loop.config import ExperimentConfig, save_config

LABEL_METHODS = {"exhaustive": "mc", "binary": "mc_binary", "exact": "exact"}
"""CLI labelling method -> the loop's labeller name (loop.stages.label_rows)."""


def load_stepwise(path: str | Path) -> list[StepwiseExample]:
    """A prmloop stepwise JSONL file (bad rows are a UserError naming file:row)."""
    examples, _ = load("trl_stepwise", path)
    if not examples:
        raise UserError(f"{path}: no labelled solutions")
    return examples


def train_prm_job(cfg: ExperimentConfig, data_path: str, out: str, init: str | None, replay_path: str | None) -> dict:
    """Train a reward model on ``data_path`` (+ replay from ``replay_path``) from ``init``; save it with
    config.yaml and prm_metrics.json in ``out``."""
    from prmloop.prm.train import train_prm

    if init is None:
        if cfg.policy.model == "tiny":
            raise UserError("prm train: --init is needed (a policy directory or a PRM directory to continue)")
        init = cfg.policy.model
    examples = load_stepwise(data_path)
    replay = load_stepwise(replay_path) if replay_path else None
    from prmloop.loop.stages import init_reward_model

    model, how = init_reward_model(init, cfg.prm.mode, cfg.prm.max_length)
    torch.manual_seed(cfg.prm.seed)
    summary = train_prm(model, examples, cfg.prm, replay=replay)
    out_dir = model.save_pretrained(out)
    save_config(cfg, out_dir)
    summary = {"init": how, "init_from": str(init), **summary}
    atomic_write_text(out_dir / "prm_metrics.json", json.dumps(summary, indent=1, default=str) + "\n")
    return summary


def read_problems(path: str | Path) -> list[Problem]:
    """A problems JSONL file (from ``prmloop data generate``)."""
    problems = [Problem.from_row(row, f"{path}:{line}") for line, row in read_jsonl(path)]
    if not problems:
        raise UserError(f"{path}: no problems")
    return problems


def label_job(
    cfg: ExperimentConfig, policy_dir: str, problems_path: str, out: str, n: int, method: str, samples_per_problem: int
) -> dict:
    """Sample ``samples_per_problem`` solutions per problem from the policy (temperature 1, seeded by cfg.seed) and
    label their steps: ``exact`` (step verifier, embedded task), ``exhaustive`` (Math-Shepherd MC with ``n``
    completions per prefix, estimate = prm.label_type) or ``binary`` (binary search, ``n`` per probe). Writes
    stepwise JSONL to ``out``."""
    from prmloop.loop.jobs import load_policy
    from prmloop.loop.stages import label_rows, sample_rows
    from prmloop.policy.rollout import PolicySampler

    if method not in LABEL_METHODS:
        raise UserError(f"prm label --method: {method!r} is not one of {', '.join(LABEL_METHODS)}")
    if n < 1 or samples_per_problem < 1:
        raise UserError(f"prm label: --n and --samples must be >= 1, got {n} and {samples_per_problem}")
    problems = read_problems(problems_path)
    model, tokenizer = load_policy(policy_dir, cfg.policy.dtype)
    started = time.perf_counter()
    rows = sample_rows(model, tokenizer, problems, cfg.policy, len(problems), samples_per_problem, cfg.seed)
    sampler = PolicySampler(model, tokenizer, cfg.policy.max_new_tokens, temperature=1.0, seed=cfg.seed)
    examples, rollouts = label_rows(rows, LABEL_METHODS[method], sampler, n, cfg.prm.label_type, cfg.policy, 0)
    for example in examples:
        example.meta["label_method"] = method
    write_jsonl(out, (example.to_row() for example in examples))
    return {
        "n_problems": len(problems), "n_samples": len(rows), "n_labelled": len(examples),
        "n_skipped_empty": len(rows) - len(examples), "rollouts": rollouts,
        "seconds": round(time.perf_counter() - started, 1), "out": str(out),
    }


def eval_prm_job(cfg: ExperimentConfig, prm_dir: str, data_path: str, fmt: str) -> dict:
    """Step metrics and ProcessBench first-error metrics of the saved reward model on a labelled file."""
    from prmloop.prm.evaluate import evaluate_file
    from prmloop.prm.model import StepRewardModel

    model = StepRewardModel.from_pretrained(prm_dir)
    template = "{question}" if fmt.lower().replace("-", "_") == "trl_stepwise" else cfg.policy.prompt_template
    return evaluate_file(model, data_path, fmt, prompt_template=template, threshold=cfg.prm.threshold,
                         batch_size=cfg.prm.eval_batch_size)
