"""vLLM rollouts: a colocated vLLM engine behind ``CompletionBackend``, with the policy's weights pushed in place.

Optional: the ``vllm`` extra (vLLM >= 0.12, the first whose requirements accept prmloop's transformers floor; this
code needs 0.10), one CUDA GPU, one process; ``grpo.use_vllm`` picks it, for GRPO's rollouts and
(``sample_with_vllm``) for every other sampling of the process: evaluation and Monte Carlo labelling. One engine per
process serves them all. How it keeps the contract of ``policy.rollout``:
- The same ``Generation`` as ``HFBackend``: completions right-padded with the pad id; the mask covers every generated
  token including the final EOS; ``finished`` means the last token is an EOS id (read from the tokens, because vLLM
  calls an EOS drawn as the max_tokens-th token a "length" stop); ``logp`` is the log-prob of each sampled token
  under the RAW logits (temperature 1, before top-p). The engine runs with ``logprobs_mode="raw_logprobs"``, which
  vLLM 0.10 added (older releases returned log-probs after temperature and other processing), so π_old is what the HF
  loop and ``forward_logps`` compute. vLLM's V0 engine (0.10 with ``VLLM_USE_V1=0``) ignores that setting, so do not
  use V0 here. They are still the engine's numbers (bf16 kernels by default): GRPO recomputes π_old with the training
  model unless ``grpo.vllm_old_logps: engine`` (``policy.importance``).
- Precision: the engine runs in ``grpo.vllm_dtype`` (default bfloat16) whatever the trainer's weights are (fp32 by
  default); the engine's ``load_weights`` casts the pushed fp32 tensors into its own parameters.
- Seeds: row i is one request with ``SamplingParams(seed=row_seeds[i])``, so its sample depends only on its seed (up to
  float rounding, as in the HF loop). vLLM draws with its own sampler, so the same seed gives a different sample from
  the same distribution than ``HFBackend``. Seeded requests take vLLM's per-request generator path, which is slower
  for large batches.
- In process: the engine is built with ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` (the variable is put back afterwards), so it
  runs in the trainer's process and thread. Weights then move from GPU to GPU without serialisation: ``LLM.apply_model``
  passes in the engine's model, and that model's ``load_weights`` takes tensors under checkpoint names and fuses
  q/k/v and gate/up itself. vLLM seeds the global random generators when it starts, so Python's and torch's (CPU and
  CUDA) states are saved before and restored after; numpy's global state is left reseeded.
- Weights: the engine is built from the policy's config only (``load_format="dummy"``), and every weight is pushed in
  before the first sampling. So it samples from the policy object as it is (after SFT or ``trainer.load``), whatever
  its ``name_or_path`` says. ``sync_weights`` marks the engine stale after an optimizer step, and the push happens at
  the next ``generate``, so μ steps cost one push. A LoRA policy is merged on the fly (base + scaled B·A under the
  base model's names); the PEFT model itself is not changed.
- Sleep (``grpo.vllm_sleep``): after sampling, the engine sleeps at level 2, which releases its weights and KV cache
  and copies nothing to CPU, since the weights are pushed in again anyway. Before the next sampling it wakes the
  weights, takes the push, then wakes the KV cache; before each wake, ``torch.cuda.empty_cache()`` hands the
  trainer's cached but free blocks (activations and gradients of the update) back to the driver, where vLLM's own
  allocator can take them (TRL does the same before ``wake_up``). Sleep mode uses vLLM's own CUDA allocator for the
  engine only; vLLM rejects ``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`` with it. Without sleep, a push also
  clears the prefix cache, which holds keys and values computed with the old weights.
- Architectures: those vLLM implements natively, with dense weights whose ``state_dict`` names are the checkpoint
  names (Llama, Qwen2, Mistral, GPT-2, ...).
"""

from __future__ import annotations

