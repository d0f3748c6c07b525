"""Reading and writing the files of a saved PRM: the checkpoint by Auto class, prm.json, and an untied LM head."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from prmloop.data.errors import UserError
from prmloop.data.hub import is_local, require_hub
from prmloop.data.vocab import load_tokenizer

PRM_CONFIG_FILE = "prm.json"
"""Marks a prmloop PRM directory (format, separator, positive index, mode, window, log-prob weights)."""
LM_HEAD_FILE = "lm_head.safetensors"
"""An untied LM head (for log-prob features / LM loss); tied models need none."""


def load_checkpoint(auto_class, path_or_name: str):
    """(model, tokenizer) from a directory or hub name; one-line UserError when absent, offline or not a model."""
    if not is_local(path_or_name):
        require_hub(str(path_or_name), "prm")
    try:
        model = auto_class.from_pretrained(path_or_name)
        tokenizer = load_tokenizer(path_or_name)
    except Exception as err:  # noqa: BLE001 -- missing/truncated weights, bad configs: many types, one line out
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise UserError(f"prm: cannot load {str(path_or_name)!r} ({first})") from None
    return model, tokenizer


def read_meta(path: str | Path) -> dict:
    """prm.json of a prmloop PRM ({} for an external checkpoint); a broken file is a UserError naming it."""
    file = Path(path) / PRM_CONFIG_FILE
    if not file.is_file():
        return {}
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{file}: not a readable PRM config ({type(err).__name__})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("separator"), str):
        raise UserError(f"{file}: not a PRM config (needs at least 'separator')")
    return meta


def is_tied(lm_head: torch.nn.Module, backbone: torch.nn.Module) -> bool:
    return lm_head.weight is backbone.get_input_embeddings().weight


def saved_lm_head(path: str | Path, model) -> torch.nn.Module | None:
    """The LM head of a saved token-classification PRM: the input embeddings when tied, else lm_head.safetensors."""
    embeddings = model.base_model.get_input_embeddings().weight  # (V, H)
    head = torch.nn.Linear(embeddings.shape[1], embeddings.shape[0], bias=False)
    file = Path(path) / LM_HEAD_FILE
    if getattr(model.config.get_text_config(), "tie_word_embeddings", False):
        head.weight = embeddings
    elif file.is_file():
        head.weight = torch.nn.Parameter(load_file(str(file))["weight"])
    else:
        return None
    return head
