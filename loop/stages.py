"""The loop's stages as plain functions: warm start (cached), sample for labels, label, train the reward model.

Each takes what it needs explicitly (models, problems, config sections, a seed) and returns data; the orchestrator
decides where results are stored and when a stage counts as done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path

from ..data.prompts import Prompter
from ..data.schema import Problem, StepwiseExample
from ..data.tasks import Task, get_task
from ..policy.load import load_policy
from ..policy.rollout import PolicySampler, encode_prompts
from ..utils.errors import UserError
from .config import ExperimentConfig, save_config
from .ledger import save_dir_atomically
from .lock import waiting


def run_sft(cfg: ExperimentConfig, out: str) -> dict:
    """Warm-start the policy on the task's reference solutions; saves model, tokenizer, config and sft_metrics.json."""
    from ..data.task_tokenizer import build_task_tokenizer  # lazy: torch/transformers-heavy
    from ..policy.sft import train_sft
    from ..policy.tiny import build_tiny_llama

    task = get_task(cfg.data)
    train, held_out = task.problems()
    if cfg.policy.model == "tiny":
        tokenizer = build_task_tokenizer()
        model = build_tiny_llama(cfg.policy, tokenizer, cfg.sft.seed)
    else:
        model, tokenizer = load_policy(cfg.policy.model, cfg.policy.dtype)
    started = time.perf_counter()
    history = train_sft(model, tokenizer, task.sft_problems(train), held_out, cfg.policy, cfg.sft, task)
    seconds = time.perf_counter() - started
    out_dir = Path(out)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    save_config(cfg, out_dir)
    final = [row for row in history if "eval_accuracy" in row][-1]
    summary = {"seconds": round(seconds, 1), **final, "history": history}
    (out_dir / "sft_metrics.json").write_text(json.dumps(summary, indent=1))
    return summary


