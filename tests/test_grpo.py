"""Tests for policy/grpo.py: config checks, prompt order, a step that learns, skips on bad rewards/loss, checkpoints, DDP."""

import importlib.util
import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import prmloop.policy.grpo as grpo_module
from prmloop.data.arith import generate
from prmloop.data.config import DataConfig
from prmloop.data.schema import Problem
from prmloop.data.task_tokenizer import build_task_tokenizer
from prmloop.data.tasks import get_task
from prmloop.policy.config import GRPOConfig, PolicyConfig
from prmloop.policy.grpo import GRPOTrainer, group_std_mean, step_problem_indices
from prmloop.policy.tiny import tiny_random_model
from prmloop.utils.errors import UserError

sys.path.insert(0, str(Path(__file__).parent))
from grpo_ddp_script import DigitScorer

ARITH = get_task(DataConfig())

PROBLEMS = generate(DataConfig(), 16, "train")
TRL_METRICS = ["reward", "reward_std", "rewards/prm/mean", "kl", "entropy", "clip_ratio/region_mean",
               "completions/mean_length", "completions/clipped_ratio", "frac_reward_zero_std", "num_tokens", "step_time",
               "prm/step_score_mean", "steps/mean_count", "loss", "skipped_updates"]


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class NaNScorer(DigitScorer):
    """DigitScorer, but NaN for every step while ``broken`` is set."""

    broken = True

    def score_steps(self, prompts, solutions):
        scores = super().score_steps(prompts, solutions)
        return [[math.nan] * len(row) for row in scores] if self.broken else scores


def make_trainer(scorer=None, policy_cfg=None, **overrides) -> GRPOTrainer:
    tokenizer = build_task_tokenizer()
    model = tiny_random_model("llama", tokenizer, seed=0)
    settings = {"prompts_per_step": 2, "group_size": 4, "lr": 1e-2, "supervision": "process", "reward_source": "prm"}
    cfg = GRPOConfig(**{**settings, **overrides})
    return GRPOTrainer(model, tokenizer, cfg, policy_cfg or PolicyConfig(max_new_tokens=10), ARITH,
                       scorer=DigitScorer() if scorer is None else scorer)


def weights(trainer: GRPOTrainer) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in trainer.policy.state_dict().items()}


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> bool:
    return all(torch.allclose(a[key], b[key], atol=atol, rtol=0) for key in a)


def test_step_problem_indices_cover_each_epoch():
    # 4 problems, 3 per step: steps 0..3 read positions 0..11 = three full epochs, each a permutation of 0..3
    seen = [i for step in range(4) for i in step_problem_indices(4, 3, step, seed=0)]
    assert [sorted(seen[k : k + 4]) for k in (0, 4, 8)] == [[0, 1, 2, 3]] * 3
    assert step_problem_indices(4, 3, 2, seed=0) == step_problem_indices(4, 3, 2, seed=0)
    assert seen != [i for step in range(4) for i in step_problem_indices(4, 3, step, seed=1)]


def test_group_std_mean_literal():
    # groups [0, 1] (sample std sqrt(0.5) = 0.707107) and [1, 1] (std 0): mean 0.353553
    assert group_std_mean(torch.tensor([0.0, 1.0, 1.0, 1.0]), 2) == pytest.approx(0.353553, abs=1e-6)


def test_train_step_changes_weights_and_logs_trl_metrics():
    trainer = make_trainer()
    before = weights(trainer)
    metrics = trainer.train_step(PROBLEMS[:2], step=0)
    assert not same_weights(before, weights(trainer))
    assert set(TRL_METRICS) <= set(metrics)
    assert metrics["skipped_updates"] == 0 and trainer.step == 1
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-6)  # π_θ == π_ref before the first update
    assert 0 <= metrics["frac_reward_zero_std"] <= 1 and metrics["completions/mean_length"] <= 10
    second = trainer.train_step(PROBLEMS[2:4], step=1)
    assert second["kl"] > 0 and second["num_tokens"] > metrics["num_tokens"]


