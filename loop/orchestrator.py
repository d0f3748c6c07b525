"""The round orchestrator: shared warm start and first reward model, then per arm and seed, R rounds of
[sample -> label -> retrain reward model (continue + replay)] -> reset pi_ref -> GRPO for M steps -> evaluate ->
checkpoint. The bracketed retraining runs from round 2 on (DeepSeekMath Algorithm 1 retrains after each iteration's
GRPO): round k's labels are samples of the policy after round k−1's GRPO; round 1 uses the first reward model, which
was trained on the warm-started policy's own samples, so retraining it there would only see that distribution again.

Layout of ``--out DIR`` (every write atomic; ``--resume`` continues from the last completed stage):
    DIR/config.yaml                         resolved config
    DIR/shared/state.json                   stages done: init samples, labels, first reward model(s)
    DIR/shared/samples.jsonl, labels.jsonl  warm-start policy samples and their step labels (append-only)
    DIR/shared/prm0/ (and orm0/)            the first reward model(s), shared by every arm
    DIR/arms/<arm>/seed<k>/                 one run: state.json, samples.jsonl, labels.jsonl, metrics.jsonl,
                                            costs.jsonl, rm/round<r>/, policy/round<r>/ (latest committed GRPO
                                            checkpoint; an implicit arm's PRM in its implicit_prm/), wandb/
    DIR/report.md, DIR/*.png                the comparison report (compare and demo)

A stage is: do the work, write its outputs (append-only rows or a directory renamed into place), then commit it in
state.json. A kill between the work and the commit means the stage runs again on resume, and the ledger first cuts
the append-only files back to their committed length, so rows are never duplicated.

Compute spent on the reward model is counted in tokens (prompt + generated or trained-on), so arms can be compared
at equal compute: labelling samples (``tokens`` of samples.jsonl), Monte Carlo rollouts and reward-model training
(costs.jsonl). Every eval row logs ``tokens_rl`` (GRPO's prompt + completion tokens so far), ``tokens_reward_model``
(so far, the shared first reward model included for arms that use it) and their sum ``tokens_total``.
With ``loop.curriculum: steps`` each round draws its RL batches and labels from its own band of problems
(loop/curriculum.py) and the shared first reward model learns from round 1's band.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ..data.prompts import Prompter
from ..data.schema import Problem, StepwiseExample
from ..data.tasks import Task
from ..policy.accuracy import greedy_metrics
from ..policy.load import load_policy
from ..policy.rollout import PolicySampler
from ..utils.errors import UserError
from ..utils.jsonl import append_jsonl, read_jsonl_tolerant
from .arms import Arm, arm_config
from .config import ExperimentConfig, check_resume, save_config
from .curriculum import band_of, round_pools
from .ledger import Ledger
from .round_eval import EvalSetup, evaluate_round
from .stages import label_rows, sample_rows, train_reward_model, warm_start
from .tracking import Tracker

APPEND_ONLY = ["samples.jsonl", "labels.jsonl", "metrics.jsonl", "costs.jsonl"]


@dataclass
class Shared:
    """What every arm starts from."""

    policy_dir: Path
    reward_models: dict[str, Path]
    """First reward model per mode ('process' -> prm0, 'outcome' -> orm0)."""
    labels: list[StepwiseExample]
    """The first reward model's training data (replay history for every arm)."""


def _examples(path: Path) -> list[StepwiseExample]:
    if not path.exists():
        return []
    return [StepwiseExample.from_row(row, f"{path}:{i + 1}") for i, row in enumerate(read_jsonl_tolerant(path))]


def _load_policy(path: Path, cfg: ExperimentConfig):
    return load_policy(str(path), cfg.policy.dtype)


