"""Reading and writing the files of a saved PRM: the checkpoint by Auto class, prm.json, and an untied LM head."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ..data.task_tokenizer import load_tokenizer
from ..utils.errors import UserError
from ..utils.hub import is_local, require_hub

PRM_CONFIG_FILE = "prm.json"
"""Marks a prmloop PRM directory (format, separator, positive index, mode, window, log-prob weights)."""
LM_HEAD_FILE = "lm_head.safetensors"
"""An untied LM head (for log-prob features / LM loss); tied models need none."""


def key_list(keys) -> str:
    """Up to 6 sorted key names, then how many more (for one-line errors)."""
    keys = sorted(keys)
    return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")


def check_loading_info(path_or_name, info: dict, allowed_unexpected: tuple[str, ...] = ()) -> None:
    """UserError naming the keys when a checkpoint lacks weights the model needs (transformers would initialise them
    randomly: a random head scores differently on every load) or holds weights the model would drop."""
    missing = set(info.get("missing_keys") or ())
    unexpected = {key for key in info.get("unexpected_keys") or () if key not in allowed_unexpected}
    if missing:
        raise UserError(f"{path_or_name}: checkpoint lacks weights {key_list(missing)}; refusing to score with randomly "
                        "initialised ones (to start a fresh head from a causal LM use prm train --init)")
    if unexpected:
        raise UserError(f"{path_or_name}: checkpoint has weights this format does not use: {key_list(unexpected)}; "
                        "set prm.format to the layout it was saved in")


SNAPSHOT_IGNORE = ("*.gguf", "*.onnx", "*.msgpack", "*.h5", "*.ot", "*.pth", "original/*", "onnx/*")
"""Files of a hub repository that no transformers/PyTorch load reads (other frameworks' weights)."""


def local_checkpoint(path_or_name: str | Path, key: str = "prm") -> str:
    """A local directory for a checkpoint: the path itself, or the hub cache's snapshot of a hub name (downloaded if
    needed; with HF_HUB_OFFLINE=1 the cached copy). Every reader after this one (format detection, safetensors keys,
    the trust_remote_code gate) then sees the real files of a hub PRM, not only its config. UserError naming ``key``
    when the name is not on the hub or not in the cache."""
    if is_local(path_or_name):
        return str(path_or_name)
    require_hub(str(path_or_name), key)
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(str(path_or_name), ignore_patterns=list(SNAPSHOT_IGNORE))
    except Exception as err:  # noqa: BLE001 -- not found, gated, offline cache miss: many types, one line out
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise UserError(f"{key}: cannot get {str(path_or_name)!r} from the hub or its cache ({first})") from None


def load_checkpoint(auto_class, path_or_name: str, trust_remote_code: bool = False,
                    allowed_unexpected: tuple[str, ...] = ()):
    """(model, tokenizer) from a directory or hub name in float32 (explicit: transformers 5 would keep a bf16
    checkpoint in bf16); one-line UserError when absent, offline, not a model, or missing/unexpected weights."""
    if not is_local(path_or_name):
        require_hub(str(path_or_name), "prm")
    try:
        model, info = auto_class.from_pretrained(path_or_name, dtype=torch.float32, output_loading_info=True,
                                                 trust_remote_code=trust_remote_code)
        tokenizer = load_tokenizer(path_or_name)
    except Exception as err:  # noqa: BLE001 -- missing/truncated weights, bad configs: many types, one line out
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise UserError(f"prm: cannot load {str(path_or_name)!r} ({first})") from None
    check_loading_info(path_or_name, info, allowed_unexpected)
    return model, tokenizer


def weight_files(path: str | Path) -> list[Path]:
    """The safetensors files of a local checkpoint (one file or the shards its index names); [] if none."""
    path = Path(path)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        return [path / shard for shard in shards]
    single = path / "model.safetensors"
    return [single] if single.is_file() else []


def weight_names(path: str | Path) -> set[str]:
    """Every tensor name in a local checkpoint's safetensors files."""
    names: set[str] = set()
    for file in weight_files(path):
        with safe_open(str(file), framework="pt") as handle:
            names.update(handle.keys())
    return names


def read_weights(path: str | Path, names: list[str]) -> dict[str, torch.Tensor]:
    """The named tensors (float32) of a local checkpoint; UserError naming those it lacks."""
    found: dict[str, torch.Tensor] = {}
    for file in weight_files(path):
        with safe_open(str(file), framework="pt") as handle:
            available = set(handle.keys())
            found.update({name: handle.get_tensor(name).float() for name in names if name in available})
    missing = [name for name in names if name not in found]
    if missing:
        raise UserError(f"{path}: checkpoint lacks weights {key_list(missing)}")
    return found


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
    """The LM head of a saved token-classification PRM: the input embeddings when tied, else ``lm_head.weight`` of the
    checkpoint (saves since the remote-code export) or lm_head.safetensors (older saves), else None."""
    embeddings = model.base_model.get_input_embeddings().weight  # (V, H)
    head = torch.nn.Linear(embeddings.shape[1], embeddings.shape[0], bias=False)
    file = Path(path) / LM_HEAD_FILE
    if getattr(model.config.get_text_config(), "tie_word_embeddings", False):
        head.weight = embeddings
    elif "lm_head.weight" in weight_names(path):
        head.weight = torch.nn.Parameter(read_weights(path, ["lm_head.weight"])["lm_head.weight"])
    elif file.is_file():
        head.weight = torch.nn.Parameter(load_file(str(file))["weight"].float())
    else:
        return None
    return head
