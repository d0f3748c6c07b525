"""Range and choice checks written beside a config field: ``steps: int = checked(30, at_least(1))``.

A check is a test and the words for what it allows; ``checked`` stores it in the field's metadata, so each setting's
rule sits next to its default and docstring. ``failed_check`` walks a (nested) config instance field by field and
returns the first value its check refuses; loop/validate.py turns that into one UserError line naming the key.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import UserError, shown

METADATA_KEY = "check"
"""The key of a field's metadata that holds its Check."""


@dataclass(frozen=True)
class Check:
    ok: Callable[[Any], bool]
    """Whether a value is allowed."""
    allowed: str
    """What is allowed, as the end of 'must be ...', e.g. 'a finite number >= 1'."""


def at_least(low: float) -> Check:
    return Check(lambda v: math.isfinite(v) and v >= low, f"a finite number >= {low:g}")


def above(low: float) -> Check:
    return Check(lambda v: math.isfinite(v) and v > low, f"a finite number > {low:g}")


def between(low: float, high: float, open_low: bool = False) -> Check:
    """``[low, high]``, or ``(low, high]`` with ``open_low``."""

    def ok(v: float) -> bool:
        return math.isfinite(v) and (v > low if open_low else v >= low) and v <= high

    return Check(ok, f"a number in {'(' if open_low else '['}{low:g}, {high:g}]")


def off_or_at_least(low: float) -> Check:
    """0 (the feature is off) or a finite number >= ``low``."""
    return Check(lambda v: math.isfinite(v) and (v == 0 or v >= low), f"0 (off) or a finite number >= {low:g}")


def one_of(*choices: Any) -> Check:
    return Check(lambda v: v in choices, "one of " + ", ".join(repr(c) if c == "" else str(c) for c in choices))


def checked(default: Any, check: Check) -> Any:
    """A dataclass field with ``default`` whose values must pass ``check``."""
    return dataclasses.field(default=default, metadata={METADATA_KEY: check})


def check_fields(config: Any, prefix: str) -> None:
    """UserError (``prefix + key = value: must be ...``) for the first field of ``config`` its check refuses: the same
    rule a loaded config passed, for code handed a config object directly (``prm.train``, ``GRPOTrainer``)."""
    failed = failed_check(config, prefix)
    if failed:
        key, value, check = failed
        raise UserError(f"{key} = {shown(value)}: must be {check.allowed}")


def failed_check(config: Any, prefix: str = "") -> tuple[str, Any, Check] | None:
    """(dotted key, value, its check) of the first field of ``config`` (nested dataclasses walked in declaration
    order) whose value its check refuses; None when every checked value passes."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            failed = failed_check(value, f"{prefix}{field.name}.")
            if failed:
                return failed
        elif (check := field.metadata.get(METADATA_KEY)) is not None and not check.ok(value):
            return f"{prefix}{field.name}", value, check
    return None
