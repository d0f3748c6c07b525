"""GRPO step metrics under TRL's names, gathered over the processes (``GRPOTrainer.train_step`` returns them)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .rewards import Rewards
from .rollout import Rollout


def group_std_mean(values: Tensor, group_size: int) -> float:
    """Mean over groups of the sample std within each group (TRL's ``reward_std``). (B,) -> float."""
    return values.reshape(-1, group_size).std(dim=1).mean().item()


def gather(trainer: Any, values: Tensor) -> Tensor:
    """``values`` of every process, concatenated, as float32 on the CPU."""
    return trainer.accelerator.gather(values.float().to(trainer.accelerator.device)).cpu()


def step_metrics(trainer: Any, rollout: Rollout, rewards: Rewards, advantages: Tensor | None,
                 update_stats: dict[str, float], times: dict[str, float], skipped: bool) -> dict[str, float]:
    """One step's metrics over all processes (meanings in ``policy.grpo``'s docstring); adds the step's prompt and
    completion tokens to ``trainer.num_tokens``. ``update_stats`` (loss, clip ratios, kl, ...) only when not skipped."""
    group = trainer.cfg.group_size
    lengths = gather(trainer, rollout.completion_mask.sum(1))  # (B_global,)
    prompt_tokens = gather(trainer, rollout.prompt_mask.sum(1))  # (B_global,)
    step_counts = torch.tensor([len(s) for s in rollout.steps], dtype=torch.float32)  # (B,)
    rule = gather(trainer, rewards.rule)
    if rewards.outcome is not None:
        reward = gather(trainer, rewards.outcome)
    else:
        step_sums = torch.tensor([sum(r) for r in rewards.steps or []], dtype=torch.float32)
        reward = gather(trainer, step_sums / step_counts.clamp(min=1))
    trainer.num_tokens += int(lengths.sum() + prompt_tokens.sum())
    metrics = {
        "reward": reward.mean().item(),
        "reward_std": group_std_mean(reward, group),
        f"rewards/{trainer.cfg.reward_source}/mean": reward.mean().item(),
        "rewards/rule/mean": rule.mean().item(),
        "completions/mean_length": lengths.mean().item(),
        "completions/clipped_ratio": 1.0 - gather(trainer, rollout.finished).mean().item(),
        "num_tokens": float(trainer.num_tokens),
        "step_time": sum(times.values()),
        **{f"time/{key}": value for key, value in times.items()},
        "tokens_per_second": lengths.sum().item() / max(times["sample"], 1e-9),
        "skipped_updates": float(trainer.skipped_updates),
    }
    if rewards.steps is not None:
        flat = [score for row in rewards.steps for score in row]
        step_score = gather(trainer, torch.tensor([sum(flat), len(flat)]))
        metrics["prm/step_score_mean"] = (step_score[0::2].sum() / step_score[1::2].sum().clamp(min=1)).item()
        metrics["steps/mean_count"] = gather(trainer, step_counts).mean().item()
        metrics["prm/steps_beyond_window"] = gather(trainer, torch.tensor([float(rewards.steps_beyond_window)])).sum().item()
    metrics.update(rewards.scorer_stats)  # an online implicit PRM's own loss and accuracy (this process's)
    if advantages is not None:
        zero = (advantages.reshape(-1, group * advantages.shape[1]) == 0).all(dim=1)  # (n_groups,)
        metrics["frac_reward_zero_std"] = gather(trainer, zero).mean().item()
    if not skipped:
        reduced = gather(trainer, torch.tensor(list(update_stats.values()))).reshape(-1, len(update_stats)).mean(0)
        metrics.update(zip(update_stats, reduced.tolist()))
    return metrics
