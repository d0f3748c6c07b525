"""Which accelerate setups the trainers run under: one process, data parallel (DDP), or DeepSpeed ZeRO stage 1/2.

Under DDP and ZeRO-1/2 every process holds the whole weights, which the trainers need: they sample from them, save
them with ``save_pretrained`` and check each optimizer step. ZeRO-1/2 shard the optimizer state (and ZeRO-2 the
gradients) over the processes: 20-26% less peak memory per process than DDP in ``bench/memory.py --processes 2``.
Engines that shard the weights themselves (ZeRO-3, FSDP, Megatron) are refused in one line before any work.

DeepSpeed steps the optimizer inside its engine (clipping, skipping a step whose gradient norm is NaN/inf), so the
trainers drive the engine directly (``backward``, ``step``) and set its micro-batch, clipping and accumulation from
their own config (``configure_deepspeed``). Without CUDA (two CPU processes, the tests) DeepSpeed runs over gloo.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs

from .errors import UserError


def _quiet_deepspeed_without_an_accelerator() -> None:
    """accelerate imports DeepSpeed wherever it is installed, and DeepSpeed then warns on every run without a GPU
    that it falls back to the CPU. Name the CPU up front: the same choice, without the warning."""
    has_accelerator = (torch.accelerator.current_accelerator() is not None if hasattr(torch, "accelerator")
                       else torch.cuda.is_available())
    if not has_accelerator:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


_quiet_deepspeed_without_an_accelerator()

SUPPORTED = ("NO", "MULTI_CPU", "MULTI_GPU", "MULTI_XPU", "MULTI_NPU", "MULTI_MLU", "MULTI_SDAA", "MULTI_MUSA", "MULTI_HPU",
             "MULTI_NEURON")
"""accelerate DistributedType names of data parallelism (one process, or DDP on some device)."""

ZERO_STAGES = (0, 1, 2)
"""DeepSpeed ZeRO stages that keep the whole weights in every process."""


def make_accelerator(command: str, **kwargs: Any) -> Accelerator:
    """An ``Accelerator(**kwargs)`` for ``command``; under ``accelerate launch`` with DeepSpeed and no CUDA, over gloo.

    ``mixed_precision="no"`` (the configs' default) defers to the launcher: the accelerate config file's
    ``mixed_precision`` then applies (without a launcher, none). Refuses (one line) a missing DeepSpeed; the trainers
    then check the setup with ``check_engine`` (also for an accelerator they are given).
    """
    if kwargs.get("mixed_precision") == "no":
        kwargs["mixed_precision"] = None  # accelerate reads ACCELERATE_MIXED_PRECISION, set by accelerate launch
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        try:
            import deepspeed  # noqa: F401  # optional: the 'deepspeed' extra, checked only when asked for
        except ImportError:
            raise UserError(f"{command}: accelerate launch asks for DeepSpeed, which is not installed; install the "
                            "extra: pip install 'prmloop[deepspeed]'") from None
        if not torch.cuda.is_available():  # accelerate would fall back to one process; DeepSpeed's CPU backend is gloo
            kwargs["kwargs_handlers"] = [*kwargs.get("kwargs_handlers", []), InitProcessGroupKwargs(backend="gloo")]
    return Accelerator(**kwargs)


def is_deepspeed(accelerator: Any) -> bool:
    return getattr(accelerator.distributed_type, "name", "") == "DEEPSPEED"


def check_engine(accelerator: Any, command: str) -> None:
    """UserError naming the accelerate setup when it shards the weights (ZeRO-3, FSDP, Megatron, ...)."""
    kind = getattr(accelerator.distributed_type, "name", str(accelerator.distributed_type))
    if kind == "DEEPSPEED":
        stage = accelerator.state.deepspeed_plugin.zero_stage
        if stage not in ZERO_STAGES:
            raise UserError(f"{command}: DeepSpeed ZeRO stage {stage} shards the weights, and prmloop samples from and "
                            "saves whole weights; use ZeRO stage 2 (configs/accelerate/deepspeed_zero2.yaml), or LoRA "
                            "(policy.lora_r) for a policy too large for one device")
    elif kind not in SUPPORTED:
        raise UserError(f"{command}: accelerate's distributed_type {kind} is not supported (prmloop trains with one "
                        "process, DDP or DeepSpeed ZeRO-1/2: configs/accelerate/); for a large policy use LoRA "
                        "(policy.lora_r)")


def configure_deepspeed(accelerator: Any, micro_batch: int, max_grad_norm: float) -> None:
    """Set DeepSpeed's micro-batch, clipping and accumulation from the trainer's config (before ``prepare``).

    The trainers accumulate micro-batches themselves (one engine ``step`` per optimizer step), so DeepSpeed's
    ``gradient_accumulation_steps`` is 1 and its loss scaling by it a no-op; ``gradient_clipping`` is the trainer's.
    """
    if not is_deepspeed(accelerator):
        return
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    config["train_micro_batch_size_per_gpu"] = micro_batch
    config["gradient_accumulation_steps"] = 1
    config["train_batch_size"] = micro_batch * accelerator.num_processes
    config["gradient_clipping"] = max_grad_norm
