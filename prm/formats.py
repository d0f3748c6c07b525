"""Which kind of reward model a directory (or hub name) holds, and loading it to score or to train.

Formats (``prm.format``), each a loader in ``LOADERS``: ``prmloop`` (prm.json beside a token-classification
checkpoint), ``token_classification`` (any ``*ForTokenClassification`` PRM: 2 classes with ``prm.positive_index`` good,
or 1 logit; read at ``prm.step_separator``; one whose ``auto_map`` ships its own code runs that code, only with
``prm.trust_remote_code``), ``qwen_prm`` (Qwen2.5-Math-PRM layout, read natively at ``<extra_0>``), ``value_head``
(Skywork-o1-Open-PRM: sigmoid of a value head at ``"\n"``), ``math_shepherd`` (a causal LM read at the step tag:
P(``good_token``) vs P(``bad_token``)) and ``chat_turns`` (RLHFlow: one chat turn per step, P(good) vs P(bad) at the
assistant's turn), and ``implicit`` (``prm.implicit``: a causal LM φ, its frozen reference in ``reference/`` and
implicit_prm.json). ``auto`` (``detect_format``), first match wins: implicit_prm.json -> implicit (no other layout
has that file, and φ alone would read as a plain causal LM); prm.json -> prmloop; architecture
Qwen2ForProcessRewardModel -> qwen_prm; architecture Qwen2ForPrmModel or ``v_head.summary.weight`` in the weights ->
value_head; a ``*ForTokenClassification`` architecture or an ``auto_map`` for AutoModelForTokenClassification ->
token_classification; any other ``auto_map`` -> an error (prmloop does not know that code); a causal LM -> a fresh PRM
when training starts from it, and an error when it is asked to score (Math-Shepherd and chat-turn PRMs are plain
causal LMs: nothing in the checkpoint tells them apart from any other LM, so the user names the format).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from ..utils.errors import UserError
from ..utils.hub import is_local, require_hub
from .chat_turns import ChatTurnPRM
from .checkpoint import PRM_CONFIG_FILE, local_checkpoint
from .config import PRMConfig
from .hub_formats import (
    QWEN_PRM_ARCHITECTURE,
    VALUE_HEAD,
    VALUE_HEAD_ARCHITECTURE,
    RemoteTokenClassifierPRM,
    check_trusted,
    has_weights,
    load_qwen_prm,
    load_value_head,
    needs_remote_code,
    read_config,
)
from .implicit import IMPLICIT_CONFIG_FILE, ImplicitPRM
from .model import StepRewardModel


def architectures(path_or_name: str | Path) -> list[str]:
    """The ``architectures`` of a checkpoint's config.json (local or hub); UserError when there is no readable one."""
    local = Path(path_or_name) / "config.json"
    try:
        if local.is_file():
            return list(json.loads(local.read_text(encoding="utf-8")).get("architectures") or [])
        if is_local(path_or_name):
            missing = "no such directory" if not Path(path_or_name).exists() else "no config.json; not a model directory"
            raise UserError(f"{path_or_name}: {missing}")
        require_hub(str(path_or_name), "prm")
        from transformers import AutoConfig

        return list(AutoConfig.from_pretrained(str(path_or_name)).architectures or [])
    except (OSError, ValueError, AttributeError) as err:
        raise UserError(f"{path_or_name}: unreadable model config ({str(err).strip().splitlines()[0][:120]})") from None


def detect_format(path_or_name: str | Path) -> str:
    """'implicit', 'prmloop', 'qwen_prm', 'value_head', 'token_classification', 'causal_lm', or a UserError naming
    what was found (rules in the module docstring)."""
    if (Path(path_or_name) / IMPLICIT_CONFIG_FILE).is_file():
        return "implicit"
    if (Path(path_or_name) / PRM_CONFIG_FILE).is_file():
        return "prmloop"
    found = architectures(path_or_name)
    config = read_config(path_or_name)
    if QWEN_PRM_ARCHITECTURE in found:
        return "qwen_prm"
    if VALUE_HEAD_ARCHITECTURE in found or has_weights(path_or_name, VALUE_HEAD):
        return "value_head"
    if any(name.endswith("ForTokenClassification") for name in found) or needs_remote_code(
            config, "AutoModelForTokenClassification"):
        return "token_classification"
    if config.get("auto_map"):
        raise UserError(f"{path_or_name}: architecture {found or 'none'} comes with its own model code "
                        f"({', '.join(config['auto_map'])}) that prmloop does not implement; set prm.format to the "
                        f"layout it follows ({', '.join(FORMATS[1:])})")
    if any(name.endswith(("ForCausalLM", "LMHeadModel")) for name in found):
        return "causal_lm"
    raise UserError(f"{path_or_name}: cannot tell what kind of reward model this is (architectures {found or 'none'}); "
                    f"set prm.format to one of {', '.join(FORMATS[1:])}")


def _format(path: str | Path, cfg: PRMConfig) -> str:
    if cfg.format not in FORMATS:
        raise UserError(f"prm.format: unknown {cfg.format!r}; valid: {', '.join(FORMATS)}")
    return detect_format(path) if cfg.format == "auto" else cfg.format