@pytest.mark.parametrize("overrides", [
    {"supervision": "outcome", "reward_source": "orm"},
    {"credit": "min", "outcome_mix": 0.5, "mu": 2, "beta": 0.0},
])
def test_variants_run(overrides):
    trainer = make_trainer(**overrides)
    assert (trainer.reference is None) == (overrides.get("beta") == 0.0)
    before = weights(trainer)
    metrics = trainer.train_step(PROBLEMS[:2], step=0)
    assert math.isfinite(metrics["loss"]) and not same_weights(before, weights(trainer))


def test_grad_accum_gives_the_same_update():
    one, two = make_trainer(grad_accum=1), make_trainer(grad_accum=3)
    first, second = one.train_step(PROBLEMS[:2], 0), two.train_step(PROBLEMS[:2], 0)
    assert first["loss"] == pytest.approx(second["loss"], abs=1e-6)
    assert same_weights(weights(one), weights(two), atol=1e-6)


def test_nan_rewards_skip_the_update_and_the_run_goes_on():
    scorer = NaNScorer()
    trainer = make_trainer(scorer=scorer)
    before = weights(trainer)
    metrics = trainer.train_step(PROBLEMS[:2], step=0)
    assert metrics["skipped_updates"] == 1 and "loss" not in metrics
    assert same_weights(before, weights(trainer))
    scorer.broken = False
    metrics = trainer.train_step(PROBLEMS[2:4], step=1)
    assert metrics["skipped_updates"] == 1 and math.isfinite(metrics["loss"])
    assert not same_weights(before, weights(trainer))


def test_nan_loss_skips_the_optimizer_step(monkeypatch):
    original = grpo_module.grpo_loss

    def nan_loss(*args, **kwargs):
        loss, stats = original(*args, **kwargs)
        return loss * math.nan, stats

    monkeypatch.setattr(grpo_module, "grpo_loss", nan_loss)
    trainer = make_trainer()
    before = weights(trainer)
    metrics = trainer.train_step(PROBLEMS[:2], step=0)
    assert metrics["skipped_updates"] == 1
    assert same_weights(before, weights(trainer))


def test_empty_completions_get_zero_advantage():
    trainer = make_trainer(policy_cfg=PolicyConfig(max_new_tokens=1))  # one token: at most a 1-char step
    metrics = trainer.train_step(PROBLEMS[:2], step=0)
    assert metrics["completions/mean_length"] == 1 and math.isfinite(metrics["loss"])


def test_overlong_prompt_names_the_problem():
    # grpo.long_prompts=error; the default drops them (tests/test_grpo_long_prompts.py)
    trainer = make_trainer(policy_cfg=PolicyConfig(max_new_tokens=10, max_length=20), long_prompts="error")
    long = Problem("too-long-7", "1 + 2 + 3 + 4 + 5 + 6 = ? (left to right)", "21")
    with pytest.raises(UserError, match="problem too-long-7"):
        trainer.train_step([long, PROBLEMS[0]], step=0)


def test_reset_reference_copies_the_policy():
    trainer = make_trainer()
    trainer.train_step(PROBLEMS[:2], step=0)
    reference = trainer.reference.state_dict()
    assert not same_weights(reference, weights(trainer))
    trainer.reset_reference()
    assert same_weights(trainer.reference.state_dict(), weights(trainer))


def test_checkpoint_resume_matches_an_uninterrupted_run(tmp_path):
    straight = make_trainer(prompts_per_step=2)
    full = straight.train(PROBLEMS, steps=3)
    first = make_trainer(prompts_per_step=2)
    first.train(PROBLEMS, steps=2, checkpoint_dir=tmp_path / "ckpt")
    resumed = make_trainer(prompts_per_step=2)
    resumed.load(tmp_path / "ckpt")
    assert resumed.step == 2
    rest = resumed.train(PROBLEMS, steps=3)
    assert len(rest) == 1
    assert rest[0]["loss"] == pytest.approx(full[2]["loss"], abs=1e-6)
    assert rest[0]["num_tokens"] == full[2]["num_tokens"]
    assert same_weights(weights(resumed), weights(straight), atol=1e-6)
    with pytest.raises(UserError, match="not a GRPO checkpoint"):
        resumed.load(tmp_path / "missing")
    state = torch.load(tmp_path / "ckpt" / "trainer_state.pt", weights_only=False)
    torch.save({**state, "optimizer": None, "deepspeed_processes": 2}, tmp_path / "ckpt" / "trainer_state.pt")
    with pytest.raises(UserError, match=r"ckpt: this checkpoint was written by 2 DeepSpeed processes and this run is "
                                        r"without DeepSpeed; resume it the way it was written"):
        resumed.load(tmp_path / "ckpt")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(command: list[str], env: dict) -> subprocess.CompletedProcess:
    for _ in range(2):  # one retry: a rank was once seen aborting at start-up on the shared test machine
        try:
            done = subprocess.run(command, check=False, env=env, capture_output=True, text=True,
                                  cwd=Path(__file__).parents[1], timeout=300)
        except subprocess.TimeoutExpired as err:  # a hung rank must not hang the suite
            done = subprocess.CompletedProcess(command, 124, "", f"timed out: {err}")
        if done.returncode == 0:
            break
    assert done.returncode == 0, done.stderr[:1500] + "\n...\n" + done.stderr[-1500:]
    return done