import copy
import os
import random
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ..utils.errors import UserError
from ..utils.lora import is_lora, merged_weights
from . import rollout
from .rollout import Generation, eos_token_ids
from .vllm_settings import check_vllm_settings, engine_dtype, engine_max_num_seqs, parse_engine_args

MIN_VERSION = (0, 10)
"""Oldest vLLM with ``logprobs_mode`` (raw log-probs), sleep-mode tags and ``LLM.apply_model`` on the V1 engine."""
NEEDS = "grpo.use_vllm: needs the 'vllm' extra (pip install 'prmloop[vllm]') and a CUDA GPU"
SLEEP_LEVEL = 2
"""Level 2 releases the weights without a CPU copy (level 1 would copy them out and back for nothing)."""


def require_vllm() -> Any:
    """The ``vllm`` module, or a one-line UserError naming ``grpo.use_vllm``, the extra and what is missing."""
    if not torch.cuda.is_available():
        raise UserError(f"{NEEDS}; no CUDA GPU is visible to torch (torch.cuda.is_available() is False)")
    try:
        import vllm  # optional: the vllm extra, imported only when grpo.use_vllm asks for it
    except ImportError as err:
        raise UserError(f"{NEEDS}; vllm cannot be imported ({str(err).splitlines()[0][:160]})") from None
    version = str(getattr(vllm, "__version__", ""))
    release = re.match(r"(\d+)\.(\d+)", version)
    if release and (0, 0) < (int(release[1]), int(release[2])) < MIN_VERSION:  # unparsable or 0.0: a source build
        raise UserError(f"{NEEDS}; vllm {version} is installed, older than {'.'.join(map(str, MIN_VERSION))}")
    return vllm


@contextmanager
def _in_process_engine() -> Iterator[None]:
    """Build the engine in this process (so weights can be handed over directly) and keep the global RNG states."""
    previous = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    python_state = random.getstate()
    try:
        with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
            yield
    finally:
        random.setstate(python_state)
        if previous is None:
            os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
        else:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = previous


def generation_from_outputs(token_rows: list[list[int]], logp_rows: list[list[float]], eos_ids: list[int],
                            pad_id: int, device: Any = "cpu") -> Generation:
    """A right-padded ``Generation`` from each row's sampled tokens and their log-probs (as vLLM returns them).

    A row is finished when its last token is an EOS id (generation stops at the first one).
    """
    width = max((len(tokens) for tokens in token_rows), default=0)
    batch, eos = len(token_rows), set(eos_ids)
    ids = torch.full((batch, width), pad_id, dtype=torch.long)  # (B, T)
    logp = torch.zeros((batch, width), dtype=torch.float32)  # (B, T)
    lengths = torch.tensor([len(tokens) for tokens in token_rows], dtype=torch.long)  # (B,)
    for row, (tokens, logps) in enumerate(zip(token_rows, logp_rows)):
        if len(logps) != len(tokens):
            raise RuntimeError(f"vLLM returned {len(logps)} log-probs for {len(tokens)} tokens")
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        logp[row, : len(tokens)] = torch.tensor(logps, dtype=torch.float32)
    mask = torch.arange(width)[None, :] < lengths[:, None]  # (B, T)
    finished = torch.tensor([bool(tokens) and tokens[-1] in eos for tokens in token_rows], dtype=torch.bool)  # (B,)
    return Generation(ids.to(device), mask.to(device), logp.to(device), finished.to(device))


def sampled_logps(completion: Any) -> list[float]:
    """The log-prob of each sampled token of one vLLM ``CompletionOutput`` (requested with ``logprobs=0``)."""
    if completion.logprobs is None:
        raise RuntimeError("vLLM returned no log-probs although logprobs=0 was requested")
    return [position[token].logprob for token, position in zip(completion.token_ids, completion.logprobs)]


class _Engine:
    """A vLLM engine and what it holds: asleep or not, and the policy object whose weights it has (None: stale)."""

    def __init__(self, llm: Any, config_dir: Any) -> None:
        self.llm, self.asleep, self.loaded = llm, False, None
        self.config_dir = config_dir  # the engine's config.json, kept as long as the engine


