"""The CLI's jobs: each wires configs, data, models and output files together for one command (no math here)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..data.schema import Problem, StepwiseExample
from ..data.tasks import get_task
from ..utils.errors import UserError
from ..utils.jsonl import read_jsonl, write_jsonl
from .arms import arm_from_config, parse_arm
from .config import ExperimentConfig, save_config
from .lock import exclusive
from .report import RunInfo, write_report


def generate_problems(cfg: ExperimentConfig, n: int, split: str, seed: int, out: str) -> int:
    """Write ``n`` embedded-task problems of ``split`` as JSONL (byte-identical for the same arguments)."""
    if cfg.data.task != "arith":
        raise UserError(f"data.task: only 'arith' can be generated, got {cfg.data.task!r}")
    data_cfg = dataclasses.replace(cfg.data, seed=seed, n_train=n, n_eval=n)
    problems = get_task(data_cfg).load_split(data_cfg, split)
    return write_jsonl(out, (p.to_row() for p in problems))


def show_rows(cfg: ExperimentConfig, path: str, limit: int) -> str:
    """A readable view of the first ``limit`` rows of a problems file or a TRL stepwise file, with step labels (a
    problem's reference steps are labelled by the task's step verifier where it has one)."""
    task = get_task(cfg.data)
    lines: list[str] = []
    for count, (line_number, row) in enumerate(read_jsonl(path)):
        if count == limit:
            break
        where = f"{path}:{line_number}"
        if "completions" in row:
            example = StepwiseExample.from_row(row, where)
            lines.append(f"[{line_number}] {example.prompt.strip()}")
            steps, labels = example.completions, example.labels
        else:
            problem = Problem.from_row(row, where)
            lines.append(f"[{line_number}] {problem.id}: {problem.question}   (answer {problem.answer})")
            steps = list(problem.reference_steps)
            try:
                labels = task.verify_steps(problem, steps)
            except UserError:
                labels = [None] * len(steps)
        for index, (step, label) in enumerate(zip(steps, labels)):
            lines.append(f"    {index + 1}. [{_mark(label)}] {step}")
    return "\n".join(lines)


def _mark(label: bool | float | None) -> str:
    """'ok ' / 'BAD' for hard labels, the value for soft ones, ' ? ' when unknown."""
    if label is None:
        return " ? "
    if isinstance(label, bool):
        return "ok " if label else "BAD"
    return f"{label:.2f}"


def init_policy(cfg: ExperimentConfig, out: str) -> Path:
    from ..policy.tiny import init_policy as write_tiny  # lazy: torch/transformers, for this command only

    path = write_tiny(cfg.policy, out, cfg.sft.seed)
    save_config(cfg, out)
    return path


def _experiment_dir(out: str, resume: bool) -> Path:
    """The output directory; refuses to mix a new run into an old one unless --resume."""
    path = Path(out)
    if not resume and (path / "shared" / "state.json").exists():
        raise UserError(f"{path}: holds an earlier run; pass --resume to continue it or choose another --out")
    return path


def loop_job(cfg: ExperimentConfig, out: str, resume: bool) -> Path:
    """`prmloop loop`: one arm (grpo.supervision/reward_source/credit, loop.rm_update) for loop.rounds rounds."""
    from .orchestrator import run_experiment  # lazy: torch/transformers load only for a command that trains

    with exclusive(out):
        path = _experiment_dir(out, resume)
        [run_dir] = run_experiment(cfg, [arm_from_config(cfg)], [cfg.seed], path, get_task(cfg.data))
    return run_dir


def compare_job(cfg: ExperimentConfig, out: str, resume: bool) -> Path:
    """`prmloop compare` (and the demo): every arm x seed, then report.md and the PNGs."""
    from .orchestrator import run_experiment  # lazy: torch/transformers load only for a command that trains

    with exclusive(out):
        path = _experiment_dir(out, resume)
        arms = [parse_arm(spec) for spec in cfg.compare.arms]
        if not arms:
            raise UserError("compare.arms: give at least one arm, e.g. process-prm-iterative")
        if len({arm.name for arm in arms}) != len(arms):
            raise UserError("compare.arms: an arm is listed twice")
        if cfg.compare.seeds < 1:
            raise UserError(f"compare.seeds: must be >= 1, got {cfg.compare.seeds}")
        seeds = [cfg.seed + i for i in range(cfg.compare.seeds)]
        run_experiment(cfg, arms, seeds, path, get_task(cfg.data))
        runs = [RunInfo(arm=arm.name, seed=seed, supervision=arm.supervision, reward_source=arm.reward_source,
                        rm_update=arm.rm_update, credit=arm.credit, run_dir=path / "arms" / arm.name / f"seed{seed}")
                for arm in arms for seed in seeds]
        return write_report(path, runs, title=f"prmloop: {cfg.name}")
