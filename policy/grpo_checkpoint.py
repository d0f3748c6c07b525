"""GRPO checkpoints: what a resumable trainer state holds, written aside and swapped in, and the plain-model export.

A checkpoint directory holds ``policy/`` (save_pretrained; under LoRA the adapters only, whose adapter_config.json names
the base), ``reference/`` (π_ref, full fine-tuning with β > 0) or ``reference_adapters.pt`` (π_ref under LoRA),
``trainer_state.pt`` (optimizer, counters, RNG), and ``implicit_prm/`` when the reward model learns online (an implicit
PRM's ``save_pretrained`` directory with its online optimizer state, itself a PRM ``prmloop search`` can read); under
DeepSpeed the optimizer state is one ``optimizer_rank<i>.pt`` per process instead, so such a checkpoint resumes with as
many DeepSpeed processes. It never holds non-finite weights.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from ..utils.errors import UserError
from ..utils.jsonl import recover_dir, replace_dir
from . import lora
from .rewards import OnlineStepScorer

ONLINE_SCORER_DIR = "implicit_prm"
"""Where a checkpoint keeps a reward model that learns online (``policy.rewards.OnlineStepScorer``)."""


class Checkpointed(Protocol):
    """What a checkpoint reads from a trainer and restores into it (``policy.grpo.GRPOTrainer`` has all of it)."""

    accelerator: Any
    deepspeed: bool
    lora: bool
    optimizer: Any
    tokenizer: Any
    reference: Any
    reference_adapters: dict[str, Tensor] | None
    backend: Any
    scorer: Any
    step: int
    skipped_updates: int
    num_tokens: int
    skips_in_a_row: int

    @property
    def policy(self) -> Any:
        """The policy without its DDP wrapper."""


def save(trainer: Checkpointed, directory: Path) -> Path:
    """Write ``trainer``'s resumable state to ``directory`` (whole or not at all; the main process writes, except
    under DeepSpeed, where each process adds its shard of the optimizer state as ``optimizer_rank<i>.pt``). The caller
    checks first that the weights are finite: a checkpoint with non-finite weights is never written."""
    accelerator = trainer.accelerator
    staging = directory.with_name(directory.name + ".tmp")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    if trainer.deepspeed:
        torch.save(trainer.optimizer.optimizer.state_dict(), staging / f"optimizer_rank{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        trainer.policy.save_pretrained(staging / "policy")  # under LoRA: the adapters only
        trainer.tokenizer.save_pretrained(staging / "policy")
        if trainer.reference is not None:
            trainer.reference.save_pretrained(staging / "reference")
        if trainer.reference_adapters is not None:
            torch.save(trainer.reference_adapters, staging / "reference_adapters.pt")
        if isinstance(trainer.scorer, OnlineStepScorer):
            trainer.scorer.save_pretrained(staging / ONLINE_SCORER_DIR)
        rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
        state = {"optimizer": None if trainer.deepspeed else trainer.optimizer.state_dict(),
                 "deepspeed_processes": accelerator.num_processes if trainer.deepspeed else 0,
                 "step": trainer.step, "rng": rng, "skipped_updates": trainer.skipped_updates,
                 "num_tokens": trainer.num_tokens, "skips_in_a_row": trainer.skips_in_a_row}
        torch.save(state, staging / "trainer_state.pt")
        replace_dir(staging, directory, "grpo-checkpoint")
    accelerator.wait_for_everyone()
    return directory


def export(trainer: Checkpointed, directory: Path) -> None:
    """The policy as a plain save_pretrained model (LoRA adapters merged in) with its tokenizer."""
    if trainer.lora:
        lora.save_merged(trainer.policy, trainer.tokenizer, directory)
    else:
        trainer.policy.save_pretrained(directory)
        trainer.tokenizer.save_pretrained(directory)


def load(trainer: Checkpointed, directory: Path) -> None:
    """Restore a checkpoint written by ``save`` into ``trainer`` (same model architecture and config)."""
    recover_dir(directory)  # a kill inside an earlier save's swap left the previous checkpoint aside
    if not (directory / "trainer_state.pt").is_file():
        raise UserError(f"{directory}: not a GRPO checkpoint (no trainer_state.pt)")
    state = torch.load(directory / "trainer_state.pt", weights_only=False)
    saved_by = state.get("deepspeed_processes", 0)
    running = trainer.accelerator.num_processes if trainer.deepspeed else 0
    if saved_by != running:
        said = {0: "without DeepSpeed"}
        raise UserError(f"{directory}: this checkpoint was written {said.get(saved_by, f'by {saved_by} DeepSpeed processes')}"
                        f" and this run is {said.get(running, f'{running} DeepSpeed processes')}; resume it the way it "
                        "was written (its optimizer state is split by process)")
    if trainer.lora:
        lora.load_adapters(trainer.policy, directory / "policy")
    else:
        trainer.policy.load_state_dict(_saved_weights(trainer.policy, directory / "policy"))
    if trainer.reference is not None:
        trainer.reference.load_state_dict(_saved_weights(trainer.reference, directory / "reference"))
    if trainer.reference_adapters is not None:
        trainer.reference_adapters = torch.load(directory / "reference_adapters.pt", weights_only=True)
    _load_optimizer(trainer, directory, state)
    if isinstance(trainer.scorer, OnlineStepScorer) and (directory / ONLINE_SCORER_DIR).is_dir():
        trainer.scorer.load_online(directory / ONLINE_SCORER_DIR)
    if hasattr(trainer.backend, "sync_weights"):  # an engine with its own copy of the weights (vLLM)
        trainer.backend.sync_weights(trainer.policy)
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    trainer.step, trainer.skipped_updates, trainer.num_tokens = (state["step"], state["skipped_updates"],
                                                                 state["num_tokens"])
    trainer.skips_in_a_row = state.get("skips_in_a_row", 0)


def _load_optimizer(trainer: Checkpointed, directory: Path, state: dict) -> None:
    if not trainer.deepspeed:
        trainer.optimizer.load_state_dict(state["optimizer"])
        return
    shards = [directory / f"optimizer_rank{rank}.pt" for rank in range(trainer.accelerator.num_processes)]
    missing = [shard.name for shard in shards if not shard.is_file()]
    if missing:
        raise UserError(f"{directory}: the DeepSpeed optimizer state is incomplete (missing {', '.join(missing)})")
    # ZeRO restores its shard from the list of all shards, and its fp32 weights from the saved fp32 copy
    trainer.optimizer.optimizer.load_state_dict([torch.load(shard, weights_only=False) for shard in shards],
                                                load_from_fp32_weights=True)


def _saved_weights(like: Any, directory: Path) -> dict[str, Tensor]:
    dtype = next(like.parameters()).dtype
    return type(like).from_pretrained(directory, dtype=dtype).state_dict()
