"""Supervised warm start: train the policy on reference solutions (loss on solution tokens only), then measure it.

The held-out evaluation is greedy accuracy on problems the training never saw, plus where the first error falls
(step index histogram, from the exact verifier on the embedded task), so we know step rewards have something to teach.
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

from prmloop.data.arith import parse_question
from prmloop.data.schema import Problem
from prmloop.data.verifier import verify
from prmloop.policy.config import PolicyConfig, SFTConfig
from prmloop.policy.sampling import generate_texts


def solution_text(steps: tuple[str, ...] | list[str]) -> str:
    """Steps joined one per line: the completion format the policy learns and the step splitter reads."""
    return "\n".join(steps)


def encode_sft_examples(
    problems: list[Problem], tokenizer: PreTrainedTokenizerBase, policy_cfg: PolicyConfig
) -> list[tuple[list[int], int]]:
    """(token ids of prompt + solution + eos, prompt length) per problem; over-long examples are dropped."""
    examples = []
    for problem in problems:
        prompt_ids = tokenizer(policy_cfg.prompt_template.format(question=problem.question))["input_ids"]
        solution_ids = tokenizer(solution_text(problem.reference_steps))["input_ids"] + [tokenizer.eos_token_id]
        if len(prompt_ids) + len(solution_ids) <= policy_cfg.max_length:
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
    """Fraction of held-out problems whose final answer is right (greedy decoding)."""
    step_accuracy: float
    """Fraction of generated steps the exact verifier marks correct."""
    first_error_counts: dict[int, int]
    """How many wrong solutions first go wrong at each step index."""
    seconds: float


def evaluate_greedy(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, problems: list[Problem], policy_cfg: PolicyConfig
) -> EvalResult:
    """Greedy held-out accuracy and first-error positions, judged by the exact verifier (embedded task only)."""
    started = time.perf_counter()
    prompts = [policy_cfg.prompt_template.format(question=p.question) for p in problems]
    completions = generate_texts(model, tokenizer, prompts, policy_cfg.max_new_tokens)
    correct, good_steps, total_steps, first_errors = 0, 0, 0, Counter()
    for problem, completion in zip(problems, completions):
        verdict = verify(parse_question(problem.question), completion)
        correct += verdict.final_correct
        good_steps += sum(verdict.step_labels)
        total_steps += len(verdict.step_labels)
        if verdict.first_error >= 0:
            first_errors[verdict.first_error] += 1
    return EvalResult(
        accuracy=correct / max(1, len(problems)),
        step_accuracy=good_steps / max(1, total_steps),
        first_error_counts=dict(sorted(first_errors.items())),
        seconds=time.perf_counter() - started,
    )


def train_sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_problems: list[Problem],
    eval_problems: list[Problem],
    policy_cfg: PolicyConfig,
    sft_cfg: SFTConfig,
    log=print,
) -> list[dict]:
    """Train in place; returns the log rows (loss per logged step, evaluations). Device = the model's device."""
    examples = encode_sft_examples(train_problems, tokenizer, policy_cfg)
    if not examples:
        raise ValueError("no training example fits policy.max_length")
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
            result = evaluate_greedy(model, tokenizer, eval_problems[: sft_cfg.eval_problems], policy_cfg)
            history.append({"step": step, "eval_accuracy": result.accuracy, "eval_step_accuracy": result.step_accuracy,
                            "first_error_counts": result.first_error_counts})
            log(f"step {step + 1}: held-out greedy accuracy {result.accuracy:.3f}, step accuracy "
                f"{result.step_accuracy:.3f}, first errors by step {result.first_error_counts}")
            model.train()
    return history
