"""ExperimentConfig: the per-package configs composed into one experiment, plus the loop's own sections.

Loading, overrides and validation live in loop/config.py; this module holds only the dataclasses, so the arm grammar
(loop/arms.py) and the checks (loop/validate.py) can import them without importing the loader.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..data.config import DataConfig
from ..policy.config import GRPOConfig, PolicyConfig, SFTConfig
from ..prm.config import PRMConfig
from ..utils.checks import at_least, checked, one_of


@dataclass
class LoopConfig:
    rounds: int = checked(2, at_least(1))
    """RL rounds (DeepSeekMath Algorithm 1 iterations): label -> retrain reward model -> reset pi_ref -> GRPO -> eval."""
    rl_steps_per_round: int = checked(15, at_least(1))
    """GRPO steps per round (M)."""
    rm_update: str = checked("iterative", one_of("iterative", "fixed"))
    """'iterative': retrain the reward model each round on fresh policy samples (+ replay); 'fixed': keep the first."""
    labeller: str = checked("auto", one_of("auto", "exact", "mc", "mc_binary"))
    """How fresh samples get step labels: 'exact' (the task's step verifier; only the embedded task has one), 'mc'
    (Math-Shepherd Monte Carlo with the policy on every step prefix), 'mc_binary' (OmegaPRM-style binary search) or
    'auto' (exact where the task has a verifier, else mc); `prm label --method` takes the same names."""
    mc_rollouts: int = checked(8, at_least(1))
    """Monte Carlo labelling: completions per step prefix (N)."""
    label_problems: int = checked(64, at_least(1))
    """Training problems sampled each round for reward-model data."""
    init_label_problems: int = checked(256, at_least(1))
    """Training problems sampled from the warm-started policy for the first reward model."""
    samples_per_problem: int = checked(4, at_least(1))
    """Policy samples per problem for reward-model data."""
    eval_problems: int = checked(100, at_least(1))
    """Held-out problems evaluated each round (at most data.n_eval)."""
    eval_k: int = checked(8, at_least(1))
    """Samples per held-out problem for maj@k, pass@k and the PRM metrics."""
    eval_mc_solutions: int = checked(32, at_least(0))
    """Tasks without a step verifier: held-out samples given Monte Carlo labels each round for the PRM's
    first-error F1 (loop.mc_rollouts completions per step prefix; 0 = skip)."""
    curriculum: str = checked("none", one_of("none", "steps"))
    """'none': every round draws RL and labelling problems from the whole training set. 'steps': round r draws them
    from the r-th band of reference-solution lengths, easiest first (loop/curriculum.py): the regime in which a fixed
    reward model can go stale (configs/stale.yaml). The first reward model learns from round 1's band."""
    eval_every: int = checked(0, at_least(0))
    """Also measure held-out greedy accuracy (on the same loop.eval_problems) every this many RL steps inside a round,
    for accuracy-vs-step curves; 0 = only the full evaluation at each round's end."""
    prm_eval_data: str = ""
    """A labelled file (e.g. ProcessBench's gsm8k/math split) the PRM is also evaluated on each round ('' = none)."""
    prm_eval_format: str = "processbench"
    """Format of loop.prm_eval_data (a data.loaders format: processbench, trl_stepwise, math_shepherd, prm800k)."""
    prm_eval_split: str = "train"
    """Split of loop.prm_eval_data (ProcessBench on the hub: gsm8k, math, olympiadbench, omnimath)."""
    cache_dir: str = "runs/cache"
    """Where warm-started policies are cached (keyed by a hash of the data, policy and sft sections)."""
    shipped_warm_start: bool = True
    """Start from the SFT policy shipped with prmloop (loop/warm_starts/) when this config's data, policy and sft
    sections are exactly those it was trained with (the study's and the demo's), instead of training it (8 min on 2
    CPU cores); a policy already in loop.cache_dir comes first. false = train it here."""


@dataclass
class TrackingConfig:
    project: str = "prmloop"
    """W&B project name."""
    mode: str = checked("offline", one_of("offline", "online", "disabled"))
    """W&B mode: 'offline' (default; files under OUT/.../wandb), 'online' or 'disabled'. WANDB_MODE overrides it."""


@dataclass
class CompareConfig:
    arms: list[str] = field(
        default_factory=lambda: ["process-prm-iterative", "process-prm-fixed", "outcome-rule-fixed"]
    )
    """Arms as 'supervision-reward_source-rm_update[-credit]', e.g. 'process-prm-iterative-min'."""
    seeds: int = checked(1, at_least(1))
    """Seeds per arm (seed, seed+1, ...); the report's 95% CIs need at least 2."""


@dataclass
class ExperimentConfig:
    name: str = "prmloop"
    """Experiment name (the W&B group); outputs of every arm share it."""
    seed: int = 0
    """Global seed; sections with a seed of their own use theirs."""
    data: DataConfig = field(default_factory=DataConfig)
    """Problems: the embedded task's knobs or a dataset source."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """The policy model and its generation limits."""
    sft: SFTConfig = field(default_factory=SFTConfig)
    """Supervised warm start."""
    prm: PRMConfig = field(default_factory=PRMConfig)
    """The step reward model and its training."""
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    """The GRPO trainer (supervision, reward source and credit assignment live here)."""
    loop: LoopConfig = field(default_factory=LoopConfig)
    """Iterative rounds: labelling, reward-model updates, evaluation."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """W&B and local metrics."""
    compare: CompareConfig = field(default_factory=CompareConfig)
    """Arms x seeds for `prmloop compare` and `prmloop demo`."""
