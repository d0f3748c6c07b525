"""PolicyConfig and SFTConfig: which policy model to use and how the supervised warm start trains it."""

from __future__ import annotations

from dataclasses import dataclass

from ..utils.checks import above, at_least, between, checked, off_or_at_least, one_of
from .prompt_filter import LONG_PROMPTS
from .vllm_settings import ENGINE_DTYPES, OLD_LOGPS


@dataclass
class PolicyConfig:
    model: str = "tiny"
    """'tiny' builds the embedded small Llama-architecture LM; anything else is a hub name or local directory."""
    dtype: str = checked("float32", one_of("float32", "bfloat16", "float16"))
    """Weights dtype when loading. 'float32' (keep it for training): fp32 master weights, with bf16 compute through
    ``grpo.mixed_precision: bf16`` (autocast). 'bfloat16' / 'float16' train the low-precision weights themselves: AdamW
    then loses every update below the weights' rounding step (at lr 1e-6 most of them), so GRPO warns once; use them
    for sampling-only commands or to fit memory, knowingly. The vLLM engine's dtype is ``grpo.vllm_dtype``."""
    hidden_size: int = checked(128, at_least(1))
    """Tiny model: width of the residual stream."""
    num_layers: int = checked(4, at_least(1))
    """Tiny model: number of transformer blocks."""
    num_heads: int = checked(4, at_least(1))
    """Tiny model: attention heads per block."""
    max_length: int = checked(160, at_least(1))
    """Longest prompt + completion in tokens (the tiny model's position limit; a truncation bound for hub models)."""
    max_new_tokens: int = checked(64, at_least(1))
    """Most tokens generated for one completion."""
    prompt_template: str = "{question}\n"
    """How a question becomes the prompt text ('{question}' is replaced; other braces stay as written). With
    chat_template it is the user message."""
    chat_template: bool = False
    """Build prompts with the tokenizer's chat template (instruct models): [system,] user -> assistant turn."""
    system_prompt: str = ""
    """With chat_template: an optional system message ('' = none)."""
    lora_r: int = checked(0, at_least(0))
    """GRPO trains LoRA adapters of this rank on a frozen base (PEFT); 0 = full fine-tuning (``policy.lora``)."""
    lora_alpha: int = checked(32, at_least(1))
    """LoRA scaling numerator (the adapters' output is scaled by lora_alpha / lora_r)."""
    lora_target_modules: str = "all-linear"
    """Modules that get adapters: 'all-linear' or comma-separated names such as 'q_proj,k_proj,v_proj,o_proj'."""
    gradient_checkpointing: bool = False
    """GRPO recomputes activations in the backward pass: less memory, more time (dropout is turned off)."""


@dataclass
class SFTConfig:
    steps: int = checked(900, at_least(0))
    """Optimizer steps of the supervised warm start."""
    batch_size: int = checked(32, at_least(1))
    """Solutions per optimizer step."""
    lr: float = checked(3e-3, above(0))
    """Peak learning rate (linear warm-up, then cosine decay to 10%)."""
    warmup_steps: int = checked(100, at_least(0))
    """Steps of linear learning-rate warm-up."""
    weight_decay: float = checked(0.01, at_least(0))
    """AdamW weight decay."""
    eval_every: int = checked(0, at_least(0))
    """Evaluate held-out greedy accuracy every this many steps (and at the end); 0 = only at the end."""
    eval_problems: int = checked(200, at_least(1))
    """Held-out problems used by each evaluation (at most data.n_eval)."""
    seed: int = 0
    """Seed for model initialisation and batch order."""