def warm_start_path(cfg: ExperimentConfig) -> Path:
    """Where warm_start caches the SFT policy of cfg's data/policy/sft sections (a digest of them)."""
    sections = {name: dataclasses.asdict(getattr(cfg, name)) for name in ("data", "policy", "sft")}
    digest = hashlib.sha256(json.dumps(sections, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cfg.loop.cache_dir) / f"sft-{digest}"


SHIPPED_WARM_STARTS = Path(__file__).resolve().parent / "warm_starts"
"""Warm starts shipped with prmloop, one folder per cache key (``sft-<digest>``): the study's (configs/compare.yaml,
which the demo shares), so that neither spends its first 8 minutes on SFT. Provenance and how to regenerate one:
loop/warm_starts/README.md."""


def shipped_warm_start(cfg: ExperimentConfig) -> Path | None:
    """The shipped SFT policy trained with exactly cfg's data/policy/sft sections, if there is one and
    loop.shipped_warm_start allows it."""
    shipped = SHIPPED_WARM_STARTS / warm_start_path(cfg).name
    return shipped if cfg.loop.shipped_warm_start and (shipped / "sft_metrics.json").is_file() else None


def warm_start(cfg: ExperimentConfig, log=print) -> Path:
    """The SFT policy directory for cfg's data/policy/sft sections: one cached under loop.cache_dir, else the one
    shipped with prmloop for these sections, else trained once and cached (``sft.steps: 0`` with a hub or local
    ``policy.model`` starts from that model as it is)."""
    if cfg.policy.model != "tiny" and cfg.sft.steps == 0:
        return Path(cfg.policy.model)
    key_cfg = ExperimentConfig(data=cfg.data, policy=cfg.policy, sft=cfg.sft)
    path = warm_start_path(cfg)
    with waiting(path.with_name(path.name + ".lock"), log):  # runs sharing the cache train an entry once
        if (path / "sft_metrics.json").is_file():
            log(f"warm start: cached SFT policy {path}")
            return path
        shipped = shipped_warm_start(cfg)
        if shipped is not None:
            metrics = json.loads((shipped / "sft_metrics.json").read_text())
            log(f"warm start: the SFT policy shipped for these settings ({shipped.name}: {cfg.sft.steps} steps, held-out "
                f"greedy accuracy {metrics['eval_accuracy']:.3f}); --set loop.shipped_warm_start=false trains it here")
            return shipped
        log(f"warm start: supervised fine-tuning ({cfg.sft.steps} steps) -> {path}")
        save_dir_atomically(path, lambda tmp: run_sft(key_cfg, str(tmp)))
    return path


def sample_rows(model, tokenizer, prompter: Prompter, problems: Sequence[Problem], max_new_tokens: int,
                n_problems: int, per_problem: int, seed: int) -> list[dict]:
    """Policy samples (temperature 1, seeded) on ``n_problems`` problems drawn from ``problems``, as JSON rows;
    ``tokens`` is the row's prompt + generated token count (the compute it cost)."""
    chosen = random.Random(seed).sample(list(problems), min(n_problems, len(problems)))
    prompts = [prompter(p.question) for p in chosen]
    sampler = PolicySampler(model, tokenizer, max_new_tokens, temperature=1.0, seed=seed)
    grouped, counts = sampler.complete_counted(prompts, per_problem)
    prompt_tokens = [len(ids) for ids in encode_prompts(tokenizer, prompts)]
    return [
        {"problem_id": p.id, "question": p.question, "answer": p.answer, "prompt": prompt, "completion": text,
         "tokens": length + count}
        for p, prompt, length, texts, row_counts in zip(chosen, prompts, prompt_tokens, grouped, counts)
        for text, count in zip(texts, row_counts)
    ]


def format_prefix_for(prompter: Prompter, task: Task):
    """The text a policy continues after a step prefix: the prompt, then each step followed by the separator."""

    def format_prefix(question: str, steps: list[str]) -> str:
        return prompter(question) + "".join(step + task.separator for step in steps)

    return format_prefix


LABELLERS = ("exact", "mc", "mc_binary")
"""The step labellers, one vocabulary for ``loop.labeller`` and ``prmloop prm label --method``."""
LABELLER_ALIASES = {"exhaustive": "mc", "binary": "mc_binary"}
"""Old ``prm label --method`` spellings, still accepted: 'exhaustive' is 'mc', 'binary' is 'mc_binary'."""


def label_rows(rows: list[dict], method: str, sampler, mc_rollouts: int, estimate: str, task: Task,
               prompter: Prompter, round_index: int) -> tuple[list[StepwiseExample], int]:
    """Step labels for sampled rows: 'exact' (the task's step verifier), 'mc' or 'mc_binary' (Monte Carlo with the
    task's answer check, prm.label); returns (examples, rollouts). Rows whose completion has no steps are dropped.
    Each example's meta holds ``final_answer_correct``: the task's answer check on the whole completion."""
    from ..prm.label import label_binary_search, label_exhaustive  # lazy: torch/transformers-heavy

    if method not in LABELLERS:
        raise UserError(f"loop.labeller: {method!r} is not one of {', '.join(LABELLERS)}")
    kept = [(row, task.split(row["completion"])) for row in rows]
    kept = [(row, steps) for row, steps in kept if steps]
    rollouts = 0
    problems = [Problem(row["problem_id"], row["question"], str(row["answer"])) for row, _ in kept]
    if method == "exact":
        labels = [task.verify_steps(problem, steps) for problem, (_, steps) in zip(problems, kept)]
    else:
        pairs = [(p.question, p.answer) for p in problems]
        solutions = [steps for _, steps in kept]
        prefix = format_prefix_for(prompter, task)
        if method == "mc":
            labels, rollouts = label_exhaustive(pairs, solutions, sampler, mc_rollouts, prefix, task.is_correct, estimate)
        else:
            labels, rollouts = label_binary_search(pairs, solutions, sampler, mc_rollouts, prefix, task.is_correct)
    examples = [
        StepwiseExample(row["prompt"], steps, list(step_labels),
                        {"problem_id": row["problem_id"], "answer": row["answer"], "round": round_index,
                         "final_answer_correct": task.is_correct(row["completion"], str(row["answer"]))})
        for (row, steps), step_labels in zip(kept, labels)
    ]
    return examples, rollouts


def outcome_examples(examples: list[StepwiseExample]) -> list[StepwiseExample]:
    """ORM training rows: the last step's label is the completion's answer correctness (meta final_answer_correct,
    written by ``label_rows``) where it is known; rows without it keep their labels."""
    result = []
    for example in examples:
        correct = example.meta.get("final_answer_correct")
        labels = list(example.labels) if correct is None else [*example.labels[:-1], bool(correct)]
        result.append(StepwiseExample(example.prompt, example.completions, labels, example.meta))
    return result


def train_reward_model(init: str | Path, mode: str, examples: list[StepwiseExample], replay: list[StepwiseExample],
                       cfg: ExperimentConfig, out: Path, seed: int, log=print) -> dict:
    """Train a reward model starting from ``init`` (a causal LM, or an earlier reward model of any format) and save it
    to ``out``; the summary's ``init`` says what was newly initialised."""
    from ..prm.formats import init_reward_model  # lazy: torch/transformers-heavy
    from ..prm.train import train_prm

    if mode == "outcome":  # an ORM learns the task's answer check on the whole completion, not a step label
        examples, replay = outcome_examples(examples), outcome_examples(replay)
    prm_cfg = dataclasses.replace(cfg.prm, mode=mode, seed=seed)
    model, how = init_reward_model(init, prm_cfg, mode)
    log(f"reward model: {how}")
    shuffled = random.Random(seed).sample(examples, len(examples))
    n_val = int(len(shuffled) * prm_cfg.val_fraction)
    summary = train_prm(model, shuffled[n_val:], prm_cfg, replay=replay, val_examples=shuffled[:n_val] or None, log=log)
    save_dir_atomically(out, model.save_pretrained)
    return {"init": how, **summary}
