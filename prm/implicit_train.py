"""Train an implicit PRM offline from outcome-labelled solutions (``prm.mode: implicit``): L_CE on σ(q_K), no step
label.

Recipe (``train_implicit``): validate examples -> hold out a validation part -> mix in replay -> per epoch, shuffled
batches of ``prm.batch_size`` -> ``ImplicitPRM.fit_batch`` (one AdamW step of PRIME's cross-entropy on the outcome
label, ``prm.implicit_rewards.outcome_ce_loss``) -> after each epoch, validation step metrics against the rows' step
labels (``prm.scoring_eval.evaluate_steps``, which reads σ(q_j) as it reads any PRM's scores), so an implicit PRM and
an explicit one trained on the same rows are compared on the same numbers.

The outcome label of a row (``outcome_label``): its ``final_answer_correct`` (the task's answer check, which
``prmloop prm label`` and the loop write), else its last step's label (``prm.label_type``: soft as given, or hard).
The step labels are never trained on; they only measure. What trains: all of φ at ``prm.lr`` (``prm.head_lr`` has no
head to act on), linear warm-up over ``prm.warmup_ratio`` of the steps then linear decay to 10% (as ``prm.train``).
A solution with a step past ``prm.max_length`` has no outcome value and is left out (counted). One process only.
"""

from __future__ import annotations

import math
import random
import time
from functools import partial

import torch
from accelerate import PartialState

from ..data.schema import StepwiseExample
from ..utils.checks import check_fields
from ..utils.errors import UserError
from .config import PRMConfig
from .implicit import ImplicitPRM
from .train import get_label_type, lr_factor, sample_replay, split_validation, validation_metrics, warmup_steps_for


def outcome_label(example: StepwiseExample, label_type: str = "soft") -> float:
    """The row's outcome label in [0, 1]: meta ``final_answer_correct`` if present, else its last step's label."""
    correct = example.meta.get("final_answer_correct")
    if correct is not None:
        return float(bool(correct))
    return get_label_type(label_type)([example.labels[-1]])[0]


def train_implicit(model: ImplicitPRM, examples: list[StepwiseExample], cfg: PRMConfig,
                   replay: list[StepwiseExample] | None = None, val_examples: list[StepwiseExample] | None = None,
                   log=print) -> dict:
    """Train ``model`` in place on the outcome labels of ``examples`` (+ replay); returns a summary with the training
    history and the validation metrics (``val_*``) of the last epoch."""
    check_fields(cfg, "prm.")
    if PartialState().num_processes > 1:
        raise UserError("prm.mode: 'implicit' trains in one process; run prmloop prm train without accelerate launch")
    if cfg.lora_r:
        raise UserError("prm.lora_r: an implicit PRM trains all of φ (no LoRA yet); set it to 0")
    for where, rows in (("training", examples), ("validation", val_examples or []), ("replay", replay or [])):
        for index, example in enumerate(rows):
            example.validate(f"{where} example {index}")
    if val_examples is None:
        examples, val_examples = split_validation(examples, cfg.val_fraction, cfg.seed)
    rows = examples + sample_replay(replay or [], round(cfg.replay_fraction * len(examples)), cfg.seed)
    if not rows:
        raise UserError("prm training: no training examples")
    labels = [outcome_label(example, cfg.label_type) for example in rows]
    optimizer = torch.optim.AdamW([p for p in model.model.parameters() if p.requires_grad], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    batches_per_epoch = math.ceil(len(rows) / cfg.batch_size)
    total = cfg.epochs * batches_per_epoch
    schedule = partial(lr_factor, warmup_steps=warmup_steps_for(total, cfg.warmup_ratio), total_steps=total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.batch_size = cfg.eval_batch_size
    order_rng, history, started, left_out = random.Random(cfg.seed), [], time.perf_counter(), 0
    for epoch in range(cfg.epochs):
        order = order_rng.sample(range(len(rows)), len(rows))
        losses, left_out = [], 0
        for start in range(0, len(order), cfg.batch_size):
            batch = order[start : start + cfg.batch_size]
            _, stats = model.fit_batch([rows[i].prompt for i in batch], [rows[i].completions for i in batch],
                                       [labels[i] for i in batch], optimizer)
            scheduler.step()
            left_out += len(batch) - int(stats["implicit/solutions"])
            if "implicit/loss" in stats:
                losses.append(stats["implicit/loss"])
        if not losses:
            raise UserError(f"prm training: none of {len(rows)} solutions fits prm.max_length {model.max_length}")
        history.append({"epoch": epoch + 1, "train_loss": sum(losses) / len(losses)})
        log(f"prm (implicit) epoch {epoch + 1}/{cfg.epochs}: train loss {history[-1]['train_loss']:.4f}")
        if val_examples:
            history[-1].update(validation_metrics(model, val_examples, cfg, log))
    if not all(math.isfinite(row["train_loss"]) for row in history):
        raise UserError(f"prm training diverged (train loss {history[-1]['train_loss']}); the reward model is not "
                        "saved; lower prm.lr")
    summary = {"train_loss": history[-1]["train_loss"], "n_train": len(examples), "n_replay": len(rows) - len(examples),
               "n_val": len(val_examples), "n_left_out": left_out, "positive_share": sum(labels) / len(labels),
               "seconds": round(time.perf_counter() - started, 1)}
    summary.update({key: value for key, value in history[-1].items() if key.startswith("val_")})
    summary["history"] = history
    return summary

