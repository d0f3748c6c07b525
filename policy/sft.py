"""Supervised warm start: train the policy on reference solutions (loss on solution tokens only), then measure it.

The held-out evaluation is greedy accuracy on problems the training never saw (the task's answer check), plus, on a
task with an exact step verifier, step accuracy and where the first error falls, so we know step rewards have
something to teach. Tokens: the prompt as ``data.prompts`` encodes it, then the reference steps joined by the task's
separator (no special tokens), then the tokenizer's EOS.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data.prompts import Prompter, encode_prompt
from ..data.schema import Problem
from ..data.tasks import Task
from ..utils.errors import UserError
from .accuracy import complete_problems, correctness, trace_correctness
from .config import PolicyConfig, SFTConfig


def encode_sft_examples(
    problems: list[Problem], tokenizer: PreTrainedTokenizerBase, prompter: Prompter, task: Task, max_length: int
) -> list[tuple[list[int], int]]:
    """(token ids of prompt + solution + eos, prompt length) per problem with reference steps; over-long ones dropped."""
    examples = []
    for problem in problems:
        if not problem.reference_steps:
            continue
        prompt_ids = encode_prompt(tokenizer, prompter(problem.question))
        solution = task.join(problem.reference_steps)
        solution_ids = tokenizer(solution, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(prompt_ids) + len(solution_ids) <= max_length:
            examples.append((prompt_ids + solution_ids, len(prompt_ids)))
    return examples


def collate(examples: list[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch; labels are -100 on prompt and padding so only solution tokens carry loss."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)  # (B, T)
    for row, (ids, prompt_len) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def lr_at(step: int, cfg: SFTConfig) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to 10% of it."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@dataclass
class EvalResult:
    accuracy: float
    """Fraction of held-out problems whose final answer is right (greedy decoding, the task's answer check)."""
    step_accuracy: float
    """Fraction of generated steps the exact verifier marks correct (NaN on a task without a verifier)."""
    first_error_counts: dict[int, int]
    """How many wrong solutions first go wrong at each step index (empty without a verifier)."""
    seconds: float
    trace_accuracy: float = math.nan
    """Fraction whose final answer is right and whose every step is right (NaN on a task without a verifier)."""


def evaluate_greedy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompter: Prompter, task: Task,
                    problems: list[Problem], max_new_tokens: int) -> EvalResult:
    """Greedy held-out accuracy; step accuracy and first-error positions where the task has a step verifier."""
    started = time.perf_counter()
    completions = [texts[0] for texts in complete_problems(model, tokenizer, prompter, problems, max_new_tokens)]
    right = [row[0] for row in correctness(task, problems, [[text] for text in completions])]
    good_steps, total_steps, first_errors = 0, 0, Counter()
    if task.has_verifier:
        for problem, completion in zip(problems, completions):
            labels = task.verify_steps(problem, task.split(completion))
            good_steps += sum(labels)
            total_steps += len(labels)
            first_error = next((index for index, ok in enumerate(labels) if not ok), -1)
            if first_error >= 0:
                first_errors[first_error] += 1
    return EvalResult(
        accuracy=sum(right) / max(1, len(problems)),
        step_accuracy=good_steps / total_steps if total_steps else math.nan,
        first_error_counts=dict(sorted(first_errors.items())),
        seconds=time.perf_counter() - started,
        trace_accuracy=(sum(trace_correctness(task, problems, completions)) / max(1, len(problems))
                        if task.has_verifier else math.nan),
    )


def train_sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_problems: list[Problem],
    eval_problems: list[Problem],
    policy_cfg: PolicyConfig,
    sft_cfg: SFTConfig,
    task: Task,
    log=print,
) -> list[dict]:
    """Train in place; returns the log rows (loss per logged step, evaluations). Device = the model's device."""
    if not any(p.reference_steps for p in train_problems):
        raise UserError(f"data.task: '{task.name}' gives no reference solutions to train on; set sft.steps=0 to start "
                        "from policy.model as it is")
    prompter = Prompter.of(policy_cfg, tokenizer)
    examples = encode_sft_examples(train_problems, tokenizer, prompter, task, policy_cfg.max_length)
    if not examples:
        raise UserError(f"policy.max_length: no reference solution fits in {policy_cfg.max_length} tokens")
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=sft_cfg.lr, weight_decay=sft_cfg.weight_decay, betas=(0.9, 0.98))
    rng = random.Random(sft_cfg.seed)
    order: list[int] = []
    history: list[dict] = []
    model.train()
    progress = tqdm(range(sft_cfg.steps), desc="sft", unit="step", mininterval=1.0)
    for step in progress:
        if len(order) < sft_cfg.batch_size:
            order += rng.sample(range(len(examples)), len(examples))
        batch = collate([examples[i] for i in order[: sft_cfg.batch_size]], tokenizer.pad_token_id)
        del order[: sft_cfg.batch_size]
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, sft_cfg)
        loss = model(**{key: value.to(device) for key, value in batch.items()}).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 50 == 0 or step == sft_cfg.steps - 1:
            history.append({"step": step, "loss": loss.item()})
            progress.set_postfix(loss=f"{loss.item():.4f}")
        last = step == sft_cfg.steps - 1
        if last or (sft_cfg.eval_every and (step + 1) % sft_cfg.eval_every == 0):
            result = evaluate_greedy(model, tokenizer, prompter, task, eval_problems[: sft_cfg.eval_problems],
                                     policy_cfg.max_new_tokens)
            row = {"step": step, "eval_accuracy": result.accuracy}
            message = f"step {step + 1}: held-out greedy accuracy {result.accuracy:.3f}"
            if task.has_verifier:
                row.update(eval_step_accuracy=result.step_accuracy, eval_trace_accuracy=result.trace_accuracy,
                           first_error_counts=result.first_error_counts)
                message += (f", trace accuracy {result.trace_accuracy:.3f}, step accuracy {result.step_accuracy:.3f}, "
                            f"first errors by step {result.first_error_counts}")
            history.append(row)
            log(message)
            model.train()
    return history