def load_token_classification(path: str | Path, cfg: PRMConfig):
    """An external token-classification PRM; one with its own code (auto_map) runs it, if prm.trust_remote_code."""
    config = read_config(path)
    check_trusted(path, config, cfg.trust_remote_code, "AutoModelForTokenClassification")
    if needs_remote_code(config, "AutoModelForTokenClassification"):
        return RemoteTokenClassifierPRM.load(path, cfg.step_separator, cfg.positive_index, cfg.max_length)
    return StepRewardModel.from_token_classification(str(path), cfg.step_separator, cfg.positive_index,
                                                     cfg.max_length)


def refuse_causal_lm(path: str | Path, cfg: PRMConfig):
    raise UserError(f"{path}: a causal LM, not a reward model; train one from it (prmloop prm train --init), or set "
                    "prm.format=math_shepherd (a step tag read as '+'/'-') or prm.format=chat_turns (RLHFlow style) "
                    "if it is a PRM")


LOADERS: dict[str, Callable[[str | Path, PRMConfig], object]] = {
    "prmloop": lambda path, cfg: StepRewardModel.from_pretrained(path, cfg.max_length),
    "token_classification": load_token_classification,
    "qwen_prm": lambda path, cfg: load_qwen_prm(path, cfg.max_length),
    "value_head": lambda path, cfg: load_value_head(path, cfg.max_length),
    "math_shepherd": lambda path, cfg: StepRewardModel.from_math_shepherd(str(path), cfg.step_separator, cfg.good_token,
                                                                          cfg.bad_token, cfg.max_length),
    "chat_turns": lambda path, cfg: ChatTurnPRM.load(path, cfg.good_token, cfg.bad_token, cfg.max_length),
    "implicit": lambda path, cfg: ImplicitPRM.from_pretrained(path, cfg.max_length),
    "causal_lm": refuse_causal_lm,
}
"""Format -> how a reward model in it loads for scoring (all give ``score_steps(prompts, solutions)``)."""
FORMATS = ("auto", *[name for name in LOADERS if name != "causal_lm"])
"""Valid ``prm.format`` values."""


def load_reward_model(path: str | Path, cfg: PRMConfig):
    """A reward model to score with (``grpo --prm``, the loop, ``prm eval``), its window = ``prm.max_length``. A hub
    name is read from its local snapshot (``local_checkpoint``)."""
    path = local_checkpoint(path)
    return LOADERS[_format(path, cfg)](path, cfg)


def init_reward_model(path: str | Path, cfg: PRMConfig, mode: str) -> tuple[StepRewardModel, str]:
    """(model, what happened) to train from ``path``: a causal LM gets a fresh (bad, good) head, said so; a PRM is
    continued with every trained weight it has (formats prmloop cannot save again are refused)."""
    path = local_checkpoint(path, "prm.init")
    kind = _format(path, cfg)
    if kind == "causal_lm":
        model = StepRewardModel.from_policy(str(path), mode, cfg.max_length, cfg.step_separator, cfg.logp_features)
        return model, f"fresh PRM from causal LM {path}: newly initialised head (bad, good)" + (
            ", log-prob feature weights" if cfg.logp_features else "")
    model = load_reward_model(path, cfg)
    if not isinstance(model, StepRewardModel) or not isinstance(model.head, torch.nn.Linear):
        raise UserError(f"prm.init: {path} is a {kind} PRM, which prmloop scores with but cannot continue training; "
                        "start from a causal LM or a token-classification PRM")
    if model.mode != mode:
        raise UserError(f"prm.mode: training in {mode!r} mode, but {path} is a {model.mode!r} reward model")
    return model, f"continued {kind} reward model {path}"


def init_implicit_model(path: str | Path, cfg: PRMConfig) -> tuple[ImplicitPRM, str]:
    """(implicit PRM, what happened) to train from ``path``: a saved implicit PRM is continued; a causal LM becomes φ
    and a frozen copy of it π_ref (β = prm.implicit_beta); any other reward model is refused (it has no π_φ/π_ref)."""
    path = local_checkpoint(path, "prm.init")
    kind = _format(path, cfg)
    if kind == "implicit":
        return ImplicitPRM.from_pretrained(path, cfg.max_length), f"continued implicit PRM {path}"
    if kind != "causal_lm":
        raise UserError(f"prm.init: {path} is a {kind} reward model; an implicit PRM starts from a causal LM (e.g. the "
                        "policy) or continues an implicit PRM")
    model = ImplicitPRM.from_policy(str(path), cfg.implicit_beta, cfg.max_length, cfg.step_separator)
    return model, f"fresh implicit PRM from causal LM {path}: φ and π_ref both start as it (β {cfg.implicit_beta})"


def online_implicit_model(path: str | Path, cfg: PRMConfig, lr: float, update: str) -> ImplicitPRM:
    """An implicit PRM for GRPO's online reward (``grpo.reward_source: implicit``): ``init_implicit_model``, then the
    online update's settings (``grpo.implicit_lr``, ``grpo.implicit_update``), micro-batched by prm.eval_batch_size."""
    model, _ = init_implicit_model(path, cfg)
    return model.configure_online(lr, update, cfg.eval_batch_size)
