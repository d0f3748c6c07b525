"""Loading the experiment config: strict YAML, --set overrides and validation; saving it and checking a resume.

Strict means: an unknown key or a value of the wrong type is a UserError naming the key and the file; a missing file is
one clear line. ``--set section.key=value`` values are read as YAML scalars and coerced to the field's type.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml

from ..utils.errors import UserError, shown
from ..utils.jsonl import atomic_write_text
from .experiment import CompareConfig, ExperimentConfig, LoopConfig, TrackingConfig
from .validate import validate

__all__ = ["CompareConfig", "ExperimentConfig", "LoopConfig", "TrackingConfig", "apply_override", "check_resume",
           "config_to_yaml", "load_config", "read_yaml", "save_config"]
"""The dataclasses are re-exported: callers import the config and its loader from one place."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, where: str, from_cli: bool) -> Any:
    """Check (and for --set, convert) ``value`` against the field type ``tp``; UserError names the key."""
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if from_cli and isinstance(value, str):  # YAML 1.1 reads '1e-3' as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif typing.get_origin(tp) is list:
        (item_type,) = typing.get_args(tp)
        if from_cli and isinstance(value, str):  # --set compare.arms=a,b
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            return [_coerce(item, item_type, f"{key}[{i}]", where, from_cli) for i, item in enumerate(value)]
    elif tp is str:
        if isinstance(value, str):
            return value
        if from_cli and value is not None and not isinstance(value, (dict, list)):
            return str(value)
    else:
        raise AssertionError(f"unsupported config field type {tp!r} for {key}")
    raise UserError(f"{where}: key '{key}' expects {_type_name(tp)}, got {type(value).__name__} {shown(value)}")


def _build(cls: type, values: Any, prefix: str, where: str) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise UserError(f"{where}: key '{prefix or 'top level'}' must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise UserError(f"{where}: unknown key '{full}' (valid: {', '.join(sorted(names))})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise UserError(f"{where}: key '{full}' must be a mapping, got {type(value).__name__}")
            kwargs[key] = _build(tp, value, f"{full}.", where)
        else:
            kwargs[key] = _coerce(value, tp, full, where, from_cli=False)
    return cls(**kwargs)


def apply_override(cfg: Any, assignment: str) -> None:
    """Apply one ``section.key=value`` override in place (value read as a YAML scalar, then type-coerced)."""
    if "=" not in assignment:
        raise UserError(f"--set {assignment!r}: expected KEY=VALUE, e.g. sft.steps=100")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    target = cfg
    for depth, part in enumerate(parts):
        names = {f.name for f in dataclasses.fields(target)}
        if part not in names:
            raise UserError(f"--set: unknown key '{'.'.join(parts[: depth + 1])}'")
        if depth < len(parts) - 1:
            target = getattr(target, part)
            if not dataclasses.is_dataclass(target):
                raise UserError(f"--set: key '{'.'.join(parts[: depth + 1])}' is not a section")
    tp = typing.get_type_hints(type(target))[parts[-1]]
    if dataclasses.is_dataclass(tp):
        raise UserError(f"--set: key '{key}' is a section; set one of its keys")
    if tp is str:  # text as typed: YAML would turn 'no' (accelerate's mixed_precision) into False
        value = raw.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        setattr(target, parts[-1], value)
        return
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    setattr(target, parts[-1], _coerce(value, tp, key, "--set", from_cli=True))


def _under(preset: Any, values: Any) -> Any:
    """The config file's ``values`` laid over the ``preset`` mapping: every key the file sets (a section it leaves
    empty sets none) wins, key by key inside sections; the preset fills the rest."""
    if isinstance(preset, dict) and values is None:  # an empty section (`data:`) sets none of its keys
        return preset
    if not isinstance(preset, dict) or not isinstance(values, dict):
        return values
    merged = dict(preset)
    for key, value in values.items():
        merged[key] = _under(preset[key], value) if key in preset else value
    return merged


def _read_file(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found" if not path.is_dir() else f"{path}: a directory, not a file")
    return read_yaml(path)


def load_config(path: str | Path | None, overrides: list[str] | None = None,
                preset: str | Path | None = None) -> ExperimentConfig:
    """Read a YAML experiment config strictly (defaults where keys are absent), then apply --set overrides.

    Precedence, lowest first: built-in defaults, the ``preset`` config file (e.g. configs/quick.yaml for ``demo
    --quick``; its ``name`` is left out, the name being the run's), the file at ``path``, ``overrides``."""
    values: Any = {} if path is None else _read_file(path)
    where = "defaults" if path is None else str(path)
    if preset is not None:
        preset_values = _read_file(preset)
        if isinstance(preset_values, dict):
            preset_values = {key: value for key, value in preset_values.items() if key != "name"}
        values = _under(preset_values, values)
    cfg = _build(ExperimentConfig, values, "", where)
    for assignment in overrides or []:
        apply_override(cfg, assignment)
    validate(cfg, where if not overrides else f"{where} + --set")
    return cfg


class _StrictLoader(yaml.SafeLoader):
    """YAML without duplicate keys (the later one would silently win)."""


def _unique_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)
MAX_CONFIG_BYTES = 1_000_000
"""A config file larger than this is refused (a config is a few KB)."""


def read_yaml(path: Path) -> Any:
    """A config file's YAML, strictly: readable UTF-8 text under MAX_CONFIG_BYTES, no aliases (an alias bomb expands
    without bound), no duplicate keys; every failure one UserError naming the file (and line)."""
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise UserError(f"{path}: {path.stat().st_size} bytes; a config file is at most {MAX_CONFIG_BYTES}")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror or type(err).__name__})") from None
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise UserError(f"{path}:{event.start_mark.line + 1}: YAML aliases (*name) are not allowed in a config")
        return yaml.load(text, Loader=_StrictLoader) or {}  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "not valid YAML"
        raise UserError(f"{path}{line}: {str(problem)[:200]}") from None


