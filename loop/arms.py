"""Experiment arms: which supervision, reward source, reward-model update and credit assignment one run uses."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from ..utils.errors import UserError
from .experiment import ExperimentConfig

SUPERVISIONS = ("process", "outcome")
REWARD_SOURCES = ("prm", "orm", "rule", "implicit")
RM_UPDATES = ("iterative", "fixed", "online")
CREDITS = ("sum", "min")


@dataclass(frozen=True)
class Arm:
    supervision: str
    """'process' (dense per-step rewards, DeepSeekMath §4.1.3) or 'outcome' (one reward per output, §4.1.2)."""
    reward_source: str
    """'prm' (step reward model), 'orm' (outcome reward model), 'rule' (the answer check) or 'implicit' (PRIME's
    implicit PRM, φ started from the warm-started policy, or prm.init if set)."""
    rm_update: str
    """'iterative' (retrain the reward model every round, §4.1.4), 'fixed' (keep the first one) or 'online' (the
    implicit PRM's update on every GRPO batch's answer check; the only update an implicit PRM has)."""
    credit: str = "sum"
    """Process supervision credit: 'sum' (DeepSeekMath) or 'min' (PURE)."""
    mix: bool = False
    """Add the answer check's outcome advantage, weighted by ``grpo.outcome_mix``, to every token (arm suffix '-mix');
    arms without it run with ``outcome_mix`` 0, so one config holds the weight for the mixed arms only."""

    @property
    def name(self) -> str:
        return (f"{self.supervision}-{self.reward_source}-{self.rm_update}" + ("-min" if self.credit == "min" else "")
                + ("-mix" if self.mix else ""))

    @property
    def uses_reward_model(self) -> bool:
        """Scores with an explicit reward model trained on labelled samples (the shared prm0/orm0 and its retrains)."""
        return self.reward_source in ("prm", "orm")

    @property
    def reward_model_mode(self) -> str:
        """The mode of the reward model that scores this arm's rollouts: 'outcome' for an ORM, else 'process'."""
        return "outcome" if self.reward_source == "orm" else "process"

    def as_config(self, seed: int) -> dict:
        return {"arm": self.name, "supervision": self.supervision, "reward_source": self.reward_source,
                "rm_update": self.rm_update, "credit": self.credit, "mix": self.mix, "seed": seed}


def parse_arm(spec: str, where: str = "compare.arms") -> Arm:
    """'supervision-reward_source-rm_update[-credit][-mix]' -> Arm; a UserError names the bad part. The implicit PRM
    is always updated online: 'process-implicit-online[-min][-mix]'."""
    form = "'supervision-reward_source-rm_update[-credit][-mix]'"
    if len(spec) > 80:
        raise UserError(f"{where}: arm {spec[:60]!r}... is too long to be {form}")
    parts = spec.strip().split("-")
    mix = parts[-1] == "mix" and len(parts) > 3
    if mix:
        parts = parts[:-1]
    if len(parts) not in (3, 4):
        raise UserError(f"{where}: arm {spec!r} must look like 'process-prm-iterative', 'process-prm-fixed-min' or "
                        "'process-prm-iterative-mix'")
    supervision, reward_source, rm_update = parts[:3]
    credit = parts[3] if len(parts) == 4 else "sum"
    for value, valid, what in ((supervision, SUPERVISIONS, "supervision"), (reward_source, REWARD_SOURCES, "reward source"),
                               (rm_update, RM_UPDATES, "reward-model update"), (credit, CREDITS, "credit")):
        if value not in valid:
            raise UserError(f"{where}: arm {spec!r}: {what} {value!r} is not one of {', '.join(valid)}")
    if supervision == "process" and reward_source not in ("prm", "implicit"):
        raise UserError(f"{where}: arm {spec!r}: process supervision needs step rewards, i.e. reward source 'prm' or "
                        "'implicit'")
    if supervision == "outcome" and reward_source == "implicit":
        raise UserError(f"{where}: arm {spec!r}: the implicit PRM gives step rewards; it needs process supervision")
    if (reward_source == "implicit") != (rm_update == "online"):
        raise UserError(f"{where}: arm {spec!r}: the implicit PRM, and only it, is updated 'online' (e.g. "
                        "'process-implicit-online')")
    if supervision == "outcome" and credit == "min":
        raise UserError(f"{where}: arm {spec!r}: min-form credit assigns step rewards; it needs process supervision")
    if mix and reward_source == "rule":
        raise UserError(f"{where}: arm {spec!r}: '-mix' adds the rule reward to a reward model's; the rule reward "
                        "alone needs no mix")
    return Arm(supervision, reward_source, rm_update, credit, mix)


def arm_from_config(cfg: ExperimentConfig) -> Arm:
    """The single arm `prmloop loop` runs: grpo.supervision/reward_source/credit and loop.rm_update ('online' for
    an implicit PRM, whatever loop.rm_update says)."""
    rm_update = "online" if cfg.grpo.reward_source == "implicit" else cfg.loop.rm_update
    spec = f"{cfg.grpo.supervision}-{cfg.grpo.reward_source}-{rm_update}-{cfg.grpo.credit}"
    return parse_arm(spec + ("-mix" if cfg.grpo.outcome_mix else ""), where="grpo/loop")


def arm_config(cfg: ExperimentConfig, arm: Arm, seed: int) -> ExperimentConfig:
    """A copy of ``cfg`` with the arm's choices and seed written into the sections that use them."""
    out = copy.deepcopy(cfg)
    out.grpo.supervision, out.grpo.reward_source, out.grpo.credit = arm.supervision, arm.reward_source, arm.credit
    if arm.rm_update != "online":  # loop.rm_update is how an explicit reward model is kept; φ always learns online
        out.loop.rm_update = arm.rm_update
    out.grpo.outcome_mix = cfg.grpo.outcome_mix if arm.mix else 0.0
    out.seed = seed
    out.grpo.seed = seed
    return out
