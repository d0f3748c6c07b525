"""TRL's GRPOTrainer and prmloop's, step by step in one run, each step split into phases (used by bench/grpo.py).

TRL's phases come from timing its own methods on the instance: ``_generate`` (sampling and decoding),
``_calculate_rewards`` (scoring), ``_get_per_token_logps_and_entropies`` without gradients (reference log-probs), and
the rest of ``_generate_and_score_completions`` (padding, advantages: "other"); "update" is the step less all of
that (``compute_loss`` forward, backward, optimizer step). prmloop's: ``train_step``'s own sample and score times,
``_reference_logps`` timed the same way, and "update" the rest (advantages, π_θ forward/backward, optimizer step).
After each TRL step (a callback, outside its timed window) every prmloop runner takes one step on the same batch, so
the machine's load falls on all of them alike.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable

import torch

PHASES = ("sample", "score", "reference", "update", "other")


def timed(method: Callable, seconds: dict[str, float], phase: Callable[[], str]) -> Callable:
    """``method`` that adds its running time to ``seconds[phase()]``."""

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            seconds[phase()] += time.perf_counter() - started

    return wrapper


def prmloop_runner(trainer, batch_of: Callable[[int], list]) -> Callable[[int], dict]:
    """One ``trainer.train_step`` per call on ``batch_of(step)``: step seconds and phases, generated tokens/s."""
    seconds: dict[str, float] = defaultdict(float)
    trainer._reference_logps = timed(trainer._reference_logps, seconds, lambda: "reference")

    def run(step: int) -> dict:
        seconds.clear()
        row = trainer.train_step(batch_of(step), step)
        phases = {"sample": row["time/sample"], "score": row["time/score"], "reference": seconds["reference"]}
        return {"step": row["step_time"], **phases, "update": row["step_time"] - sum(phases.values()),
                "tokens_per_s": row["tokens_per_second"]}

    return run


def side_by_side(model, tokenizer, settings: dict, prompts: list[str], reward: Callable[[list, list], list[float]],
                 steps: int, runners: dict[str, Callable[[int], dict]], threads: int,
                 trl_args: dict | None = None) -> dict[str, list[dict]] | None:
    """``steps`` + 1 TRL GRPOTrainer steps (the first a warm-up), each followed by one step of every prmloop runner;
    per runner the rows of the timed steps. ``model``: a model (copied) or a directory for TRL to load. ``settings``:
    prompts_per_step, group_size, max_new_tokens, lr, beta, temperature, seed, micro_batch (rows per forward).
    ``trl_args``: more ``trl.GRPOConfig`` arguments (default: CPU, float32, no gradient checkpointing). None when
    TRL is not importable."""
    try:
        import trl
        from datasets import Dataset
        from transformers import TrainerCallback
    except ImportError:
        return None
    model = model if isinstance(model, str) else copy.deepcopy(model)
    seconds: dict[str, float] = defaultdict(float)
    generated: list[int] = []
    rows: dict[str, list[dict]] = {f"TRL {trl.__version__} GRPOTrainer": [], **{name: [] for name in runners}}

    class Interleave(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            torch.set_num_threads(threads)
            seconds.clear()
            generated.clear()
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            step_s = time.perf_counter() - self.started
            phases = {key: seconds[key] for key in ("sample", "score", "reference")}
            phases["other"] = seconds["prepare"] - sum(phases.values())
            if state.global_step > 1:  # step 1 is a warm-up
                rows[next(iter(rows))].append({"step": step_s, **phases, "update": step_s - seconds["prepare"],
                                               "tokens": sum(generated),
                                               "tokens_per_s": sum(generated) / seconds["sample"]})
            for name, run in runners.items():
                row = run(state.global_step - 1)
                if state.global_step > 1:
                    rows[name].append(row)

    rows_per_step = settings["prompts_per_step"] * settings["group_size"]
    micro_batch = settings.get("micro_batch", rows_per_step)
    with tempfile.TemporaryDirectory() as out:
        args = trl.GRPOConfig(**{
            "output_dir": out, "per_device_train_batch_size": micro_batch, "num_generations": settings["group_size"],
            "gradient_accumulation_steps": rows_per_step // micro_batch,  # one generation batch per optimizer step
            "max_completion_length": settings["max_new_tokens"], "max_steps": steps + 1,
            "learning_rate": settings["lr"], "beta": settings["beta"], "loss_type": "grpo",
            "temperature": settings["temperature"], "report_to": "none", "logging_strategy": "no", "save_strategy": "no",
            "disable_tqdm": True,
            "seed": settings["seed"], "use_cpu": True, "gradient_checkpointing": False, "bf16": False,
            **(trl_args or {})})
        trainer = trl.GRPOTrainer(model=model, reward_funcs=reward, args=args, processing_class=tokenizer,
                                  train_dataset=Dataset.from_dict({"prompt": prompts}), callbacks=[Interleave()])
        generate = trainer._generate

        def counted_generate(*args, **kwargs):  # returns (prompt_ids, completion_ids, ...), ids as lists
            result = generate(*args, **kwargs)
            generated.append(sum(len(ids) for ids in result[1]))
            return result

        trainer._generate = timed(counted_generate, seconds, lambda: "sample")
        trainer._calculate_rewards = timed(trainer._calculate_rewards, seconds, lambda: "score")
        trainer._get_per_token_logps_and_entropies = timed(
            trainer._get_per_token_logps_and_entropies, seconds,
            lambda: "policy" if torch.is_grad_enabled() else "reference")
        trainer._generate_and_score_completions = timed(trainer._generate_and_score_completions, seconds,
                                                        lambda: "prepare")
        trainer.train()
    return rows


def medians(rows: list[dict]) -> dict[str, float]:
    """Per key, the median over the timed steps."""
    return {key: statistics.median(row[key] for row in rows) for key in rows[0]}