def labeller_for(cfg: ExperimentConfig, task: Task) -> str:
    """loop.labeller with 'auto' resolved; 'exact' on a task without a step verifier is a UserError."""
    labeller = cfg.loop.labeller
    if labeller == "auto":
        return "exact" if task.has_verifier else "mc"
    if labeller == "exact" and not task.has_verifier:
        raise UserError(f"loop.labeller: 'exact' needs a step verifier, and task '{task.name}' has none; use mc, "
                        "mc_binary or auto")
    return labeller


def _collect_labels(ledger: Ledger, stage: str, model, tokenizer, task: Task, problems: list[Problem],
                    n_problems: int, cfg: ExperimentConfig, seed: int, round_index: int, log) -> None:
    """Sample from the policy and label the samples: two committed stages writing samples.jsonl and labels.jsonl."""
    run_dir = ledger.run_dir
    prompter = Prompter.of(cfg.policy, tokenizer)
    if not ledger.done(f"{stage}/sample"):
        rows = sample_rows(model, tokenizer, prompter, problems, cfg.policy.max_new_tokens, n_problems,
                           cfg.loop.samples_per_problem, seed)
        append_jsonl(run_dir / "samples.jsonl", [{"round": round_index, **row} for row in rows])
        ledger.commit(f"{stage}/sample")
    if not ledger.done(f"{stage}/label"):
        rows = [row for row in read_jsonl_tolerant(run_dir / "samples.jsonl") if row["round"] == round_index]
        labeller = labeller_for(cfg, task)
        sampler = None if labeller == "exact" else PolicySampler(model, tokenizer, cfg.policy.max_new_tokens,
                                                                  temperature=1.0, seed=seed)
        started = time.perf_counter()
        examples, rollouts = label_rows(rows, labeller, sampler, cfg.loop.mc_rollouts, cfg.prm.label_type, task,
                                        prompter, round_index)
        append_jsonl(run_dir / "labels.jsonl", [e.to_row() for e in examples])
        if sampler is not None:
            append_jsonl(run_dir / "costs.jsonl", [{"round": round_index, "stage": "label_rollouts",
                                                    "tokens": sampler.tokens}])
        log(f"{stage}: labelled {len(examples)} solutions ({labeller}, {rollouts} rollouts, "
            f"{time.perf_counter() - started:.1f}s)")
        ledger.commit(f"{stage}/label")


def spent_tokens(run_dir: Path, last_round: int, mode: str) -> int:
    """Tokens a run directory spent on reward-model data and training in rounds 0..``last_round``: its labelling
    samples (samples.jsonl ``tokens``) and costs.jsonl rows (Monte Carlo rollouts, training of a ``mode`` reward
    model)."""
    rows = [row for name in ("samples.jsonl", "costs.jsonl") if (run_dir / name).is_file()
            for row in read_jsonl_tolerant(run_dir / name)]
    return sum(int(row.get("tokens", 0)) for row in rows
               if int(row.get("round", 0)) <= last_round and row.get("mode", mode) == mode)


def _record_training(run_dir: Path, round_index: int, mode: str, summary: dict) -> None:
    append_jsonl(run_dir / "costs.jsonl", [{"round": round_index, "stage": "rm_training", "mode": mode,
                                            "tokens": int(summary.get("train_tokens", 0))}])


def prepare_shared(cfg: ExperimentConfig, out: Path, arms: list[Arm], task: Task, train: list[Problem],
                   log=print) -> Shared:
    """Warm start (cached), samples of the warm-started policy, their labels, and the first reward model(s)."""
    policy_dir = warm_start(cfg, log)
    run_dir = out / "shared"
    run_dir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(run_dir, APPEND_ONLY)
    ledger.restore()
    modes = sorted({arm.reward_model_mode for arm in arms} | {"process"})
    names = {"process": "prm0", "outcome": "orm0"}
    if not all(ledger.done(f"train_{names[m]}") for m in modes):
        model, tokenizer = _load_policy(policy_dir, cfg)
        _collect_labels(ledger, "init", model, tokenizer, task, train, cfg.loop.init_label_problems, cfg, cfg.seed, 0,
                        log)
        labels = _examples(run_dir / "labels.jsonl")
        for mode in modes:
            if not ledger.done(f"train_{names[mode]}"):
                log(f"training the first reward model ({mode}) on {len(labels)} labelled solutions")
                summary = train_reward_model(cfg.prm.init or policy_dir, mode, labels, [], cfg, run_dir / names[mode],
                                             cfg.seed, log)
                _record_training(run_dir, 0, mode, summary)
                ledger.commit(f"train_{names[mode]}")
    return Shared(policy_dir, {m: run_dir / names[m] for m in modes}, _examples(run_dir / "labels.jsonl"))


