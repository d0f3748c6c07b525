"""Which accelerate setups the trainers run under: one process, or data parallel (DDP) over CPUs or GPUs.

Sharded engines are refused in one line before any work: under FSDP or DeepSpeed ZeRO the weights are split across
processes, and the trainers sample from whole weights, save with ``save_pretrained``, and check every optimizer step
themselves (DeepSpeed's engine steps the optimizer inside ``backward``, past the divergence and gradient checks).
For large policies use LoRA under DDP (``policy.lora_r``): π_ref and the optimizer state then stay small.
"""

from __future__ import annotations

from typing import Any

from prmloop.data.errors import UserError

SUPPORTED = ("NO", "MULTI_CPU", "MULTI_GPU", "MULTI_XPU", "MULTI_NPU", "MULTI_MLU", "MULTI_SDAA", "MULTI_MUSA", "MULTI_HPU",
             "MULTI_NEURON")
"""accelerate DistributedType names the trainers run under (one process, or DDP on some device)."""


def refuse_sharded(accelerator: Any, command: str) -> None:
    """UserError naming the accelerate setup when it shards the weights (FSDP, DeepSpeed, Megatron, ...)."""
    kind = getattr(accelerator.distributed_type, "name", str(accelerator.distributed_type))
    if kind not in SUPPORTED:
        raise UserError(f"{command}: accelerate's distributed_type {kind} is not supported (prmloop trains with one "
                        "process or DDP: configs/accelerate/ddp.yaml); for a large policy use LoRA (policy.lora_r)")