@dataclass
class GRPOConfig:
    steps: int = checked(30, at_least(1))
    """Optimizer steps of one GRPO run (one call of ``train``); each step samples a fresh batch of prompts."""
    prompts_per_step: int = checked(32, at_least(1))
    """Questions per step, over all processes (each process takes an equal contiguous shard)."""
    group_size: int = checked(8, at_least(2))
    """G: completions sampled per question; advantages are normalised within each group. Must be >= 2."""
    lr: float = checked(5e-5, above(0))
    """AdamW learning rate (constant). The tiny default policy: 5e-5 (2e-4 and up lost held-out accuracy); paper: 1e-6 for 7B."""
    weight_decay: float = checked(0.0, at_least(0))
    """AdamW weight decay."""
    beta: float = checked(0.04, at_least(0))
    """KL coefficient β of Eq. 3 against the frozen reference policy; 0 skips the reference forward entirely."""
    clip_eps: float = checked(0.2, above(0))
    """ε of the clipped surrogate (Eq. 3)."""
    mu: int = checked(1, at_least(1))
    """Inner updates per sampled batch, each against the stored sampling log-probs (π_old)."""
    temperature: float = checked(1.0, above(0))
    """Sampling temperature of the rollouts (log-probs for the loss are always taken at temperature 1)."""
    top_p: float = checked(1.0, between(0, 1, open_low=True))
    """Nucleus sampling mass of the rollouts (1.0 = full distribution)."""
    supervision: str = checked("process", one_of("process", "outcome"))
    """'process' (one reward per step, DeepSeekMath §4.1.3) or 'outcome' (one reward per completion, §4.1.2)."""
    reward_source: str = checked("prm", one_of("prm", "orm", "rule", "implicit"))
    """'prm' (step reward model), 'orm' (its last-step score), 'rule' (final answer check) or 'implicit' (PRIME: an
    implicit PRM's per-step sums of β·log π_φ/π_ref, φ updated online from the answer check); process needs 'prm' or
    'implicit'."""
    implicit_lr: float = checked(1e-4, above(0))
    """reward_source 'implicit': AdamW learning rate of φ's online update, one step per GRPO step on its rollouts'
    answer-check labels (constant, no weight decay). The tiny default policy: 1e-4 (docs/benchmarks.md); PRIME: 1e-6
    for 7B."""
    implicit_update: str = checked("after", one_of("after", "before"))
    """reward_source 'implicit': 'after' scores a batch with φ, then updates φ on its labels (PRIME's released recipe:
    one forward serves both); 'before' updates φ first and scores with the updated φ (a second forward)."""
    credit: str = checked("sum", one_of("sum", "min"))
    """Process credit assignment: 'sum' (Σ of later normalised step rewards, §4.1.3) or 'min' (PURE min-form)."""
    outcome_mix: float = checked(0.0, at_least(0))
    """Weight of the rule (answer-check) outcome advantage added to every completion token; 0 = off."""
    grad_accum: int = checked(1, at_least(1))
    """Micro-batches per optimizer step on each process (memory knob; the update is the same for any value)."""
    padding_free: bool = False
    """The update's forwards (π_θ, π_ref, recomputed π_old) run on packed rows without padding: positions restart per
    sequence and attention stays within each, so their cost follows the real tokens; with sdpa/eager attention a
    group whose samples share long prefixes runs each shared prefix once (``policy.prefix_tree``). Log-probs, loss
    and gradients are the padded forward's (``policy.packing``). Needs sdpa, eager or flash attention; checked once
    at start."""
    generation_batch_size: int = checked(256, at_least(1))
    """Most completions sampled together in one batched generation call."""
    max_grad_norm: float = checked(1.0, above(0))
    """Gradient norm clip; a non-finite norm skips the update."""
    max_weight_change: float = checked(0.5, at_least(0))
    """An optimizer step that moves the trainable weights by more than this fraction of their norm (‖Δθ‖/‖θ‖), or
    leaves any weight NaN/inf, diverged: it is rolled back and counted as skipped. 0 = check only for NaN/inf. Normal
    steps move far less (measured on the tiny policy: 6e-4 at lr 5e-5, 0.01 at 1e-3, 0.12 at 1e-2 from random init)."""
    rollback: bool = True
    """Keep a CPU copy of the trainable weights and optimizer state before each optimizer step, so a diverged step is
    undone (3x the trainable weights: 5.7 GiB for a 0.5B model fully fine-tuned; bench/memory.py). False saves that
    copy (full fine-tuning of a large model); a diverged step then stops the run. Ignored under DeepSpeed, which
    keeps its own fp32 weights: there a diverged step always stops the run."""
    max_skips_in_a_row: int = checked(5, at_least(0))
    """Stop the run (one line naming the reasons; the last checkpoint is left as it was) after this many consecutive
    skipped updates. 0 = never stop early (a run whose updates were all skipped still fails at the end)."""
    mixed_precision: str = checked("no", one_of("no", "bf16", "fp16"))
    """accelerate's mixed precision: 'no', 'fp16' or 'bf16'. 'no' defers to ``accelerate launch``: its config file's
    mixed_precision applies (configs/accelerate/ddp.yaml: bf16). 'bf16' with ``policy.dtype: float32`` is the
    right setting for real models: forwards run in bf16 (autocast), AdamW updates fp32 weights."""
    long_prompts: str = checked("drop", one_of(*LONG_PROMPTS))
    """Training questions whose prompt is longer than policy.max_length - policy.max_new_tokens tokens: 'drop' them
    (once, when ``train`` starts; one line counts them), 'truncate' them from the left (the start of the prompt is
    lost: with a chat template, the system turn first), or 'error' (stop at the step that draws one)."""
    seed: int = 0
    """Seed of the prompt order and of every rollout (a sample depends only on seed, step and prompt index)."""
    checkpoint_every: int = checked(0, at_least(0))
    """Save a resumable checkpoint every this many steps during ``train`` (0 = only at the end)."""
    use_vllm: bool = False
    """Sample rollouts with a vLLM engine in this process (the 'vllm' extra, one CUDA GPU, one process) instead of the
    built-in HF loop; the policy's weights are pushed into it after each optimizer step (``policy.vllm_backend``).
    Evaluation and Monte Carlo labelling then sample with the same engine."""
    vllm_gpu_memory_utilization: float = checked(0.3, between(0, 1, open_low=True))
    """With use_vllm: fraction of the GPU's memory the engine may take for its weights, activations and KV cache."""
    vllm_dtype: str = checked("bfloat16", one_of(*ENGINE_DTYPES))
    """With use_vllm: the engine's weights and compute dtype ('bfloat16', 'float16', 'float32', or 'auto' = the
    policy's own weights' dtype); independent of the trainer's (fp32) weights, which are cast as they are pushed."""
    vllm_max_num_seqs: int = checked(0, at_least(0))
    """With use_vllm: most sequences the engine runs at once (vLLM's max_num_seqs); 0 = grpo.generation_batch_size."""
    vllm_engine_args: str = ""
    """With use_vllm: any other ``vllm.LLM`` arguments, as a JSON object, e.g. '{"enforce_eager": true}' ('' = none);
    the arguments prmloop sets itself (model, dtype, seed, ...) are refused: use their own keys."""
    vllm_old_logps: str = checked("recompute", one_of(*OLD_LOGPS))
    """With use_vllm: where π_old comes from. 'recompute' (TRL's way): the training model recomputes the sampled
    tokens' log-probs before the update, so ρ = 1 at the first inner update; 'engine': vLLM's sampling log-probs
    (no extra forward, but bf16 engine kernels differ from the trainer's, so ρ starts off 1 and clipping is skewed)."""
    vllm_is_cap: float = checked(0.0, off_or_at_least(1))
    """With use_vllm and vllm_old_logps 'recompute': truncated importance sampling (TRL's token_truncate) for the
    engine/trainer mismatch: each token's surrogate loss is weighted by min(π_old/π_engine, cap). 0 = off, else >= 1;
    TRL's default cap is 2.0 (``policy.importance``)."""
    vllm_sleep: bool = True
    """With use_vllm: release the engine's GPU memory while the policy updates, and wake it (with the new weights)
    before the next sampling."""