def _run_id(out: Path, arm: Arm, seed: int) -> str:
    digest = hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:8]
    return f"{arm.name}-s{seed}-{digest}"


def _tracker(cfg: ExperimentConfig, arm: Arm, seed: int, run_dir: Path, run_id: str):
    config = {**arm.as_config(seed), "experiment": cfg.name, "rl_steps_per_round": cfg.loop.rl_steps_per_round,
              "rounds": cfg.loop.rounds, "group_size": cfg.grpo.group_size, "beta": cfg.grpo.beta, "lr": cfg.grpo.lr}
    return Tracker(run_dir, project=cfg.tracking.project, group=cfg.name, name=f"{arm.name}-s{seed}",
                   job_type=arm.name, tags=[arm.supervision, arm.reward_source, arm.rm_update, arm.credit],
                   config=config, mode=cfg.tracking.mode, run_id=run_id)


def run_arm(base_cfg: ExperimentConfig, arm: Arm, seed: int, shared: Shared, task: Task, pools: list[list[Problem]],
            held_out: list[Problem], out: Path, log=print) -> Path:
    """All rounds of one arm and seed (resumable); returns the run directory. ``pools[r - 1]``: the training problems
    round r draws from (``loop.curriculum``)."""
    from ..policy.grpo import GRPOTrainer  # lazy: torch/transformers-heavy
    from ..prm.model import StepRewardModel

    cfg = arm_config(base_cfg, arm, seed)
    run_dir = out / "arms" / arm.name / f"seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(run_dir, APPEND_ONLY)
    dropped = ledger.restore()
    if dropped:
        log(f"{run_dir}: resuming; dropped unfinished rows {dropped}")
    if ledger.done("finished"):
        log(f"{arm.name} seed {seed}: already finished")
        return run_dir
    # The W&B run id is kept with the run, so a resume continues the same W&B run even from a moved --out.
    tracker = _tracker(cfg, arm, seed, run_dir, ledger.info.get("wandb_run_id") or _run_id(out, arm, seed))
    model, tokenizer = _load_policy(shared.policy_dir, cfg)  # the latest GRPO checkpoint is loaded into it below
    rm_path = Path(ledger.info.get("rm_path", shared.reward_models[arm.reward_model_mode]))
    reward_model = StepRewardModel.from_pretrained(rm_path, cfg.prm.max_length)
    eval_prm = reward_model if arm.reward_model_mode == "process" else StepRewardModel.from_pretrained(
        shared.reward_models["process"], cfg.prm.max_length)
    scorer = reward_model if arm.uses_reward_model else None
    if arm.reward_source == "implicit":  # PRIME: φ = π_ref = the warm start (or prm.init), learning online; the PRM
        from ..prm.formats import online_implicit_model  # its rounds evaluate is this one (resumed with the policy)

        scorer = eval_prm = online_implicit_model(cfg.prm.init or shared.policy_dir, cfg.prm, cfg.grpo.implicit_lr,
                                                  cfg.grpo.implicit_update)
    trainer = GRPOTrainer(model, tokenizer, cfg.grpo, cfg.policy, task, scorer)
    pools = [trainer.fitting_problems(pool) for pool in pools]  # grpo.long_prompts=drop: once per pool, never drawn
    if ledger.info.get("policy_round"):  # the committed round's checkpoint; a later, uncommitted one is ignored
        trainer.load(run_dir / "policy" / f"round{ledger.info['policy_round']}")
    setup = EvalSetup(task, trainer.prompter, held_out[: cfg.loop.eval_problems], cfg.policy.max_new_tokens,
                      cfg.loop.eval_k, cfg.loop.mc_rollouts, cfg.loop.eval_mc_solutions)

    curriculum = cfg.loop.curriculum != "none"
    shared_dir = shared.reward_models[arm.reward_model_mode].parent

    def evaluate(round_index: int) -> None:
        metrics, table = evaluate_round(trainer.policy, tokenizer, eval_prm, setup, seed=10_000 + round_index,
                                        band=band_of(pools, round_index) if curriculum else None)
        rm_tokens = (spent_tokens(shared_dir, 0, arm.reward_model_mode) + spent_tokens(run_dir, round_index,
                     arm.reward_model_mode)) if arm.uses_reward_model else 0
        metrics.update(tokens_rl=float(trainer.num_tokens), tokens_reward_model=float(rm_tokens),
                       tokens_total=float(trainer.num_tokens + rm_tokens))
        if cfg.loop.prm_eval_data:
            metrics.update(_file_metrics(eval_prm, cfg, trainer.prompter))
        tracker.log_eval(metrics, rl_step=round_index * cfg.loop.rl_steps_per_round, round=round_index)
        tracker.log_completions(table, round=round_index)
        log(f"{arm.name} s{seed} round {round_index}: accuracy {metrics['accuracy']:.3f}, "
            f"prm first-error F1 {metrics.get('prm_first_error_f1', float('nan')):.3f}")

    if not ledger.done("r0/eval"):
        evaluate(0)
        ledger.commit("r0/eval", wandb_run_id=tracker.run_id)
    for round_index in range(1, cfg.loop.rounds + 1):
        stage = f"r{round_index}"
        round_seed = seed * 1_000 + round_index
        retrain = arm.rm_update == "iterative" and arm.uses_reward_model and round_index > 1
        if retrain and not ledger.done(f"{stage}/rm"):
            _collect_labels(ledger, stage, trainer.policy, tokenizer, task, pools[round_index - 1],
                            cfg.loop.label_problems, cfg, round_seed, round_index, log)
            labelled = _examples(run_dir / "labels.jsonl")
            fresh = [e for e in labelled if e.meta.get("round") == round_index]
            history = shared.labels + [e for e in labelled if e.meta.get("round") != round_index]
            rm_out = run_dir / "rm" / f"round{round_index}"
            summary = train_reward_model(rm_path, arm.reward_model_mode, fresh, history, cfg, rm_out, round_seed, log)
            _record_training(run_dir, round_index, arm.reward_model_mode, summary)
            tracker.log_eval({f"rm_{k}": v for k, v in summary.items() if isinstance(v, (int, float))},
                             rl_step=(round_index - 1) * cfg.loop.rl_steps_per_round, round=round_index)
            rm_path = rm_out
            reward_model = StepRewardModel.from_pretrained(rm_path, cfg.prm.max_length)
            trainer.scorer = reward_model
            if arm.reward_model_mode == "process":
                eval_prm = reward_model
            ledger.commit(f"{stage}/rm", rm_path=str(rm_path))
        if not ledger.done(f"{stage}/grpo"):
            trainer.reset_reference()
            first, skipped_before = (round_index - 1) * cfg.loop.rl_steps_per_round, trainer.skipped_updates
            steps = tqdm(range(first, first + cfg.loop.rl_steps_per_round), desc=f"{arm.name} s{seed} r{round_index}",
                         unit="step", mininterval=1.0, leave=False)
            for rl_step in steps:
                batch = random.Random(seed * 1_000_003 + rl_step).sample(pools[round_index - 1],
                                                                         cfg.grpo.prompts_per_step)
                metrics = trainer.train_step(batch, rl_step)
                tracker.log_rl(metrics, rl_step=rl_step + 1, round=round_index)
                if _curve_point(rl_step + 1, cfg.loop.eval_every, cfg.loop.rl_steps_per_round):
                    point = greedy_metrics(trainer.policy, tokenizer, trainer.prompter, task, setup.problems,
                                           cfg.policy.max_new_tokens)
                    tracker.log_eval(point, rl_step=rl_step + 1, round=round_index)
            if trainer.skipped_updates - skipped_before == cfg.loop.rl_steps_per_round:
                raise UserError(f"{arm.name} seed {seed} round {round_index}: all {cfg.loop.rl_steps_per_round} "
                                f"updates were skipped ({trainer.skip_summary()}); the round is not committed")
            # One directory per round: a kill after this save but before the commit resumes from the previous
            # round's checkpoint, never from this round's result (which would run the round twice).
            trainer.save(run_dir / "policy" / f"round{round_index}")
            ledger.commit(f"{stage}/grpo", policy_round=round_index)
            _keep_only(run_dir / "policy", f"round{round_index}")
        if not ledger.done(f"{stage}/eval"):
            evaluate(round_index)
            ledger.commit(f"{stage}/eval")
    ledger.commit("finished")
    tracker.finish()
    return run_dir


