"""Train a StepRewardModel on step labels: BCE at each step's separator, with replay, through accelerate.

Recipe (``train_prm``): validate examples -> hold out a validation part -> mix in replay -> encode (the same
``prm.encoding.encode_solution`` that scoring uses) -> per batch: one backbone pass -> step logits at the separators
(-> optional LM loss on the solution tokens) -> AdamW -> log loss; after each epoch: validation step accuracy / F1
(``prm.scoring_eval.evaluate_steps``).

What trains: the backbone at ``prm.lr`` (full fine-tuning, or only LoRA adapters with ``prm.lora_r > 0``; 0 freezes
it), the head and the log-prob feature weights at ``prm.head_lr``. The schedule is sized to the data: linear warm-up
over ``warmup_ratio`` of the optimizer steps, then linear decay to 10%, so a short retraining round moves the model too.

The loss (Math-Shepherd §3.3, Lightman et al. 2023): for every supervised step s with label y_s in [0, 1] and logit
z_s = s_good − s_bad at its separator, BCE(z, y) = -(y·log σ(z) + (1 − y)·log(1 − σ(z))) (= the 2-class cross-entropy
with soft targets), averaged over the supervised steps of the batch; plus ``lm_loss_weight`` x the mean next-token
cross-entropy over the solutions' step tokens. Soft labels enter as given (``label_type="soft"``, never rounded);
``"hard"`` maps y >= 0.5 to 1.0, else 0.0. In outcome mode (ORM) only the final step is supervised. Steps cut off by
``max_length`` are dropped and counted (``n_dropped_steps``); an example with no step left is skipped
(``n_skipped_examples``).

Replay (DeepSeekMath §4.2): ``round(replay_fraction · len(examples))`` historical examples, sampled without
replacement (seeded) from ``replay``, join the new ones. Multi-process: ``accelerate launch`` shards the batches; each
process computes the same validation metrics.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from accelerate import Accelerator, DataLoaderConfiguration
from tqdm.auto import tqdm

from ..data.schema import Label, StepwiseExample
from ..utils.checks import check_fields
from ..utils.distributed import check_engine, configure_deepspeed, make_accelerator
from ..utils.errors import UserError
from ..utils.lora import add_lora
from .config import PRMConfig
from .encoding import encode_solution, pad_right, pad_token_id
from .model import StepRewardModel, get_step_selection
from .scoring_eval import evaluate_steps
from .threshold import tune_threshold


def hard_targets(labels: list[Label]) -> list[float]:
    """1.0 for a label >= 0.5 (or True), else 0.0."""
    return [1.0 if float(label) >= 0.5 else 0.0 for label in labels]


def soft_targets(labels: list[Label]) -> list[float]:
    """Labels as floats, unchanged (True -> 1.0, False -> 0.0)."""
    return [float(label) for label in labels]


MAX_GRAD_NORM = 1.0
"""Gradient clipping of every PRM optimizer step (DeepSpeed's ``gradient_clipping`` is set to it too)."""

LABEL_TYPES = {"hard": hard_targets, "soft": soft_targets}
"""label_type -> how stored labels become BCE targets."""


def steps_through_first_error(step_indices: list[int], targets: list[float]) -> list[int]:
    """The steps up to and including the first one whose target is < 0.5 (all of them if none is).

    Example: steps [0, 1, 2, 3] with targets [1.0, 0.0, 1.0, 0.0] -> [0, 1]."""
    kept = []
    for index in step_indices:
        kept.append(index)
        if targets[index] < 0.5:
            break
    return kept


def all_steps(step_indices: list[int], targets: list[float]) -> list[int]:
    """Every selected step."""
    return list(step_indices)


SUPERVISED_STEPS = {"through_first_error": steps_through_first_error, "all": all_steps}
"""prm.supervise -> which of a solution's selected steps get a BCE term."""


def get_supervised_steps(name: str):
    """The step filter called ``name``; UserError naming the key otherwise."""
    if name not in SUPERVISED_STEPS:
        raise UserError(f"prm.supervise: unknown choice {name!r}; valid: {', '.join(sorted(SUPERVISED_STEPS))}")
    return SUPERVISED_STEPS[name]


def get_label_type(name: str):
    """The target function called ``name``; UserError naming the key otherwise."""
    if name not in LABEL_TYPES:
        raise UserError(f"prm.label_type: unknown label type {name!r}; valid: {', '.join(sorted(LABEL_TYPES))}")
    return LABEL_TYPES[name]


def step_bce_loss(step_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE over the S supervised steps: step logits and targets, both (S,)."""
    return F.binary_cross_entropy_with_logits(step_logits.float(), targets.float())


def _global_mean_bce(step_logits: torch.Tensor, targets: torch.Tensor, accelerator: Accelerator) -> torch.Tensor:
    """This process's part of the mean BCE over the steps of the whole (split) batch, scaled so that DDP's averaging
    of gradients gives exactly the one-process gradient: sum_local * processes / steps_global. One process: the mean."""
    world = accelerator.num_processes
    if world == 1:
        return step_bce_loss(step_logits, targets)
    total = accelerator.reduce(torch.tensor(float(targets.numel()), device=step_logits.device), "sum")
    summed = F.binary_cross_entropy_with_logits(step_logits.float(), targets.float(), reduction="sum")
    return summed * world / total.clamp(min=1.0)


@dataclass(frozen=True)
class TrainItem:
    """One encoded solution with the token spans and targets of its supervised steps."""

    input_ids: list[int]
    positions: list[int]
    """Each supervised step's separator token (where it is read)."""
    targets: list[float]
    starts: list[int]
    """Each supervised step's first token."""


def build_items(
    examples: list[StepwiseExample], tokenizer, mode: str, label_type: str, max_length: int, supervise: str = "all",
    separator: str = "\n",
) -> tuple[list[TrainItem], int, int]:
    """Encode examples for training -> (items, steps dropped by max_length, examples skipped with no step left)."""
    select, to_targets = get_step_selection(mode), get_label_type(label_type)
    supervised = get_supervised_steps(supervise)
    items, dropped, skipped = [], 0, 0
    for example in examples:
        encoded = encode_solution(tokenizer, example.prompt, example.completions, max_length, separator)
        targets = to_targets(example.labels)
        wanted = supervised(select(encoded.num_steps), targets)
        kept = [j for j in wanted if j < len(encoded.step_token_indices)]
        dropped += len(wanted) - len(kept)
        if not kept:
            skipped += 1
            continue
        items.append(TrainItem(encoded.input_ids, [encoded.step_token_indices[j] for j in kept], [targets[j] for j in kept],
                               [encoded.step_token_starts[j] for j in kept]))
    return items, dropped, skipped


def collate_items(items: list[TrainItem], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch plus flat (rows, starts, positions, targets) of every supervised step, each (S,)."""
    input_ids, attention_mask = pad_right([item.input_ids for item in items], pad_id)  # (B, T)
    rows = [row for row, item in enumerate(items) for _ in item.positions]
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "rows": torch.tensor(rows, dtype=torch.long),  # (S,)
        "starts": torch.tensor([p for item in items for p in item.starts], dtype=torch.long),  # (S,)
        "positions": torch.tensor([p for item in items for p in item.positions], dtype=torch.long),  # (S,)
        "targets": torch.tensor([t for item in items for t in item.targets], dtype=torch.float64),  # (S,)
    }


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up over ``warmup_steps`` to 1, then linear decay to 0.1 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 1.0 - 0.9 * min(1.0, progress)


def warmup_steps_for(total_steps: int, warmup_ratio: float) -> int:
    """Warm-up length: ``ceil(warmup_ratio · total_steps)`` optimizer steps (0 for a ratio of 0).

    Example: 16 steps at ratio 0.1 -> 2; 58 steps -> 6."""
    return math.ceil(warmup_ratio * total_steps)


def split_validation(
    examples: list[StepwiseExample], fraction: float, seed: int
) -> tuple[list[StepwiseExample], list[StepwiseExample]]:
    """(train, validation): ``round(fraction · n)`` examples held out at seeded random positions, order kept."""
    n_val = round(fraction * len(examples))
    held = set(random.Random(seed).sample(range(len(examples)), n_val))
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]


def sample_replay(replay: list[StepwiseExample], n: int, seed: int) -> list[StepwiseExample]:
    """``n`` historical examples without replacement (all of them if there are fewer), seeded."""
    return random.Random(seed).sample(replay, min(n, len(replay)))


def parameter_groups(model: StepRewardModel, lm_lr: float, head_lr: float) -> list[dict]:
    """AdamW groups: the backbone's trainable weights at ``lm_lr`` (none if 0: the backbone is frozen), the head and
    log-prob feature weights at ``head_lr``. An LM head that is not tied to the embeddings trains with the backbone
    only when the LM loss uses it (its weights otherwise get no gradient)."""
    head = [*model.head.parameters(), *([model.logp_weight] if model.logp_weight is not None else [])]
    head_ids = {id(p) for p in head}
    backbone = [p for p in model.parameters() if id(p) not in head_ids and p.requires_grad]
    if lm_lr == 0:
        for parameter in backbone:
            parameter.requires_grad_(False)
        backbone = []
    return [group for group in ({"params": backbone, "lr": lm_lr}, {"params": head, "lr": head_lr}) if group["params"]]


def check_config(cfg: PRMConfig) -> None:
    """UserError naming the key for values training cannot use: each field's own check (prm/config.py)."""
    check_fields(cfg, "prm.")


def train_prm(
    model: StepRewardModel,
    examples: list[StepwiseExample],
    cfg: PRMConfig,
    replay: list[StepwiseExample] | None = None,
    val_examples: list[StepwiseExample] | None = None,
    accelerator: Accelerator | None = None,
    log=print,
) -> dict:
    """Train ``model`` in place on ``examples`` (+ replay); returns a summary with losses and validation metrics."""
    check_config(cfg)
    accelerator = accelerator or make_accelerator("prm train", mixed_precision=cfg.mixed_precision,
                                                  dataloader_config=DataLoaderConfiguration(split_batches=True))
    check_engine(accelerator, "prm train")
    if cfg.batch_size % accelerator.num_processes:
        raise UserError(f"prm.batch_size: {cfg.batch_size} does not split evenly over {accelerator.num_processes} "
                        "processes (each optimizer step splits one batch over them)")
    log = log if accelerator.is_main_process else (lambda *_: None)  # only the main process logs
    if model.mode != cfg.mode:
        raise UserError(f"prm.mode: training in {cfg.mode!r} mode, but the model was built for {model.mode!r}")
    for index, example in enumerate(examples):
        example.validate(f"training example {index}")
    for index, example in enumerate(val_examples or []):
        example.validate(f"validation example {index}")
    if val_examples is None:
        examples, val_examples = split_validation(examples, cfg.val_fraction, cfg.seed)
    replayed = sample_replay(replay or [], round(cfg.replay_fraction * len(examples)), cfg.seed)
    for index, example in enumerate(replayed):
        example.validate(f"replay example {index}")
    if cfg.lm_loss_weight and model.lm_head is None:
        raise UserError("prm.lm_loss_weight: this PRM has no LM head (an external token-classification checkpoint)")
    items, n_dropped, n_skipped = build_items(
        examples + replayed, model.tokenizer, cfg.mode, cfg.label_type, model.max_length, cfg.supervise, model.separator
    )
    if not items:
        raise UserError(f"prm training: none of {len(examples) + len(replayed)} examples has a step within max_length")
    started = time.perf_counter()
    validate = partial(validation_metrics, examples=val_examples, cfg=cfg, log=log) if val_examples else None
    history = _fit(model, items, cfg, accelerator, log, validate)
    if not all(math.isfinite(row["train_loss"]) for row in history) or not all(
            bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise UserError(f"prm training diverged (train loss {history[-1]['train_loss']}); the reward model is not "
                        "saved; lower prm.lr / prm.head_lr")
    tuned = {}
    if cfg.tune_threshold and val_examples and cfg.mode == "process":
        tuned = tune_threshold(model, val_examples, cfg.eval_batch_size)
        log(f"prm threshold: {tuned['tuned_threshold']:.3f} (validation first-error F1 {tuned['tuned_val_first_error_f1']:.3f}), "
            f"folded into the bias ({tuned['bias_shift']:+.3f})")
        tuned.update(validate(model))  # the val_ metrics at the tuned threshold replace the last epoch's
    summary = {
        "train_loss": history[-1]["train_loss"], "n_train": len(examples), "n_replay": len(replayed),
        "n_val": len(val_examples), "n_dropped_steps": n_dropped, "n_skipped_examples": n_skipped,
        "seconds": round(time.perf_counter() - started, 1),
        "train_tokens": cfg.epochs * sum(len(item.input_ids) for item in items),  # forward + backward, all epochs
    }
    summary.update({key: value for key, value in history[-1].items() if key.startswith("val_")})
    summary.update(tuned)
    summary["history"] = history
    return summary


def validation_metrics(model, examples: list[StepwiseExample], cfg: PRMConfig, log) -> dict:
    """Validation metrics (prefixed ``val_``) of a PRM (the unwrapped model; any ``score_steps`` scorer with a
    ``mode``); logged as one line."""
    metrics = evaluate_steps(model, examples, cfg.threshold, cfg.eval_batch_size)
    log(f"prm validation: step acc {metrics['step_acc']:.3f}, step F1 (error) {metrics['step_f1_error']:.3f}, "
        f"first-error F1 {metrics.get('first_error_f1', math.nan):.3f}")
    return {f"val_{key}": value for key, value in metrics.items()}


def _fit(
    model: StepRewardModel, items: list[TrainItem], cfg: PRMConfig, accelerator: Accelerator, log, validate=None
) -> list[dict]:
    """The optimisation loop: shuffled batches -> step logits -> BCE -> AdamW; one history row per epoch
    (mean train loss, and ``validate(unwrapped_model)``'s metrics when given)."""
    loader = torch.utils.data.DataLoader(
        items, batch_size=cfg.batch_size, shuffle=True, generator=torch.Generator().manual_seed(cfg.seed),
        collate_fn=partial(collate_items, pad_id=pad_token_id(model.tokenizer)),
    )
    if cfg.lora_r and cfg.lr:  # adapters on every linear layer of the backbone; only they train in it
        model.backbone = add_lora(model.backbone, cfg.lora_r, cfg.lora_alpha, key="prm.lora_r")
    groups = parameter_groups(model, cfg.lr, cfg.head_lr)
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    # Counted on the whole dataset: accelerate steps a prepared scheduler once per process per optimizer step.
    total_steps = cfg.epochs * len(loader)
    warmup = warmup_steps_for(total_steps, cfg.warmup_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_factor, warmup_steps=warmup, total_steps=total_steps))
    configure_deepspeed(accelerator, cfg.batch_size // accelerator.num_processes, MAX_GRAD_NORM)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    model.train()
    history: list[dict] = []
    progress = tqdm(total=cfg.epochs * len(loader), desc="prm", unit="step", mininterval=1.0,
                    disable=not accelerator.is_local_main_process)
    for epoch in range(cfg.epochs):
        losses = []
        for batch in loader:
            output = model(batch["input_ids"], batch["attention_mask"], batch["rows"], batch["starts"],
                           batch["positions"], with_lm_loss=bool(cfg.lm_loss_weight))  # (S,) or ((S,), ())
            logits, token_loss = output if cfg.lm_loss_weight else (output, 0.0)
            loss = _global_mean_bce(logits, batch["targets"], accelerator) + cfg.lm_loss_weight * token_loss
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            # under DeepSpeed the engine clipped and stepped inside backward: these two calls then do nothing
            accelerator.clip_grad_norm_([p for g in groups for p in g["params"]], MAX_GRAD_NORM)
            optimizer.step()
            scheduler.step()
            losses.append(accelerator.reduce(loss.detach(), "mean").item())  # the global batch's loss
            progress.update(1)
            progress.set_postfix(loss=f"{losses[-1]:.4f}")
        history.append({"epoch": epoch + 1, "train_loss": sum(losses) / len(losses)})
        log(f"prm epoch {epoch + 1}/{cfg.epochs}: train loss {history[-1]['train_loss']:.4f}")
        if validate is not None:
            history[-1].update(validate(accelerator.unwrap_model(model)))
            model.train()
    progress.close()
    model.eval()
    return history
