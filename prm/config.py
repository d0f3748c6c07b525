"""PRMConfig: how the step reward model reads solutions, trains on step labels and is evaluated."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PRMConfig:
    init: str = ""
    """Causal LM the first reward model starts from: '' = the warm-started policy (the model being judged), else a
    local directory or hub name (e.g. a stronger LM: `prmloop policy sft --set sft.steps=1800` gives a 95%-accurate one)."""
    mode: str = "process"
    """'process' (a PRM: every step is supervised and scored) or 'outcome' (an ORM: only the final step)."""
    label_type: str = "soft"
    """'soft': float labels train as given (never rounded); 'hard': a label >= 0.5 trains as 1.0, else 0.0."""
    supervise: str = "through_first_error"
    """Which steps get a loss term: 'through_first_error' (up to the first step labelled < 0.5, as PRM800K's labellers
    stopped there; later steps cannot change a first-error prediction or a min score) or 'all'."""
    epochs: int = 2
    """Passes over the training examples (new data plus replay)."""
    batch_size: int = 32
    """Solutions per optimizer step (per process under accelerate launch)."""
    lr: float = 0.0
    """Peak learning rate of the LM's weights (linear warm-up, then linear decay to 10%); 0 keeps the LM frozen, which
    measured best on the embedded task (tuning it on ~1k noisy MC labels erodes the log-prob features)."""
    head_lr: float = 1e-3
    """Peak learning rate of the step head (hidden-state weights, bias and log-prob feature weights), same schedule."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_steps: int = 20
    """Optimizer steps of linear learning-rate warm-up."""
    max_length: int = 160
    """Most tokens of prompt + solution the PRM reads; steps ending beyond it are dropped (training) or NaN (scoring)."""
    replay_fraction: float = 0.1
    """Historical examples mixed in, as a fraction of the new examples (DeepSeekMath §4.2 replays 10%)."""
    val_fraction: float = 0.1
    """Part of the new examples held out for validation metrics when no validation set is given."""
    seed: int = 0
    """Seed for the replay sample, the validation split and the batch order."""
    threshold: float = 0.5
    """A step counts as predicted correct when its score is >= this (evaluation only)."""
    train_hidden: bool = False
    """Whether the head's hidden-state weights w train; False keeps w at its start (0 for a fresh PRM), so only the
    log-prob feature weights (a, c, d) and the bias b learn: on the embedded task's noisy MC labels w overfits
    (bench/prm.py first-error F1 0.756 with w trained, 0.803 without)."""
    tune_threshold: bool = False
    """After training (process mode, with validation examples): pick the decision threshold t that maximises the
    validation first-error F1 and fold it into the bias (b −= logit t), so every user of ``score_steps`` reads
    'score >= 0.5' as 'predicted correct' at the tuned point. Off by default: tuned against MC labels the threshold
    lands too high (they call too many right steps wrong) and held-out F1 against exact labels can drop."""
    mixed_precision: str = "no"
    """Accelerate's mixed precision: 'no', 'bf16' or 'fp16' (fp16 needs a GPU)."""
    eval_batch_size: int = 64
    """Solutions per forward pass when scoring (validation and evaluation)."""