def _curve_point(rl_step: int, every: int, steps_per_round: int) -> bool:
    """Whether greedy accuracy is measured after ``rl_step`` (1-based) inside a round; a round's last step is left
    to the round's full evaluation."""
    return bool(every) and rl_step % every == 0 and rl_step % steps_per_round != 0


def _keep_only(directory: Path, name: str) -> None:
    """Remove every entry of ``directory`` but ``name`` (older rounds' checkpoints, leftovers of killed saves)."""
    for entry in directory.iterdir():
        if entry.name == name:
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _file_metrics(prm, cfg: ExperimentConfig, prompter: Prompter) -> dict[str, float]:
    """The PRM on loop.prm_eval_data (e.g. ProcessBench), as ``prm_file_*`` metrics."""
    from ..prm.scoring_eval import evaluate_file  # lazy: torch/transformers-heavy

    prompt_of = None if cfg.loop.prm_eval_format == "trl_stepwise" else prompter
    metrics = evaluate_file(prm, cfg.loop.prm_eval_data, cfg.loop.prm_eval_format, cfg.loop.prm_eval_split,
                            prompt_of=prompt_of,
                            threshold=cfg.prm.threshold, batch_size=cfg.prm.eval_batch_size)
    return {f"prm_file_{key}": float(value) for key, value in metrics.items() if isinstance(value, (int, float))}


def run_experiment(cfg: ExperimentConfig, arms: list[Arm], seeds: list[int], out: str | Path, task: Task,
                   log=print) -> list[Path]:
    """The task's problems, shared preparation, then every arm x seed in turn; returns the run directories."""
    out = Path(out)
    train, held_out = task.problems()
    labeller_for(cfg, task)  # fail before any work on a labeller the task cannot serve
    check_resume(cfg, out)  # a resumed run keeps the settings it started with
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    pools = round_pools(train, cfg.loop.rounds, cfg.loop.curriculum)
    smallest = min(range(len(pools)), key=lambda r: len(pools[r]))
    if len(pools[smallest]) < cfg.grpo.prompts_per_step:
        raise UserError(f"loop.curriculum: round {smallest + 1} draws from {len(pools[smallest])} training problems, "
                        f"fewer than grpo.prompts_per_step ({cfg.grpo.prompts_per_step}); raise data.n_train")
    shared = prepare_shared(cfg, out, arms, task, pools[0], log)
    return [run_arm(cfg, arm, seed, shared, task, pools, held_out, out, log) for arm in arms for seed in seeds]