def config_to_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML: what a run saves as config.yaml and `prmloop config show` prints; it loads back
    (``load_config``) to an equal config."""
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)


def save_config(cfg: ExperimentConfig, out_dir: str | Path) -> Path:
    """Write the resolved config as ``out_dir/config.yaml`` (atomically), beside the outputs it produced."""
    path = Path(out_dir) / "config.yaml"
    atomic_write_text(path, config_to_yaml(cfg))
    return path


RESUME_FREE_KEYS = ("tracking.", "loop.cache_dir", "prm.eval_batch_size", "name", "grpo.steps")
"""Keys a resumed run may change: they cannot change its results (where W&B goes, where the SFT cache lives, scoring
batch size, the display name), or only extend it (`grpo --resume` with more grpo.steps: the lr is constant)."""


def _flat(values: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(values, dict):
        return {prefix[:-1]: values}
    flat: dict[str, Any] = {}
    for key, value in values.items():
        flat.update(_flat(value, f"{prefix}{key}."))
    return flat


def check_resume(cfg: ExperimentConfig, out_dir: str | Path) -> None:
    """Refuse to resume ``out_dir`` with settings that differ from the ones it was started with (naming the keys),
    except RESUME_FREE_KEYS; so its config.yaml never claims settings the run did not use."""
    saved_path = Path(out_dir) / "config.yaml"
    if not saved_path.is_file():
        return
    saved = _flat(dataclasses.asdict(load_config(saved_path)))
    current = _flat(dataclasses.asdict(cfg))
    changed = [key for key in current if current[key] != saved.get(key) and not key.startswith(RESUME_FREE_KEYS)]
    if changed:
        shown = ", ".join(f"{key} {saved.get(key)!r} -> {current[key]!r}"[:80] for key in changed[:5])
        raise UserError(f"{out_dir}: --resume with settings that differ from the run's own config.yaml ({shown}"
                        f"{', ...' if len(changed) > 5 else ''}); resume with the same settings or start a new --out")
