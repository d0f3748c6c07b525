"""PRMConfig: how the step reward model reads solutions, trains on step labels and is evaluated."""

from __future__ import annotations

from dataclasses import dataclass

from ..utils.checks import above, at_least, between, checked, one_of


@dataclass
class PRMConfig:
    init: str = ""
    """What the first reward model starts from: '' = the warm-started policy (the model being judged), else a causal
    LM (a fresh head), a token-classification PRM or a prmloop PRM (continued), as a local directory or hub name."""
    format: str = checked("auto", one_of("auto", "prmloop", "token_classification", "qwen_prm", "value_head",
                                         "math_shepherd", "chat_turns", "implicit"))
    """How a reward-model directory reads (prm/formats.py): 'auto' (detected; a plain causal LM -> a fresh PRM when
    training, an error when only scoring), 'prmloop', 'token_classification', 'qwen_prm' (Qwen2.5-Math-PRM),
    'value_head' (Skywork-o1-Open-PRM), 'math_shepherd' (P(good_token) vs P(bad_token) at step_separator),
    'chat_turns' (RLHFlow: one user turn per step, P(good_token) vs P(bad_token) at the assistant's turn) or
    'implicit' (prmloop's implicit PRM: φ, reference/ and implicit_prm.json)."""
    trust_remote_code: bool = False
    """Allow a checkpoint's own model code (config.json auto_map) to run; formats prmloop implements never need it."""
    step_separator: str = "\n"
    """The token each step is read at (the PRM appends it after every step): '\n', 'ки' (Math-Shepherd), '<extra_0>'
    (Qwen2.5-Math-PRM); it must be one token for the tokenizer. A saved prmloop PRM keeps its own; qwen_prm always
    reads at '<extra_0>', value_head at '\n'."""
    good_token: str = "+"
    """math_shepherd / chat_turns formats: the token whose probability means 'step is right'."""
    bad_token: str = "-"
    """math_shepherd / chat_turns formats: the token whose probability means 'step is wrong'."""
    positive_index: int = checked(1, one_of(0, 1))
    """External token-classification PRMs: the class index meaning 'step is right' (prmloop saves 1)."""
    mode: str = checked("process", one_of("process", "outcome", "implicit"))
    """'process' (a PRM: every step is supervised and scored), 'outcome' (an ORM: only the final step) or 'implicit'
    (Yuan et al. 2024: a causal LM φ trained on outcome labels only, reward β·log π_φ/π_ref, read per step;
    docs/math.md)."""
    implicit_beta: float = checked(0.5, above(0))
    """β of an implicit PRM's reward β·log π_φ/π_ref when one is made fresh; a saved one keeps its own. The tiny default
    policy: 0.5 (0.05 barely moved in 2 epochs; docs/benchmarks.md); PRIME: 0.05 for 7B at lr 1e-6."""
    label_type: str = checked("soft", one_of("soft", "hard"))
    """'soft': float labels train as given (never rounded); 'hard': a label >= 0.5 trains as 1.0, else 0.0."""
    supervise: str = checked("through_first_error", one_of("through_first_error", "all"))
    """Which steps get a loss term: 'through_first_error' (up to the first step labelled < 0.5, as PRM800K's labellers
    stopped there; later steps cannot change a first-error prediction or a min score) or 'all'."""
    epochs: int = checked(2, at_least(1))
    """Passes over the training examples (new data plus replay)."""
    batch_size: int = checked(32, at_least(1))
    """Solutions per optimizer step (per process under accelerate launch)."""
    lr: float = checked(1e-4, at_least(0))
    """Peak learning rate of the backbone (full fine-tuning, or the LoRA adapters with lora_r > 0); 0 freezes it.
    Schedule: linear warm-up over warmup_ratio of the optimizer steps, then linear decay to 10%."""
    head_lr: float = checked(1e-3, above(0))
    """Peak learning rate of the head (and of the log-prob feature weights), same schedule."""
    lora_r: int = checked(0, at_least(0))
    """LoRA rank for the backbone (PEFT, all linear layers); 0 = full fine-tuning. Adapters are merged on save."""
    lora_alpha: int = checked(16, at_least(1))
    """LoRA scaling numerator (alpha / r scales the adapters)."""
    logp_features: bool = True
    """Add the LM's own log-prob features of each step (min/mean log-prob, min argmax margin) to the step logit (needs
    the LM head). On by default: on the embedded task they are most of what a small PRM knows (bench/prm.py: Best-of-16
    0.85 with them vs 0.41 without). The checkpoint stays a token-classification model, but plain
    AutoModelForTokenClassification then gives the head's part of the score only; false = exactly standard."""
    lm_loss_weight: float = checked(0.0, at_least(0))
    """Weight of the LM loss on the solution tokens beside the step loss (keeps the backbone a language model);
    needs the LM head."""
    weight_decay: float = checked(0.01, at_least(0))
    """AdamW weight decay."""
    warmup_ratio: float = checked(0.1, between(0, 1))
    """Fraction of the optimizer steps spent in linear warm-up (sized to the data, so short retraining still moves)."""
    max_length: int = checked(160, at_least(1))
    """Most tokens of prompt + solution the PRM reads; steps ending beyond it are dropped (training) or NaN (scoring)."""
    replay_fraction: float = checked(0.1, between(0, 1))
    """Historical examples mixed in, as a fraction of the new examples (DeepSeekMath §4.2 replays 10%)."""
    val_fraction: float = checked(0.1, between(0, 0.9))
    """Part of the new examples held out for validation metrics when no validation set is given."""
    seed: int = 0
    """Seed for the replay sample, the validation split and the batch order."""
    threshold: float = checked(0.5, between(0, 1, open_low=True))
    """A step counts as predicted correct when its score is >= this (evaluation only)."""
    tune_threshold: bool = False
    """After training (process mode, with validation examples): pick the decision threshold t that maximises the
    validation first-error F1 and fold it into the head's bias, so 'score >= 0.5' means 'predicted correct' there."""
    mixed_precision: str = checked("no", one_of("no", "bf16", "fp16"))
    """Accelerate's mixed precision: 'no', 'bf16' or 'fp16' (fp16 needs a GPU). 'no' defers to ``accelerate launch``:
    its config file's mixed_precision applies."""
    eval_batch_size: int = checked(64, at_least(1))
    """Solutions per forward pass when scoring (validation and evaluation)."""
