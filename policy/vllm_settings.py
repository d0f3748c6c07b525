"""The vLLM engine's settings read from the GRPO config, checked without importing vllm (``grpo.vllm_*``)."""

from __future__ import annotations

import json
from typing import Any

from ..utils.errors import UserError, shown

ENGINE_DTYPES = ("auto", "bfloat16", "float16", "float32")
"""``grpo.vllm_dtype`` names; 'auto' is the policy's own weights' dtype (not vLLM's 'auto', which reads the config)."""
OLD_LOGPS = ("recompute", "engine")
"""``grpo.vllm_old_logps`` names."""
SET_BY_PRMLOOP = {
    "model": None, "load_format": None, "skip_tokenizer_init": None, "generation_config": None,
    "logprobs_mode": None, "distributed_executor_backend": None, "max_model_len": "policy.max_length",
    "dtype": "grpo.vllm_dtype", "gpu_memory_utilization": "grpo.vllm_gpu_memory_utilization",
    "enable_sleep_mode": "grpo.vllm_sleep", "seed": "grpo.seed", "max_num_seqs": "grpo.vllm_max_num_seqs",
}
"""``vllm.LLM`` arguments the backend sets itself, and the config key that sets each (None: fixed by the design)."""


def parse_engine_args(text: str) -> dict[str, Any]:
    """``grpo.vllm_engine_args`` as keyword arguments: '' -> {}; a JSON object whose keys prmloop does not set itself.
    Anything else is a one-line UserError naming the key."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"grpo.vllm_engine_args: not valid JSON ({err.msg} at character {err.pos}); write a JSON "
                        "object such as '{\"enforce_eager\": true}'") from None
    if not isinstance(value, dict):
        raise UserError(f"grpo.vllm_engine_args: must be a JSON object ({{...}}), got a JSON {type(value).__name__}")
    for key in value:
        if key in SET_BY_PRMLOOP:
            own = SET_BY_PRMLOOP[key]
            instead = f"set {own} instead" if own else "prmloop sets it itself"
            raise UserError(f"grpo.vllm_engine_args: {shown(key)} cannot be given here ({instead})")
    return value


def engine_dtype(setting: str, policy_dtype: str) -> str:
    """The dtype name the engine is built with: ``grpo.vllm_dtype``, or with 'auto' the policy's weights' dtype."""
    return policy_dtype if setting == "auto" else setting


def engine_max_num_seqs(cfg: Any) -> int:
    """vLLM's max_num_seqs: ``grpo.vllm_max_num_seqs``, or 0 -> ``grpo.generation_batch_size``."""
    return cfg.vllm_max_num_seqs or cfg.generation_batch_size


def check_vllm_settings(cfg: Any) -> None:
    """UserError naming the key for ``grpo.vllm_*`` settings that no single field's check can refuse (checked
    whatever ``use_vllm`` says, so a config file is either right or refused): the importance-sampling cap with the
    engine's log-probs, and the engine arguments' JSON. Each value's own range sits beside its field."""
    if cfg.vllm_is_cap and cfg.vllm_old_logps != "recompute":
        raise UserError("grpo.vllm_is_cap: importance sampling needs the trainer's own log-probs; set "
                        "grpo.vllm_old_logps=recompute or grpo.vllm_is_cap=0")
    parse_engine_args(cfg.vllm_engine_args)
