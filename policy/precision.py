"""Training precision: fp32 master weights by default; a one-line warning when the trainable weights are bf16/fp16.

AdamW adds its update straight to the weights. In bfloat16 (8 significant bits) a weight w can only move by about
|w|·2^-8 or more, so an update of lr ≈ 1e-6 on a weight of magnitude 0.02 (rounding step 1.2e-4) is rounded away:
measured on the tiny policy, 10 GRPO steps at lr 1e-6 change 1.7% of bf16 weights but 99.7% of fp32 ones (the
rest: embedding rows of tokens never seen), tests/test_precision.py. Mixed precision keeps the weights (and AdamW's state) in fp32 and runs the forwards in
bf16 under autocast (``grpo.mixed_precision: bf16``), which is how real-model configs should train.
"""

from __future__ import annotations

from typing import Any

import torch

LOW_PRECISION = (torch.bfloat16, torch.float16)


def low_precision_warning(model: Any, key: str = "policy.dtype") -> str | None:
    """The one-line warning when any trainable weight is bf16/fp16, else None."""
    dtypes = {p.dtype for p in model.parameters() if p.requires_grad}
    low = sorted(str(d).removeprefix("torch.") for d in dtypes if d in LOW_PRECISION)
    if not low:
        return None
    return (f"{key}: training {'/'.join(low)} weights directly: AdamW loses updates smaller than the weights' "
            "rounding step (most of them at lr 1e-6); for fp32 master weights with bf16 compute set policy.dtype="
            "float32 and grpo.mixed_precision=bf16")