_ENGINES: dict[tuple, _Engine] = {}
"""This process's engines, by what they are built from. vLLM's sleep-mode allocator serves one engine per process, so
every backend for the same architecture and settings shares one: the loop's GRPO runs of each arm and seed, its
evaluation and its Monte Carlo labelling."""


class VLLMBackend:
    """Samples with a vLLM engine in this process; ``sync_weights`` after each optimizer step keeps it on π_θ.

    Backends built for the same architecture and engine settings share one engine (``_ENGINES``); each keeps its own
    sampling settings and policy, and a new backend, like ``sync_weights``, pushes its policy's weights before its
    first sampling.
    """

    def __init__(self, model: Any, tokenizer: Any, max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                 *, max_model_len: int, gpu_memory_utilization: float = 0.3, sleep: bool = True, seed: int = 0,
                 max_num_seqs: int = 256, engine_args: dict[str, Any] | None = None, dtype: str = "auto") -> None:
        self._vllm = require_vllm()
        self.model, self.tokenizer, self.sleep_after_sampling = model, tokenizer, sleep
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.device = next(model.parameters()).device
        base = model.get_base_model() if is_lora(model) else model
        config = copy.deepcopy(base.config)
        config.architectures = [type(base).__name__]  # how vLLM picks its model class; unset on a model built in memory
        dtype = engine_dtype(dtype, str(next(model.parameters()).dtype).removeprefix("torch."))
        # the engine's seed only seeds unseeded requests, and every request here has its own seed: not part of the key
        key = (config.to_json_string(use_diff=False), dtype, max_model_len, gpu_memory_utilization, sleep, max_num_seqs,
               repr(sorted((engine_args or {}).items())))
        if key not in _ENGINES:
            config_dir = tempfile.TemporaryDirectory(prefix="prmloop-vllm-")
            config.save_pretrained(config_dir.name)  # the architecture only: the weights come by push
            _ENGINES[key] = _Engine(self._build(config_dir.name, dtype, max_model_len, gpu_memory_utilization, sleep,
                                                seed, max_num_seqs, engine_args), config_dir)
        self._engine = _ENGINES[key]
        self._engine.loaded = None  # this backend's policy may not be the weights the engine holds

    def _build(self, config_dir: str, dtype: str, max_model_len: int, gpu_memory_utilization: float, sleep: bool,
               seed: int, max_num_seqs: int, engine_args: dict[str, Any] | None) -> Any:
        try:
            with _in_process_engine():
                return self._vllm.LLM(
                    model=config_dir, load_format="dummy", skip_tokenizer_init=True, generation_config="vllm",
                    dtype=dtype, max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization,
                    enable_sleep_mode=sleep, seed=seed, max_num_seqs=max_num_seqs, logprobs_mode="raw_logprobs",
                    distributed_executor_backend="uni", **(engine_args or {}))
        except (ValueError, TypeError) as err:
            first_line = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise UserError(f"grpo.use_vllm: vLLM could not start its engine ({first_line}); check the grpo.vllm_* "
                            "settings") from None

    @property
    def llm(self) -> Any:
        return self._engine.llm

    @classmethod
    def from_configs(cls, model: Any, tokenizer: Any, grpo_cfg: Any, policy_cfg: Any, num_processes: int = 1, *,
                     max_new_tokens: int | None = None, temperature: float | None = None,
                     top_p: float | None = None) -> VLLMBackend:
        """The backend ``grpo.use_vllm`` asks for, from the GRPO and policy configs; one process only. The sampling
        settings default to GRPO's (``PolicySampler`` passes its own: greedy evaluation, labelling rollouts)."""
        if num_processes > 1:
            raise UserError(f"grpo.use_vllm: runs in one process only for now; this run has {num_processes} "
                            "(launch without accelerate's multi-process options, or set grpo.use_vllm=false)")
        return cls(model, tokenizer, policy_cfg.max_new_tokens if max_new_tokens is None else max_new_tokens,
                   grpo_cfg.temperature if temperature is None else temperature,
                   grpo_cfg.top_p if top_p is None else top_p,
                   max_model_len=policy_cfg.max_length, gpu_memory_utilization=grpo_cfg.vllm_gpu_memory_utilization,
                   sleep=grpo_cfg.vllm_sleep, seed=grpo_cfg.seed, max_num_seqs=engine_max_num_seqs(grpo_cfg),
                   engine_args=parse_engine_args(grpo_cfg.vllm_engine_args), dtype=grpo_cfg.vllm_dtype)

    def sync_weights(self, model: Any) -> None:
        """The engine must sample from ``model``'s current weights: they are pushed in at the next ``generate``."""
        self.model, self._engine.loaded = model, None

    @torch.no_grad()
    def generate(self, prompt_ids: list[list[int]], row_seeds: list[int]) -> Generation:
        if len(prompt_ids) != len(row_seeds):
            raise ValueError(f"{len(prompt_ids)} prompts for {len(row_seeds)} row seeds")
        with torch.autocast("cuda", enabled=False):  # the engine runs in this thread: keep the trainer's autocast out
            self._wake_up_current()
            outputs = self.llm.generate([{"prompt_token_ids": list(ids)} for ids in prompt_ids],
                                        [self._sampling_params(seed) for seed in row_seeds], use_tqdm=False)
            if self.sleep_after_sampling:
                self.llm.sleep(level=SLEEP_LEVEL)
                self._engine.asleep, self._engine.loaded = True, None  # level 2 released the weights
        completions = [output.outputs[0] for output in outputs]
        return generation_from_outputs([list(c.token_ids) for c in completions], [sampled_logps(c) for c in completions],
                                       self.eos_ids, self.pad_id, self.device)

    def _sampling_params(self, seed: int) -> Any:
        """One request: one sample from its own seed, the sampled token's raw log-prob, stop at any EOS id."""
        return self._vllm.SamplingParams(n=1, seed=seed, temperature=self.temperature, top_p=self.top_p,
                                         max_tokens=self.max_new_tokens, logprobs=0, stop_token_ids=self.eos_ids,
                                         detokenize=False)

    def _wake_up_current(self) -> None:
        """Wake the weights, push this backend's policy if the engine does not hold it, then wake the KV cache."""
        engine = self._engine
        if engine.asleep:
            torch.cuda.empty_cache()  # the update's freed blocks go back to the driver before vLLM reallocates
            self.llm.wake_up(tags=["weights"])
        if engine.loaded is not self.model:
            self.llm.apply_model(lambda engine_model: engine_model.load_weights(merged_weights(self.model)))
            if not engine.asleep:
                self.llm.reset_prefix_cache()  # cached keys/values were computed with the old weights
        if engine.asleep:
            torch.cuda.empty_cache()
            self.llm.wake_up(tags=["kv_cache"])
        engine.asleep, engine.loaded = False, self.model


def sample_with_vllm(grpo_cfg: Any, policy_cfg: Any) -> None:
    """From now on every ``PolicySampler`` of this process (evaluation, labelling) samples with the vLLM engine that
    GRPO uses (``grpo.use_vllm``), with the sampler's own temperature and length. The CLI calls it right after loading
    the config, so a bad ``grpo.vllm_*`` value, a missing vllm or a missing GPU is one line there, before any model
    is loaded."""
    check_vllm_settings(grpo_cfg)
    require_vllm()

    def backend(model: Any, tokenizer: Any, max_new_tokens: int, temperature: float, top_p: float) -> VLLMBackend:
        return VLLMBackend.from_configs(model, tokenizer, grpo_cfg, policy_cfg, max_new_tokens=max_new_tokens,
                                        temperature=temperature, top_p=top_p)

    rollout.SAMPLER_BACKEND = backend
