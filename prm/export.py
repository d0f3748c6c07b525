"""Saving a StepRewardModel so that plain transformers scores it as prmloop does: weights, remote code, model card.

What a saved directory holds: ``config.json`` (the backbone's config, 2 classes ``bad``/``good`` or 1 logit ``good``,
``prmloop_separator_id`` / ``prmloop_positive_index`` / ``prmloop_logp_weight``, and ``auto_map`` pointing
``AutoModelForTokenClassification`` at ``modeling_prmloop.py``), ``model.safetensors`` (backbone, head and, for an
untied model, ``lm_head.weight``), ``modeling_prmloop.py`` (``prm/hub_modeling.py`` with the backbone's names filled in),
the tokenizer, ``prm.json`` (prmloop's own contract) and ``README.md`` (how to load and score it outside prmloop).
Without ``trust_remote_code`` transformers loads the standard ``*ForTokenClassification`` (the log-prob part of the
score is then missing); with it, the saved modeling file adds it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from ..utils.errors import UserError
from . import hub_modeling
from .checkpoint import PRM_CONFIG_FILE, is_tied
from .encoding import separator_id
from .features import LOGP_FEATURES

MODELING_FILE = "modeling_prmloop.py"
"""The remote-code file written beside the weights (``auto_map`` names it)."""
AUTO_MAP = {"AutoModelForTokenClassification": "modeling_prmloop.PrmloopForTokenClassification"}
"""config.json's ``auto_map`` of a saved PRM."""
LABELS = {0: "bad", 1: "good"}
"""Class names of the saved 2-class head (``positive_index`` 1 = good)."""


def remote_class(config, base_prefix: str, head_name: str) -> type:
    """``hub_modeling.PrmloopForTokenClassification`` bound to this backbone's config class and names."""
    attrs = {"config_class": type(config), "base_model_prefix": base_prefix, "head_name": head_name}
    return type("PrmloopForTokenClassification", (hub_modeling.PrmloopForTokenClassification,), attrs)


def modeling_source(config, base_prefix: str, head_name: str) -> str:
    """The text of ``modeling_prmloop.py`` for this backbone (the template's PRMLOOP lines filled in)."""
    lines = []
    for line in Path(hub_modeling.__file__).read_text(encoding="utf-8").splitlines():
        if line.endswith("# PRMLOOP:config"):
            line = f"from transformers import {type(config).__name__} as PrmloopConfig  # PRMLOOP:config"
        elif line.endswith("# PRMLOOP:prefix"):
            line = f"BASE_MODEL_PREFIX = {base_prefix!r}  # PRMLOOP:prefix"
        elif line.endswith("# PRMLOOP:head"):
            line = f"HEAD_NAME = {head_name!r}  # PRMLOOP:head"
        lines.append(line)
    return "\n".join(lines) + "\n"


def export_config(model):
    """The saved config: the backbone's, with class names, the prmloop reading and the auto_map."""
    config = copy.deepcopy(model.config)
    config.id2label = dict(LABELS) if model.head.out_features == 2 else {0: "good"}
    config.label2id = {name: index for index, name in config.id2label.items()}
    config.prmloop_separator_id = separator_id(model.tokenizer, model.separator)
    config.prmloop_positive_index = model.positive_index
    config.prmloop_logp_weight = None if model.logp_weight is None else model.logp_weight.detach().cpu().tolist()
    config.auto_map = dict(AUTO_MAP)
    return config


