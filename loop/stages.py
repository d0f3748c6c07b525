"""The loop's stages as plain functions: warm start (cached), sample for labels, label, train the reward model.

Each takes what it needs explicitly (models, problems, config sections, a seed) and returns data; the orchestrator
decides where results are stored and when a stage counts as done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Sequence
from pathlib import Path

import torch

from prmloop.data.arith import parse_question
from prmloop.data.errors import UserError
from prmloop.data.schema import Problem, StepwiseExample
from prmloop.data.verifier import final_answer, split_solution, verify_steps
from prmloop.loop.config import ExperimentConfig
from prmloop.loop.ledger import save_dir_atomically
from prmloop.policy.config import PolicyConfig
from prmloop.policy.sampling import generate_texts


def warm_start(cfg: ExperimentConfig, log=print) -> Path:
    """The SFT policy directory for cfg's data/policy/sft sections, trained once and cached under loop.cache_dir."""
    from prmloop.loop.jobs import run_sft

    if cfg.policy.model != "tiny" and cfg.sft.steps == 0:
        return Path(cfg.policy.model)
    key_cfg = ExperimentConfig(data=cfg.data, policy=cfg.policy, sft=cfg.sft)
    sections = {name: dataclasses.asdict(getattr(cfg, name)) for name in ("data", "policy", "sft")}
    digest = hashlib.sha256(json.dumps(sections, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(cfg.loop.cache_dir) / f"sft-{digest}"
    if (path / "sft_metrics.json").is_file():
        log(f"warm start: cached SFT policy {path}")
        return path
    log(f"warm start: supervised fine-tuning ({cfg.sft.steps} steps) -> {path}")
    save_dir_atomically(path, lambda tmp: run_sft(key_cfg, str(tmp)))
    return path


def prompt_of(problem: Problem, policy_cfg: PolicyConfig) -> str:
    return policy_cfg.prompt_template.format(question=problem.question)


def sample_rows(
    model, tokenizer, problems: Sequence[Problem], policy_cfg: PolicyConfig, n_problems: int, per_problem: int, seed: int
) -> list[dict]:
    """Policy samples (temperature 1, seeded) on ``n_problems`` problems drawn from ``problems``, as JSON rows."""
    chosen = random.Random(seed).sample(list(problems), min(n_problems, len(problems)))
    prompts = [prompt_of(p, policy_cfg) for p in chosen for _ in range(per_problem)]
    torch.manual_seed(seed)
    texts = generate_texts(model, tokenizer, prompts, policy_cfg.max_new_tokens, temperature=1.0)
    return [
        {"problem_id": p.id, "question": p.question, "answer": p.answer, "prompt": prompt, "completion": text}
        for p, prompt, text in zip((p for p in chosen for _ in range(per_problem)), prompts, texts)
    ]


def format_prefix_for(policy_cfg: PolicyConfig):
    """The text a policy continues after a step prefix: the prompt, then each step on its own line."""

    def format_prefix(question: str, steps: list[str]) -> str:
        return policy_cfg.prompt_template.format(question=question) + "".join(step + "\n" for step in steps)

    return format_prefix


def answer_check(text: str, reference: str) -> bool:
    """Embedded task: the last 'Answer:' line of the text equals the reference."""
    return final_answer(text) == str(reference)


def label_rows(rows: list[dict], method: str, sampler, mc_rollouts: int, estimate: str, policy_cfg: PolicyConfig,
               round_index: int) -> tuple[list[StepwiseExample], int]:
    """Step labels for sampled rows: 'exact' (step verifier), 'mc' or 'mc_binary' (prm.label); returns (examples, rollouts).

    Rows whose completion has no steps are dropped (nothing to label).
    """
    from prmloop.prm.label import label_binary_search, label_exhaustive

    kept = [(row, split_solution(row["completion"])) for row in rows]
    kept = [(row, steps) for row, steps in kept if steps]
    rollouts = 0
    if method == "exact":
        labels = [verify_steps(parse_question(row["question"]), steps) for row, steps in kept]
    elif method in ("mc", "mc_binary"):
        problems = [(row["question"], str(row["answer"])) for row, _ in kept]
        solutions = [steps for _, steps in kept]
        prefix = format_prefix_for(policy_cfg)
        if method == "mc":
            labels, rollouts = label_exhaustive(problems, solutions, sampler, mc_rollouts, prefix, answer_check, estimate)
        else:
            labels, rollouts = label_binary_search(problems, solutions, sampler, mc_rollouts, prefix, answer_check)
    else:
        raise UserError(f"loop.labeller: {method!r} is not one of exact, mc, mc_binary")
    examples = [
        StepwiseExample(row["prompt"], steps, list(step_labels),
                        {"problem_id": row["problem_id"], "answer": row["answer"], "round": round_index})
        for (row, steps), step_labels in zip(kept, labels)
    ]
    return examples, rollouts


def init_reward_model(init: str | Path, mode: str, max_length: int):
    """(model, how): continue from a saved reward model (its dir has prm.json), or start one from a causal LM."""
    from prmloop.prm.model import StepRewardModel, is_reward_model_dir

    if is_reward_model_dir(init):
        return StepRewardModel.from_pretrained(init), "continued"
    return StepRewardModel.from_policy(str(init), mode=mode, max_length=max_length), "from_policy"


def train_reward_model(init: str | Path, mode: str, examples: list[StepwiseExample], replay: list[StepwiseExample],
                       cfg: ExperimentConfig, out: Path, seed: int, log=print) -> dict:
    """Train a reward model starting from ``init`` (a policy dir or an earlier reward model) and save it to ``out``."""
    from prmloop.prm.train import train_prm

    model, _ = init_reward_model(init, mode, cfg.prm.max_length)
    prm_cfg = dataclasses.replace(cfg.prm, mode=mode, seed=seed)
    shuffled = random.Random(seed).sample(examples, len(examples))
    n_val = int(len(shuffled) * prm_cfg.val_fraction)
    summary = train_prm(model, shuffled[n_val:], prm_cfg, replay=replay, val_examples=shuffled[:n_val] or None, log=log)
    save_dir_atomically(out, model.save_pretrained)
    return summary
