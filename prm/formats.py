"""Which kind of reward model a directory (or hub name) holds, and loading it to score or to train.

Formats (``prm.format``): ``prmloop`` (prm.json beside a token-classification checkpoint), ``token_classification``
(any ``*ForTokenClassification`` PRM: 2 classes with ``prm.positive_index`` good, or 1 logit; read at
``prm.step_separator``), ``math_shepherd`` (a causal LM read at the step tag: P(``good_token``) vs P(``bad_token``)),
or ``auto``: prm.json -> prmloop; a token-classification architecture -> token_classification; a causal LM -> a
fresh PRM when training starts from it, and an error when it is asked to score (say ``math_shepherd`` if it is one).
"""

from __future__ import annotations

import json
from pathlib import Path

from prmloop.data.errors import UserError
from prmloop.data.hub import is_local, require_hub
from prmloop.prm.checkpoint import PRM_CONFIG_FILE
from prmloop.prm.config import PRMConfig
from prmloop.prm.model import StepRewardModel

FORMATS = ("auto", "prmloop", "token_classification", "math_shepherd")


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
    """'prmloop', 'token_classification', 'causal_lm', or a UserError naming what was found."""
    if (Path(path_or_name) / PRM_CONFIG_FILE).is_file():
        return "prmloop"
    found = architectures(path_or_name)
    if any(name.endswith("ForTokenClassification") for name in found):
        return "token_classification"
    if any(name.endswith(("ForCausalLM", "LMHeadModel")) for name in found):
        return "causal_lm"
    raise UserError(f"{path_or_name}: cannot tell what kind of reward model this is (architectures {found or 'none'}); "
                    "set prm.format to token_classification or math_shepherd")


def _format(path: str | Path, cfg: PRMConfig) -> str:
    if cfg.format not in FORMATS:
        raise UserError(f"prm.format: unknown {cfg.format!r}; valid: {', '.join(FORMATS)}")
    return detect_format(path) if cfg.format == "auto" else cfg.format


def load_reward_model(path: str | Path, cfg: PRMConfig) -> StepRewardModel:
    """A reward model to score with (``grpo --prm``, the loop, ``prm eval``), its window = ``prm.max_length``."""
    kind = _format(path, cfg)
    if kind == "prmloop":
        return StepRewardModel.from_pretrained(path, cfg.max_length)
    if kind == "token_classification":
        return StepRewardModel.from_token_classification(str(path), cfg.step_separator, cfg.positive_index,
                                                         cfg.max_length)
    if kind == "math_shepherd":
        return StepRewardModel.from_math_shepherd(str(path), cfg.step_separator, cfg.good_token, cfg.bad_token,
                                                  cfg.max_length)
    raise UserError(f"{path}: a causal LM, not a reward model; train one from it (prmloop prm train --init), or set "
                    "prm.format=math_shepherd if it is a Math-Shepherd-style PRM")


def init_reward_model(path: str | Path, cfg: PRMConfig, mode: str) -> tuple[StepRewardModel, str]:
    """(model, what happened) to train from ``path``: a causal LM gets a fresh (bad, good) head, said so; a PRM of
    any format is continued with every trained weight it has."""
    kind = _format(path, cfg)
    if kind == "causal_lm":
        model = StepRewardModel.from_policy(str(path), mode, cfg.max_length, cfg.step_separator, cfg.logp_features)
        return model, f"fresh PRM from causal LM {path}: newly initialised head (bad, good)" + (
            ", log-prob feature weights" if cfg.logp_features else "")
    model = load_reward_model(path, cfg)
    if model.mode != mode:
        raise UserError(f"prm.mode: training in {mode!r} mode, but {path} is a {model.mode!r} reward model")
    return model, f"continued {kind} reward model {path}"