def save_reward_model(model, out_dir: str | Path) -> Path:
    """Write ``model`` (a StepRewardModel, LoRA already merged) to ``out_dir`` as described in the module docstring."""
    if not isinstance(model.head, torch.nn.Linear):
        raise UserError(f"prm save: a {type(model.head).__name__} head (e.g. Qwen2.5-Math-PRM's MLP) cannot be saved "
                        "as a token-classification PRM; score with it, or train from a causal LM (prm train --init)")
    from transformers import AutoModelForTokenClassification

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    backbone = model.backbone
    with torch.device("meta"):
        reference = AutoModelForTokenClassification.from_config(copy.deepcopy(model.config))
    base_prefix = reference.base_model_prefix
    head_name = next(name for name in ("score", "classifier") if isinstance(getattr(reference, name, None),
                                                                              torch.nn.Linear))
    config = export_config(model)
    with torch.device("meta"):
        saved = remote_class(config, base_prefix, head_name)(config)
    state = {f"{base_prefix}.{key}": value for key, value in backbone.state_dict().items()}
    state[f"{head_name}.weight"] = model.head.weight
    state[f"{head_name}.bias"] = (model.head.bias if model.head.bias is not None
                                  else torch.zeros(model.head.out_features, device=model.head.weight.device))
    if saved.lm_head is not None:
        if model.lm_head is None or is_tied(model.lm_head, backbone):
            raise UserError("prm save: an untied model without its LM head; load the PRM with its lm_head")
        state["lm_head.weight"] = model.lm_head.weight
    saved.load_state_dict({k: v.detach() for k, v in state.items()}, assign=True, strict=True)
    saved.save_pretrained(out_dir)
    (out_dir / MODELING_FILE).write_text(modeling_source(config, base_prefix, head_name), encoding="utf-8")
    model.tokenizer.save_pretrained(out_dir)
    meta = {"format": "prmloop", "separator": model.separator, "positive_index": model.positive_index,
            "mode": model.mode, "max_length": model.max_length, "logp_features": list(LOGP_FEATURES),
            "logp_weight": config.prmloop_logp_weight}
    (out_dir / PRM_CONFIG_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    (out_dir / "README.md").write_text(model_card(meta, model.head.out_features), encoding="utf-8")
    return out_dir


def model_card(meta: dict, classes: int) -> str:
    """README.md of a saved PRM: what it is, how to load it and read a step's score with plain transformers."""
    read = "softmax(logits, -1)[..., 1]" if classes == 2 else "sigmoid(logits[..., 0])"
    classes_line = ("2 classes: 0 = bad, 1 = good (`positive_index` 1)" if classes == 2
                    else "1 logit: P(good) = sigmoid(logit)")
    logp = meta["logp_weight"] is not None
    caveat = (
        "This PRM adds the backbone's own log-prob features of each step (min and mean token log-prob, min margin to "
        f"the argmax, weights {meta['logp_weight']}) to the head's logit. Load it with `trust_remote_code=True` "
        "(the saved `modeling_prmloop.py` computes them; pass `prompt_lengths`). Plain "
        "`AutoModelForTokenClassification` without remote code gives the head's part of the score only, which is NOT "
        "the PRM's score." if logp else
        "This PRM has no log-prob features: plain `AutoModelForTokenClassification` (no remote code) gives exactly "
        "prmloop's scores.")
    return f"""---
library_name: transformers
tags: [process-reward-model, prmloop]
---
# Step reward model (prmloop)

A process reward model saved by prmloop ({meta['mode']} mode): it scores each reasoning step of a solution.

- Input: the prompt's tokens, then each step's tokens followed by the separator {meta['separator']!r} (one token).
  A step is read AT its separator, after the whole step; the last step gets a separator too.
- Head: {classes_line}. P(step correct) = `{read}` at each separator.
- Window used in training: {meta['max_length']} tokens.

{caveat}

```python
import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer

path = "THIS_DIR"
tokenizer = AutoTokenizer.from_pretrained(path)
model = AutoModelForTokenClassification.from_pretrained(path, trust_remote_code=True, dtype=torch.float32).eval()
prompt, steps = "Q: 2 + 3 * 4?\\n", ["3 * 4 = 12", "2 + 12 = 14"]
sep = tokenizer({meta['separator']!r}, add_special_tokens=False)["input_ids"]
ids = tokenizer(prompt)["input_ids"]
prompt_length, reads = len(ids), []
for step in steps:
    ids += tokenizer(step, add_special_tokens=False)["input_ids"] + sep
    reads.append(len(ids) - 1)
with torch.no_grad():
    logits = model(input_ids=torch.tensor([ids]), prompt_lengths=torch.tensor([prompt_length])).logits[0]
print({read.replace('logits', 'logits[reads]')})  # P(correct) per step
```

`prm.json` is prmloop's own record (separator, positive index, mode, window, log-prob weights); prmloop loads this
directory with `prm.format: auto`.
"""