NEEDS_DEEPSPEED = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                     reason="DeepSpeed is not installed (pip install -e '.[deepspeed]')")
ENGINES = [("cpu_ddp.yaml", "MULTI_CPU", []),  # DeepSpeed: the resumed run steps straight before its checkpoint
           pytest.param("cpu_deepspeed_zero2.yaml", "DEEPSPEED", ["--resume"], marks=NEEDS_DEEPSPEED),
           pytest.param("cpu_deepspeed_zero2.yaml", "DEEPSPEED", ["--resume", "--lora"], marks=NEEDS_DEEPSPEED)]


@pytest.mark.slow
@pytest.mark.parametrize(("config", "engine", "options"), ENGINES,
                         ids=["ddp", "deepspeed-resumed", "deepspeed-lora-resumed"])
def test_two_processes_match_one_process(tmp_path, config, engine, options):
    """accelerate's CLI, offline, on CPU, with a shipped config. DDP: `--cpu` alone would need MPI, so torchrun via
    --multi_gpu + ACCELERATE_USE_CPU. DeepSpeed ZeRO-2 runs over gloo (without ACCELERATE_USE_CPU, which drops it);
    "resumed" checkpoints after 2 of the 4 steps and loads the per-process optimizer shards in a fresh trainer."""
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    script = str(Path(__file__).parent / "grpo_ddp_script.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # CPU processes, also on a GPU box
    env.pop("ACCELERATE_USE_CPU", None)
    launch = [accelerate, "launch", "--config_file", f"configs/accelerate/{config}", "--dynamo_backend", "no",
              "--main_process_port", str(_free_port())]
    launch_env = {**env, "ACCELERATE_USE_CPU": "1"} if engine == "MULTI_CPU" else env
    if "--lora" in options:
        # A LoRA update's gradient moves by about 1e-4 with the micro-batch split (one process with grad_accum 1, 2
        # or 4 differ as much), so the reference is the same two processes without the checkpoint in between.
        _launch([*launch, script, str(tmp_path / "one.json"), "--lora"], launch_env)
    else:
        _launch([sys.executable, script, str(tmp_path / "one.json")], env)
    _launch([*launch, script, str(tmp_path / "two.json"), *options], launch_env)
    one, two = (json.loads((tmp_path / name).read_text()) for name in ("one.json", "two.json"))
    assert one["processes"] == (2 if "--lora" in options else 1) and two["processes"] == 2
    assert two["distributed_type"] == f"DistributedType.{engine}"
    assert one["mixed_precision"] == two["mixed_precision"] == "no" and two["param_dtype"] == "torch.float32"
    assert len(one["history"]) == len(two["history"]) == 4
    for single, double in zip(one["history"], two["history"]):
        for key in ("loss", "reward", "grad_norm"):
            assert double[key] == pytest.approx(single[key], abs=1e-5), key
        if engine == "MULTI_CPU":  # DeepSpeed keeps no pre-step copy: its weight_change is the norms' difference
            assert double["weight_change"] == pytest.approx(single["weight_change"], abs=1e-5)
        # the logged KL is a token mean per micro-batch, averaged by rows: it moves a little with the split
        assert double["kl"] == pytest.approx(single["kl"], rel=0.05, abs=1e-4)
    if "--resume" in options:
        assert sorted(p.name for p in (tmp_path / "two.ckpt").glob("optimizer_rank*.pt")) == [
            "optimizer_rank0.pt", "optimizer_rank1.pt"]


@pytest.mark.slow
@NEEDS_DEEPSPEED
def test_the_launch_files_bf16_applies_when_grpo_mixed_precision_is_no(tmp_path):
    """grpo.mixed_precision 'no' (the default) defers to accelerate launch: under DeepSpeed its bf16 makes the
    engine's weights bf16 (fp32 master weights in the optimizer), and the run trains."""
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("ACCELERATE_USE_CPU", None)
    _launch([accelerate, "launch", "--config_file", "configs/accelerate/cpu_deepspeed_zero2.yaml", "--mixed_precision",
             "bf16", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
             str(Path(__file__).parent / "grpo_ddp_script.py"), str(tmp_path / "bf16.json")], env)
    run = json.loads((tmp_path / "bf16.json").read_text())
    assert (run["mixed_precision"], run["param_dtype"]) == ("bf16", "torch.bfloat16")
    assert all(math.isfinite(row["loss"]) and row["skipped_updates"] == 0 for row in run["history"])


def _grpo_job_setup(tmp_path, supervision: str, reward_source: str):
    """A small config and a fresh tiny policy directory for `grpo` job tests."""
    from prmloop.loop.config import ExperimentConfig
    from prmloop.policy.tiny import init_policy

    cfg = ExperimentConfig()
    cfg.data.n_train, cfg.data.n_eval = 16, 4
    cfg.policy = PolicyConfig(hidden_size=32, num_layers=1, num_heads=2, max_new_tokens=8)
    cfg.grpo = GRPOConfig(steps=2, prompts_per_step=2, group_size=2, supervision=supervision,
                          reward_source=reward_source)
    return cfg, init_policy(cfg.policy, tmp_path / "policy", seed=0)


def test_grpo_job_writes_outputs_and_resumes(tmp_path):
    from prmloop.loop.jobs_grpo import grpo_job

    cfg, policy_dir = _grpo_job_setup(tmp_path, "outcome", "rule")
    cfg.grpo.reward_source = "orm"
    with pytest.raises(UserError, match="--prm"):
        grpo_job(cfg, str(policy_dir), None, str(tmp_path / "bad"), resume=False)
    cfg.grpo.reward_source = "rule"
    summary = grpo_job(cfg, str(policy_dir), None, str(tmp_path / "run"), resume=False)
    assert summary["steps"] == 2 and 0.0 <= summary["final_accuracy"] <= 1.0
    cfg.grpo.steps = 3
    summary = grpo_job(cfg, str(policy_dir), None, str(tmp_path / "run"), resume=True)
    assert summary["steps"] == 3 and summary["steps_this_run"] == 1
    rows = [json.loads(line) for line in (tmp_path / "run" / "grpo_metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [0, 1, 2]
    with pytest.raises(UserError, match=r"run: holds an earlier grpo run; pass --resume"):
        grpo_job(cfg, str(policy_dir), None, str(tmp_path / "run"), resume=False)  # never overwrites a finished run
    cfg.grpo.lr = 0.5
    with pytest.raises(UserError, match=r"run: --resume with settings that differ .*grpo.lr 5e-05 -> 0.5"):
        grpo_job(cfg, str(policy_dir), None, str(tmp_path / "run"), resume=True)
    assert "lr: 5.0e-05" in (tmp_path / "run" / "config.yaml").read_text()  # never rewritten to claim lr 0.5
    assert (tmp_path / "run" / "policy" / "config.json").is_file()
    assert json.loads((tmp_path / "run" / "grpo_summary.json").read_text())["steps"] == 3


@pytest.mark.parametrize("supervision", ["process", "outcome"])
def test_a_short_run_raises_the_reward_it_is_given(supervision):
    # A real learning check, fixed seed: the fake PRM (DigitScorer) rewards steps by their digits; 25 steps of GRPO
    # must raise the mean reward of fresh samples over the first steps' (process: per-step scores; outcome: the
    # last step's score, as an ORM gives).
    reward_source = "prm" if supervision == "process" else "orm"
    trainer = make_trainer(prompts_per_step=4, group_size=8, lr=3e-3, supervision=supervision,
                           reward_source=reward_source, beta=0.0)
    rewards = [trainer.train_step(PROBLEMS[(4 * step) % 16 : (4 * step) % 16 + 4], step)["reward"] for step in range(25)]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.1, rewards


def test_grpo_job_whose_updates_all_skip_fails_saying_why(tmp_path):
    from prmloop.loop.jobs_grpo import grpo_job
    from prmloop.prm.model import StepRewardModel

    cfg, policy_dir = _grpo_job_setup(tmp_path, "process", "prm")
    StepRewardModel.from_policy(str(policy_dir)).save_pretrained(tmp_path / "prm")
    cfg.prm.max_length = 4  # shorter than every prompt: no step fits the PRM window
    with pytest.raises(UserError, match=r"grpo: all 2 updates of this run were skipped \(2 x no step fit the PRM's "
                                        r"window \(raise prm.max_length\)\)"):
        grpo_job(cfg, str(policy_dir), str(tmp_path / "prm"), str(tmp_path / "run"), resume=False)
    assert (tmp_path / "run" / "grpo_summary.json").is_file()  # outputs written before the error
    cfg.prm.max_length = 10_000
    with pytest.raises(UserError, match=r"prm.max_length: 10000 tokens does not fit the PRM backbone \(160 positions\)"):
        grpo_job(cfg, str(policy_dir), str(tmp_path / "prm"), str(tmp_path / "run2"), resume=False)


def _poison_steps(trainer, monkeypatch, value: float) -> None:
    """Every optimizer step also sets the first weight matrix to ``value`` (NaN/inf or huge)."""
    original_step = trainer.optimizer.step

    def poisoned_step(*args, **kwargs):
        original_step(*args, **kwargs)
        with torch.no_grad():
            next(trainer.policy.parameters()).fill_(value)

    monkeypatch.setattr(trainer.optimizer, "step", poisoned_step)


@pytest.mark.parametrize("value, reason", [(math.inf, "NaN/inf"), (1e9, "more than grpo.max_weight_change")])
def test_a_diverged_update_is_rolled_back_and_the_run_stops_after_n_in_a_row(tmp_path, monkeypatch, value, reason):
    trainer = make_trainer(max_skips_in_a_row=2)
    trainer.train_step(PROBLEMS[:2], step=0)  # one good step: the optimizer has state to roll back
    trainer.save(tmp_path / "ckpt")
    before, state_before = weights(trainer), torch.load(tmp_path / "ckpt" / "trainer_state.pt", weights_only=False)
    _poison_steps(trainer, monkeypatch, value)
    metrics = trainer.train_step(PROBLEMS[2:4], step=1)
    assert metrics["skipped_updates"] == 1 and "weight_change" not in metrics
    assert same_weights(before, weights(trainer))  # rolled back: weights and optimizer state as before the step
    for param, saved in zip(trainer.optimizer.state.values(), state_before["optimizer"]["state"].values()):
        assert all(torch.equal(param[key], saved[key]) for key in saved)
    with pytest.raises(UserError, match=rf"grpo: the 2 updates of steps 1..2 were all skipped \(2 x an update "
                                        rf"that .*{reason}.*grpo.max_skips_in_a_row=2"):
        trainer.train_step(PROBLEMS[4:6], step=2)
    trainer.save(tmp_path / "ckpt2")  # what is left is the good weights, which may still be saved
    assert same_weights(before, weights(trainer))


def test_without_rollback_a_diverged_update_stops_before_any_save(tmp_path, monkeypatch):
    trainer = make_trainer(rollback=False)
    trainer.save(tmp_path / "ckpt")
    _poison_steps(trainer, monkeypatch, math.inf)
    with pytest.raises(UserError, match=r"grpo: step 0: an update that made the weights NaN/inf .*cannot be undone"):
        trainer.train_step(PROBLEMS[:2], step=0)
    with pytest.raises(UserError, match=r"non-finite"):
        trainer.save(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "trainer_state.pt").is_file()  # the good checkpoint is untouched


def test_a_real_learning_rate_blowup_is_caught():
    trainer = make_trainer(lr=1e9, max_skips_in_a_row=0)
    before = weights(trainer)
    metrics = trainer.train_step(PROBLEMS[:2], step=0)
    assert metrics["skipped_updates"] == 1 and same_weights(before, weights(trainer))
    assert trainer.skip_reasons == {"an update that moved the weights by more than grpo.max_weight_change (lower "
                                    "grpo.lr)": 1}
