"""GRPO trainer: sample G completions per question, score them, compute advantages, take clipped policy-gradient steps.

One step (``train_step``) reads as DeepSeekMath's Algorithm 1 inner loop: sample -> score -> advantages -> loss ->
step -> log. The math lives in ``policy.advantages`` and ``policy.losses``; this file only wires it.

Choices and departures, stated once:
- π_old, which the μ inner updates all use, depends on the sampler. HF loop: the sampling-time log-prob of each token
  (temperature 1, ``policy.rollout``), computed by the training model itself. vLLM (``grpo.use_vllm``): the engine's
  bf16 kernels give slightly different log-probs than the trainer on the same weights, so by default
  (``grpo.vllm_old_logps: recompute``, as TRL) the training model recomputes them in one no-grad forward before the
  update, and ρ = 1 exactly at the first inner update; ``grpo.vllm_is_cap`` C > 0 adds TRL's truncated importance
  sampling, each token's surrogate weighted by min(π_old/π_engine, C) (``policy.importance``). ``engine`` uses vLLM's
  log-probs as π_old (one forward less; ρ then starts off 1 by the engine/trainer gap).
- π_ref is a frozen deep copy of the policy; ``reset_reference()`` copies the current weights into it (the loop
  calls it at the start of each round). With β = 0 there is no reference model and no reference forward. With
  ``policy.lora_r`` only adapters train and π_ref is the base plus a copy of the adapters (``policy.lora``).
- The policy runs in eval mode throughout (no dropout), so π_θ equals π_old before the first update, up to rounding.
- Precision: the policy should be loaded in fp32 (``policy.dtype``) and trained with ``grpo.mixed_precision: bf16``
  (bf16 forwards, fp32 AdamW); bf16/fp16 trainable weights get a one-line warning (``policy.precision``).
- Prompts longer than policy.max_length - policy.max_new_tokens are dropped (``train``: from the training set once;
  ``train_step``: from its batch; one line counts them), left-truncated, or refused at the step that draws one
  (``grpo.long_prompts``, ``policy.prompt_filter``).
- Multi-process (accelerate/DDP): each process takes an equal contiguous shard of the step's questions, so groups
  never split; sample i of question q is seeded by (seed, step, global index of q, i) and does not depend on the
  split. DDP averages gradients and every shard has the same number of outputs, so the update equals the
  single-process one on the same global batch ("grpo" aggregation is a mean over outputs). Under DeepSpeed ZeRO-1/2
  (``policy.distributed``) the engine reduces the gradients, clips and steps; the result is the same.
- ``grad_accum`` splits each process's rows into that many micro-batches, each loss weighted by its share of rows,
  so the gradient does not depend on it.
- ``padding_free`` (TRL pads to the batch's longest): the update's forwards run on packed rows (``policy.packing``,
  prefix trees where the samples share long prefixes: ``policy.prefix_tree``), same numbers at the cost of the real
  (distinct) tokens; a model whose packed rows would mix sequences is refused at start.
- Bad input does not stop the run at once: non-finite rewards on any process skip the whole update; a non-finite
  gradient norm (NaN/inf loss) skips the optimizer step; a step that diverged (NaN/inf weights, or weights moved by
  more than ``max_weight_change`` of their norm) is rolled back from a CPU copy (``policy.divergence``). All are
  counted in ``skipped_updates``; ``max_skips_in_a_row`` consecutive skips stop the run with the reasons. DeepSpeed
  keeps its own fp32 copy of the weights, so there a diverged step stops the run instead of being rolled back.
- Metrics use TRL's names. ``frac_reward_zero_std`` is the fraction of groups whose advantages are all zero (for
  outcome supervision exactly TRL's zero-std groups). ``reward`` is the outcome reward, or under process supervision
  each completion's mean step reward (0 with no steps). ``num_tokens`` counts prompt + completion tokens so far.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import Tensor
from tqdm.auto import tqdm

from ..data.prompts import Prompter
from ..data.schema import Problem
from ..data.tasks import Task
from ..utils.distributed import check_engine, configure_deepspeed, is_deepspeed, make_accelerator
from ..utils.errors import UserError
from ..utils.lora import add_lora, is_lora
from . import divergence, grpo_checkpoint, lora
from .advantages import mix_outcome_batch, outcome_advantages_batch, process_advantages_batch
from .config import GRPOConfig, PolicyConfig
from .grpo_logps import micro_batches, recomputed_old_logps, reference_logps
from .grpo_metrics import group_std_mean, step_metrics  # noqa: F401 - group_std_mean: public here too
from .grpo_validate import validate_config
from .logps import check_padding_free, forward_logps
from .losses import grpo_loss, masked_mean
from .precision import low_precision_warning
from .prompt_filter import keep_fitting, left_truncate, prompt_budget
from .rewards import Rewards, StepScorer, check_scorer, compute_rewards
from .rollout import HFBackend, Rollout, encode_prompts, sample_rollout
from .vllm_backend import VLLMBackend

logger = logging.getLogger(__name__)


def step_problem_indices(n_problems: int, prompts_per_step: int, step: int, seed: int) -> list[int]:
    """Indices of the questions of ``step``: consecutive slices of seeded per-epoch shuffles (each epoch covers all)."""
    indices, orders = [], {}
    for position in range(step * prompts_per_step, (step + 1) * prompts_per_step):
        epoch, offset = divmod(position, n_problems)
        if epoch not in orders:
            orders[epoch] = random.Random(seed * 1_000_003 + epoch).sample(range(n_problems), n_problems)
        indices.append(orders[epoch][offset])
    return indices


class GRPOTrainer:
    """GRPO on a causal LM policy with rule, ORM, PRM or online implicit-PRM rewards (outcome or process supervision)."""

    def __init__(self, model: Any, tokenizer: Any, cfg: GRPOConfig, policy_cfg: PolicyConfig, task: Task,
                 scorer: StepScorer | None = None, accelerator: Accelerator | None = None) -> None:
        validate_config(cfg)
        check_scorer(cfg.reward_source, scorer)  # an implicit PRM must also learn online (policy.rewards)
        self.cfg, self.policy_cfg, self.tokenizer, self.scorer, self.task = cfg, policy_cfg, tokenizer, scorer, task
        self.prompter = Prompter.of(policy_cfg, tokenizer)
        self.accelerator = accelerator or make_accelerator("grpo", mixed_precision=cfg.mixed_precision)
        check_engine(self.accelerator, "grpo")
        self.deepspeed = is_deepspeed(self.accelerator)
        """DeepSpeed ZeRO-1/2: the engine clips and steps (skipping a NaN/inf gradient norm); no rollback."""
        if policy_cfg.lora_r:
            model = add_lora(model, policy_cfg.lora_r, policy_cfg.lora_alpha, policy_cfg.lora_target_modules,
                             key="policy.lora_target_modules", task_type="CAUSAL_LM")
        if policy_cfg.gradient_checkpointing:
            lora.enable_gradient_checkpointing(model)
        model.eval()  # no dropout during RL (module docstring)
        warning = low_precision_warning(model)
        if warning and self.accelerator.is_main_process:
            logger.warning(warning)
        self.lora = is_lora(model)
        self.reference = copy.deepcopy(model).requires_grad_(False) if cfg.beta != 0 and not self.lora else None
        self.reference_adapters = lora.adapter_weights(model) if cfg.beta != 0 and self.lora else None
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
        rows = cfg.prompts_per_step * cfg.group_size // self.accelerator.num_processes  # this process's rows
        configure_deepspeed(self.accelerator, max(1, rows // cfg.grad_accum), cfg.max_grad_norm)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        if cfg.padding_free:  # one small forward: refuse a model whose packed rows would mix sequences
            check_padding_free(self.policy, share_prompts=not policy_cfg.gradient_checkpointing)
        if self.reference is not None:
            self.reference.to(self.accelerator.device)
        if cfg.use_vllm:  # a colocated vLLM engine (the vllm package itself loads only then)
            self.backend = VLLMBackend.from_configs(self.policy, tokenizer, cfg, policy_cfg,
                                                    self.accelerator.num_processes)
        else:
            self.backend = HFBackend(self.policy, tokenizer, policy_cfg.max_new_tokens, cfg.temperature, cfg.top_p,
                                     cfg.generation_batch_size)
        self.step, self.skipped_updates, self.num_tokens, self.skips_in_a_row = 0, 0, 0, 0
        self.skip_reasons: Counter[str] = Counter()
        """Why updates were skipped (this process's run), for the one-line error when every update was."""

    @property
    def policy(self) -> Any:
        """The policy without its DDP wrapper (for sampling and saving)."""
        return self.accelerator.unwrap_model(self.model)

    def reset_reference(self) -> None:
        """π_ref <- π_θ (DeepSeekMath Algorithm 1: at the start of each iteration); under LoRA a copy of the adapters."""
        if self.reference is not None:
            self.reference.load_state_dict(self.policy.state_dict())
        if self.reference_adapters is not None:
            self.reference_adapters = lora.adapter_weights(self.policy)

    # ---- one step: sample -> score -> advantages -> loss -> step -> log ----

    def train_step(self, problems: list[Problem], step: int) -> dict[str, float]:
        """One GRPO step on the given questions (all processes pass the same list); returns global metrics."""
        started = time.perf_counter()
        local, first_index = self._shard(self.fitting_problems(problems))
        prompts = [self.prompter(p.question) for p in local]
        rollout = self._sample(self._encode(local, prompts), step, first_index)
        rollout, is_weights, mismatch = self._old_logps(rollout)
        sampled = time.perf_counter()
        rewards = self._score(local, prompts, rollout)
        scored = time.perf_counter()
        skip = self._any_process(not rewards.is_finite())
        if skip:
            self.skip_reasons["non-finite rewards"] += 1
        elif rewards.steps is not None and self._all_processes(rewards.steps_beyond_window > 0 and not any(rewards.steps)):
            skip = True
            self.skip_reasons["no step fit the PRM's window (raise prm.max_length)"] += 1
        update_stats: dict[str, float] = {}
        advantages = None if skip else self._advantages(rollout, rewards)
        if advantages is not None:
            update_stats, why = self._update(rollout, advantages, is_weights)
            update_stats = {**mismatch, **update_stats}
            if why is not None:
                skip = True
                self.skip_reasons[why] += 1
        self.skipped_updates += int(skip)
        self.skips_in_a_row = self.skips_in_a_row + 1 if skip else 0
        self.step = step + 1
        self._stop_if_stuck()
        times = {"sample": sampled - started, "score": scored - sampled, "update": time.perf_counter() - scored}
        return step_metrics(self, rollout, rewards, advantages, update_stats, times, skip)

    def skip_summary(self) -> str:
        """Why updates were skipped so far, e.g. "2 x a non-finite gradient norm; 1 x non-finite rewards"."""
        return "; ".join(f"{count} x {why}" for why, count in self.skip_reasons.most_common())

    def _stop_if_stuck(self) -> None:
        limit = self.cfg.max_skips_in_a_row
        if limit and self.skips_in_a_row >= limit:
            reasons = self.skip_summary()
            first, last = self.step - self.skips_in_a_row, self.step - 1
            raise UserError(f"grpo: the {self.skips_in_a_row} updates of steps {first}..{last} were all skipped "
                            f"({reasons}); stopping (grpo.max_skips_in_a_row={limit}); the last checkpoint is left as "
                            "it was")

    def _shard(self, problems: list[Problem]) -> tuple[list[Problem], int]:
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        if not problems or len(problems) % world:
            raise UserError(f"grpo.prompts_per_step: {len(problems)} questions do not split evenly over {world} processes")
        per_process = len(problems) // world
        return problems[rank * per_process : (rank + 1) * per_process], rank * per_process

    def _encode(self, problems: list[Problem], prompts: list[str]) -> list[list[int]]:
        prompt_ids = encode_prompts(self.tokenizer, prompts)
        budget = prompt_budget(self.policy_cfg)
        if self.cfg.long_prompts == "truncate":
            return [left_truncate(ids, budget) for ids in prompt_ids]
        for problem, ids in zip(problems, prompt_ids):  # 'drop' removed them in train(); a direct train_step may not
            if len(ids) > budget:
                raise UserError(f"problem {problem.id}: prompt has {len(ids)} tokens; with policy.max_new_tokens="
                                f"{self.policy_cfg.max_new_tokens} it exceeds policy.max_length="
                                f"{self.policy_cfg.max_length} (grpo.long_prompts=drop or truncate would go on)")
        return prompt_ids

    def fitting_problems(self, problems: list[Problem]) -> list[Problem]:
        """With ``grpo.long_prompts: drop``, the questions whose prompt fits (one line counts the rest); all of them
        otherwise. ``train`` applies it to the whole training set once, so no step draws a long one; ``train_step``
        applies it to its batch too (a caller that draws its own batches then trains on fewer questions that step)."""
        if self.cfg.long_prompts != "drop":
            return problems
        lengths = [len(ids) for ids in encode_prompts(self.tokenizer, [self.prompter(p.question) for p in problems])]
        kept, message = keep_fitting(problems, lengths, self.policy_cfg)
        if message and self.accelerator.is_main_process:
            logger.warning(message)
        return kept

    def _sample(self, prompt_ids: list[list[int]], step: int, first_index: int) -> Rollout:
        with self.accelerator.autocast():
            return sample_rollout(self.backend, self.tokenizer, prompt_ids, self.cfg.group_size, self.cfg.seed, step,
                                  first_index, self.task.step_split)

    def _score(self, problems: list[Problem], prompts: list[str], rollout: Rollout) -> Rewards:
        group = self.cfg.group_size
        row_problems = [p for p in problems for _ in range(group)]
        row_prompts = [p for p in prompts for _ in range(group)]
        return compute_rewards(row_problems, row_prompts, rollout.texts, rollout.steps, self.cfg.supervision,
                               self.cfg.reward_source, self.task.is_correct, self.scorer)

    def _advantages(self, rollout: Rollout, rewards: Rewards) -> Tensor:
        """Token advantages (B, T) on the accelerator's device (DeepSeekMath §4.1.2 / §4.1.3, policy.advantages)."""
        group, mask = self.cfg.group_size, rollout.completion_mask.cpu()  # (B, T)
        if rewards.outcome is not None:
            advantages = outcome_advantages_batch(rewards.outcome, group)[:, None] * mask  # (B, T)
        else:
            step_ends, step_mask = rollout.step_tensors()  # (B, K)
            scored = torch.tensor([len(row) for row in rewards.steps or []])[:, None]  # (B, 1) steps that fit the PRM
            step_mask = step_mask & (torch.arange(step_ends.shape[1])[None, :] < scored)  # (B, K)
            if step_ends.shape[1] == 0:
                advantages = torch.zeros(mask.shape)  # no completion has a step: nothing to credit
            else:
                step_rewards = rewards.step_tensor(step_ends.shape[1])  # (B, K)
                advantages = process_advantages_batch(step_rewards, step_ends, step_mask, mask.shape[1], group,
                                                      self.cfg.credit)  # (B, T)
        if self.cfg.outcome_mix:
            advantages = mix_outcome_batch(advantages, rewards.rule, mask, group, self.cfg.outcome_mix)
        return advantages.to(self.accelerator.device)

    def _micro_batches(self, rollout: Rollout) -> list[slice]:
        return micro_batches(rollout.completion_ids.shape[0], self.cfg.grad_accum)

    def _reference_logps(self, rollout: Rollout) -> Tensor | None:
        return reference_logps(self.policy, self.reference, self.reference_adapters, rollout,
                               self._micro_batches(rollout), self.accelerator.autocast, padding_free=self.cfg.padding_free)

    def _old_logps(self, rollout: Rollout) -> tuple[Rollout, Tensor | None, dict[str, float]]:
        """π_old (module docstring): the rollout as sampled, or with vLLM (``grpo.vllm_old_logps: recompute``) with the
        training model's own log-probs, importance weights and mismatch stats (``policy.grpo_logps``)."""
        if not self.cfg.use_vllm or self.cfg.vllm_old_logps == "engine":
            return rollout, None, {}
        return recomputed_old_logps(self.policy, rollout, self._micro_batches(rollout), self.accelerator.autocast,
                                    self.cfg.vllm_is_cap, share_prompts=not self.policy_cfg.gradient_checkpointing,
                                    padding_free=self.cfg.padding_free)

    def _update(self, rollout: Rollout, advantages: Tensor,
                is_weights: Tensor | None = None) -> tuple[dict[str, float], str | None]:
        """μ inner updates of Eq. 3 against π_old; returns stats averaged over micro-batches and why it skipped."""
        ref_logp = self._reference_logps(rollout)  # (B, T) or None
        micro_batches = self._micro_batches(rollout)
        totals: dict[str, float] = {}
        for inner in range(self.cfg.mu):
            for index, rows in enumerate(micro_batches):
                share = (rows.stop - rows.start) / rollout.completion_ids.shape[0]
                is_last = index == len(micro_batches) - 1
                no_sync = nullcontext() if is_last or self.deepspeed else self.accelerator.no_sync(self.model)
                with no_sync:
                    stats = self._micro_step(rollout, advantages, ref_logp, rows, share, inner == 0, is_last,
                                             None if is_weights is None else is_weights[rows])
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0.0) + share * value / (1 if key == "entropy" else self.cfg.mu)
            if self.deepspeed:  # the engine clips, steps and zeroes the gradients; a NaN/inf norm skips the step
                diverged = self._optimizer_step(totals)
                grad_norm = float(self.model.get_global_grad_norm() or 0.0)
                if not math.isfinite(grad_norm):
                    diverged = "a non-finite gradient norm"  # DeepSpeed skipped the step
            else:
                grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
                diverged = None if torch.isfinite(torch.as_tensor(grad_norm)) else "a non-finite gradient norm"
                if diverged is None:
                    diverged = self._optimizer_step(totals)
                self.optimizer.zero_grad(set_to_none=True)
            if diverged:
                return totals, diverged
            if hasattr(self.backend, "sync_weights"):  # an engine with its own copy of the weights (vLLM)
                self.backend.sync_weights(self.policy)
            totals["grad_norm"] = float(grad_norm)
        return totals, None

    def _optimizer_step(self, totals: dict[str, float]) -> str | None:
        """optimizer.step() (DeepSpeed: the engine's step), rolled back when it diverged (``policy.divergence``);
        returns why, or None when kept. DeepSpeed keeps its own fp32 copy of the weights, so there it cannot be undone
        and a diverged step stops the run, as with ``grpo.rollback`` false."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        rollback = self.cfg.rollback and not self.deepspeed
        saved = divergence.snapshot(params, self.optimizer.state) if rollback else None
        before = divergence.norm(params)
        (self.model.step if self.deepspeed else self.optimizer.step)()
        change = (divergence.change_norm(params, saved) if saved is not None
                  else abs(divergence.norm(params) - before))
        why = divergence.verdict(before, change, self.cfg.max_weight_change)
        if why is None:
            totals["weight_change"] = totals.get("weight_change", 0.0) + change / max(before, 1e-12) / self.cfg.mu
            return None
        if saved is None:
            cannot = "under DeepSpeed" if self.deepspeed else "with grpo.rollback false"
            raise UserError(f"grpo: step {self.step}: {why} ({change:.3g} vs weight norm {before:.3g}); {cannot} it "
                            "cannot be undone, so the run stops; lower grpo.lr. The last checkpoint is left as it was")
        divergence.restore(params, self.optimizer.state, saved)
        return why

    @torch.no_grad()
    def _check_weights(self, when: str) -> None:
        """UserError when any policy weight is NaN/inf (one fused pass): stop before it is saved or sampled from."""
        total = sum(p.float().abs().sum() for p in self.policy.parameters())
        if not torch.isfinite(total):
            raise UserError(f"grpo: {when} made the policy's weights non-finite (lower grpo.lr or "
                            "grpo.max_grad_norm); the last checkpoint is left as it was")

    def _micro_step(self, rollout: Rollout, advantages: Tensor, ref_logp: Tensor | None, rows: slice, share: float,
                    with_entropy: bool, is_last: bool, is_weights: Tensor | None = None) -> dict[str, float]:
        mask = rollout.completion_mask[rows]  # (b, T)
        self.model.train(self.policy_cfg.gradient_checkpointing)  # HF checkpoints only in train mode (no dropout)
        logp, entropy = forward_logps(self.model, rollout.prompt_ids[rows], rollout.prompt_mask[rows],
                                      rollout.completion_ids[rows], mask, with_entropy,
                                      share_prompts=not self.policy_cfg.gradient_checkpointing,
                                      padding_free=self.cfg.padding_free)  # (b, T)
        self.model.eval()
        loss, stats = grpo_loss(logp, rollout.logp[rows], None if ref_logp is None else ref_logp[rows],
                                advantages[rows], mask, self.cfg.clip_eps, self.cfg.beta, is_weights)
        if self.deepspeed:  # the engine reduces the gradients at the last micro-batch; it steps in _deepspeed_step
            self.model.set_gradient_accumulation_boundary(is_last)
            self.model.backward(loss * share)
        else:
            self.accelerator.backward(loss * share)
        values = {"loss": loss.item(), **{key: value.item() for key, value in stats.items()}}
        if entropy is not None:
            values["entropy"] = masked_mean(entropy, mask).item()
        return values

    def _any_process(self, flag: bool) -> bool:
        return bool(self.accelerator.reduce(torch.tensor(float(flag), device=self.accelerator.device), "sum") > 0)

    def _all_processes(self, flag: bool) -> bool:
        return not self._any_process(not flag)

    def train(self, problems: list[Problem], steps: int | None = None,
              on_metrics: Callable[[dict[str, float]], None] | None = None,
              checkpoint_dir: str | Path | None = None) -> list[dict[str, float]]:
        """Run steps ``self.step`` .. ``steps - 1`` (default ``cfg.steps``), so a loaded trainer resumes where it was."""
        total = self.cfg.steps if steps is None else steps
        problems = self.fitting_problems(problems)
        history = []
        progress = tqdm(range(self.step, total), desc="grpo", unit="step", disable=not self.accelerator.is_main_process)
        for step in progress:
            batch = [problems[i] for i in step_problem_indices(len(problems), self.cfg.prompts_per_step, step,
                                                               self.cfg.seed)]
            metrics = self.train_step(batch, step)
            history.append(metrics)
            progress.set_postfix(reward=f"{metrics['reward']:.3f}", loss=f"{metrics.get('loss', float('nan')):.4f}")
            if on_metrics is not None:
                on_metrics(metrics)
            every = self.cfg.checkpoint_every
            if checkpoint_dir is not None and every and (step + 1) % every == 0 and step + 1 < total:
                self.save(checkpoint_dir)
        if checkpoint_dir is not None:
            self.save(checkpoint_dir)
        return history

    def save(self, directory: str | Path) -> Path:
        """Resumable checkpoint, replaced atomically (``policy.grpo_checkpoint``); never of non-finite weights."""
        self._check_weights("training")
        return grpo_checkpoint.save(self, Path(directory))

    def export(self, directory: str | Path) -> None:
        """The policy as a plain save_pretrained model (LoRA adapters merged in) with its tokenizer."""
        grpo_checkpoint.export(self, Path(directory))

    def load(self, directory: str | Path) -> None:
        """Restore a checkpoint written by ``save`` (same model architecture and config)."""
        grpo_checkpoint.load(self, Path(directory))
