"""The `prmloop grpo` job: load a policy (and a PRM/ORM), run GRPO with resumable checkpoints, write metrics and the result.

Outputs in ``out``: ``checkpoint/`` (resumable trainer state), ``grpo_metrics.jsonl`` (one row per step, non-finite
values written as null), ``policy/`` (the final policy, save_pretrained), ``config.yaml`` and ``grpo_summary.json``
(held-out greedy accuracy before and after, judged by the task's answer check); with ``grpo.reward_source: implicit``
also ``checkpoint/implicit_prm/``, the implicit PRM as updated online (a PRM directory ``prm eval`` and ``search``
read). A run in which every update was skipped (non-finite rewards or gradients) ends in a UserError saying why,
after its outputs are written.

W&B (loop.tracking, main process only): run ``grpo-<name>`` in group ``<name>``, with the loop's keys so panels line
up: each step's metrics as ``train/*`` at rl_step = steps done, round 1; held-out accuracy as ``eval/accuracy`` at
round 0 (start) and round 1 (end). The run id is kept in ``out/wandb_run_id.txt``; --resume continues that run, and
steps the killed process already logged are not logged again (loop.tracking's record).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path

from ..data.tasks import get_task
from ..policy.accuracy import heldout_accuracy
from ..policy.config import GRPOConfig
from ..policy.load import load_policy
from ..utils.errors import UserError
from ..utils.jsonl import read_jsonl_tolerant, write_jsonl
from .config import ExperimentConfig, check_resume, save_config
from .lock import exclusive
from .tracking import WandbRun, check_online_login, job_run, prefixed, resolve_mode


def _json_safe(metrics: dict) -> dict:
    """Non-finite floats become None so every row is valid JSON."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}


def _load_scorer(prm_dir: str | None, cfg: ExperimentConfig, policy_dir: str):
    if cfg.grpo.reward_source == "implicit":  # PRIME: φ and π_ref start from --prm (a causal LM), else the policy
        from ..prm.formats import online_implicit_model

        return online_implicit_model(prm_dir or policy_dir, cfg.prm, cfg.grpo.implicit_lr, cfg.grpo.implicit_update)
    if prm_dir is None:
        if cfg.grpo.reward_source != "rule":
            raise UserError(f"grpo.reward_source: '{cfg.grpo.reward_source}' needs a reward model directory (--prm)")
        return None
    from ..prm.formats import load_reward_model  # lazy: the PRM package is only needed with a reward model

    return load_reward_model(prm_dir, cfg.prm)


def grpo_job(cfg: ExperimentConfig, policy_dir: str, prm_dir: str | None, out: str, resume: bool) -> dict:
    """Run ``cfg.grpo.steps`` GRPO steps from ``policy_dir`` (continuing ``out/checkpoint`` when ``resume``); one run
    per ``out`` at a time, and an ``out`` holding an earlier run needs ``--resume``."""
    with exclusive(out):
        if not resume and any((Path(out) / name).exists() for name in ("checkpoint", "grpo_summary.json")):
            raise UserError(f"{out}: holds an earlier grpo run; pass --resume to continue it or choose another --out")
        check_online_login(resolve_mode(cfg.tracking.mode, os.environ))  # before any work: one line naming the key
        if resume:
            check_resume(cfg, out)
        elif os.environ.get("RANK", "0") == "0":
            save_config(cfg, out)  # written first, so a killed run's resume is checked against it
        return _grpo(cfg, policy_dir, prm_dir, out, resume)


def _grpo(cfg: ExperimentConfig, policy_dir: str, prm_dir: str | None, out: str, resume: bool) -> dict:
    from ..policy.grpo import GRPOTrainer  # lazy: torch/transformers, for this command only

    grpo_cfg = getattr(cfg, "grpo", None) or GRPOConfig()
    out_dir = Path(out)
    checkpoint = out_dir / "checkpoint"
    task = get_task(cfg.data)
    train, held_out = task.problems()
    model, tokenizer = load_policy(policy_dir, cfg.policy.dtype)
    scorer = _load_scorer(prm_dir, cfg, policy_dir)
    trainer = GRPOTrainer(model, tokenizer, grpo_cfg, cfg.policy, task, scorer)
    if scorer is not None and hasattr(scorer, "to"):
        scorer.to(trainer.accelerator.device)
    if resume and (checkpoint / "trainer_state.pt").is_file():
        trainer.load(checkpoint)
    is_main = trainer.accelerator.is_main_process
    metrics_path = out_dir / "grpo_metrics.jsonl"
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if trainer.step == 0:
            metrics_path.write_text("")
        elif metrics_path.exists():  # rows written after the checkpoint we resume from are redone: drop them
            kept = [row for row in read_jsonl_tolerant(metrics_path) if row.get("step", 0) < trainer.step]
            write_jsonl(metrics_path, kept)
    def accuracy() -> float:
        return heldout_accuracy(trainer.policy, tokenizer, trainer.prompter, task, held_out, cfg.policy.max_new_tokens)

    with _wandb_run(cfg, out_dir, policy_dir, prm_dir, is_main, resume) as run:
        start_accuracy = accuracy()
        run.log({"eval/accuracy": start_accuracy}, {"round": 0, "rl_step": 0})

        def write_row(metrics: dict[str, float]) -> None:
            if is_main:
                with metrics_path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(_json_safe({"step": trainer.step - 1, **metrics})) + "\n")
            run.log(prefixed("train", metrics), {"round": 1, "rl_step": trainer.step})

        started = time.perf_counter()
        history = trainer.train(train, steps=grpo_cfg.steps, on_metrics=write_row, checkpoint_dir=checkpoint)
        seconds = time.perf_counter() - started
        final_accuracy = accuracy()
        run.log({"eval/accuracy": final_accuracy}, {"round": 1, "rl_step": trainer.step})
        summary = {"start_accuracy": start_accuracy, "final_accuracy": final_accuracy, "steps": trainer.step,
                   "steps_this_run": len(history), "seconds": round(seconds, 1),
                   "skipped_updates": trainer.skipped_updates, "last": _json_safe(history[-1]) if history else {}}
        run.set_summary({key: value for key, value in summary.items() if key not in ("last", "seconds")})
    if is_main:
        trainer.export(out_dir / "policy")  # LoRA adapters merged: a plain model
        save_config(cfg, out_dir)
        (out_dir / "grpo_summary.json").write_text(json.dumps(summary, indent=1))
    if history and sum(trainer.skip_reasons.values()) >= len(history):
        raise UserError(f"grpo: all {len(history)} updates of this run were skipped ({trainer.skip_summary()}); the "
                        f"policy did not change (outputs in {out_dir})")
    return summary


def _wandb_run(cfg: ExperimentConfig, out_dir: Path, policy_dir: str, prm_dir: str | None, is_main: bool,
               resume: bool) -> WandbRun:
    """The job's W&B run; its config carries the loop's arm keys (supervision, reward_source, ...) and every section."""
    grpo = cfg.grpo
    flat = {"experiment": cfg.name, "policy_dir": policy_dir, "prm_dir": prm_dir, "supervision": grpo.supervision,
            "reward_source": grpo.reward_source, "credit": grpo.credit, "seed": cfg.seed, "group_size": grpo.group_size,
            "beta": grpo.beta, "lr": grpo.lr, "steps": grpo.steps}
    return job_run(out_dir, "grpo", cfg.name, cfg.tracking, {**flat, "sections": dataclasses.asdict(cfg)},
                   tags=[grpo.supervision, grpo.reward_source, grpo.credit], is_main=is_main, resume=resume)
