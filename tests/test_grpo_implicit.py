"""GRPO with ``grpo.reward_source: implicit`` (policy/rewards.py, policy/grpo_checkpoint.py, loop/jobs_grpo.py):
PRIME's online implicit PRM gives the step rewards, learns from each batch's answer check, and is checkpointed with
the policy."""

import copy

import pytest
import torch

from prmloop.data.arith import generate
from prmloop.data.config import DataConfig
from prmloop.data.task_tokenizer import build_task_tokenizer
from prmloop.data.tasks import get_task
from prmloop.loop.config import ExperimentConfig
from prmloop.loop.jobs_grpo import _load_scorer
from prmloop.policy.config import GRPOConfig, PolicyConfig
from prmloop.policy.grpo import GRPOTrainer
from prmloop.policy.tiny import tiny_random_model
from prmloop.prm.formats import detect_format
from prmloop.prm.implicit import ImplicitPRM
from prmloop.utils.errors import UserError

ARITH = get_task(DataConfig())
PROBLEMS = generate(DataConfig(), 8, "train")


def make_trainer(update: str = "after", **overrides) -> GRPOTrainer:
    """A tiny random policy; φ and π_ref start as copies of it (PRIME's initialisation)."""
    tokenizer = build_task_tokenizer()
    model = tiny_random_model("llama", tokenizer, seed=0)
    scorer = ImplicitPRM.from_causal_lm(copy.deepcopy(model), tokenizer, beta=0.5, max_length=160)
    scorer.configure_online(lr=1e-2, update=update)
    settings = {"prompts_per_step": 2, "group_size": 4, "lr": 1e-2, "supervision": "process",
                "reward_source": "implicit", **overrides}
    return GRPOTrainer(model, tokenizer, GRPOConfig(**settings), PolicyConfig(max_new_tokens=12), ARITH, scorer=scorer)


def test_implicit_needs_an_online_scorer_and_process_supervision():
    class Plain:
        def score_steps(self, prompts, solutions):
            return [[0.5] * len(s) for s in solutions]

    tokenizer = build_task_tokenizer()
    model = tiny_random_model("llama", tokenizer)
    with pytest.raises(UserError, match="'implicit' needs an implicit PRM that learns online"):
        GRPOTrainer(model, tokenizer, GRPOConfig(reward_source="implicit"), PolicyConfig(), ARITH, scorer=Plain())
    with pytest.raises(UserError, match="'implicit' cannot give outcome rewards"):
        GRPOTrainer(model, tokenizer, GRPOConfig(supervision="outcome", reward_source="implicit"), PolicyConfig(),
                    ARITH, scorer=ImplicitPRM.from_causal_lm(model, tokenizer, 0.5, 160))

def test_grpo_step_with_an_online_implicit_prm(tmp_path):
    trainer = make_trainer()
    phi_before = [p.detach().clone() for p in trainer.scorer.model.parameters()]
    first = trainer.train_step(PROBLEMS[:2], step=0)
    # 'after': the first batch is scored by φ = π_ref (every step reward 0, so no process advantage), then φ learns
    assert first["prm/step_score_mean"] == 0.0 and first["frac_reward_zero_std"] == 1.0
    assert {"implicit/loss", "implicit/accuracy", "implicit/grad_norm"} <= set(first)
    assert any(not torch.equal(a, b) for a, b in zip(phi_before, trainer.scorer.model.parameters()))
    second = trainer.train_step(PROBLEMS[2:4], step=1)
    assert second["prm/step_score_mean"] != 0.0 and second["frac_reward_zero_std"] < 1.0
    trainer.save(tmp_path / "ckpt")
    assert detect_format(tmp_path / "ckpt" / "implicit_prm") == "implicit"
    resumed = make_trainer()
    resumed.load(tmp_path / "ckpt")
    steps = [["1 + 2 = 3", "3 * 2 = 6"]]
    assert resumed.scorer.updates == 2
    assert resumed.scorer.step_rewards(["q\n"], steps) == trainer.scorer.step_rewards(["q\n"], steps)


def test_before_mode_rewards_the_first_batch():
    first = make_trainer(update="before").train_step(PROBLEMS[:2], step=0)
    assert first["prm/step_score_mean"] != 0.0  # φ took its step on this batch's labels before scoring it


def test_grpo_job_starts_phi_from_the_policy(tmp_path):
    tokenizer = build_task_tokenizer()
    tiny_random_model("llama", tokenizer, seed=0).save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    cfg = ExperimentConfig()
    cfg.grpo.reward_source, cfg.grpo.implicit_lr, cfg.grpo.implicit_update = "implicit", 3e-4, "before"
    scorer = _load_scorer(None, cfg, str(tmp_path / "policy"))
    assert isinstance(scorer, ImplicitPRM) and (scorer.online_lr, scorer.online_update) == (3e-4, "before")
    assert scorer.beta == cfg.prm.implicit_beta and scorer.step_rewards(["q\n"], [["1 + 1 = 2"]]) == [[0.0]]
